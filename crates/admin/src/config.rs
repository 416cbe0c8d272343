//! The configuration a proxy runs from, as `GET /config` shows it and as
//! `POST /config/reload` (and the binary's SIGHUP) reads it again.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::{json, Value};
use switchyard::Proxy;
use tokio::sync::Mutex;

use crate::Reloaded;

/// Why a configuration read again cannot be used (as the loader said: every problem, with
/// its key and line); nothing changed.
#[derive(Debug)]
pub struct NotReloaded(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for NotReloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NotReloaded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Reads the configuration again; `Err` says why it cannot be used (every problem, with
/// its key and line).
type Load<F> = Box<dyn Fn() -> Result<F, NotReloaded> + Send + Sync>;

/// Applies what changed from the first configuration to the second, and puts back in the
/// second what stays as it was (what takes a restart), so that it reads as in force.
type Apply<F> = Box<dyn Fn(&Proxy, &F, &mut F) -> Reloaded + Send + Sync>;

/// The configuration in force and, when it comes from a file, how to read it again.
///
/// Cheap to clone; clones share everything. Reloads run one at a time; a configuration
/// that does not load changes nothing.
#[derive(Clone)]
pub struct LiveConfig {
    inner: Arc<dyn Reload>,
    /// One reload at a time: two that raced would each apply their changes against the
    /// same configuration. Held over no `.await`.
    reloading: Arc<Mutex<()>>,
}

trait Reload: Send + Sync {
    /// The configuration in force, and when it was read.
    fn shown(&self) -> (Value, SystemTime);
    fn reload(&self) -> Option<Result<Reloaded, NotReloaded>>;
}

struct Fixed(Value, SystemTime);

impl Reload for Fixed {
    fn shown(&self) -> (Value, SystemTime) {
        (self.0.clone(), self.1)
    }

    fn reload(&self) -> Option<Result<Reloaded, NotReloaded>> {
        None
    }
}

struct FromFile<F> {
    proxy: Proxy,
    loaded: ArcSwap<(F, SystemTime)>,
    load: Load<F>,
    apply: Apply<F>,
}

impl<F: Serialize + Send + Sync + 'static> Reload for FromFile<F> {
    fn shown(&self) -> (Value, SystemTime) {
        let loaded = self.loaded.load();
        let mut shown = redacted(&loaded.0);
        // The proxy's settings as in force: those read only at start stay as they were.
        if let (Some(proxy), Ok(now)) = (
            shown.get_mut("proxy"),
            serde_json::to_value(&*self.proxy.config()),
        ) {
            *proxy = now;
        }
        (shown, loaded.1)
    }

    fn reload(&self) -> Option<Result<Reloaded, NotReloaded>> {
        Some((self.load)().map(|mut new| {
            let done = (self.apply)(&self.proxy, &self.loaded.load().0, &mut new);
            self.loaded.store(Arc::new((new, SystemTime::now())));
            done
        }))
    }
}

/// Serializes `config` with `admin.token` redacted.
fn redacted(config: &impl Serialize) -> Value {
    let mut config = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(token) = config.pointer_mut("/admin/token") {
        if !token.is_null() {
            *token = Value::String("<redacted>".into());
        }
    }
    config
}

impl LiveConfig {
    /// A configuration that is not read again (flags, code).
    pub fn fixed(config: &impl Serialize) -> Self {
        Self::new(Fixed(redacted(config), SystemTime::now()))
    }

    /// A configuration `proxy` runs from, as `loaded`; [`LiveConfig::reload`] calls `load`
    /// and applies what changed with `apply`.
    pub fn reloadable<F, E>(
        proxy: Proxy,
        loaded: F,
        load: impl Fn() -> Result<F, E> + Send + Sync + 'static,
        apply: impl Fn(&Proxy, &F, &mut F) -> Reloaded + Send + Sync + 'static,
    ) -> Self
    where
        F: Serialize + Send + Sync + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        Self::new(FromFile {
            proxy,
            loaded: ArcSwap::from_pointee((loaded, SystemTime::now())),
            load: Box::new(move || load().map_err(|e| NotReloaded(Box::new(e)))),
            apply: Box::new(apply),
        })
    }

    fn new(inner: impl Reload + 'static) -> Self {
        Self {
            inner: Arc::new(inner),
            reloading: Arc::default(),
        }
    }

    /// The configuration in force (secrets redacted), and when it was applied.
    pub fn shown(&self) -> Value {
        let (mut shown, at) = self.inner.shown();
        if let Value::Object(map) = &mut shown {
            let at = humantime::format_rfc3339_seconds(at).to_string();
            map.insert("loaded_at".into(), json!(at));
        }
        shown
    }

    /// Reads the configuration again and applies what changed, logging the outcome:
    /// `None` when there is nothing to read again, `Err` (nothing changed) when it does
    /// not load.
    pub async fn reload(&self) -> Option<Result<Reloaded, NotReloaded>> {
        let _one = self.reloading.lock().await;
        let done = self.inner.reload();
        match &done {
            None => tracing::warn!("configuration not reloaded: it does not come from a file"),
            Some(Ok(done)) if done.failed.is_empty() => {
                tracing::info!("configuration reloaded: {done}")
            }
            Some(Ok(done)) => tracing::warn!("configuration reloaded: {done}"),
            Some(Err(e)) => tracing::error!("configuration not reloaded: {e}"),
        }
        done
    }
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig")
            .field("shown", &self.shown())
            .finish()
    }
}
