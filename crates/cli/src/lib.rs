//! The `switchyard` binary as a library: the configuration file, the HTTP server that runs
//! the proxy, and the embedded demo. `main.rs` only parses the command line.

pub mod admin;
pub mod demo;
pub mod file;
pub mod proxy_protocol;
pub mod reload;
pub mod server;
pub mod tls;

pub use file::{FileConfig, LoadError, Problem};
pub use server::ServerConfig;
pub use tls::{CertFiles, ListenerOptions, ListenerTls};
