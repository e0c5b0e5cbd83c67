//! The `cue` client as a library: the SQLite store, the disk layer and the
//! commands, so that benchmarks and tests can drive them in-process. The
//! binary (`main.rs`) is only argument parsing and exit codes.

pub mod commands;
pub mod config;
pub mod disk;
pub mod store;
