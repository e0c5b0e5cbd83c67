//! `cue-load attack`: the relay under attack, with real members trying to sync.
//!
//! Attacker processes (`cue-load attacker`, hidden) keep, for the whole run:
//!
//! - **slowloris**: N sockets that each send half an HTTP request head and
//!   then one more header byte now and then, never finishing it; every
//!   socket the relay closes is reopened at once;
//! - **flood**: M strangers that know the room id (and the peer id of a
//!   member already in the room, as a relay log or a `ws://` URL would show
//!   them) but not the key. Each connection, in turn: upgrades and never
//!   answers the challenge; answers it with a data frame posing as the
//!   member; answers it with the room's public key and a forged signature;
//!   or connects the v1 way (`/v1/rooms/…?peer=<the member's id>`). Every
//!   connection the relay closes is reopened at once.
//!
//! The attackers connect from several loopback addresses (127.0.0.1, which
//! the members use too, and 127.0.0.2…): every one of them reaches the relay
//! as a different client address.
//!
//! Meanwhile the parent keeps one member seated in the room (the one the
//! flood poses as; it must never be evicted), and, round after round, two
//! more members connect, pass admission, and exchange one sealed frame each
//! way (the workspace key's real sealer). Reported per round: each one's
//! admission time (TCP connect to Welcome, retries included), the sealed
//! round trip, and "join to sync": from the first connect to the reply
//! opened. The target is join to sync within 1 s in every round.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use cue_core::sync::{Sealer, WorkspaceKey};
use cue_wire::admission::{AuthProof, Challenge, SIGNATURE_LEN};
use cue_wire::{Frame, FrameKind, FrameRef, Header, PeerId, RoomId};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command as Process;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use crate::relay::{scrape_metrics, RelayProcess};
use crate::sys;

/// Sockets one attacker process holds at most: well inside the 20,000
/// files a process may open here.
const SOCKETS_PER_ATTACKER: u32 = 5_000;

/// How often a slowloris socket sends one more byte of its endless head.
const TRICKLE_EVERY: Duration = Duration::from_secs(1);

/// A pause before an attacker reopens a socket the relay closed, so that a
/// refused connect cannot spin a core (a real attacker has a budget too).
const REOPEN_PAUSE: Duration = Duration::from_millis(5);

/// How long a member may take to connect, retries included, before a round
/// counts as failed.
const MEMBER_DEADLINE: Duration = Duration::from_secs(30);

/// `cue-load attack` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AttackArgs {
    /// Relay to attack, already running: `ws://HOST:PORT` (not measured).
    #[arg(long, value_name = "URL", conflicts_with = "relay_bin")]
    pub relay: Option<String>,

    /// A cue-relay executable to start on 127.0.0.1 (with its default limits)
    /// and measure. Without --relay or --relay-bin, the cue-relay library is
    /// started from this binary.
    #[arg(long, value_name = "PATH")]
    pub relay_bin: Option<PathBuf>,

    /// Extra argument for the relay started here; repeat for more.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub relay_arg: Vec<String>,

    /// Half-open HTTP requests held open at once.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub slowloris: u32,

    /// Unauthenticated joins held open at once (silent, posing as the member,
    /// forged signature, v1), each reopened when the relay closes it.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub flood: u32,

    /// Loopback addresses the attackers connect from: 127.0.0.1 (the members'
    /// address) and 127.0.0.2 onwards.
    #[arg(long, value_name = "K", default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=200))]
    pub attack_addrs: u8,

    /// Seconds the attack runs alone before the first round: past the
    /// relay's header deadline (5 s by default), so its evictions and
    /// timeouts are in full swing when the members come.
    #[arg(long, value_name = "SECS", default_value_t = 6.0)]
    pub warmup_secs: f64,

    /// Rounds of two members joining and exchanging a sealed frame.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,

    /// Pause between rounds, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub round_gap_ms: u64,

    /// Join to sync must stay under this in every round.
    #[arg(long, value_name = "MS", default_value_t = 1_000.0)]
    pub target_ms: f64,
}

/// What one attacker process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Kind {
    /// Half-open HTTP requests.
    Slowloris,
    /// Upgrades without the key.
    Flood,
}

/// `cue-load attacker` flags (set by the parent).
#[derive(Debug, Clone, clap::Args)]
pub struct AttackerArgs {
    #[arg(long, value_enum)]
    kind: Kind,
    /// `ws://HOST:PORT`.
    #[arg(long)]
    relay: String,
    /// Sockets held at once.
    #[arg(long)]
    count: u32,
    /// Loopback addresses to spread them over.
    #[arg(long)]
    addrs: u8,
    /// Offset into those addresses, so processes do not all start on one.
    #[arg(long, default_value_t = 0)]
    first: u32,
    /// The room under attack.
    #[arg(long)]
    room: RoomId,
    /// The room's admission public key (what an eavesdropper saw), hex.
    #[arg(long)]
    public_key: String,
    /// The member to pose as.
    #[arg(long)]
    pose: PeerId,
}

/// What an attacker process reports when it is told to stop (stdin closes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttackerReport {
    /// Sockets opened.
    pub opened: u64,
    /// Sockets the relay closed (or refused).
    pub closed: u64,
    /// Connects that failed outright.
    pub connect_errors: u64,
    /// Close codes (WebSocket) or HTTP statuses the relay answered with.
    pub codes: Vec<(u16, u64)>,
    /// Median and largest time a closed socket was held, milliseconds.
    pub held_p50_ms: f64,
    pub held_max_ms: f64,
}

/// Counters the attacker tasks share.
#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    closed: AtomicU64,
    connect_errors: AtomicU64,
    codes: Mutex<BTreeMap<u16, u64>>,
    held_ms: Mutex<Vec<f64>>,
}

impl Tally {
    fn closed_after(&self, since: Instant, code: Option<u16>) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        let ms = since.elapsed().as_secs_f64() * 1000.0;
        self.held_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ms);
        if let Some(code) = code {
            *self
                .codes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(code)
                .or_default() += 1;
        }
    }

    fn report(&self) -> AttackerReport {
        let mut held = self
            .held_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        held.sort_by(f64::total_cmp);
        AttackerReport {
            opened: self.opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            connect_errors: self.connect_errors.load(Ordering::Relaxed),
            codes: self
                .codes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(c, n)| (*c, *n))
                .collect(),
            held_p50_ms: held.get(held.len() / 2).copied().unwrap_or(0.0),
            held_max_ms: held.last().copied().unwrap_or(0.0),
        }
    }
}

/// Runs an attacker process until its stdin closes, then prints its report
/// as one JSON line.
pub fn run_attacker(args: AttackerArgs) -> anyhow::Result<()> {
    sys::raise_open_files_limit().context("cannot read the open-files limit")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the attacker runtime")?;
    runtime.block_on(async move {
        let host = args
            .relay
            .strip_prefix("ws://")
            .context("--relay must be ws://HOST:PORT")?
            .trim_end_matches('/');
        let to: SocketAddr = tokio::net::lookup_host(host)
            .await?
            .next()
            .context("relay address does not resolve")?;
        let mut public_key = [0u8; 32];
        if args.public_key.len() != 64 {
            bail!("--public-key must be 64 hex characters");
        }
        for (i, byte) in public_key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&args.public_key[2 * i..2 * i + 2], 16)
                .context("--public-key is not hex")?;
        }
        let tally = Arc::new(Tally::default());
        for i in 0..args.count {
            let from = loopback(args.first + i, args.addrs);
            let tally = Arc::clone(&tally);
            let args = args.clone();
            tokio::spawn(async move {
                let mut n = u64::from(i);
                loop {
                    match args.kind {
                        Kind::Slowloris => slowloris_once(from, to, &tally).await,
                        Kind::Flood => {
                            flood_once(from, to, &args, &public_key, n, &tally).await;
                            n += 1;
                        }
                    }
                    sleep(REOPEN_PAUSE).await;
                }
            });
        }
        // The parent closes our stdin to stop us.
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while stdin.read(&mut sink).await.unwrap_or(0) > 0 {}
        println!("{}", serde_json::to_string(&tally.report())?);
        Ok(())
    })
}

/// Loopback address number `i` of `k`: 127.0.0.1, then 127.0.0.2 onwards.
fn loopback(i: u32, k: u8) -> [u8; 4] {
    let n = (i % u32::from(k.max(1))) as u8;
    [127, 0, 0, 1 + n]
}

async fn tcp_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// One slowloris socket, from connect until the relay closes it.
async fn slowloris_once(from: [u8; 4], to: SocketAddr, tally: &Tally) {
    let Ok(mut tcp) = tcp_from(from, to).await else {
        tally.connect_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tally.opened.fetch_add(1, Ordering::Relaxed);
    let since = Instant::now();
    let head = format!(
        "GET /v2/rooms/{} HTTP/1.1\r\nHost: {to}\r\n",
        "ab".repeat(32)
    );
    if tcp.write_all(head.as_bytes()).await.is_err() {
        tally.closed_after(since, None);
        return;
    }
    let trickle = b"X-Slow: keep-waiting\r\n";
    let mut at = 0usize;
    let mut buf = [0u8; 512];
    let mut answer = Vec::new();
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            () = sleep(TRICKLE_EVERY) => {
                let byte = [trickle[at % trickle.len()]];
                at += 1;
                if tcp.write_all(&byte).await.is_err() {
                    break;
                }
            }
        }
    }
    tally.closed_after(since, http_status(&answer));
}

/// The status of an HTTP response, if one came back.
fn http_status(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

type Ws = WebSocketStream<TcpStream>;

async fn upgrade(from: [u8; 4], to: SocketAddr, path: &str) -> Option<Ws> {
    let tcp = tcp_from(from, to).await.ok()?;
    let request = format!("ws://{to}{path}").into_client_request().ok()?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    client_async_with_config(request, tcp, Some(config))
        .await
        .ok()
        .map(|(ws, _)| ws)
}

/// The code of the close that ends `ws` (1006 for none).
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(close))) => return close.map_or(1005, |c| u16::from(c.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return 1006,
        }
    }
}

/// One unauthenticated join, from connect until the relay closes it; what it
/// tries depends on `n`.
async fn flood_once(
    from: [u8; 4],
    to: SocketAddr,
    args: &AttackerArgs,
    public_key: &[u8; 32],
    n: u64,
    tally: &Tally,
) {
    let since = Instant::now();
    let path = if n % 4 == 3 {
        format!("/v1/rooms/{}?peer={}", args.room, args.pose)
    } else {
        format!("/v2/rooms/{}", args.room)
    };
    let Some(mut ws) = upgrade(from, to, &path).await else {
        tally.connect_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tally.opened.fetch_add(1, Ordering::Relaxed);
    if n % 4 != 3 {
        let challenge = loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => match Challenge::decode(&bytes) {
                    Ok(challenge) => break Some(challenge),
                    Err(_) => break None,
                },
                Some(Ok(Message::Close(close))) => {
                    let code = close.map_or(1005, |c| u16::from(c.code));
                    tally.closed_after(since, Some(code));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        let Some(challenge) = challenge else {
            tally.closed_after(since, Some(1006));
            return;
        };
        let answer = match n % 4 {
            // Silent: hold the connection, answer nothing.
            0 => None,
            // Pose as the member, with a data frame instead of an Auth.
            1 => Some(Frame::broadcast(
                args.room,
                args.pose,
                b"i am the member".to_vec(),
            )),
            // The room's public key with a forged signature.
            _ => Some(
                AuthProof {
                    public_key: *public_key,
                    signature: [0x5a; SIGNATURE_LEN],
                }
                .to_frame(&challenge),
            ),
        };
        if let Some(frame) = answer {
            let _ = ws.send(Message::Binary(frame.encode().into())).await;
        }
    }
    let code = close_code(&mut ws).await;
    tally.closed_after(since, Some(code));
}

/// One round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// First member: TCP connect to Welcome, retries included, ms.
    pub admit_a_ms: f64,
    /// Second member, the same.
    pub admit_b_ms: f64,
    /// Sealed frame A → B and B's sealed reply → A, ms.
    pub round_trip_ms: f64,
    /// From A's first connect to A opening B's reply, ms.
    pub join_to_sync_ms: f64,
    /// Connection attempts that had to be retried (shed by the relay).
    pub retries: u32,
}

/// A member's connection, admitted.
struct Member {
    ws: Ws,
    me: PeerId,
}

/// Connects and passes admission, retrying what the relay sheds, until
/// `MEMBER_DEADLINE`. Returns the member and the attempts that failed.
async fn join(to: SocketAddr, key: &WorkspaceKey) -> anyhow::Result<(Member, u32)> {
    let admission = key.admission_key();
    let path = format!("/v2/rooms/{}", admission.room_id());
    let deadline = Instant::now() + MEMBER_DEADLINE;
    let mut retries = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = async {
            let mut ws = upgrade([127, 0, 0, 1], to, &path)
                .await
                .context("upgrade failed")?;
            let challenge = next_binary(&mut ws).await?;
            let (me, auth) = admission.answer(&challenge)?;
            ws.send(Message::Binary(auth.encode().into())).await?;
            let welcome = next_binary(&mut ws).await?;
            let frame = FrameRef::decode(&welcome)?;
            if frame.header.kind != FrameKind::Welcome || frame.header.recipient != me {
                bail!("no Welcome for us");
            }
            anyhow::Ok(Member { ws, me })
        };
        match timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(member)) => return Ok((member, retries)),
            Ok(Err(err)) => last = format!("{err:#}"),
            Err(_) => last = "timed out".into(),
        }
        retries += 1;
        sleep(Duration::from_millis(20)).await;
    }
    bail!("a member could not join in {MEMBER_DEADLINE:?}: {last}")
}

async fn next_binary(ws: &mut Ws) -> anyhow::Result<Vec<u8>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes.to_vec()),
            Some(Ok(Message::Close(close))) => {
                bail!("closed: {:?}", close.map(|c| (u16::from(c.code), c.reason)))
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("connection ended"),
        }
    }
}

/// A sealed Direct frame from `from` to `to`.
fn sealed(sealer: &Sealer, room: RoomId, from: PeerId, to: PeerId, body: &[u8], n: u64) -> Vec<u8> {
    let header = Header {
        kind: FrameKind::Direct,
        room,
        sender: from,
        recipient: to,
    };
    let mut nonce = [0u8; 24];
    nonce[..8].copy_from_slice(&n.to_be_bytes());
    nonce[8..12].copy_from_slice(&from.0[..4]);
    Frame {
        header,
        payload: sealer.seal(&header, body, nonce),
    }
    .encode()
}

/// Waits for a Direct frame from `from` that opens, and returns its plaintext.
async fn open_from(ws: &mut Ws, sealer: &Sealer, from: PeerId) -> anyhow::Result<Vec<u8>> {
    loop {
        let bytes = next_binary(ws).await?;
        let frame = FrameRef::decode(&bytes)?;
        if frame.header.kind == FrameKind::Direct && frame.header.sender == from {
            return Ok(sealer.open(&frame.header, frame.payload)?);
        }
    }
}

async fn round(to: SocketAddr, key: &WorkspaceKey, n: u64) -> anyhow::Result<Round> {
    let sealer = key.sealer();
    let room = key.room_id();
    let started = Instant::now();
    let (mut a, retries_a) = join(to, key).await?;
    let admit_a = started.elapsed();
    let b_started = Instant::now();
    let (mut b, retries_b) = join(to, key).await?;
    let admit_b = b_started.elapsed();
    let sent = Instant::now();
    a.ws.send(Message::Binary(
        sealed(&sealer, room, a.me, b.me, b"ping", 2 * n).into(),
    ))
    .await?;
    let ping = timeout(MEMBER_DEADLINE, open_from(&mut b.ws, &sealer, a.me)).await??;
    if ping != b"ping" {
        bail!("B opened {ping:?}, not the ping");
    }
    b.ws.send(Message::Binary(
        sealed(&sealer, room, b.me, a.me, b"pong", 2 * n + 1).into(),
    ))
    .await?;
    let pong = timeout(MEMBER_DEADLINE, open_from(&mut a.ws, &sealer, b.me)).await??;
    if pong != b"pong" {
        bail!("A opened {pong:?}, not the pong");
    }
    let round = Round {
        admit_a_ms: ms(admit_a),
        admit_b_ms: ms(admit_b),
        round_trip_ms: ms(sent.elapsed()),
        join_to_sync_ms: ms(started.elapsed()),
        retries: retries_a + retries_b,
    };
    let _ = a.ws.close(None).await;
    let _ = b.ws.close(None).await;
    Ok(round)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Everything `cue-load attack` measured.
#[derive(Debug, Clone, Serialize)]
pub struct AttackReport {
    pub relay_kind: String,
    pub cores: usize,
    pub slowloris: u32,
    pub flood: u32,
    pub attack_addrs: u8,
    pub attack_secs: f64,
    pub rounds: Vec<Round>,
    pub failed_rounds: Vec<String>,
    /// Whether the resident member (the one the flood posed as) stayed seated.
    pub resident_kept: bool,
    pub slowloris_report: AttackerReport,
    pub flood_report: AttackerReport,
    /// The relay's counters at the end (shed reasons, admissions).
    pub relay_metrics: BTreeMap<String, f64>,
    pub relay_cpu_percent: Option<f64>,
    pub relay_peak_rss_mib: Option<f64>,
    pub target_ms: f64,
    pub passed: bool,
}

/// Runs the attack and the member rounds; returns the report.
pub async fn run(args: AttackArgs) -> anyhow::Result<AttackReport> {
    sys::raise_open_files_limit().context("cannot read the open-files limit")?;
    let (url, process, relay_kind) = start_relay(&args).await?;
    let result = attack(&args, &url, process.as_ref().map(|p| p.pid), relay_kind).await;
    if let Some(process) = process {
        if let Err(err) = process.stop().await {
            eprintln!("cue-load: {err:#}");
        }
    }
    result
}

async fn start_relay(args: &AttackArgs) -> anyhow::Result<(String, Option<RelayProcess>, String)> {
    if let Some(url) = &args.relay {
        return Ok((
            url.trim_end_matches('/').to_owned(),
            None,
            "external".into(),
        ));
    }
    let (program, mut relay_args, kind) = match &args.relay_bin {
        Some(path) => (path.clone(), Vec::new(), path.display().to_string()),
        None => (
            std::env::current_exe().context("cannot find this executable")?,
            vec!["relay".to_owned()],
            "built-in (cue-relay library)".to_owned(),
        ),
    };
    relay_args.extend(args.relay_arg.iter().cloned());
    let process = RelayProcess::start(&program, &relay_args).await?;
    Ok((process.url.clone(), Some(process), kind))
}

struct Attacker {
    kind: Kind,
    child: tokio::process::Child,
}

async fn spawn_attackers(
    kind: Kind,
    total: u32,
    url: &str,
    args: &AttackArgs,
    room: RoomId,
    public_key: &str,
    pose: PeerId,
) -> anyhow::Result<Vec<Attacker>> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let procs = total.div_ceil(SOCKETS_PER_ATTACKER);
    let mut attackers = Vec::new();
    for p in 0..procs {
        let count = total / procs + u32::from(p < total % procs);
        let mut command = Process::new(&exe);
        command
            .arg("attacker")
            .args([
                "--kind",
                if kind == Kind::Slowloris {
                    "slowloris"
                } else {
                    "flood"
                },
            ])
            .args(["--relay", url])
            .args(["--count", &count.to_string()])
            .args(["--addrs", &args.attack_addrs.to_string()])
            .args(["--first", &p.to_string()])
            .args(["--room", &room.to_string()])
            .args(["--public-key", public_key])
            .args(["--pose", &pose.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        sys::die_with_parent(&mut command);
        let child = command.spawn().context("cannot start an attacker")?;
        attackers.push(Attacker { kind, child });
    }
    Ok(attackers)
}

/// Tells each attacker to stop and merges what they report, per kind.
async fn stop_attackers(attackers: Vec<Attacker>) -> (AttackerReport, AttackerReport) {
    let mut reports = (AttackerReport::default(), AttackerReport::default());
    for mut attacker in attackers {
        drop(attacker.child.stdin.take());
        let Some(stdout) = attacker.child.stdout.take() else {
            continue;
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout(Duration::from_secs(10), lines.next_line()).await;
        let _ = attacker.child.kill().await;
        let Ok(Ok(Some(line))) = line else { continue };
        let Ok(report) = serde_json::from_str::<AttackerReport>(&line) else {
            continue;
        };
        let into = if attacker.kind == Kind::Slowloris {
            &mut reports.0
        } else {
            &mut reports.1
        };
        merge(into, report);
    }
    reports
}

fn merge(into: &mut AttackerReport, from: AttackerReport) {
    into.opened += from.opened;
    into.closed += from.closed;
    into.connect_errors += from.connect_errors;
    let mut codes: BTreeMap<u16, u64> = into.codes.iter().copied().collect();
    for (code, n) in from.codes {
        *codes.entry(code).or_default() += n;
    }
    into.codes = codes.into_iter().collect();
    into.held_p50_ms = into.held_p50_ms.max(from.held_p50_ms);
    into.held_max_ms = into.held_max_ms.max(from.held_max_ms);
}

async fn attack(
    args: &AttackArgs,
    url: &str,
    relay_pid: Option<u32>,
    relay_kind: String,
) -> anyhow::Result<AttackReport> {
    let host = url
        .strip_prefix("ws://")
        .context("the relay URL must be ws://")?;
    let to: SocketAddr = tokio::net::lookup_host(host)
        .await?
        .next()
        .context("the relay address does not resolve")?;
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&crate::proto::unix_ns().to_be_bytes());
    seed[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    seed[12..20].copy_from_slice(b"cue-load");
    let key = WorkspaceKey::from_bytes(seed);
    let admission = key.admission_key();
    let public_key: String = admission
        .public_key()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    // The resident member, seated before the attack; the flood poses as it.
    let (resident, _) = join(to, &key).await.context("the resident member")?;
    let pose = resident.me;
    let resident_task = tokio::spawn(async move {
        let mut ws = resident.ws;
        // Reading answers the relay's pings; ends only when the relay closes it.
        close_code(&mut ws).await
    });

    let before = relay_pid.and_then(|pid| sys::sample(pid).ok());
    let attack_started = Instant::now();
    eprintln!(
        "cue-load attack: relay {url} ({relay_kind}); {} slowloris sockets and {} unauthenticated joins from {} addresses",
        args.slowloris, args.flood, args.attack_addrs
    );
    let room = key.room_id();
    let mut attackers = Vec::new();
    if args.slowloris > 0 {
        attackers.extend(
            spawn_attackers(
                Kind::Slowloris,
                args.slowloris,
                url,
                args,
                room,
                &public_key,
                pose,
            )
            .await?,
        );
    }
    if args.flood > 0 {
        attackers.extend(
            spawn_attackers(Kind::Flood, args.flood, url, args, room, &public_key, pose).await?,
        );
    }
    sleep(Duration::from_secs_f64(args.warmup_secs.max(0.0))).await;
    if let Ok(m) = scrape_metrics(url).await {
        let get = |name: &str| m.get(name).copied().unwrap_or(0.0);
        eprintln!(
            "cue-load attack: after the warm-up: {} unadmitted connections held, {} evicted, {} header timeouts",
            get("cue_relay_unadmitted"),
            get("cue_relay_unadmitted_evicted_total"),
            get("cue_relay_header_timeouts_total"),
        );
    }

    let mut rounds = Vec::new();
    let mut failed_rounds = Vec::new();
    for n in 0..args.rounds {
        match round(to, &key, u64::from(n)).await {
            Ok(r) => {
                eprintln!(
                    "cue-load attack: round {}: admitted in {:.1} / {:.1} ms, round trip {:.1} ms, join to sync {:.1} ms",
                    n + 1,
                    r.admit_a_ms,
                    r.admit_b_ms,
                    r.round_trip_ms,
                    r.join_to_sync_ms
                );
                rounds.push(r);
            }
            Err(err) => {
                eprintln!("cue-load attack: round {} failed: {err:#}", n + 1);
                failed_rounds.push(format!("round {}: {err:#}", n + 1));
            }
        }
        sleep(Duration::from_millis(args.round_gap_ms)).await;
    }
    let attack_secs = attack_started.elapsed().as_secs_f64();
    let after = relay_pid.and_then(|pid| sys::sample(pid).ok());
    let relay_metrics = scrape_metrics(url).await.unwrap_or_default();
    let (slowloris_report, flood_report) = stop_attackers(attackers).await;
    let resident_kept = !resident_task.is_finished();
    resident_task.abort();

    let relay_cpu_percent = match (before, after) {
        (Some(b), Some(a)) => Some(
            a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64
                / sys::clock_ticks_per_sec() as f64
                / attack_secs
                * 100.0,
        ),
        _ => None,
    };
    let passed = failed_rounds.is_empty()
        && resident_kept
        && rounds.iter().all(|r| r.join_to_sync_ms < args.target_ms);
    Ok(AttackReport {
        relay_kind,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        slowloris: args.slowloris,
        flood: args.flood,
        attack_addrs: args.attack_addrs,
        attack_secs,
        rounds,
        failed_rounds,
        resident_kept,
        slowloris_report,
        flood_report,
        relay_metrics,
        relay_cpu_percent,
        relay_peak_rss_mib: after.map(|s| s.peak_rss_kib as f64 / 1024.0),
        target_ms: args.target_ms,
        passed,
    })
}

/// Median and largest of a column.
fn p50_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    (
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

fn codes_text(codes: &[(u16, u64)]) -> String {
    if codes.is_empty() {
        return "-".into();
    }
    codes
        .iter()
        .map(|(c, n)| format!("{c}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl AttackReport {
    /// The report as text tables.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "cue-load attack: relay {}, {} cores shared by the relay, the attackers and the members\n\
             attack: {} slowloris sockets + {} unauthenticated joins, from {} loopback addresses, {:.1} s\n\n",
            self.relay_kind, self.cores, self.slowloris, self.flood, self.attack_addrs, self.attack_secs
        );
        let mut rows = vec![vec![
            "round".to_owned(),
            "admit A ms".to_owned(),
            "admit B ms".to_owned(),
            "sealed round trip ms".to_owned(),
            "join to sync ms".to_owned(),
            "retries".to_owned(),
        ]];
        for (i, r) in self.rounds.iter().enumerate() {
            rows.push(vec![
                format!("{}", i + 1),
                format!("{:.1}", r.admit_a_ms),
                format!("{:.1}", r.admit_b_ms),
                format!("{:.1}", r.round_trip_ms),
                format!("{:.1}", r.join_to_sync_ms),
                r.retries.to_string(),
            ]);
        }
        let admit = p50_max(
            self.rounds
                .iter()
                .flat_map(|r| [r.admit_a_ms, r.admit_b_ms]),
        );
        let rtt = p50_max(self.rounds.iter().map(|r| r.round_trip_ms));
        let sync = p50_max(self.rounds.iter().map(|r| r.join_to_sync_ms));
        rows.push(vec![
            "p50 / max".to_owned(),
            format!("{:.1} / {:.1}", admit.0, admit.1),
            String::new(),
            format!("{:.1} / {:.1}", rtt.0, rtt.1),
            format!("{:.1} / {:.1}", sync.0, sync.1),
            String::new(),
        ]);
        out.push_str(&crate::report::render_table(&rows));
        for failed in &self.failed_rounds {
            out.push_str(&format!("FAILED {failed}\n"));
        }

        let m = |name: &str| {
            self.relay_metrics
                .get(name)
                .map_or("-".to_owned(), |v| format!("{v}"))
        };
        let mut rows = vec![vec![
            "attacker".to_owned(),
            "opened".to_owned(),
            "closed by relay".to_owned(),
            "held p50 / max ms".to_owned(),
            "answers (close code or HTTP status × count)".to_owned(),
        ]];
        for (name, r) in [
            ("slowloris", &self.slowloris_report),
            ("flood", &self.flood_report),
        ] {
            rows.push(vec![
                name.to_owned(),
                r.opened.to_string(),
                r.closed.to_string(),
                format!("{:.0} / {:.0}", r.held_p50_ms, r.held_max_ms),
                codes_text(&r.codes),
            ]);
        }
        out.push('\n');
        out.push_str(&crate::report::render_table(&rows));
        out.push_str(&format!(
            "\nrelay: cpu {} , peak RSS {} MiB; admitted {}, unadmitted now {}; shed: header timeouts {}, admission timeouts {}, refused (4401) {}, not auth first {}, v1 {}, evicted unadmitted {}, per-IP refused {}, accept errors {}\n",
            self.relay_cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
            self.relay_peak_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
            m("cue_relay_admitted_total"),
            m("cue_relay_unadmitted"),
            m("cue_relay_header_timeouts_total"),
            m("cue_relay_admission_timeouts_total"),
            m("cue_relay_admission_refused_total"),
            m("cue_relay_admission_not_auth_total"),
            m("cue_relay_outdated_clients_total"),
            m("cue_relay_unadmitted_evicted_total"),
            m("cue_relay_per_ip_refused_total"),
            m("cue_relay_accept_errors_total"),
        ));
        out.push_str(&format!(
            "resident member (posed as by the flood) kept its seat: {}\n",
            if self.resident_kept { "yes" } else { "NO" }
        ));
        out.push_str(&format!(
            "target: every member admitted and syncing within {:.0} ms: {}\n",
            self.target_ms,
            if self.passed { "PASS" } else { "FAIL" }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use cue_wire::close;

    use super::*;

    #[test]
    fn loopback_addresses_start_at_the_members_own() {
        assert_eq!(loopback(0, 8), [127, 0, 0, 1]);
        assert_eq!(loopback(9, 8), [127, 0, 0, 2]);
        assert_eq!(loopback(5, 1), [127, 0, 0, 1]);
    }

    #[test]
    fn http_statuses_are_read() {
        assert_eq!(http_status(b"HTTP/1.1 429 Too Many"), Some(429));
        assert_eq!(http_status(b""), None);
        assert_eq!(http_status(b"\x88\x02"), None);
    }

    #[test]
    fn close_codes_read_well() {
        assert_eq!(codes_text(&[(close::ADMISSION_REFUSED, 3)]), "4401×3");
        assert_eq!(codes_text(&[]), "-");
    }
}
