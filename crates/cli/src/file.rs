//! The TOML configuration file.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! [admin]            # listen, token
//! [server]           # client-side limits
//! [proxy]            # the specification's ProxyConfig, snake_case
//! [[backends]]       # id, url, weight, active
//! ```
//!
//! Unknown keys are errors. Every problem is reported with its key and line.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard::{Backend, ProxyConfig};
use toml_edit::{ImDocument, Item, Table};

use crate::ServerConfig;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the proxy listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Limits on client connections.
    #[serde(default)]
    pub server: ServerConfig,
    /// The proxy's settings.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// The backends.
    #[serde(default)]
    pub backends: Vec<Backend>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin: AdminConfig::default(),
            server: ServerConfig::default(),
            proxy: ProxyConfig::default(),
            backends: Vec::new(),
        }
    }
}

/// The admin listener's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether the admin API and dashboard are served.
    pub enabled: bool,
    /// Where the admin API listens; loopback unless a token is set.
    pub listen: SocketAddr,
    /// Bearer token every admin request must carry, when set.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token: None,
        }
    }
}

impl AdminConfig {
    /// Why these settings cannot be served, as (key, message): an empty token, or a
    /// listener off loopback without a token.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        match &self.token {
            Some(token) if token.is_empty() => Some(("admin.token", "must not be empty")),
            None if !self.listen.ip().is_loopback() => Some((
                "admin.listen",
                "a non-loopback admin listener needs `admin.token`",
            )),
            _ => None,
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key (`proxy.retry_delay`, `backends[1].url`), when one can be named.
    pub key: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A configuration file that could not be used: every problem found, with the file's path.
#[derive(Debug)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.problems.as_slice() {
            [one] => write!(f, "{path}: {one}"),
            many => {
                write!(f, "{path}: {} problems", many.len())?;
                for p in many {
                    write!(f, "\n  {path}: {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

impl FileConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError {
            path: path.to_owned(),
            problems: vec![Problem {
                key: None,
                line: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        // Paths in the file are relative to the file's directory.
        let dir = path.parent().unwrap_or(Path::new(""));
        Self::parse_in(&text, dir).map_err(|problems| LoadError {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parses and checks a configuration text, returning every problem found. Relative
    /// paths in it are taken from the working directory.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        Self::parse_in(text, Path::new(""))
    }

    /// [`parse`](Self::parse), with relative paths taken from `dir`.
    fn parse_in(text: &str, dir: &Path) -> Result<Self, Vec<Problem>> {
        let doc = ImDocument::parse(text).map_err(|e| {
            vec![Problem {
                key: None,
                line: e.span().map(|s| line_of(text, s.start)),
                message: e.message().trim().to_owned(),
            }]
        })?;
        let keys = KeySpans::of(&doc);
        let (config, mut problems) = deserialize_all(text, &keys);
        let Some(mut config) = config else {
            return Err(problems);
        };
        for path in [
            &mut config.proxy.backend_ca_file,
            &mut config.proxy.backend_client_cert_file,
            &mut config.proxy.backend_client_key_file,
            &mut config.server.tls_cert_file,
            &mut config.server.tls_key_file,
            &mut config.server.tls_client_ca_file,
        ]
        .into_iter()
        .flatten()
        .chain(
            config
                .server
                .tls_certs
                .iter_mut()
                .flat_map(|f| [&mut f.cert_file, &mut f.key_file]),
        ) {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        let mut push = |key: String, message: String| {
            let line = keys.line_of(&key, text);
            problems.push(Problem {
                key: Some(key),
                line,
                message,
            });
        };
        for p in config.proxy.validate() {
            push(format!("proxy.{}", p.key), p.message);
        }
        for p in config.server.validate() {
            push(format!("server.{}", p.key), p.message);
        }
        let mut ids = HashSet::new();
        for (i, b) in config.backends.iter().enumerate() {
            for p in b.validate() {
                push(format!("backends[{i}].{}", p.key), p.message);
            }
            if !ids.insert(b.id.as_str()) {
                push(
                    format!("backends[{i}].id"),
                    format!("duplicate backend id `{}`", b.id),
                );
            }
        }
        if let Some((key, message)) = config.admin.problem() {
            push(key.into(), message.into());
        }
        problems.sort_by_key(|p| p.line);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// Deserializes the file, collecting every key that does not deserialize instead of
/// stopping at the first: each offending key is reported (with its line in the original
/// text), taken out, and the rest deserialized again.
fn deserialize_all(text: &str, keys: &KeySpans) -> (Option<FileConfig>, Vec<Problem>) {
    let mut problems = Vec::new();
    let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
        return (None, problems);
    };
    let mut current = text.to_owned();
    // Bounded: every pass removes one key, or stops.
    for _ in 0..64 {
        let err = match toml::from_str::<FileConfig>(&current) {
            Ok(config) => return (Some(config), problems),
            Err(err) => err,
        };
        let key = err.span().and_then(|span| {
            let spans = ImDocument::parse(current.as_str())
                .ok()
                .map(|d| KeySpans::of(&d))?;
            spans.key_at(&span)
        });
        let line = match &key {
            Some(key) => keys.line_of(key, text),
            None => err.span().map(|s| line_of(&current, s.start)),
        };
        problems.push(Problem {
            key: key.clone(),
            line,
            message: err.message().trim().to_owned(),
        });
        match key {
            Some(key) if remove_key(&mut doc, &key) => current = doc.to_string(),
            _ => break,
        }
    }
    (None, problems)
}

/// Removes `path` (`proxy.retry_delay`, `backends[1].url`) from the document; `false` when
/// it names no key that can be removed on its own (an array element, say).
fn remove_key(doc: &mut toml_edit::DocumentMut, path: &str) -> bool {
    let mut segments: Vec<&str> = path.split('.').collect();
    let Some(last) = segments.pop() else {
        return false;
    };
    if last.ends_with(']') {
        return false;
    }
    let mut item = doc.as_item_mut();
    for segment in segments {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some(next) = item.get_mut(name) else {
            return false;
        };
        item = next;
        if let Some(i) = index {
            let Some(next) = item.get_mut(i) else {
                return false;
            };
            item = next;
        }
    }
    item.as_table_like_mut()
        .is_some_and(|t| t.remove(last).is_some())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Every key of the document with the span of its key and of its value.
struct KeySpans {
    entries: Vec<(String, Range<usize>, Range<usize>)>,
}

impl KeySpans {
    fn of(doc: &ImDocument<&str>) -> Self {
        let mut entries = Vec::new();
        walk(doc.as_table(), "", &mut entries);
        Self { entries }
    }

    /// The innermost key whose value contains `span`.
    fn key_at(&self, span: &Range<usize>) -> Option<String> {
        self.entries
            .iter()
            .filter(|(_, key, value)| {
                (value.start <= span.start && span.end <= value.end.max(value.start + 1))
                    || (key.start <= span.start && span.start < key.end)
            })
            .min_by_key(|(_, _, value)| value.len())
            .map(|(k, _, _)| k.clone())
    }

    fn line_of(&self, key: &str, text: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, key, _)| line_of(text, key.start))
    }
}

fn walk(table: &Table, prefix: &str, out: &mut Vec<(String, Range<usize>, Range<usize>)>) {
    for (key, item) in table.iter() {
        let path = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        let key_span = table.key(key).and_then(|k| k.span()).unwrap_or(0..0);
        let value_span = item.span().unwrap_or(key_span.clone());
        out.push((path.clone(), key_span, value_span));
        match item {
            Item::Table(t) => walk(t, &path, out),
            Item::Value(toml_edit::Value::InlineTable(t)) => {
                let t = t.clone().into_table();
                walk(&t, &path, out);
            }
            Item::ArrayOfTables(array) => {
                for (i, t) in array.iter().enumerate() {
                    let elem = format!("{path}[{i}]");
                    out.push((
                        elem.clone(),
                        t.span().unwrap_or(0..0),
                        t.span().unwrap_or(0..0),
                    ));
                    walk(t, &elem, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = &FileConfig::parse(text).unwrap_err()[0];
        assert_eq!(p.key.as_deref(), Some("proxy.request_timeout"), "{p}");
        assert_eq!(p.line, Some(2));
    }

    #[test]
    fn round_robin_is_the_only_load_balancer_type() {
        let text = "[proxy]\nload_balancer_type = \"round_robin\"\n";
        assert_eq!(FileConfig::parse(text).unwrap(), FileConfig::default());
        let text = "[proxy]\nload_balancer_type = \"least_conn\"\n";
        let p = &FileConfig::parse(text).unwrap_err()[0];
        assert_eq!(p.key.as_deref(), Some("proxy.load_balancer_type"), "{p}");
        assert_eq!(p.line, Some(2));
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
}
