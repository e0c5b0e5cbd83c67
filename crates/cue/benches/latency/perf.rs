//! `CUE_BENCH_PERF=burst:0,burst:9,after:9`: `perf record` attached to the
//! daemon of a peer for the length of a phase (append, concurrent, burst,
//! after, join). Files go to `CUE_BENCH_PERF_DIR` (default /tmp) as
//! `<phase>-<notes>n-<peers>p-p<peer>.data`; `CUE_BENCH_PERF_FREQ` (default
//! 199 Hz) and `CUE_BENCH_PERF_CALLGRAPH` (default `dwarf,16384`) tune it.
//! Read them with `perf report -i FILE --no-children --stdio`.
//!
//! `CUE_BENCH_STRACE=burst:9` likewise runs `strace -c -w -f` on a daemon
//! for a phase: how many fsyncs, and how much wall time went into each
//! system call (`<phase>-<notes>n-<peers>p-p<peer>.strace`). It slows the
//! daemon's system calls down: for counting, not for timing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::{Cluster, Proc};

pub struct Perf {
    targets: Vec<(String, usize)>,
    strace: Vec<(String, usize)>,
    dir: PathBuf,
    freq: String,
    call_graph: String,
}

impl Perf {
    pub fn from_env() -> Perf {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let targets = |k: &str| -> Vec<(String, usize)> {
            var(k, "")
                .split(',')
                .filter_map(|t| {
                    let (phase, peer) = t.trim().split_once(':')?;
                    Some((phase.to_string(), peer.parse().ok()?))
                })
                .collect()
        };
        Perf {
            targets: targets("CUE_BENCH_PERF"),
            strace: targets("CUE_BENCH_STRACE"),
            dir: PathBuf::from(var("CUE_BENCH_PERF_DIR", "/tmp")),
            freq: var("CUE_BENCH_PERF_FREQ", "199"),
            call_graph: var("CUE_BENCH_PERF_CALLGRAPH", "dwarf,16384"),
        }
    }

    /// Starts the recorders asked for `phase`; dropping them stops them
    /// (SIGINT), which writes the files.
    pub fn start(&self, phase: &str, c: &Cluster) -> Vec<Proc> {
        let mut procs = Vec::new();
        for (_, peer) in self.targets.iter().filter(|(p, _)| p == phase) {
            let Some(daemon) = c.daemons.get(*peer) else {
                continue;
            };
            let out = self
                .dir
                .join(format!("{phase}-{}n-{}p-p{peer}.data", c.notes, c.peers()));
            let child = Command::new("perf")
                .args(["record", "-F", &self.freq, "--call-graph", &self.call_graph])
                .arg("-o")
                .arg(&out)
                .args(["-p", &daemon.pid().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match child {
                Ok(child) => {
                    println!("  (perf record on p{peer} -> {})", out.display());
                    procs.push(Proc::new(child, libc::SIGINT).with_grace(Duration::from_secs(120)));
                }
                Err(e) => println!("  (perf record on p{peer} did not start: {e})"),
            }
        }
        for (_, peer) in self.strace.iter().filter(|(p, _)| p == phase) {
            let Some(daemon) = c.daemons.get(*peer) else {
                continue;
            };
            let out = self.dir.join(format!(
                "{phase}-{}n-{}p-p{peer}.strace",
                c.notes,
                c.peers()
            ));
            let child = Command::new("strace")
                .args(["-c", "-w", "-f", "-o"])
                .arg(&out)
                .args(["-p", &daemon.pid().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match child {
                Ok(child) => {
                    println!("  (strace -c on p{peer} -> {})", out.display());
                    procs.push(Proc::new(child, libc::SIGINT).with_grace(Duration::from_secs(30)));
                }
                Err(e) => println!("  (strace on p{peer} did not start: {e})"),
            }
        }
        // perf needs a moment to attach before the phase starts.
        if !procs.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
        procs
    }
}
