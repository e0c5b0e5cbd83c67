//! `join`: with every daemon live, members join one after another by join
//! code (`cue clone`), each starting its daemon once cloned.

use std::time::{Duration, Instant};

use crate::cluster::{cue, run_timed, tree_digest, Cluster};
use crate::perf::Perf;
use crate::probe::heading;
use crate::report::{row, usage, Snapshot};
use crate::Knobs;

/// How this build's `cue clone` takes a join code: from stdin (`cue clone -
/// DIR`) when its help says so, else as an argument.
fn clone_reads_stdin() -> (bool, bool) {
    let help = std::process::Command::new(cue())
        .args(["clone", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    (help.contains("stdin"), help.contains("--timeout"))
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Option<f64> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn join(k: &Knobs, notes: usize, peers: usize, perf: &Perf) {
    let mut c = Cluster::init(k, notes, peers, "join");
    c.start_daemon(0);
    c.wait_online(1, Duration::from_secs(60));
    heading("join", notes, peers);
    let (stdin, timeout_flag) = clone_reads_stdin();
    let (files, digest) = tree_digest(&c.roots[0]);
    let before = Snapshot::take(&c);
    let recorders = perf.start("join", &c);
    let first = Instant::now();
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    let mut peak = Vec::new();
    let mut holds = Vec::new();
    for i in 1..peers {
        let root = c.tmp.path().join(format!("p{i}"));
        let dir = root.to_string_lossy().to_string();
        let code = c.code.clone();
        let mut args = vec!["clone", if stdin { "-" } else { &code }, &dir];
        let limit = k.timeout.as_secs().to_string();
        if timeout_flag {
            args.extend(["--timeout", &limit]);
        }
        let start = Instant::now();
        let input = format!("{code}\n");
        let timed = run_timed(
            c.tmp.path(),
            &format!("p{i}"),
            &args,
            stdin.then_some(input.as_str()),
        );
        c.roots.push(root.clone());
        c.start_daemon(i);
        let held = wait_for(k.timeout, || tree_digest(&root) == (files, digest));
        wall.push(timed.wall_s);
        cpu.push(timed.cpu_s);
        peak.push(timed.peak_mb);
        holds.push(held.map(|_| start.elapsed().as_secs_f64()));
    }
    let identical = wait_for(k.timeout, || {
        c.roots.iter().all(|r| tree_digest(r) == (files, digest))
    })
    .map(|_| first.elapsed().as_secs_f64());
    drop(recorders);
    println!(
        "  {} members clone one after another (`cue clone {} DIR`), each starting its daemon once cloned",
        peers - 1,
        if stdin { "-" } else { "CODE" }
    );
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>();
    row("", (1..peers).map(|i| format!("p{i}")));
    row("clone wall s", fmt(&wall));
    row("clone CPU s", fmt(&cpu));
    row("clone peak MB", peak.iter().map(|m| format!("{m:.0}")));
    row(
        "holds all s",
        holds
            .iter()
            .map(|h| h.map_or("-".to_string(), |s| format!("{s:.1}"))),
    );
    println!(
        "  all {peers} peers hold the same notes (names and sizes) {} s after the first clone began",
        identical.map_or("-".to_string(), |s| format!("{s:.1}"))
    );
    let idle = c.wait_idle(k.timeout);
    println!(
        "  daemons idle {} s after the first clone began",
        idle.map_or("-".to_string(), |_| format!(
            "{:.0}",
            first.elapsed().as_secs_f64() - 1.0
        ))
    );
    usage(&c, &before, None);
}
