//! Live-sync latency benchmark, at the size of a real team: a relay on
//! loopback, one real `cue watch --sync` daemon per peer, a workspace of N
//! generated Markdown notes (2-5 KB, frontmatter, deterministic from a seed),
//! and inotify to see files arrive. It prints a table per phase, with the
//! machine's core count and load average (figures taken on a busy machine
//! are noisy), CPU seconds and peak RSS per daemon. It is not a test: nothing
//! is asserted about time.
//!
//! `cargo bench -p cue --bench latency` (uses `target/release/cue-relay` if
//! built, else the relay embedded in `cue relay`). Knobs, all optional:
//!
//! - `CUE_BENCH_SCENARIO` (default `append,concurrent,burst,join`), any of:
//!   - `append`: one save at a time, the sender rotating; save -> each other
//!     peer and -> the last of them (p50/p95/p99/max), CPU ms per received edit;
//!   - `concurrent`: p0 and p1 append to one note 50 ms apart, until both
//!     files are identical and hold both lines (`CUE_BENCH_ROUNDS`, 20);
//!   - `burst`: N new notes written at once on p0, until the first and all
//!     are on every other peer; then `CUE_BENCH_AFTER` (50) appends
//!     `CUE_BENCH_GAP_MS` (1000) apart, the sender rotating, each peer
//!     appending to a note of its own: latency to the last peer, how many
//!     are later than 1 s, how many are missing 30 s after the last; then how
//!     long until the daemons are idle;
//!   - `join`: peer 0 alone with the notes, then the others join one after
//!     another by join code, each starting its daemon once cloned.
//! - `CUE_BENCH_NOTES` (default `1000`; a list, e.g. `0,1000,10000`),
//!   `CUE_BENCH_PEERS` (default `2,10`), `CUE_BENCH_EDITS` (300 appends),
//!   `CUE_BENCH_SEED` (1), `CUE_BENCH_TIMEOUT_S` (600: a burst, a join, or
//!   waiting for idle daemons gives up after this).
//! - `CUE_BENCH_LOG` (`info`): the daemons' RUST_LOG; `CUE_BENCH_KEEP_LOGS=DIR`
//!   copies their logs there before the temp dir goes.
//! - `CUE_BENCH_TAP=1`: count protocol messages by kind through a proxy that
//!   opens them (see `tap.rs`; for diagnosis, it costs CPU).
//! - `CUE_BENCH_PERF=burst:0,burst:9,after:9`: `perf record` a peer's daemon
//!   for a phase; `CUE_BENCH_STRACE=burst:9`: `strace -c` it (see `perf.rs`).
//!
//! Setup, not measured: peer 0 imports the notes with `cue init` (timed and
//! printed), the other peers are cloned from a bundle and given the join
//! code, all daemons start and the bench waits until they are idle. Phases
//! run in the order append, concurrent, burst (+ appends after it); join runs
//! on a cluster of its own. Each phase prints how long the daemons stayed
//! busy after it only where that is the point (burst, join).

mod arrivals;
mod burst;
mod cluster;
mod edits;
mod join;
mod notes;
mod perf;
mod probe;
mod report;
mod tap;

use std::path::PathBuf;
use std::time::Duration;

use cluster::Cluster;

pub fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The environment knobs (see the module docs).
pub struct Knobs {
    pub scenarios: Vec<String>,
    pub notes: Vec<usize>,
    pub peers: Vec<usize>,
    pub edits: usize,
    pub after: usize,
    pub gap: Duration,
    pub rounds: usize,
    pub seed: u64,
    pub timeout: Duration,
    pub tap: bool,
    pub log: String,
    pub keep_logs: Option<PathBuf>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let num = |k: &str, d: u64| var(k).and_then(|v| v.trim().parse().ok()).unwrap_or(d);
        let list = |k: &str, d: &str| -> Vec<usize> {
            var(k)
                .unwrap_or_else(|| d.to_string())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect()
        };
        Knobs {
            scenarios: var("CUE_BENCH_SCENARIO")
                .unwrap_or_else(|| "append,concurrent,burst,join".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            notes: list("CUE_BENCH_NOTES", "1000"),
            peers: list("CUE_BENCH_PEERS", "2,10")
                .into_iter()
                .filter(|n| *n >= 2)
                .collect(),
            edits: num("CUE_BENCH_EDITS", 300) as usize,
            after: num("CUE_BENCH_AFTER", 50) as usize,
            gap: Duration::from_millis(num("CUE_BENCH_GAP_MS", 1000)),
            rounds: num("CUE_BENCH_ROUNDS", 20) as usize,
            seed: num("CUE_BENCH_SEED", 1),
            timeout: Duration::from_secs(num("CUE_BENCH_TIMEOUT_S", 600)),
            tap: var("CUE_BENCH_TAP").is_some_and(|v| v != "0"),
            log: var("CUE_BENCH_LOG").unwrap_or_else(|| "info".into()),
            keep_logs: var("CUE_BENCH_KEEP_LOGS").map(PathBuf::from),
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

fn main() {
    // `cargo bench` passes --bench; no argument is read.
    let k = Knobs::from_env();
    let perf = perf::Perf::from_env();
    println!(
        "latency bench: scenarios {:?}, notes {:?}, peers {:?}; {} cores, load {}{}",
        k.scenarios,
        k.notes,
        k.peers,
        probe::cores(),
        probe::load(),
        if k.tap { "; message tap on" } else { "" }
    );
    for &notes in &k.notes {
        for &peers in &k.peers {
            if k.wants("append") || k.wants("concurrent") || k.wants("burst") {
                let mut c = Cluster::init(&k, notes, peers, &format!("{peers} peers"));
                c.add_bundle_peers(peers);
                for i in 0..peers {
                    c.start_daemon(i);
                }
                c.wait_online(peers, Duration::from_secs(120));
                let settle = c.wait_idle(k.timeout);
                println!(
                    "[{peers} peers] relay: {}; daemons online and idle after {} s more",
                    c.relay.kind,
                    settle.map_or("-".to_string(), |s| format!("{s:.0}"))
                );
                if k.wants("append") {
                    edits::append(&c, &k, &perf);
                    c.wait_idle(k.timeout);
                }
                if k.wants("concurrent") {
                    edits::concurrent(&c, &k, &perf);
                    c.wait_idle(k.timeout);
                }
                if k.wants("burst") {
                    burst::burst(&c, &k, &perf);
                }
            }
            if k.wants("join") {
                join::join(&k, notes, peers, &perf);
            }
        }
    }
}
