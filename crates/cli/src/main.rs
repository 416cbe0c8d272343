//! `switchyard`: a reverse proxy from a TOML file, or from flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::{Backend, ParseBackendError, Proxy, SharedConfig};
use switchyard_admin::{AdminToken, LiveConfig};
use switchyard_cli::error::{ConfigError, Listener, StartError};
use switchyard_cli::{demo, reload, FileConfig};
use switchyard_server::upgrade::{self, Sockets};
use switchyard_server::{settle, shutdown_signal};
use tokio::net::TcpListener;

// A proxy allocates and frees small buffers and futures on every request; mimalloc's
// thread-local free lists serve those with fewer instructions than glibc's malloc. The v2
// series (the `v2` feature): Rust allocates through `mi_malloc_aligned`, and v3 answers that
// by over-allocating whenever a size class is not a power of two and its page has no free
// block at hand, which a proxy's request cycle hits several times a request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "A tower-native reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(short, long, env = "LISTEN_ADDR")]
    listen: Option<SocketAddr>,
    /// Backend URL, repeatable or comma-separated; `http://` is assumed when no scheme
    /// is given; `dns+srv://NAME` for SRV targets. Replaces the file's `[[backends]]`.
    #[arg(short, long = "backend", alias = "backends", value_delimiter = ',')]
    backend: Vec<String>,
    /// Threads serving requests: 0 or 1 runs everything on one thread (a
    /// current-thread runtime, no cross-thread hand-offs); N > 1 a work-stealing
    /// runtime with N workers. Default: one per core.
    #[arg(long, env = "PROXY_THREADS")]
    threads: Option<usize>,
    /// Address of the admin API and dashboard (overrides `admin.listen`).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Serve no admin API.
    #[arg(long, conflicts_with = "admin")]
    no_admin: bool,
    /// Freshness given to cacheable responses that carry none (overrides
    /// `proxy.cache_ttl`; "0s" caches only explicitly fresh responses).
    #[arg(long, value_parser = humantime::parse_duration)]
    cache_ttl: Option<std::time::Duration>,
    /// Turn the response cache off (overrides `proxy.cache_enabled`).
    #[arg(long, conflicts_with_all = ["cache_ttl", "cache_shared"])]
    no_cache: bool,
    /// Share cached responses with other instances through Redis at URL,
    /// `redis://host:port/db` (overrides `proxy.cache_shared`).
    #[arg(long, value_name = "URL")]
    cache_shared: Option<String>,
    /// Record no metrics (overrides `proxy.metrics_enabled`).
    #[arg(long)]
    no_metrics: bool,
    /// How long one attempt waits for its response head (overrides `proxy.attempt_timeout`).
    #[arg(long, value_parser = humantime::parse_duration)]
    attempt_timeout: Option<std::time::Duration>,
    /// Send a hedged second attempt after this long (overrides `proxy.hedge_after`).
    #[arg(long, value_parser = humantime::parse_duration)]
    hedge_after: Option<std::time::Duration>,
    /// Binary upgrade: take over the sockets of the switchyard on `--upgrade-socket`.
    #[arg(long)]
    upgrade: bool,
    /// Unix socket handing the listeners to a new process (default: under $XDG_RUNTIME_DIR).
    #[arg(long, env = "SWITCHYARD_UPGRADE_SOCKET")]
    upgrade_socket: Option<PathBuf>,
    /// round_robin, least_request or peak_ewma (overrides `proxy.balancer`).
    #[arg(long, value_name = "NAME")]
    balancer: Option<switchyard::Policy>,
    /// Ease a backend that joins in over DURATION (overrides `proxy.slow_start`; "0s": off).
    #[arg(long, value_parser = humantime::parse_duration)]
    slow_start: Option<std::time::Duration>,
    /// Name server for backend and dns+srv:// names (overrides `proxy.dns_server`).
    #[arg(long, value_name = "ADDR:PORT")]
    dns_server: Option<SocketAddr>,
}

// Parsed once at start: the size of the serve flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Run the proxy on 127.0.0.1:8080 over three embedded demo backends.
    Demo {
        /// Address to listen on.
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin API and dashboard.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Check a configuration file: exits 0 when valid, or prints every problem and exits 2.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    init_tracing();
    let invalid = |e: &dyn std::error::Error| {
        eprintln!("{e}");
        ExitCode::from(2)
    };
    match Cli::parse().command {
        Command::Check { config } => match FileConfig::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => invalid(&e),
        },
        Command::Serve(args) => {
            let threads = args.threads;
            let socket = (args.upgrade_socket.clone()).unwrap_or_else(upgrade::default_socket);
            let upgrade = (socket, args.upgrade);
            match args.configure() {
                Ok((file, reread)) => run(threads, serve(file, reread, upgrade)),
                Err(e) => invalid(&e),
            }
        }
        Command::Demo { listen, admin } => run(None, run_demo(listen, admin)),
    }
}

impl ServeArgs {
    /// The file's configuration (or the defaults) with the flags applied over it, and how
    /// to read it again (SIGHUP, `POST /config/reload`); or why it cannot be used.
    fn configure(self) -> Result<(FileConfig, Option<Reread>), ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok((self.overlay(FileConfig::default())?, None));
        };
        let reread = move || FileConfig::load(&path).map_err(ConfigError::File);
        let file = self.overlay(reread()?)?;
        // Read again, the file gets the same flags over it.
        Ok((file, Some(Box::new(move || self.overlay(reread()?)))))
    }

    /// `file` with the flags applied over it.
    fn overlay(&self, mut file: FileConfig) -> Result<FileConfig, ConfigError> {
        file.listen = self.listen.unwrap_or(file.listen);
        if let Some(admin) = self.admin {
            file.admin.listen = admin;
            if let Some((key, message)) = file.admin.problem() {
                return Err(ConfigError::Admin(key, message));
            }
        }
        file.admin.enabled &= !self.no_admin;
        if let (Some(ttl), Some(cache)) = (self.cache_ttl, &mut file.proxy.cache) {
            cache.ttl = ttl;
        }
        if let (Some(url), Some(cache)) = (self.cache_shared.clone(), &mut file.proxy.cache) {
            let shared = SharedConfig {
                url,
                ..cache.shared.take().unwrap_or_default()
            };
            if let Some(problem) = shared.url_problem() {
                return Err(ConfigError::CacheShared(problem));
            }
            cache.shared = Some(shared);
        }
        file.proxy.cache = file.proxy.cache.filter(|_| !self.no_cache);
        file.proxy.metrics &= !self.no_metrics;
        let retry = &mut file.proxy.retry;
        retry.attempt_timeout = self.attempt_timeout.or(retry.attempt_timeout);
        retry.hedge_after = self.hedge_after.or(retry.hedge_after);
        let balance = &mut file.proxy.balance;
        balance.policy = self.balancer.unwrap_or(balance.policy);
        balance.slow_start = self.slow_start.unwrap_or(balance.slow_start);
        file.proxy.health.dns_server = self.dns_server.or(file.proxy.health.dns_server);
        if !self.backend.is_empty() {
            // Numbered in the order given: `backend1`, `backend2`…
            file.discovery.clear();
            let urls = self.backend.iter().filter(|s| !s.trim().is_empty());
            file.backends = (urls.enumerate())
                .map(|(i, url)| {
                    let id = format!("backend{}", i + 1);
                    url.parse().map(|b| Backend { id, ..b })
                })
                .collect::<Result<_, ParseBackendError>>()
                .map_err(ConfigError::Backend)?;
        }
        Ok(file)
    }
}

/// Reads the configuration file again, with the flags over it.
type Reread = Box<dyn Fn() -> Result<FileConfig, ConfigError> + Send + Sync>;

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours for a terminal only: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn run(
    threads: Option<usize>,
    main: impl std::future::Future<Output = Result<(), StartError>>,
) -> ExitCode {
    let mut runtime = match threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n @ 2..) = threads {
        runtime.worker_threads(n);
    }
    let runtime = runtime.enable_all().build().map_err(StartError::Runtime);
    let Err(e) = runtime.and_then(|rt| rt.block_on(main)) else {
        return ExitCode::SUCCESS;
    };
    eprintln!("switchyard: {e}");
    ExitCode::FAILURE
}

async fn serve(
    file: FileConfig,
    reread: Option<Reread>,
    (socket, take_over): (PathBuf, bool),
) -> Result<(), StartError> {
    if let Some(p) = file.proxy.validate().into_iter().next() {
        return Err(StartError::Flag(p));
    }
    let mut sockets = Sockets::start(&socket, take_over).map_err(StartError::Upgrade)?;
    let listener = Listener::Proxy.take(&mut sockets, file.listen).await?;
    let admin = match file.admin.enabled {
        true => Some(
            Listener::Admin
                .take(&mut sockets, file.admin.listen)
                .await?,
        ),
        false => None,
    };
    // Connections queue on the listening sockets until the servers below accept them.
    let handed = sockets.serve();
    let proxy = Proxy::new(file.proxy.clone());
    for b in file.all_backends() {
        proxy.add_backend(b)?;
    }
    if proxy.list_backends().is_empty() {
        tracing::warn!("no backends configured: every request will get 503");
    }
    settle(&proxy).await;
    // One access log for every server, those a reload starts included.
    let access_log = switchyard_server::AccessLog::new(file.access_log.format);
    // The admin token the admin API checks, and `Switchyard-Trace` asks for.
    let token = file.admin.token.as_deref().filter(|_| file.admin.enabled);
    let token = AdminToken::new(&proxy, token);
    let (listen, moving) = reload::Listen::new(access_log.clone(), token.clone());
    let live = match reread {
        Some(reread) => LiveConfig::reloadable(proxy.clone(), file.clone(), reread, {
            move |proxy: &Proxy, old: &FileConfig, new: &mut FileConfig| {
                reload::apply_moving(&listen, proxy, old, new)
            }
        }),
        None => LiveConfig::fixed(&file),
    };
    // SIGHUP reads the file again (as `POST /config/reload` does), and the certificates
    // (which the server watches). Listened for before the admin API answers: until then
    // a SIGHUP would end the process (its default action).
    let hangup = tokio::signal::unix::SignalKind::hangup();
    let mut hangups = tokio::signal::unix::signal(hangup).map_err(StartError::Signal)?;
    let router = switchyard_admin::live_router(proxy.clone(), &token, live.clone());
    let admin = switchyard_admin::serve_reloading(admin, router, moving.admin, handed.clone());
    tokio::spawn(admin);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            live.reload().await;
        }
    });
    let tls = file.server.tls_cert_file.is_some();
    tracing::info!(listen = %file.listen, tls, "switchyard listening");
    let serve = switchyard_server::reload::serve_reloading;
    serve(
        listener,
        proxy,
        file.server,
        access_log,
        moving.server,
        handed,
    )
    .await;
    Ok(())
}

async fn run_demo(listen: SocketAddr, admin_listen: SocketAddr) -> Result<(), StartError> {
    let listener = Listener::Demo.bind(listen).await?;
    let proxy = Proxy::new(switchyard::ProxyConfig::default());
    let mut backends = Vec::new();
    for (id, addr, backend) in demo::spawn_three().await.map_err(StartError::DemoBackend)? {
        proxy.add_backend(backend)?;
        backends.push((id, addr));
    }
    settle(&proxy).await;
    let file = FileConfig {
        listen,
        admin: switchyard_cli::file::AdminConfig {
            listen: admin_listen,
            ..Default::default()
        },
        ..Default::default()
    };
    // The demo runs without its dashboard rather than not at all.
    let admin = match TcpListener::bind(admin_listen).await {
        Ok(listener) => {
            let bound = listener.local_addr().unwrap_or(admin_listen);
            let router = switchyard_admin::router(proxy.clone(), &file.admin, &file);
            tokio::spawn(switchyard_admin::serve(listener, router, shutdown_signal()));
            Some(bound)
        }
        Err(e) => {
            tracing::warn!(admin = %admin_listen, error = %e, "no dashboard: cannot listen (pick another address with --admin)");
            None
        }
    };
    println!("{}", demo::banner(listen, &backends, admin));
    switchyard_server::serve(listener, proxy, Default::default(), shutdown_signal()).await;
    Ok(())
}
