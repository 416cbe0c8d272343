//! The `switchyard` binary as a library: the configuration file, its reload, and the
//! embedded demo. `main.rs` parses the command line and wires the proxy, its server
//! (`switchyard-server`) and its admin API (`switchyard-admin`) together.

pub mod error;
pub mod file;
pub mod reload;

pub use file::{FileConfig, LoadError, Problem};
/// `switchyard demo`'s backends, from the listener library.
pub use switchyard_server::demo;
