//! The `switchyard` binary as a library: the configuration file, what a reload of it
//! changes ([`reload`]), the errors it reports, and the embedded demo. `main.rs` parses
//! the command line, checks a file (`switchyard check`) and wires the proxy, its server
//! (`switchyard-server`, which serves across reloads) and its admin API
//! (`switchyard-admin`) together.

pub mod error;
pub mod file;
pub mod reload;

pub use file::{FileConfig, LoadError, Problem};
/// `switchyard demo`'s backends, from the listener library.
pub use switchyard_server::demo;
