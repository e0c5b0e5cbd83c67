//! The parent process: starts the relay and the client processes, connects
//! everyone, runs the rate steps in lockstep, and turns what the children
//! report into figures.
//!
//! Every step is measured the same way: the children send for the step's
//! duration at their share of the offered rate; then the parent waits until
//! every expected delivery has arrived (or the drain time is up), and collects
//! the latency histograms. Expected deliveries are computed from what was sent
//! into each room and how many peers the room held, so loss is exact even
//! though receivers and senders live in different processes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Process};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::hist::Histogram;
use crate::proto::{unix_ns, Command, Reply, MAX_STEPS};
use crate::relay::{scrape_metrics, RelayProcess};
use crate::report::{self, ConnectSummary, ProcUsage, RunReport, StepReport, Verdict};
use crate::sys::{self, ProcSample};

/// Connections one client process holds by default: well inside the
/// 20,000-file limit, and enough processes to use both cores.
const CONNECTIONS_PER_PROC: u32 = 2500;

/// The relay's connection caps, lifted for a throughput run: every load
/// client connects from 127.0.0.1, which the default per-address caps
/// (made for real clients, see cue-relay's README) would shed. Flags the
/// user passes with --relay-arg win.
const LOAD_RUN_CAPS: [(&str, &str); 3] = [
    ("--max-conns-per-ip", "1000000"),
    ("--max-unadmitted-per-ip", "1000000"),
    ("--max-unadmitted", "1000000"),
];

/// Everything `cue-load` (the parent) is told on its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Relay to test, already running: `ws://HOST:PORT`. Its CPU and memory
    /// are not measured (it may be on another machine).
    #[arg(long, value_name = "URL", conflicts_with = "relay_bin")]
    pub relay: Option<String>,

    /// A cue-relay executable to start on 127.0.0.1 with a free port, and to
    /// measure (CPU, memory) while it runs. Without --relay or --relay-bin, the
    /// same relay library is started from this binary (`cue-load relay`).
    #[arg(long, value_name = "PATH")]
    pub relay_bin: Option<PathBuf>,

    /// Extra argument for the relay started with --relay-bin (or the built-in
    /// one), e.g. --relay-arg=--outbound-queue=1024; repeat for more.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub relay_arg: Vec<String>,

    /// WebSocket connections to open and hold (one peer each).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(2..))]
    pub connections: u32,

    /// Peers per room; every broadcast is delivered to the other R-1. The
    /// relay's default limit is 50.
    #[arg(long, value_name = "R", default_value_t = 50, value_parser = clap::value_parser!(u32).range(2..))]
    pub room_size: u32,

    /// Client processes to spread the connections over [default: one per
    /// 2,500 connections].
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub procs: Option<u32>,

    /// Offered load per step, in broadcasts per second over all peers
    /// (deliveries are R-1 times that), e.g. --rates 500,1000,2000. Without it,
    /// the rate starts at --start-rate and doubles until the relay degrades,
    /// then is refined between the last good and the first degraded rate.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    pub rates: Vec<f64>,

    /// First rate of the automatic ramp, broadcasts per second.
    #[arg(long, value_name = "MSGS", default_value_t = 250.0)]
    pub start_rate: f64,

    /// Highest rate the automatic ramp tries, broadcasts per second.
    #[arg(long, value_name = "MSGS", default_value_t = 1_000_000.0)]
    pub max_rate: f64,

    /// Bisection steps between the last good and the first degraded rate.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub refine: u32,

    /// Seconds each step sends for.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration_secs: f64,

    /// Seconds to wait after a step for deliveries still in flight; anything
    /// later counts as lost.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub drain_secs: f64,

    /// A step with a fan-out p99 above this (or any loss or closed connection)
    /// counts as degraded.
    #[arg(long, value_name = "MS", default_value_t = 100.0)]
    pub degraded_p99_ms: f64,

    /// The p99 the relay should stay under at half its maximum throughput
    /// (the target).
    #[arg(long, value_name = "MS", default_value_t = 10.0)]
    pub target_p99_ms: f64,

    /// Do not re-run at half the maximum throughput.
    #[arg(long)]
    pub no_half: bool,

    /// Bytes of payload per broadcast (a stamp of 28 bytes, then padding).
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub payload_bytes: usize,

    /// Connection attempts in flight at once, over all processes.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Seconds one connection attempt (TCP, upgrade, Welcome) may take.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub connect_timeout_secs: u64,

    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One client process and its command channel.
struct ClientProcess {
    index: u32,
    pid: u32,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ClientProcess {
    async fn call(&mut self, command: &Command, limit: Duration) -> anyhow::Result<Reply> {
        let index = self.index;
        let exchange = async {
            let mut line = serde_json::to_string(command).context("cannot encode a command")?;
            line.push('\n');
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await?;
            let reply = self
                .stdout
                .next_line()
                .await?
                .context("it exited (see its errors above)")?;
            match serde_json::from_str(&reply).with_context(|| format!("bad reply {reply:?}"))? {
                Reply::Error { message } => bail!("{message}"),
                reply => Ok(reply),
            }
        };
        timeout(limit, exchange)
            .await
            .with_context(|| format!("client process {index} did not answer within {limit:?}"))?
            .with_context(|| format!("client process {index}"))
    }
}

/// All client processes; commands go to all of them at once.
struct Clients(Vec<ClientProcess>);

impl Clients {
    async fn call_each(
        &mut self,
        limit: Duration,
        command: impl Fn(u32) -> Command,
    ) -> anyhow::Result<Vec<Reply>> {
        let calls = self.0.iter_mut().map(|client| {
            let command = command(client.index);
            async move { client.call(&command, limit).await }
        });
        futures_util::future::try_join_all(calls).await
    }

    async fn call_all(&mut self, command: Command, limit: Duration) -> anyhow::Result<Vec<Reply>> {
        self.call_each(limit, |_| command.clone()).await
    }

    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|c| c.pid).collect()
    }

    async fn quit(mut self) {
        let _ = self.call_all(Command::Quit, Duration::from_secs(10)).await;
        for client in &mut self.0 {
            if timeout(Duration::from_secs(5), client.child.wait())
                .await
                .is_err()
            {
                let _ = client.child.kill().await;
            }
        }
    }
}

/// Where the relay under test is, and whether we can watch its process.
struct Target {
    url: String,
    process: Option<RelayProcess>,
    kind: String,
}

/// Runs the whole measurement and returns its report.
pub async fn run(args: RunArgs) -> anyhow::Result<RunReport> {
    validate(&args)?;
    sys::raise_open_files_limit().context("cannot read the open-files limit")?;
    let target = start_target(&args).await?;
    let procs = args
        .procs
        .unwrap_or_else(|| args.connections.div_ceil(CONNECTIONS_PER_PROC))
        .min(args.connections);
    let result = async {
        let mut clients = spawn_clients(&args, &target.url, procs).await?;
        let result = measure(&args, &target, &mut clients, procs).await;
        clients.quit().await;
        result
    }
    .await;
    if let Some(process) = target.process {
        if let Err(err) = process.stop().await {
            eprintln!("cue-load: {err:#}");
        }
    }
    result
}

fn validate(args: &RunArgs) -> anyhow::Result<()> {
    if !(args.duration_secs > 0.0 && args.duration_secs <= 3600.0) {
        bail!("--duration-secs must be between 0 and 3600");
    }
    if !(args.drain_secs >= 0.0 && args.drain_secs <= 600.0) {
        bail!("--drain-secs must be between 0 and 600");
    }
    if args.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("--rates must be positive numbers of broadcasts per second");
    }
    if args.rates.len() >= MAX_STEPS {
        bail!("at most {} rates", MAX_STEPS - 1);
    }
    if !(args.start_rate > 0.0 && args.start_rate.is_finite()) || args.max_rate < args.start_rate {
        bail!("--start-rate must be positive and at most --max-rate");
    }
    if args.connect_concurrency == 0 {
        bail!("--connect-concurrency must be at least 1");
    }
    Ok(())
}

async fn start_target(args: &RunArgs) -> anyhow::Result<Target> {
    if let Some(url) = &args.relay {
        let url = url.trim_end_matches('/').to_owned();
        if !url.starts_with("ws://") {
            bail!("--relay must be a ws://HOST:PORT URL, got {url:?}");
        }
        return Ok(Target {
            url,
            process: None,
            kind: "external".into(),
        });
    }
    let (program, mut relay_args, kind) = match &args.relay_bin {
        Some(path) => (path.clone(), Vec::new(), format!("{}", path.display())),
        None => (
            std::env::current_exe().context("cannot find this executable")?,
            vec!["relay".to_owned()],
            "built-in (cue-relay library)".into(),
        ),
    };
    for (flag, value) in LOAD_RUN_CAPS {
        let given = |a: &String| a == flag || a.starts_with(&format!("{flag}="));
        if !args.relay_arg.iter().any(given) {
            relay_args.push(format!("{flag}={value}"));
        }
    }
    relay_args.extend(args.relay_arg.iter().cloned());
    let process = RelayProcess::start(&program, &relay_args).await?;
    Ok(Target {
        url: process.url.clone(),
        process: Some(process),
        kind,
    })
}

async fn spawn_clients(args: &RunArgs, relay_url: &str, procs: u32) -> anyhow::Result<Clients> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let nonce = unix_ns() ^ u64::from(std::process::id()).rotate_left(40);
    let concurrency = args.connect_concurrency.div_ceil(procs as usize).max(1);
    let mut clients = Vec::new();
    for index in 0..procs {
        let mut command = Process::new(&exe);
        command
            .arg("client")
            .args(["--relay", relay_url])
            .args(["--index", &index.to_string()])
            .args(["--procs", &procs.to_string()])
            .args(["--connections", &args.connections.to_string()])
            .args(["--room-size", &args.room_size.to_string()])
            .args(["--nonce", &nonce.to_string()])
            .args(["--payload-bytes", &args.payload_bytes.to_string()])
            .args(["--connect-concurrency", &concurrency.to_string()])
            .args([
                "--connect-timeout-secs",
                &args.connect_timeout_secs.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        sys::die_with_parent(&mut command);
        let mut child = command.spawn().context("cannot start a client process")?;
        let pid = child.id().context("a client process exited at once")?;
        let stdin = child
            .stdin
            .take()
            .context("no stdin for a client process")?;
        let stdout = child
            .stdout
            .take()
            .context("no stdout from a client process")?;
        clients.push(ClientProcess {
            index,
            pid,
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        });
    }
    Ok(Clients(clients))
}

/// Who is connected, as the children last reported it.
#[derive(Debug, Default)]
struct Membership {
    held: u64,
    /// Held connections per client process, to share the rate out.
    held_by_proc: Vec<u64>,
    /// Held connections per room, for the expected deliveries.
    held_by_room: BTreeMap<u32, u64>,
}

/// The state the steps share.
struct Session<'a> {
    args: &'a RunArgs,
    target: &'a Target,
    clients: &'a mut Clients,
    members: Membership,
    steps: Vec<StepReport>,
    last_out_of_order: u64,
    ticks_per_sec: u64,
}

async fn measure(
    args: &RunArgs,
    target: &Target,
    clients: &mut Clients,
    procs: u32,
) -> anyhow::Result<RunReport> {
    let relay_pid = target.process.as_ref().map(|p| p.pid);
    let before = relay_pid.and_then(|pid| sys::sample(pid).ok());
    eprintln!(
        "cue-load: relay {} ({}); opening {} connections in {procs} processes, rooms of {}",
        target.url, target.kind, args.connections, args.room_size
    );
    let mut session = Session {
        args,
        target,
        clients,
        members: Membership::default(),
        steps: Vec::new(),
        last_out_of_order: 0,
        ticks_per_sec: sys::clock_ticks_per_sec(),
    };
    let started = Instant::now();
    let (failed, errors, closes) = session.connect().await?;
    let secs = started.elapsed().as_secs_f64();
    // Let the PeerJoined notices of the last joins settle before measuring.
    sleep(Duration::from_secs(1)).await;
    let after = relay_pid.and_then(|pid| sys::sample(pid).ok());
    let connect = ConnectSummary {
        wanted: u64::from(args.connections),
        held: session.members.held,
        failed,
        closed: closes.values().sum(),
        errors,
        secs,
        relay_rss_before_mib: before.map(|s| kib_to_mib(s.rss_kib)),
        relay_rss_after_mib: after.map(|s| kib_to_mib(s.rss_kib)),
        relay_kib_per_connection: match (before, after) {
            (Some(b), Some(a)) if session.members.held > 0 => {
                Some(a.rss_kib.saturating_sub(b.rss_kib) as f64 / session.members.held as f64)
            }
            _ => None,
        },
    };
    eprintln!(
        "cue-load: {} of {} connections held after {secs:.1} s ({failed} failed)",
        connect.held, connect.wanted
    );
    for error in &connect.errors {
        eprintln!("cue-load:   {error}");
    }
    if session.members.held < 2 {
        bail!("fewer than 2 connections held: nothing to measure");
    }

    if args.rates.is_empty() {
        session.ramp().await?;
    } else {
        for &rate in &args.rates {
            session.step("fixed", rate).await?;
        }
    }
    let best = best_step(&session.steps).cloned();
    if let (Some(best), false) = (&best, args.no_half) {
        if session.steps.len() < MAX_STEPS {
            session.step("half", best.offered_per_sec / 2.0).await?;
        }
    }
    // Again: closes reported late may have degraded a step after the fact.
    let best = best_step(&session.steps).cloned();
    let half = session
        .steps
        .iter()
        .rev()
        .find(|s| s.kind == "half")
        .cloned();
    Ok(report::summarize(
        args,
        target.url.clone(),
        target.kind.clone(),
        procs,
        connect,
        session.steps,
        best,
        half,
    ))
}

/// The non-degraded step with the most deliveries per second (the half-rate
/// re-run is a check, not a candidate).
fn best_step(steps: &[StepReport]) -> Option<&StepReport> {
    steps
        .iter()
        .filter(|s| s.verdict.is_ok() && s.kind != "half")
        .max_by(|a, b| a.deliveries_per_sec.total_cmp(&b.deliveries_per_sec))
}

impl Session<'_> {
    /// Connects whatever is not connected; returns failures, the first few
    /// errors, and closes reported since the last step.
    async fn connect(&mut self) -> anyhow::Result<(u64, Vec<String>, BTreeMap<u16, u64>)> {
        let limit = Duration::from_secs(self.args.connect_timeout_secs.saturating_mul(4).max(60))
            + Duration::from_millis(u64::from(self.args.connections) * 20);
        let replies = self.clients.call_all(Command::Connect, limit).await?;
        let mut members = Membership::default();
        let (mut failed, mut errors, mut closes) = (0, Vec::new(), BTreeMap::new());
        for reply in replies {
            let Reply::Connected {
                held,
                failed: f,
                errors: e,
                held_by_room,
                closes: c,
                ..
            } = reply
            else {
                bail!("unexpected reply to connect: {reply:?}");
            };
            members.held += held;
            members.held_by_proc.push(held);
            for (room, n) in held_by_room {
                *members.held_by_room.entry(room).or_default() += u64::from(n);
            }
            failed += f;
            errors.extend(e);
            merge_counts(&mut closes, c);
        }
        errors.truncate(10);
        self.members = members;
        Ok((failed, errors, closes))
    }

    /// Doubles the rate until a step degrades (halving instead if the first
    /// one already does), then bisects between the last good and the first
    /// degraded rate.
    async fn ramp(&mut self) -> anyhow::Result<()> {
        let args = self.args;
        let mut rate = args.start_rate;
        let (mut good, mut bad): (Option<f64>, Option<f64>) = (None, None);
        // Keep room for the refinement and the half-rate steps.
        let budget = MAX_STEPS - 2 - args.refine as usize;
        while self.steps.len() < budget {
            let ok = self.step("ramp", rate).await?.verdict.is_ok();
            if ok {
                good = Some(rate);
                if bad.is_some() || rate * 2.0 > args.max_rate {
                    break;
                }
                rate *= 2.0;
            } else {
                bad = Some(rate);
                if good.is_some() || rate / 2.0 < 1.0 {
                    break;
                }
                rate /= 2.0;
            }
        }
        for _ in 0..args.refine {
            let (Some(g), Some(b)) = (good, bad) else {
                break;
            };
            if self.steps.len() >= MAX_STEPS - 1 {
                break;
            }
            let mid = (g + b) / 2.0;
            if self.step("refine", mid).await?.verdict.is_ok() {
                good = Some(mid);
            } else {
                bad = Some(mid);
            }
        }
        Ok(())
    }

    /// Runs one step at `rate` broadcasts per second and records its report.
    async fn step(&mut self, kind: &str, rate: f64) -> anyhow::Result<&StepReport> {
        let args = self.args;
        let step = self.steps.len() as u32;
        if step as usize >= MAX_STEPS {
            bail!("too many steps (at most {MAX_STEPS})");
        }
        // Reopen what the relay closed in earlier steps, so every step starts
        // from the same set of connections.
        let held_before = self.members.held;
        if held_before < u64::from(args.connections) {
            let (_, _, late_closes) = self.connect().await?;
            // Closed after the previous step was reported: its tail, not this step.
            if let Some(previous) = self.steps.last_mut() {
                merge_counts(&mut previous.closes, late_closes);
                previous.judge(args.degraded_p99_ms);
            }
        }
        let reconnected = self.members.held.saturating_sub(held_before);
        let held = self.members.held.max(1);
        eprintln!(
            "cue-load: step {step} ({kind}): {rate:.0} broadcasts/s = {:.0} deliveries/s offered, {held} connections",
            rate * self.expected_fanout(),
        );

        let duration_ms = (args.duration_secs * 1000.0).round() as u64;
        let start_unix_ns = unix_ns() + 300_000_000;
        let start = Instant::now() + Duration::from_millis(300);
        let shares: Vec<f64> = self
            .members
            .held_by_proc
            .iter()
            .map(|&h| rate * h as f64 / held as f64)
            .collect();
        let limit = Duration::from_millis(duration_ms) + Duration::from_secs(60);
        let metrics_before = scrape_metrics(&self.target.url).await.ok();
        let pids = self.clients.pids();
        let relay_pid = self.target.process.as_ref().map(|p| p.pid);

        let mut watcher = Watcher::new(relay_pid, pids);
        let sent_replies = {
            let calls = self.clients.call_each(limit, |index| Command::Step {
                step,
                rate: shares.get(index as usize).copied().unwrap_or(0.0),
                start_unix_ns,
                duration_ms,
            });
            tokio::pin!(calls);
            let mut next_sample = start;
            loop {
                tokio::select! {
                    replies = &mut calls => break replies?,
                    () = sleep_until(next_sample) => {
                        watcher.sample();
                        next_sample += Duration::from_millis(250);
                    }
                }
            }
        };
        watcher.sample();
        let usage = watcher.usage(self.ticks_per_sec);

        let (mut sent, mut skipped, mut max_behind_ms, mut send_secs) = (0u64, 0u64, 0f64, 0f64);
        let mut expected = 0u64;
        for reply in sent_replies {
            let Reply::Sent {
                sent_by_room,
                skipped: s,
                max_behind_ms: b,
                secs,
            } = reply
            else {
                bail!("unexpected reply to step: {reply:?}");
            };
            for (room, n) in sent_by_room {
                sent += n;
                let members = self.members.held_by_room.get(&room).copied().unwrap_or(0);
                expected += n * members.saturating_sub(1);
            }
            skipped += s;
            max_behind_ms = max_behind_ms.max(b);
            send_secs = send_secs.max(secs);
        }

        // Wait for the deliveries still in flight.
        let deadline = Instant::now() + Duration::from_secs_f64(args.drain_secs);
        loop {
            let replies = self
                .clients
                .call_all(Command::Count { step }, Duration::from_secs(30))
                .await?;
            let received: u64 = replies
                .iter()
                .map(|r| match r {
                    Reply::Counted { received } => *received,
                    _ => 0,
                })
                .sum();
            if received >= expected || Instant::now() >= deadline {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }

        let replies = self
            .clients
            .call_all(Command::Report { step }, Duration::from_secs(30))
            .await?;
        let metrics_after = scrape_metrics(&self.target.url).await.ok();
        let mut latency = Histogram::default();
        let (mut received, mut out_of_order, mut held_after) = (0u64, 0u64, 0u64);
        let mut closes = BTreeMap::new();
        for reply in replies {
            let Reply::Report {
                received: r,
                latency_us,
                out_of_order: o,
                held: h,
                closes: c,
            } = reply
            else {
                bail!("unexpected reply to report: {reply:?}");
            };
            received += r;
            latency.merge(&latency_us);
            out_of_order += o;
            held_after += h;
            merge_counts(&mut closes, c);
        }
        self.members.held = held_after;
        let new_out_of_order = out_of_order.saturating_sub(self.last_out_of_order);
        self.last_out_of_order = out_of_order;

        let secs = if send_secs > 0.0 {
            send_secs
        } else {
            args.duration_secs
        };
        let relay_delta = |name: &str| -> Option<f64> {
            let (before, after) = (metrics_before.as_ref()?, metrics_after.as_ref()?);
            Some(after.get(name)? - before.get(name).copied().unwrap_or(0.0))
        };
        let mut report = StepReport {
            step,
            kind: kind.to_owned(),
            offered_per_sec: rate,
            sent,
            sent_per_sec: sent as f64 / secs,
            skipped,
            max_behind_ms,
            expected,
            received,
            lost: expected.saturating_sub(received),
            deliveries_per_sec: received as f64 / secs,
            latency_ms: report::Latency::from_histogram(&latency),
            out_of_order: new_out_of_order,
            held_before: held,
            reconnected,
            held_after,
            closes,
            relay: usage.relay,
            clients_cpu_percent: usage.clients_cpu_percent,
            other_cpu_percent: usage.machine_cpu_percent.map(|machine| {
                let ours = usage.relay.map_or(0.0, |r| r.cpu_percent)
                    + usage.clients_cpu_percent.unwrap_or(0.0);
                (machine - ours).max(0.0)
            }),
            relay_frames_out_per_sec: relay_delta("cue_relay_frames_out_total").map(|d| d / secs),
            relay_slow_consumer_closes: relay_delta("cue_relay_slow_consumer_disconnects_total"),
            relay_rate_limited: relay_delta("cue_relay_rate_limited_total"),
            verdict: Verdict::Ok,
        };
        report.judge(args.degraded_p99_ms);
        eprintln!("cue-load:   {}", report.one_line());
        self.steps.push(report);
        // A short pause so one step's tail never overlaps the next one's start.
        sleep(Duration::from_millis(500)).await;
        self.steps.last().context("no step recorded")
    }

    /// Deliveries per broadcast with the current membership: R-1 on average.
    fn expected_fanout(&self) -> f64 {
        let m = &self.members;
        if m.held == 0 {
            return 0.0;
        }
        m.held_by_room
            .values()
            .map(|&n| n as f64 * n.saturating_sub(1) as f64)
            .sum::<f64>()
            / m.held as f64
    }
}

/// CPU and memory over a step's sending window.
#[derive(Debug, Default)]
struct Usage {
    relay: Option<ProcUsage>,
    /// All client processes together; 100% is one core.
    clients_cpu_percent: Option<f64>,
    /// The whole machine, every process; 100% is one core.
    machine_cpu_percent: Option<f64>,
}

/// One sample of the processes a step involves.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    relay: Option<ProcSample>,
    clients_ticks: Option<u64>,
    machine_ticks: Option<u64>,
}

/// Samples the relay and the client processes through a step: CPU from the
/// first and last sample, the relay's highest RSS from all of them.
struct Watcher {
    relay_pid: Option<u32>,
    client_pids: Vec<u32>,
    first: Option<Reading>,
    last: Option<Reading>,
    relay_peak_kib: u64,
}

impl Watcher {
    fn new(relay_pid: Option<u32>, client_pids: Vec<u32>) -> Watcher {
        Watcher {
            relay_pid,
            client_pids,
            first: None,
            last: None,
            relay_peak_kib: 0,
        }
    }

    fn sample(&mut self) {
        let relay = self.relay_pid.and_then(|pid| sys::sample(pid).ok());
        let clients: Option<u64> = self
            .client_pids
            .iter()
            .map(|&pid| sys::sample(pid).ok().map(|s| s.cpu_ticks))
            .sum();
        if let Some(relay) = relay {
            self.relay_peak_kib = self.relay_peak_kib.max(relay.rss_kib);
        }
        let now = Reading {
            at: Instant::now(),
            relay,
            clients_ticks: clients,
            machine_ticks: sys::machine_busy_ticks().ok(),
        };
        if self.first.is_none() {
            self.first = Some(now);
        }
        self.last = Some(now);
    }

    fn usage(&self, ticks_per_sec: u64) -> Usage {
        let (Some(r0), Some(r1)) = (self.first, self.last) else {
            return Usage::default();
        };
        let secs = r1.at.duration_since(r0.at).as_secs_f64();
        if secs <= 0.0 {
            return Usage::default();
        }
        let percent = |ticks: u64| ticks as f64 / ticks_per_sec as f64 / secs * 100.0;
        Usage {
            relay: match (r0.relay, r1.relay) {
                (Some(a), Some(b)) => Some(ProcUsage {
                    cpu_percent: percent(b.cpu_ticks.saturating_sub(a.cpu_ticks)),
                    rss_mib: kib_to_mib(b.rss_kib),
                    peak_rss_mib: kib_to_mib(self.relay_peak_kib),
                }),
                _ => None,
            },
            clients_cpu_percent: match (r0.clients_ticks, r1.clients_ticks) {
                (Some(a), Some(b)) => Some(percent(b.saturating_sub(a))),
                _ => None,
            },
            machine_cpu_percent: match (r0.machine_ticks, r1.machine_ticks) {
                (Some(a), Some(b)) => Some(percent(b.saturating_sub(a))),
                _ => None,
            },
        }
    }
}

fn merge_counts(into: &mut BTreeMap<u16, u64>, from: impl IntoIterator<Item = (u16, u64)>) {
    for (code, n) in from {
        *into.entry(code).or_default() += n;
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
