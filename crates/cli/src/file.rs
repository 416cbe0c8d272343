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
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard::config::file::Document;
pub use switchyard::config::file::{LoadError, Problem};
use switchyard::{Backend, Discovery, ProxyConfig};

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
        let doc = Document::parse(text)?;
        let (config, mut problems) = doc.deserialize::<Self>();
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
        let mut push = |key: String, message: String| problems.push(doc.problem(key, message));
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
                let line = doc.line(&key).or_else(|| doc.line(&entry));
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
