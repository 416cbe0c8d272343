//! Reloading the configuration file: the proxy's settings apply at once; changes to what is
//! read only at start are reported.

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
    new.proxy.health.interval *= 2;
    new.proxy.metrics = !old.proxy.metrics;
    new.access_log.format = switchyard_server::AccessLogFormat::Json;
    let done = apply(&proxy, &old, &mut new);
    assert_eq!(done.applied, ["retry", "health_check", "metrics_enabled"]);
    assert_eq!(done.need_restart, ["access_log", "server"]);
    assert_eq!(
        done.to_string(),
        "applied retry, health_check, metrics_enabled; changes to access_log, server \
         take effect after a restart"
    );
    let in_force = proxy.config();
    assert_eq!(in_force.retry.max_retries, new.proxy.retry.max_retries);
    assert_eq!(in_force.health.interval, new.proxy.health.interval);
    assert_eq!(in_force.metrics, new.proxy.metrics);
    assert_eq!(new.server, old.server, "shown as in force");
    assert_eq!(new.access_log, old.access_log);
}
