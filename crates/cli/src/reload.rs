//! Reloading the configuration file while the proxy runs: the backends that changed in
//! the file since it was last loaded are added, removed or updated in place
//! ([`switchyard_admin::apply_backends`]); the other sections are read only at start.

use std::path::Path;

use switchyard::Proxy;
pub use switchyard_admin::Reloaded;

use crate::FileConfig;

/// Applies to `proxy` what changed from `old` to `new`: the backends (see
/// [`switchyard_admin::apply_backends`]), and in [`Reloaded::need_restart`] the sections
/// read only at start that changed: `listen`, `admin`, `server` (but for the certificate's
/// contents, which reload on their own) and `proxy`.
pub fn apply(proxy: &Proxy, old: &FileConfig, new: &FileConfig) -> Reloaded {
    let mut done = switchyard_admin::apply_backends(proxy, &old.backends, &new.backends);
    for (section, changed) in [
        ("listen", old.listen != new.listen),
        ("admin", old.admin != new.admin),
        ("server", old.server != new.server),
        ("proxy", old.proxy != new.proxy),
    ] {
        if changed {
            done.need_restart.push(section);
        }
    }
    done
}

/// Reads `path` again and applies what changed to `proxy` (see [`apply`]) since
/// `loaded`, the file as it was last read, which it then replaces. A file that no longer
/// loads is reported with every problem in it, and nothing changes.
pub fn reread(path: &Path, proxy: &Proxy, loaded: &mut FileConfig) {
    match FileConfig::load(path) {
        Ok(file) => {
            let done = apply(proxy, loaded, &file);
            if done.failed.is_empty() {
                tracing::info!(file = %path.display(), "configuration reloaded: {done}");
            } else {
                tracing::warn!(file = %path.display(), "configuration reloaded: {done}");
            }
            *loaded = file;
        }
        Err(e) => tracing::error!("configuration not reloaded: {e}"),
    }
}
