//! End-to-end tests: the real `cue` binary on real folders.

mod testkit;

mod exchange;
