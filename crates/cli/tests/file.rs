//! The configuration file: parsing, paths relative to the file, and every problem
//! reported with its key and line.

use switchyard_cli::FileConfig;

const GOOD: &str = r#"
listen = "127.0.0.1:18080"

[proxy]
retry_delay = "250ms"
cache_max_size = "64MiB"

[[backends]]
id = "a"
url = "http://127.0.0.1:3001"
weight = 3

[[backends]]
id = "b"
url = "http://127.0.0.1:3002"
active = false
"#;

#[test]
fn parses_a_good_file() {
    let c = FileConfig::parse(GOOD).unwrap();
    assert_eq!(c.listen.port(), 18080);
    assert_eq!(c.proxy.retry.delay.as_millis(), 250);
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.backends[0].weight, 3);
    assert!(!c.backends[1].active);
    assert_eq!(c.backends[1].weight, 1);
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = "listen = \"127.0.0.1:1\"\n[proxy]\nmax_retires = 3\n";
    let p = &FileConfig::parse(text).unwrap_err()[0];
    assert!(p.message.contains("max_retires"), "{p}");
    assert_eq!(p.line, Some(3), "{p}");
}

#[test]
fn a_ca_file_is_found_next_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("switchyard-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchyard.toml");
    std::fs::write(&file, "[proxy]\nbackend_ca_file = \"ca.pem\"\n").unwrap();
    let err = FileConfig::load(&file).unwrap_err();
    let p = &err.problems[0];
    assert_eq!(p.key.as_deref(), Some("proxy.backend_ca_file"), "{err}");
    assert_eq!(p.line, Some(2), "{err}");
    let expected = format!("cannot read {}", dir.join("ca.pem").display());
    assert!(p.message.contains(&expected), "{err}");
    assert!(err.to_string().starts_with(&file.display().to_string()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each SNI certificate's paths are relative to the file too, and a problem with one
/// names its entry and line.
#[test]
fn a_named_certificate_is_found_next_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("switchyard-sni-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("proxy.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("proxy.key"), key.serialize_pem()).unwrap();
    let file = dir.join("switchyard.toml");
    let text = "[server]\ntls_cert_file = \"proxy.pem\"\ntls_key_file = \"proxy.key\"\n\n\
                [[server.tls_certs]]\ncert_file = \"proxy.pem\"\nkey_file = \"proxy.key\"\n\n\
                [[server.tls_certs]]\ncert_file = \"api.pem\"\nkey_file = \"api.key\"\n";
    std::fs::write(&file, text).unwrap();
    let err = FileConfig::load(&file).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    let p = &err.problems[0];
    assert_eq!(
        p.key.as_deref(),
        Some("server.tls_certs[1].cert_file"),
        "{err}"
    );
    assert_eq!(p.line, Some(10), "{err}");
    let expected = format!("cannot read {}", dir.join("api.pem").display());
    assert!(p.message.contains(&expected), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_value_names_the_key() {
    let text = "[proxy]\nrequest_timeout = \"soon\"\n";
    assert_first_problem_at(text, "proxy.request_timeout", 2);
}

/// Asserts that the first problem `text` has is with `key`, on `line`.
fn assert_first_problem_at(text: &str, key: &str, line: usize) {
    let p = &FileConfig::parse(text).unwrap_err()[0];
    assert_eq!(p.key.as_deref(), Some(key), "{p}");
    assert_eq!(p.line, Some(line));
}

#[test]
fn round_robin_is_the_only_load_balancer_type() {
    let text = "[proxy]\nload_balancer_type = \"round_robin\"\n";
    assert_eq!(FileConfig::parse(text).unwrap(), FileConfig::default());
    let text = "[proxy]\nload_balancer_type = \"least_conn\"\n";
    assert_first_problem_at(text, "proxy.load_balancer_type", 2);
}

#[test]
fn balancer_and_slow_start_are_read_and_written() {
    let text = "[proxy]\nbalancer = \"peak_ewma\"\nslow_start = \"30s\"\n";
    let c = FileConfig::parse(text).unwrap();
    assert_eq!(c.proxy.balance.policy, switchyard::Policy::PeakEwma);
    assert_eq!(c.proxy.balance.slow_start.as_secs(), 30);
    let written = toml::to_string(&c.proxy).unwrap();
    assert!(written.contains("balancer = \"peak_ewma\""), "{written}");
    assert!(written.contains("slow_start = \"30s\""), "{written}");
    assert_eq!(FileConfig::default().proxy.balance, Default::default());
    let text = "[proxy]\n\nbalancer = \"fastest\"\n";
    assert_first_problem_at(text, "proxy.balancer", 3);
}

#[test]
fn every_semantic_problem_is_reported() {
    let text = r#"
[proxy]
circuit_breaker_threshold = 0

[[backends]]
id = "a"
url = "ftp://example.com"

[[backends]]
id = "a"
url = "http://127.0.0.1:1"
weight = 0
"#;
    let problems = FileConfig::parse(text).unwrap_err();
    let keys: Vec<_> = problems
        .iter()
        .map(|p| (p.key.clone().unwrap(), p.line.unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            ("proxy.circuit_breaker_threshold".to_owned(), 3),
            ("backends[0].url".to_owned(), 7),
            ("backends[1].id".to_owned(), 10),
            ("backends[1].weight".to_owned(), 12),
        ]
    );
}

#[test]
fn every_key_that_does_not_parse_is_reported() {
    let text = "listen = \"127.0.0.1:1\"\n[proxy]\nmax_retires = 3\nretry_delay = \"soon\"\nrequest_timeout = \"5s\"\n[[backends]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\nwieght = 2\n";
    let problems = FileConfig::parse(text).unwrap_err();
    let found: Vec<_> = problems
        .iter()
        .map(|p| (p.key.clone().unwrap_or_default(), p.line))
        .collect();
    assert_eq!(
        found,
        [
            ("proxy.max_retires".to_owned(), Some(3)),
            ("proxy.retry_delay".to_owned(), Some(4)),
            ("backends[0].wieght".to_owned(), Some(9)),
        ],
        "{problems:?}"
    );
    assert!(problems[0].message.contains("max_retires"));
}

#[test]
fn broken_toml_gives_a_line() {
    let p = &FileConfig::parse("[proxy\nx = 1").unwrap_err()[0];
    assert_eq!(p.line, Some(1), "{p}");
}
