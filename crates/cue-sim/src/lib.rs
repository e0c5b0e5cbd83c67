//! A seeded, deterministic simulation of many CueDeck peers.
//!
//! It runs the real sans-IO core of K peers (their [`cue_core::Workspace`]
//! over a [`cue_core::store::MemStore`], and their
//! [`cue_core::sync::SyncEngine`]) against a simulated relay and network that
//! delay, reorder, duplicate and drop frames, partition peers, restart the
//! relay and crash peers, while users edit files. At the end everything heals
//! and the checker verifies that nothing a user saved was lost and that every
//! peer shows the same files. One `u64` seed decides everything, so a failure
//! replays exactly: `cue-sim --seed S --steps M`.
//!
//! Why a simulation: the bugs a sync tool must not have (a lost edit, two peers
//! that never agree) hide in rare interleavings of faults. Real sockets and
//! clocks make those rare and unrepeatable; here they are cheap, common and
//! reproducible, the way FoundationDB and TigerBeetle test.
//!
//! [`run`] runs one scenario; [`shrink`] looks for the smallest step count that
//! still fails, the starting point of a minimal replay.

#![deny(clippy::unwrap_used)]

pub mod check;
pub mod edits;
pub mod peer;
pub mod sim;
pub mod stats;

use std::panic::{catch_unwind, AssertUnwindSafe};

pub use sim::{Config, Failure, Outcome};
pub use stats::Stats;

/// Steps per scenario unless told otherwise.
pub const DEFAULT_STEPS: usize = 200;

/// Runs one scenario. A panic inside the core is a failure like any other
/// (with the panic message as the reason), not the end of the whole run.
pub fn run(config: Config) -> Outcome {
    let caught = catch_unwind(AssertUnwindSafe(|| run_inner(config)));
    match caught {
        Ok(outcome) => outcome,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic with no message".into());
            Outcome {
                seed: config.seed,
                peers: config.peers.unwrap_or(0),
                steps: config.steps,
                result: Err(Failure {
                    reason: format!("panicked: {msg}"),
                    step: None,
                    trace: Vec::new(),
                }),
                stats: Stats::default(),
                fingerprint: 0,
            }
        }
    }
}

fn run_inner(config: Config) -> Outcome {
    let mut sim = match sim::Sim::new(&config) {
        Ok(sim) => sim,
        Err(reason) => {
            return Outcome {
                seed: config.seed,
                peers: config.peers.unwrap_or(0),
                steps: config.steps,
                result: Err(Failure {
                    reason,
                    step: None,
                    trace: Vec::new(),
                }),
                stats: Stats::default(),
                fingerprint: 0,
            }
        }
    };
    let result = sim.run(config.steps);
    Outcome {
        seed: config.seed,
        peers: sim.peers.len(),
        steps: config.steps,
        result,
        stats: sim.stats().clone(),
        fingerprint: sim.fingerprint(),
    }
}

/// The smallest step count (found by bisection, so not always the very
/// smallest) at which `config`'s seed still fails. Fewer steps replay a
/// prefix of the same schedule, then heal and check.
pub fn shrink(config: Config) -> usize {
    let fails = |steps: usize| {
        run(Config {
            steps,
            full_trace: false,
            ..config
        })
        .result
        .is_err()
    };
    // Zero steps is a scenario too: the peers join and nothing else happens.
    if fails(0) {
        return 0;
    }
    let (mut lo, mut hi) = (0usize, config.steps);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}
