//! `switchyard`: a reverse proxy from a TOML file, or from flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::{Backend, ParseBackendError, Proxy};
use switchyard_cli::error::{Listener, StartError};
use switchyard_cli::{demo, reload, FileConfig};
use switchyard_server::shutdown_signal;
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

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(short, long, env = "LISTEN_ADDR")]
    listen: Option<SocketAddr>,
    /// Backend URL, repeatable or comma-separated; `http://` is assumed when no scheme
    /// is given. Replaces the file's `[[backends]]`.
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
    #[arg(long, conflicts_with = "cache_ttl")]
    no_cache: bool,
    /// Record no metrics (overrides `proxy.metrics_enabled`).
    #[arg(long)]
    no_metrics: bool,
    /// How long one attempt waits for its response head (overrides `proxy.attempt_timeout`).
    #[arg(long, value_parser = humantime::parse_duration)]
    attempt_timeout: Option<std::time::Duration>,
    /// Send a hedged second attempt after this long (overrides `proxy.hedge_after`).
    #[arg(long, value_parser = humantime::parse_duration)]
    hedge_after: Option<std::time::Duration>,
}

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
    let invalid = |message: String| {
        eprintln!("{message}");
        ExitCode::from(2)
    };
    match Cli::parse().command {
        Command::Check { config } => match FileConfig::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => invalid(e.to_string()),
        },
        Command::Serve(args) => {
            let threads = args.threads;
            match args.configure() {
                Ok((file, reload)) => run(threads, serve(file, reload)),
                Err(message) => invalid(message),
            }
        }
        Command::Demo { listen, admin } => run(None, run_demo(listen, admin)),
    }
}

impl ServeArgs {
    /// The file's configuration (or the defaults) with the flags applied over it, and the
    /// file to re-read on SIGHUP; or why the flags or the file cannot be used.
    fn configure(self) -> Result<(FileConfig, Option<(PathBuf, FileConfig)>), String> {
        let mut file = match &self.config {
            Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?,
            None => FileConfig::default(),
        };
        // SIGHUP reloads the file's backends, measured against the file as read now.
        // Backends from --backend flags are not the file's: nothing to reload then.
        let reload = (self.config)
            .filter(|_| self.backend.is_empty())
            .map(|path| (path, file.clone()));
        file.listen = self.listen.unwrap_or(file.listen);
        if let Some(admin) = self.admin {
            file.admin.listen = admin;
            if let Some((key, message)) = file.admin.problem() {
                return Err(format!("--admin: `{key}`: {message}"));
            }
        }
        file.admin.enabled &= !self.no_admin;
        if let (Some(ttl), Some(cache)) = (self.cache_ttl, &mut file.proxy.cache) {
            cache.ttl = ttl;
        }
        file.proxy.cache = file.proxy.cache.filter(|_| !self.no_cache);
        file.proxy.metrics &= !self.no_metrics;
        let retry = &mut file.proxy.retry;
        retry.attempt_timeout = self.attempt_timeout.or(retry.attempt_timeout);
        retry.hedge_after = self.hedge_after.or(retry.hedge_after);
        if !self.backend.is_empty() {
            // Numbered in the order given: `backend1`, `backend2`…
            let urls = self.backend.iter().filter(|s| !s.trim().is_empty());
            file.backends = (urls.enumerate())
                .map(|(i, url)| {
                    let id = format!("backend{}", i + 1);
                    url.parse().map(|b| Backend { id, ..b })
                })
                .collect::<Result<_, ParseBackendError>>()
                .map_err(|e| format!("--backend: {e}"))?;
        }
        Ok((file, reload))
    }
}

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

async fn serve(file: FileConfig, reload: Option<(PathBuf, FileConfig)>) -> Result<(), StartError> {
    if let Some(p) = file.proxy.validate().into_iter().next() {
        return Err(StartError::Flag(p));
    }
    let listener = Listener::Proxy.bind(file.listen).await?;
    let proxy = Proxy::new(file.proxy.clone());
    for b in file.backends.clone() {
        proxy.add_backend(b)?;
    }
    if proxy.list_backends().is_empty() {
        tracing::warn!("no backends configured: every request will get 503");
    }
    if file.admin.enabled {
        let listener = Listener::Admin.bind(file.admin.listen).await?;
        spawn_admin(listener, &proxy, &file);
        tracing::info!(admin = %file.admin.listen, "admin API and dashboard listening");
    }
    // SIGHUP reloads the file's backends, and the certificates (which the server watches).
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup()).map_err(StartError::Signal)?;
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut reload = reload;
            while hangups.recv().await.is_some() {
                match &mut reload {
                    Some((path, loaded)) => reload::reread(path, &proxy, loaded),
                    None => tracing::warn!(
                        "SIGHUP: the backends do not come from a --config file; nothing to reload"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(reload);
    let tls = file.server.tls_cert_file.is_some();
    tracing::info!(listen = %file.listen, tls, "switchyard listening");
    let server = switchyard_server::ServerConfig {
        access_log: file.access_log.format,
        ..file.server
    };
    switchyard_server::serve(listener, proxy, server, shutdown_signal()).await;
    Ok(())
}

async fn run_demo(listen: SocketAddr, admin_listen: SocketAddr) -> Result<(), StartError> {
    let listener = Listener::Demo.bind(listen).await?;
    let proxy = Proxy::new(switchyard::ProxyConfig::default());
    let mut backends = Vec::new();
    for id in ["backend-1", "backend-2", "backend-3"] {
        let addr = demo::spawn_backend(id, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(StartError::DemoBackend)?;
        let url = format!("http://{addr}")
            .parse()
            .expect("a socket address is a URL's authority");
        proxy.add_backend(Backend::new(id, url))?;
        backends.push((id, addr));
    }
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
        Ok(listener) => Some(spawn_admin(listener, &proxy, &file)),
        Err(e) => {
            tracing::warn!(admin = %admin_listen, error = %e, "no dashboard: cannot listen (pick another address with --admin)");
            None
        }
    };
    println!("{}", demo::banner(listen, &backends, admin));
    switchyard_server::serve(listener, proxy, Default::default(), shutdown_signal()).await;
    Ok(())
}

/// Serves the admin API over `proxy` on `listener` as `file` configures it, until shutdown;
/// returns the address it listens on.
fn spawn_admin(listener: TcpListener, proxy: &Proxy, file: &FileConfig) -> SocketAddr {
    let bound = listener.local_addr().unwrap_or(file.admin.listen);
    let router = switchyard_admin::router(proxy.clone(), &file.admin, file);
    tokio::spawn(switchyard_admin::serve(listener, router, shutdown_signal()));
    bound
}
