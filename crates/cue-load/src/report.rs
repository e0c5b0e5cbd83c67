//! The figures of a run: per step, the connection phase, and the summary the
//! issue asks for (maximum sustained throughput, and p99 at half of it), as a
//! table for people and as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::driver::RunArgs;
use crate::hist::Histogram;

/// Fan-out latency of one step, milliseconds: from the sender handing the
/// frame to its socket to a receiver reading it, over every delivery.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Deliveries measured.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Latency {
    /// Reads the percentiles out of a merged microsecond histogram.
    pub fn from_histogram(h: &Histogram) -> Latency {
        let ms = |q: f64| h.quantile(q).map(|us| us as f64 / 1000.0);
        Latency {
            count: h.count(),
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: (h.count() > 0).then(|| h.max as f64 / 1000.0),
        }
    }
}

/// CPU and memory of one process over a step.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcUsage {
    /// CPU time over wall time; 100% is one core, 200% both cores here.
    pub cpu_percent: f64,
    /// Resident memory at the end of the step, MiB.
    pub rss_mib: f64,
    /// Highest resident memory seen during the step, MiB.
    pub peak_rss_mib: f64,
}

/// Whether a step held up, and if not, why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", content = "reasons", rename_all = "snake_case")]
pub enum Verdict {
    /// Within the latency bound, nothing lost, nobody disconnected.
    Ok,
    /// What went wrong.
    Degraded(Vec<String>),
}

impl Verdict {
    /// Whether the step counts towards the maximum sustained throughput.
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }
}

/// Everything measured in one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step number (also stamped in its payloads).
    pub step: u32,
    /// "ramp", "refine", "fixed" (from --rates) or "half".
    pub kind: String,
    /// Broadcasts per second asked for, over all peers.
    pub offered_per_sec: f64,
    /// Broadcasts sent.
    pub sent: u64,
    /// Broadcasts sent per second of the sending window.
    pub sent_per_sec: f64,
    /// Broadcasts not sent because a client's socket queue was full.
    pub skipped: u64,
    /// How far the most lagging client process fell behind its sending
    /// schedule, milliseconds: when large, the clients (not the relay) were
    /// short of CPU, and the offered load arrived late and in bursts.
    pub max_behind_ms: f64,
    /// Deliveries owed: each broadcast times the other peers in its room.
    pub expected: u64,
    /// Deliveries that arrived (before the drain time ran out).
    pub received: u64,
    /// Deliveries that never arrived.
    pub lost: u64,
    /// Fan-out throughput: deliveries received per second of sending.
    pub deliveries_per_sec: f64,
    /// Fan-out latency.
    pub latency_ms: Latency,
    /// Deliveries that arrived out of order from one sender, or twice.
    pub out_of_order: u64,
    /// Connections open when the step started.
    pub held_before: u64,
    /// Connections reopened before the step (closed by the relay earlier).
    pub reconnected: u64,
    /// Connections open when the step was reported.
    pub held_after: u64,
    /// Connections the relay closed, by close code (4008 = slow consumer).
    pub closes: BTreeMap<u16, u64>,
    /// The relay process, when this run started it.
    pub relay: Option<ProcUsage>,
    /// All client processes together; 100% is one core.
    pub clients_cpu_percent: Option<f64>,
    /// Everything else on the machine (other programs, kernel threads doing
    /// loopback networking); 100% is one core. High values mean the figures
    /// were taken on a busy machine.
    pub other_cpu_percent: Option<f64>,
    /// Frames the relay reports writing per second (its own count, from /metrics).
    pub relay_frames_out_per_sec: Option<f64>,
    /// Slow-consumer disconnects the relay reports during the step.
    pub relay_slow_consumer_closes: Option<f64>,
    /// Reads the relay paused for a rate limit during the step.
    pub relay_rate_limited: Option<f64>,
    /// Whether the step held up.
    pub verdict: Verdict,
}

impl StepReport {
    /// Decides the verdict: degraded on a p99 above `p99_bound_ms`, any loss,
    /// reordering or disconnect, or clients that could not offer the load (then
    /// the figure says more about the machine than the relay).
    pub fn judge(&mut self, p99_bound_ms: f64) {
        let mut reasons = Vec::new();
        if let Some(p99) = self.latency_ms.p99 {
            if p99 > p99_bound_ms {
                reasons.push(format!("p99 {p99:.1} ms > {p99_bound_ms} ms"));
            }
        }
        if self.lost > 0 {
            reasons.push(format!("{} deliveries lost", self.lost));
        }
        if self.out_of_order > 0 {
            reasons.push(format!("{} out of order", self.out_of_order));
        }
        let closed: u64 = self.closes.values().sum();
        if closed > 0 {
            reasons.push(format!(
                "{closed} connections closed ({})",
                codes(&self.closes)
            ));
        }
        if self.max_behind_ms > p99_bound_ms {
            reasons.push(format!(
                "clients fell {:.0} ms behind their schedule",
                self.max_behind_ms
            ));
        }
        if self.sent_per_sec < 0.95 * self.offered_per_sec {
            reasons.push(format!(
                "clients sent only {:.0}/s of {:.0}/s",
                self.sent_per_sec, self.offered_per_sec
            ));
        }
        if self.expected == 0 {
            reasons.push("nothing to deliver".into());
        }
        self.verdict = if reasons.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Degraded(reasons)
        };
    }

    /// A progress line for stderr.
    pub fn one_line(&self) -> String {
        format!(
            "{:.0} deliveries/s, p50 {} p99 {} max {} ms, lost {}, relay CPU {} RSS {} -> {}",
            self.deliveries_per_sec,
            opt_ms(self.latency_ms.p50),
            opt_ms(self.latency_ms.p99),
            opt_ms(self.latency_ms.max),
            self.lost,
            self.relay
                .map_or("-".into(), |r| format!("{:.0}%", r.cpu_percent)),
            self.relay
                .map_or("-".into(), |r| format!("{:.0} MiB", r.rss_mib)),
            verdict_text(&self.verdict),
        )
    }
}

/// The connection phase.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectSummary {
    /// Connections asked for.
    pub wanted: u64,
    /// Connections the relay welcomed and that were still open afterwards.
    pub held: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Connections the relay closed while the others were connecting.
    pub closed: u64,
    /// The first few failures.
    pub errors: Vec<String>,
    /// Seconds to open them all.
    pub secs: f64,
    /// Relay RSS before the first connection, MiB.
    pub relay_rss_before_mib: Option<f64>,
    /// Relay RSS with every connection open and idle, MiB.
    pub relay_rss_after_mib: Option<f64>,
    /// Relay memory per idle connection, KiB.
    pub relay_kib_per_connection: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Relay URL.
    pub relay_url: String,
    /// Which relay: a path, "built-in", or "external".
    pub relay_kind: String,
    /// Cores on this machine (relay and clients share them).
    pub cores: usize,
    /// Connections asked for.
    pub connections: u32,
    /// Peers per room.
    pub room_size: u32,
    /// Client processes.
    pub procs: u32,
    /// Payload bytes per broadcast.
    pub payload_bytes: usize,
    /// Seconds per step.
    pub duration_secs: f64,
    /// The p99 above which a step is degraded.
    pub degraded_p99_ms: f64,
    /// The connection phase.
    pub connect: ConnectSummary,
    /// Every step, in order.
    pub steps: Vec<StepReport>,
    /// The non-degraded step with the highest deliveries per second.
    pub max_sustained: Option<StepReport>,
    /// The re-run at half of that rate.
    pub half: Option<StepReport>,
    /// The target: p99 at half the maximum throughput.
    pub target_p99_ms: f64,
    /// Whether the half-rate p99 met the target with every connection held.
    pub target_met: Option<bool>,
}

/// Puts a run's figures together.
#[allow(clippy::too_many_arguments)]
pub fn summarize(
    args: &RunArgs,
    relay_url: String,
    relay_kind: String,
    procs: u32,
    connect: ConnectSummary,
    steps: Vec<StepReport>,
    max_sustained: Option<StepReport>,
    half: Option<StepReport>,
) -> RunReport {
    let target_met = half.as_ref().map(|h| {
        h.verdict.is_ok()
            && h.held_before == u64::from(args.connections)
            && h.latency_ms.p99.is_some_and(|p| p < args.target_p99_ms)
    });
    RunReport {
        relay_url,
        relay_kind,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        connections: args.connections,
        room_size: args.room_size,
        procs,
        payload_bytes: args.payload_bytes,
        duration_secs: args.duration_secs,
        degraded_p99_ms: args.degraded_p99_ms,
        connect,
        steps,
        max_sustained,
        half,
        target_p99_ms: args.target_p99_ms,
        target_met,
    }
}

impl RunReport {
    /// The human report: a line about connections, the step table, and the summary.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let c = &self.connect;
        let _ = writeln!(
            out,
            "relay {} ({}), {} cores shared by the relay and {} client processes",
            self.relay_url, self.relay_kind, self.cores, self.procs
        );
        let _ = writeln!(
            out,
            "connections: {} of {} held ({} failed, {} closed) in {:.1} s; rooms of {}, {}-byte payloads",
            c.held, c.wanted, c.failed, c.closed, c.secs, self.room_size, self.payload_bytes
        );
        if let (Some(before), Some(after)) = (c.relay_rss_before_mib, c.relay_rss_after_mib) {
            let _ = writeln!(
                out,
                "relay RSS: {before:.1} MiB idle, {after:.1} MiB with every connection open ({:.1} KiB per connection)",
                c.relay_kib_per_connection.unwrap_or(0.0)
            );
        }
        for error in &c.errors {
            let _ = writeln!(out, "  connect error: {error}");
        }
        let _ = writeln!(out);
        let header = [
            "step",
            "kind",
            "offered/s",
            "sent/s",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "lost",
            "closed",
            "held",
            "relay CPU",
            "relay RSS",
            "clients CPU",
            "other CPU",
            "verdict",
        ];
        let mut rows = vec![header.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()];
        for s in &self.steps {
            rows.push(vec![
                s.step.to_string(),
                s.kind.clone(),
                format!("{:.0}", s.offered_per_sec),
                format!("{:.0}", s.sent_per_sec),
                format!("{:.0}", s.deliveries_per_sec),
                opt_ms(s.latency_ms.p50),
                opt_ms(s.latency_ms.p99),
                opt_ms(s.latency_ms.p999),
                opt_ms(s.latency_ms.max),
                s.lost.to_string(),
                s.closes.values().sum::<u64>().to_string(),
                format!("{}", s.held_before),
                s.relay
                    .map_or("-".into(), |r| format!("{:.0}%", r.cpu_percent)),
                s.relay
                    .map_or("-".into(), |r| format!("{:.0} MiB", r.peak_rss_mib)),
                s.clients_cpu_percent
                    .map_or("-".into(), |p| format!("{p:.0}%")),
                s.other_cpu_percent
                    .map_or("-".into(), |p| format!("{p:.0}%")),
                verdict_text(&s.verdict),
            ]);
        }
        out.push_str(&render_table(&rows));
        let _ = writeln!(out);
        match &self.max_sustained {
            Some(best) => {
                let _ = writeln!(
                    out,
                    "max sustained: {:.0} deliveries/s ({:.0} broadcasts/s), p50 {} ms, p99 {} ms, relay CPU {}, RSS {}",
                    best.deliveries_per_sec,
                    best.sent_per_sec,
                    opt_ms(best.latency_ms.p50),
                    opt_ms(best.latency_ms.p99),
                    best.relay.map_or("-".into(), |r| format!("{:.0}%", r.cpu_percent)),
                    best.relay.map_or("-".into(), |r| format!("{:.0} MiB", r.peak_rss_mib)),
                );
            }
            None => {
                let _ = writeln!(out, "max sustained: none (every step degraded)");
            }
        }
        if let Some(half) = &self.half {
            let _ = writeln!(
                out,
                "at half of it: {:.0} deliveries/s, p50 {} ms, p99 {} ms, max {} ms, relay CPU {} ({})",
                half.deliveries_per_sec,
                opt_ms(half.latency_ms.p50),
                opt_ms(half.latency_ms.p99),
                opt_ms(half.latency_ms.max),
                half.relay.map_or("-".into(), |r| format!("{:.0}%", r.cpu_percent)),
                verdict_text(&half.verdict),
            );
        }
        if let Some(met) = self.target_met {
            let _ = writeln!(
                out,
                "target ({} connections, p99 < {} ms at half the maximum): {}",
                self.connections,
                self.target_p99_ms,
                if met { "met" } else { "NOT met" }
            );
        }
        out
    }
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Ok => "ok".into(),
        Verdict::Degraded(reasons) => format!("DEGRADED: {}", reasons.join("; ")),
    }
}

fn codes(closes: &BTreeMap<u16, u64>) -> String {
    closes
        .iter()
        .map(|(code, n)| format!("{n}x {code}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt_ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.1}"),
        None => "-".into(),
    }
}

/// Left-aligns text columns and right-aligns numeric ones.
pub(crate) fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let width = widths[c];
            let numeric = cell.starts_with(|ch: char| ch.is_ascii_digit() || ch == '-');
            let last = c + 1 == row.len();
            if numeric {
                let _ = write!(line, "{cell:>width$}");
            } else if last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
            if !last {
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p99_ms: f64, lost: u64) -> StepReport {
        StepReport {
            step: 0,
            kind: "ramp".into(),
            offered_per_sec: 100.0,
            sent: 1000,
            sent_per_sec: 100.0,
            skipped: 0,
            max_behind_ms: 0.0,
            expected: 49_000,
            received: 49_000 - lost,
            lost,
            deliveries_per_sec: 4900.0,
            latency_ms: Latency {
                count: 49_000,
                p50: Some(1.0),
                p99: Some(p99_ms),
                p999: Some(p99_ms),
                max: Some(p99_ms),
            },
            out_of_order: 0,
            held_before: 100,
            reconnected: 0,
            held_after: 100,
            closes: BTreeMap::new(),
            relay: None,
            clients_cpu_percent: None,
            other_cpu_percent: None,
            relay_frames_out_per_sec: None,
            relay_slow_consumer_closes: None,
            relay_rate_limited: None,
            verdict: Verdict::Ok,
        }
    }

    #[test]
    fn a_step_degrades_on_latency_loss_or_closes() {
        let judged = |p99_ms, lost| {
            let mut s = step(p99_ms, lost);
            s.judge(100.0);
            s.verdict
        };
        assert!(judged(5.0, 0).is_ok());
        assert!(!judged(150.0, 0).is_ok());
        assert!(!judged(5.0, 1).is_ok());
        let mut closed = step(5.0, 0);
        closed.closes.insert(4008, 3);
        closed.judge(100.0);
        match closed.verdict {
            Verdict::Degraded(reasons) => assert!(reasons[0].contains("3x 4008"), "{reasons:?}"),
            Verdict::Ok => panic!("closes must degrade a step"),
        }
    }

    #[test]
    fn tables_line_up() {
        let rows = vec![
            vec!["a".to_owned(), "num".to_owned(), "end".to_owned()],
            vec!["long text".to_owned(), "12".to_owned(), "ok".to_owned()],
        ];
        let text = render_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a          num  end");
        assert_eq!(lines[1], "long text   12  ok");
    }
}
