//! Reloading the configuration file while the proxy runs (SIGHUP, `POST /config/reload`):
//! the backends that changed in the file since it was last loaded are added, removed or
//! updated in place ([`switchyard_admin::apply_backends`]), and the `[proxy]` settings
//! apply to new requests ([`Proxy::reconfigure`]).

use switchyard::Proxy;
pub use switchyard_admin::Reloaded;

use crate::FileConfig;

/// Applies to `proxy` what changed from `old` to `new`: the backends (see
/// [`switchyard_admin::apply_backends`]) and the `[proxy]` settings (see
/// [`Proxy::reconfigure`]), and lists in [`Reloaded::need_restart`] the settings read only
/// at start that changed: `listen`, `admin`, `server` (but for the certificate's contents,
/// which reload on their own) and those of `[proxy]` that `reconfigure` keeps.
pub fn apply(proxy: &Proxy, old: &FileConfig, new: &FileConfig) -> Reloaded {
    let mut done =
        switchyard_admin::apply_backends(proxy, &old.all_backends(), &new.all_backends());
    for (section, changed) in [
        ("listen", old.listen != new.listen),
        ("admin", old.admin != new.admin),
        ("server", old.server != new.server),
    ] {
        if changed {
            done.need_restart.push(section);
        }
    }
    match proxy.reconfigure(new.proxy.clone()) {
        Ok(proxied) => {
            done.applied = proxied.applied;
            done.need_restart.extend(proxied.need_restart);
        }
        Err(problems) => {
            let why = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>();
            done.failed.push(("proxy".into(), why.join("; ")));
        }
    }
    done
}
