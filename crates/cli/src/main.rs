//! `switchyard`: a reverse proxy from a TOML file, or from flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::{Backend, Proxy};
use switchyard_cli::error::{BackendFlagError, Listener, StartError};
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

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
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
    },
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
    match Cli::parse().command {
        Command::Check { config } => match FileConfig::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Serve {
            config,
            listen,
            backend,
            threads,
            admin,
            no_admin,
            cache_ttl,
            no_cache,
            no_metrics,
            attempt_timeout,
            hedge_after,
        } => {
            let mut file = match &config {
                Some(path) => match FileConfig::load(path) {
                    Ok(file) => file,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                None => FileConfig::default(),
            };
            // SIGHUP reloads the file's backends, measured against the file as read now.
            // Backends from --backend flags are not the file's: nothing to reload then.
            let reload = config
                .filter(|_| backend.is_empty())
                .map(|path| (path, file.clone()));
            if let Some(listen) = listen {
                file.listen = listen;
            }
            if let Some(admin) = admin {
                file.admin.listen = admin;
                if let Some((key, message)) = file.admin.problem() {
                    eprintln!("--admin: `{key}`: {message}");
                    return ExitCode::from(2);
                }
            }
            file.admin.enabled &= !no_admin;
            if let (Some(ttl), Some(cache)) = (cache_ttl, &mut file.proxy.cache) {
                cache.ttl = ttl;
            }
            file.proxy.cache = file.proxy.cache.filter(|_| !no_cache);
            file.proxy.metrics &= !no_metrics;
            let retry = &mut file.proxy.retry;
            retry.attempt_timeout = attempt_timeout.or(retry.attempt_timeout);
            retry.hedge_after = hedge_after.or(retry.hedge_after);
            if !backend.is_empty() {
                match backends_from_flags(&backend) {
                    Ok(backends) => file.backends = backends,
                    Err(e) => {
                        eprintln!("--backend: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            run(threads, serve(file, reload))
        }
        Command::Demo { listen, admin } => run(None, run_demo(listen, admin)),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    let result = match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(main),
        Err(e) => Err(StartError::Runtime(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backends_from_flags(flags: &[String]) -> Result<Vec<Backend>, BackendFlagError> {
    let mut backends = Vec::new();
    for (i, raw) in flags
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let url = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("http://{raw}")
        };
        let url = url.parse().map_err(|e| BackendFlagError::not_url(raw, e))?;
        let backend = Backend::new(format!("backend{}", i + 1), url);
        if let Some(p) = backend.validate().into_iter().next() {
            return Err(BackendFlagError::invalid(raw, p.message));
        }
        backends.push(backend);
    }
    Ok(backends)
}

async fn serve(file: FileConfig, reload: Option<(PathBuf, FileConfig)>) -> Result<(), StartError> {
    if let Some(p) = file.proxy.validate().into_iter().next() {
        return Err(StartError::Flag(p));
    }
    let listener = TcpListener::bind(file.listen)
        .await
        .map_err(|source| StartError::Listen {
            listener: Listener::Proxy,
            addr: file.listen,
            source,
        })?;
    let proxy = Proxy::new(file.proxy.clone());
    for b in file.backends.clone() {
        proxy.add_backend(b)?;
    }
    if proxy.list_backends().is_empty() {
        tracing::warn!("no backends configured: every request will get 503");
    }
    if file.admin.enabled {
        spawn_admin(&proxy, &file)
            .await
            .map_err(|source| StartError::Listen {
                listener: Listener::Admin,
                addr: file.admin.listen,
                source,
            })?;
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
    switchyard_server::serve(listener, proxy, file.server, shutdown_signal()).await;
    Ok(())
}

async fn run_demo(listen: SocketAddr, admin_listen: SocketAddr) -> Result<(), StartError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Listen {
            listener: Listener::Demo,
            addr: listen,
            source,
        })?;
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
    let admin = spawn_admin(&proxy, &file).await.map_err(|e| {
        tracing::warn!(admin = %admin_listen, error = %e, "no dashboard: cannot listen (pick another address with --admin)");
    });
    println!("{}", demo::banner(listen, &backends, admin.ok()));
    switchyard_server::serve(listener, proxy, Default::default(), shutdown_signal()).await;
    Ok(())
}

/// Serves the admin API over `proxy` as `file` configures it, until shutdown; returns the
/// address it listens on.
async fn spawn_admin(proxy: &Proxy, file: &FileConfig) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(file.admin.listen).await?;
    let bound = listener.local_addr().unwrap_or(file.admin.listen);
    let router = switchyard_admin::router(proxy.clone(), &file.admin, file);
    tokio::spawn(switchyard_admin::serve(listener, router, shutdown_signal()));
    Ok(bound)
}
