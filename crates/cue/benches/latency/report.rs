//! What every phase prints under its own figures: CPU per daemon, peak
//! memory, the relay's counters, daemon log events, and (with the tap)
//! the protocol messages sent.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::cluster::Cluster;
use crate::probe::{cpu_seconds, relay_metrics, runqueue_seconds};

/// Counters at the start of a phase.
pub struct Snapshot {
    at: Instant,
    cpu: Vec<f64>,
    waited: Vec<f64>,
    relay_cpu: f64,
    metrics: BTreeMap<String, f64>,
    log_lines: Vec<(usize, usize)>,
}

/// (reconnects, warnings) in a daemon's log so far.
fn log_events(c: &Cluster, i: usize) -> (usize, usize) {
    let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
    let reconnects = log
        .lines()
        .filter(|l| l.contains("Lost the relay connection") || l.contains("relay closed"))
        .count();
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    (reconnects, warnings)
}

impl Snapshot {
    /// Also discards the tap's counts so far: the phase's start from zero.
    pub fn take(c: &Cluster) -> Snapshot {
        if let Some(t) = &c.tap {
            t.take();
        }
        Snapshot {
            at: Instant::now(),
            cpu: c.pids().into_iter().map(cpu_seconds).collect(),
            waited: c.pids().into_iter().map(runqueue_seconds).collect(),
            relay_cpu: cpu_seconds(c.relay_pid()),
            metrics: relay_metrics(&c.relay.addr),
            log_lines: (0..c.daemons.len()).map(|i| log_events(c, i)).collect(),
        }
    }
}

pub fn row(label: &str, values: impl IntoIterator<Item = String>) {
    let cells: Vec<String> = values.into_iter().map(|v| format!("{v:>7}")).collect();
    println!("  {label:<16}{}", cells.join(""));
}

/// CPU seconds per daemon (and the relay) since `before`; with `received`,
/// CPU ms per received edit; peak RSS; relay counters; log events; messages.
pub fn usage(c: &Cluster, before: &Snapshot, received: Option<&[usize]>) {
    let wall = before.at.elapsed().as_secs_f64();
    let pids = c.pids();
    let cpu: Vec<f64> = pids
        .iter()
        .enumerate()
        .map(|(i, p)| cpu_seconds(*p) - before.cpu.get(i).copied().unwrap_or(0.0))
        .collect();
    let relay_cpu = cpu_seconds(c.relay_pid()) - before.relay_cpu;
    row(
        "",
        (0..pids.len())
            .map(|i| format!("p{i}"))
            .chain(["relay".to_string()]),
    );
    row(
        &format!("CPU s ({wall:.0} s)"),
        cpu.iter().chain([&relay_cpu]).map(|s| format!("{s:.2}")),
    );
    row(
        "waited for CPU s",
        pids.iter().enumerate().map(|(i, p)| {
            let w = runqueue_seconds(*p) - before.waited.get(i).copied().unwrap_or(0.0);
            format!("{w:.2}")
        }),
    );
    if let Some(received) = received {
        row(
            "CPU ms/recv edit",
            cpu.iter().zip(received).map(|(s, n)| {
                if *n == 0 {
                    "-".to_string()
                } else {
                    format!("{:.1}", 1000.0 * s / *n as f64)
                }
            }),
        );
    }
    row(
        "peak RSS MB",
        c.peak_rss()
            .into_iter()
            .chain([crate::probe::peak_rss_mb(c.relay_pid())])
            .map(|m| format!("{m:.0}")),
    );
    let events: Vec<(usize, usize)> = (0..pids.len())
        .map(|i| {
            let (r, w) = log_events(c, i);
            let (r0, w0) = before.log_lines.get(i).copied().unwrap_or((0, 0));
            (r - r0, w - w0)
        })
        .collect();
    if events.iter().any(|(r, w)| r + w > 0) {
        row("reconnects", events.iter().map(|e| e.0.to_string()));
        row("log warnings", events.iter().map(|e| e.1.to_string()));
    }
    let now = relay_metrics(&c.relay.addr);
    let d = |k: &str| {
        let key = format!("cue_relay_{k}");
        now.get(&key).copied().unwrap_or(0.0) - before.metrics.get(&key).copied().unwrap_or(0.0)
    };
    if !now.is_empty() {
        println!(
            "  relay: frames in {:.0} / out {:.0}, {:.1} MB in / {:.1} MB out; rate-limited {:.0}, slow-consumer cut {:.0}, directs dropped {:.0}",
            d("frames_in_total"),
            d("frames_out_total"),
            d("bytes_in_total") / 1e6,
            d("bytes_out_total") / 1e6,
            d("rate_limited_total"),
            d("slow_consumer_disconnects_total"),
            d("direct_dropped_total"),
        );
    }
    if let Some(tap) = &c.tap {
        messages(&tap.take(), c.peers(), c.notes);
    }
}

/// The tap's message counts for one phase.
fn messages(m: &crate::tap::Counts, peers: usize, notes: usize) {
    let kinds: Vec<String> = m
        .kinds
        .iter()
        .map(|(k, (n, b))| format!("{k} {n} ({:.1} MB)", *b as f64 / 1e6))
        .collect();
    println!(
        "  messages sent (tap): {} frames, {:.1} MB; {}",
        m.frames,
        m.frame_bytes as f64 / 1e6,
        kinds.join(", ")
    );
    if !m.requests.is_empty() {
        let max = m.requests.values().max().copied().unwrap_or(0);
        let total: u64 = m.requests.values().sum();
        println!(
            "  SyncRequests: {total} over {} of {} ordered peer pairs (max {max} per pair), listing {} document entries",
            m.requests.len(),
            peers * (peers - 1),
            m.request_entries
        );
    }
    if !m.sessions.is_empty() || !m.changes.is_empty() {
        let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (f, t, _) in &m.sessions {
            *pairs.entry((f.as_str(), t.as_str())).or_default() += 1;
        }
        let busiest = pairs.values().max().copied().unwrap_or(0);
        println!(
            "  documents: {} broadcast as Changes; {} (sender, recipient, document) sync sessions over {} pairs (busiest pair {busiest}); workspace {notes}+ notes",
            m.changes.len(),
            m.sessions.len(),
            pairs.len(),
        );
    }
}
