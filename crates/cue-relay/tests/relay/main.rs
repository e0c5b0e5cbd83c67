//! Integration tests of cue-relay over real sockets on 127.0.0.1.
//!
//! One test binary (so the linker runs once) with a module per concern. Most
//! tests run the relay in-process through the library's `serve`; `binary.rs`
//! runs the real executable. Nothing asserts on elapsed time: tests wait for
//! events (frames, closes, counters) with generous timeouts, and prove that
//! something did *not* happen by the order of what came next.

#![allow(clippy::unwrap_used)]

mod admission;
mod binary;
mod limits;
mod ops;
mod routing;
mod shedding;
mod testkit;
mod violations;
