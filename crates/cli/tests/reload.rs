//! Reloading the configuration file: changes to what is read only at start are reported.

use switchyard::Proxy;
use switchyard_cli::reload::apply;
use switchyard_cli::FileConfig;

#[tokio::test]
async fn settings_read_only_at_start_are_reported() {
    let mut old = FileConfig::default();
    old.proxy.health.enabled = false;
    let proxy = Proxy::new(old.proxy.clone());
    let mut new = old.clone();
    new.proxy.retry.max_retries += 1;
    new.server.http2 = false;
    let done = apply(&proxy, &old, &new);
    assert_eq!(done.need_restart, ["server", "proxy"]);
    assert_eq!(
        done.to_string(),
        "changes to server, proxy take effect after a restart"
    );
}
