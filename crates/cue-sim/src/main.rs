//! `cue-sim`: runs seeded scenarios of many peers over a hostile simulated
//! network and reports each failure with a command that replays it.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use cue_sim::{run, shrink, Config, Outcome, Stats, DEFAULT_STEPS};

/// Seeded simulation of CueDeck peers, a relay and a hostile network.
///
/// Each scenario runs K peers that edit files while the network delays,
/// reorders, duplicates and drops messages, partitions peers, restarts the
/// relay and crashes peers; then everything heals and the checker verifies
/// that every peer has the same files and no saved edit was lost. The last
/// line is `N passed, M failed`; the exit code is 1 if any failed.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Number of scenarios to run (seeds S, S+1, ...).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// First seed; with --seeds 1 (the default), exactly this scenario.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Peers per scenario (default: chosen by each seed, 2 to 20, mostly small).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    peers: Option<u64>,
    /// Steps (user actions and faults) per scenario.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: usize,
    /// Do not look for a smaller failing step count.
    #[arg(long)]
    no_shrink: bool,
    /// With a failure, print every event of the scenario, not only the last ones.
    #[arg(long)]
    full_trace: bool,
    /// Print one line per scenario, passed or not.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Core panics become failures with their message; the default hook would
    // print each one a second time in the middle of the report.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut totals = Stats::default();
    let (mut passed, mut failed) = (0u64, 0u64);
    for n in 0..args.seeds {
        let seed = args.seed.wrapping_add(n);
        let config = Config {
            seed,
            peers: args.peers.map(|p| p as usize),
            steps: args.steps,
            full_trace: args.full_trace,
        };
        let t = Instant::now();
        let outcome = run(config);
        totals.add(&outcome.stats);
        match &outcome.result {
            Ok(()) => {
                passed += 1;
                if args.verbose {
                    println!(
                        "seed {seed}: passed ({} peers, {:.2} s, schedule {:016x})",
                        outcome.peers,
                        t.elapsed().as_secs_f64(),
                        outcome.fingerprint
                    );
                }
            }
            Err(_) => {
                failed += 1;
                report(&outcome, &args, failed <= DETAILED_FAILURES);
            }
        }
    }
    eprintln!("{totals}");
    eprintln!("wall time {:.1} s", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Failures of a run reported with their trace and shrunk step count (the
/// others get their one line: shrinking reruns a scenario about ten times).
const DETAILED_FAILURES: u64 = 3;

/// One line per failure, with the replay command; then (when `detailed`, or
/// with --verbose) the trace of the last events and the shrunk step count.
fn report(outcome: &Outcome, args: &Args, detailed: bool) {
    let Err(failure) = &outcome.result else {
        return;
    };
    let peers = match args.peers {
        Some(p) => format!(" --peers {p}"),
        None => String::new(),
    };
    let at = match failure.step {
        Some(s) => format!("at step {s}"),
        None => "at the final check".into(),
    };
    println!(
        "FAILED seed {} ({} peers, {} steps, {at}): {}  replay: cue-sim --seed {}{peers} --steps {}",
        outcome.seed,
        outcome.peers,
        outcome.steps,
        failure.reason,
        outcome.seed,
        outcome.steps
    );
    if detailed || args.verbose {
        for line in &failure.trace {
            println!("    {line}");
        }
        if !args.no_shrink {
            let smallest = shrink(Config {
                seed: outcome.seed,
                peers: args.peers.map(|p| p as usize),
                steps: outcome.steps,
                full_trace: false,
            });
            println!(
                "    smallest failing step count found: {smallest} (replay: cue-sim --seed {}{peers} --steps {smallest})",
                outcome.seed
            );
        }
    }
}
