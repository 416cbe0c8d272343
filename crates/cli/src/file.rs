//! The TOML configuration file.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! [admin]            # listen, token
//! [server]           # client-side limits
//! [access_log]       # format = "text" | "json"
//! [proxy]            # the specification's ProxyConfig, snake_case
//! [[backends]]       # id, url, weight, active
//! [[discovery]]      # name, type = "srv" | "dns", port, dns_server, min_ttl, max_ttl, weight
//! ```
//!
//! Unknown keys are errors. Every problem is reported with its key and line.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard::{Backend, Discovery, ProxyConfig};
use toml_edit::{ImDocument, Item, Table};

pub use switchyard_admin::AdminConfig;
use switchyard_server::{AccessLogConfig, ServerConfig};

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
    /// The access log.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// The proxy's settings.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// The backends.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Backends found in DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovery: Vec<Discovery>,
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
            access_log: AccessLogConfig::default(),
            proxy: ProxyConfig::default(),
            backends: Vec::new(),
            discovery: Vec::new(),
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

impl Problem {
    fn at(key: Option<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        let message = message.into();
        Self { key, line, message }
    }
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
        let failed = |problems| LoadError {
            path: path.to_owned(),
            problems,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| failed(vec![Problem::at(None, None, format!("cannot read: {e}"))]))?;
        // Paths in the file are relative to the file's directory.
        Self::parse_in(&text, path.parent().unwrap_or(Path::new(""))).map_err(failed)
    }

    /// Parses and checks a configuration text, returning every problem found. Relative
    /// paths in it are taken from the working directory.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        Self::parse_in(text, Path::new(""))
    }

    /// [`parse`](Self::parse), with relative paths taken from `dir`.
    fn parse_in(text: &str, dir: &Path) -> Result<Self, Vec<Problem>> {
        let doc = ImDocument::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            vec![Problem::at(None, line, e.message().trim())]
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
        let mut problems_found = Vec::new();
        let mut push = |key: String, message: String| {
            let line = keys.line_of(&key, text);
            problems.push(Problem::at(Some(key), line, message));
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
            if !ids.insert(b.id.clone()) {
                push(
                    format!("backends[{i}].id"),
                    format!("duplicate backend id `{}`", b.id),
                );
            }
        }
        for (i, d) in config.discovery.iter().enumerate() {
            let mut problems = d.validate();
            let id = d.backend().map(|b| b.id).unwrap_or_default();
            if !ids.insert(id.clone()) {
                let message = format!("duplicate backend id `{id}`");
                problems.push(switchyard::ConfigProblem {
                    key: "id".into(),
                    message,
                });
            }
            for p in problems {
                let (key, entry) = (
                    format!("discovery[{i}].{}", p.key),
                    format!("discovery[{i}]"),
                );
                // A missing key is reported at its entry.
                let line = keys.line_of(&key, text).or(keys.line_of(&entry, text));
                problems_found.push(Problem::at(Some(key), line, p.message));
            }
        }
        if let Some((key, message)) = config.admin.problem() {
            push(key.into(), message.into());
        }
        problems.append(&mut problems_found);
        problems.sort_by_key(|p| p.line);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

impl FileConfig {
    /// The backends, then those the `[[discovery]]` entries stand for.
    pub fn all_backends(&self) -> Vec<Backend> {
        let found = self.discovery.iter().filter_map(|d| d.backend().ok());
        self.backends.iter().cloned().chain(found).collect()
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
        problems.push(Problem::at(key.clone(), line, err.message().trim()));
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
                    let (elem, span) = (format!("{path}[{i}]"), t.span().unwrap_or(0..0));
                    out.push((elem.clone(), span.clone(), span));
                    walk(t, &elem, out);
                }
            }
            _ => {}
        }
    }
}
