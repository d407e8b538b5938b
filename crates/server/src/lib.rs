//! The Custodia gateway: configuration, keys, the HTTP API, and the wiring of every other crate.
//!
//! This is the only crate that knows all the others. Domain rules live in `custodia-core`, the log in
//! `custodia-ledger`; this crate turns them into HTTP and a command line and adds nothing they should hold.

pub mod config;
pub mod http;
pub mod keys;
pub mod problem;
