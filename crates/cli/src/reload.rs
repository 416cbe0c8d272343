//! Reloading the configuration file while the proxy runs (SIGHUP, `POST /config/reload`):
//! the backends that changed in the file since it was last loaded are added, removed or
//! updated in place ([`switchyard_admin::apply_backends`]), the `[proxy]` settings
//! apply to new requests ([`Proxy::reconfigure`]), a new `listen` or `admin.listen`
//! address is bound, a new admin token checked and a new access log format written
//! ([`apply_moving`]).

use switchyard::Proxy;
pub use switchyard_admin::{Listen, Listening, Reloaded};

use crate::FileConfig;

/// Applies to `proxy` what changed from `old` to `new`: the backends (see
/// [`switchyard_admin::apply_backends`]) and the `[proxy]` settings (see
/// [`Proxy::reconfigure`]), and lists in [`Reloaded::need_restart`] the settings read only
/// at start that changed: `listen` and `server` (which [`apply_moving`] moves),
/// and `access_log` and `admin` (which [`apply_moving`] puts in force). In `new` those are
/// put back as in force, so that `GET /config` shows them as they are, and the next reload
/// reports them again.
pub fn apply(proxy: &Proxy, old: &FileConfig, new: &mut FileConfig) -> Reloaded {
    let mut done =
        switchyard_admin::apply_backends(proxy, &old.all_backends(), &new.all_backends());
    listening(old).need_restart(&listening(new), &mut done);
    put(new, listening(old));
    switchyard_admin::apply_proxy(proxy, new.proxy.clone(), &mut done);
    done
}

/// [`apply`], and what changed of where and how the proxy and its admin API are served
/// (`listen`, `[server]`, `[access_log]`, `[admin]`) put in force with `listen` (see
/// [`Listen::apply`]): listed as applied, and in `new` as in force.
pub fn apply_moving(
    listen: &Listen,
    proxy: &Proxy,
    old: &FileConfig,
    new: &mut FileConfig,
) -> Reloaded {
    let wanted = listening(new);
    let mut done = apply(proxy, old, new);
    put(new, listen.apply(&listening(old), wanted, &mut done));
    done
}

/// Where and how `file` says the proxy and its admin API are served.
fn listening(file: &FileConfig) -> Listening {
    Listening {
        listen: file.listen,
        server: file.server.clone(),
        access_log: file.access_log.clone(),
        admin: file.admin.clone(),
    }
}

/// `file` served as `listening` says.
fn put(file: &mut FileConfig, listening: Listening) {
    let Listening {
        listen,
        server,
        access_log,
        admin,
    } = listening;
    (file.listen, file.server, file.access_log, file.admin) = (listen, server, access_log, admin);
}
