//! The fast slice of the simulator that runs with the test suite: a few dozen
//! seeds of small scenarios, deterministic, each failure named by its seed
//! with the command that replays it. The full run is `cue-sim --seeds 1000`.

use cue_sim::{run, Config};

/// Seeds in the slice; every tenth uses the seed's own peer count (seed 0
/// has 12 peers), the others 2 to 6 peers, so the slice stays well under a
/// minute in the dev profile.
const SEEDS: u64 = 24;
const STEPS: usize = 100;

#[test]
fn seeded_scenarios_converge_without_losing_edits() {
    let mut failures = Vec::new();
    for seed in 0..SEEDS {
        let peers = if seed % 10 == 0 {
            None
        } else {
            Some(2 + (seed as usize % 5))
        };
        let outcome = run(Config {
            seed,
            peers,
            steps: STEPS,
            full_trace: false,
        });
        if let Err(f) = &outcome.result {
            let peers_arg = peers.map(|p| format!(" --peers {p}")).unwrap_or_default();
            failures.push(format!(
                "seed {seed} ({} peers, {STEPS} steps): {}\n  replay: cargo run --release -p cue-sim -- --seed {seed}{peers_arg} --steps {STEPS}\n  last events:\n    {}",
                outcome.peers,
                f.reason,
                f.trace.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_seed_replays_exactly() {
    let config = Config {
        seed: 7,
        peers: Some(4),
        steps: 80,
        full_trace: false,
    };
    let a = run(config);
    let b = run(config);
    assert_eq!(
        a.fingerprint, b.fingerprint,
        "seed 7 ran two different schedules"
    );
    assert_eq!(a.stats, b.stats);
    assert_ne!(a.fingerprint, 0);
}

#[test]
fn faults_are_actually_injected() {
    let mut total = cue_sim::Stats::default();
    for seed in 100..106 {
        total.add(
            &run(Config {
                seed,
                peers: Some(4),
                steps: 150,
                full_trace: false,
            })
            .stats,
        );
    }
    assert!(total.edits > 100, "{total}");
    assert!(total.delivered > 1_000, "{total}");
    assert!(
        total.dropped + total.duplicated + total.lost_in_disconnect > 0,
        "{total}"
    );
    assert!(
        total.partitions + total.crashes + total.relay_restarts > 0,
        "{total}"
    );
}
