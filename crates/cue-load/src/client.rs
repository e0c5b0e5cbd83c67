//! One client process (`cue-load client`, started by the parent): holds its
//! share of the connections, sends its share of the broadcasts, and measures
//! every delivery it receives.
//!
//! Connections are spread over several processes because one process may hold
//! at most 20,000 open files here, and so that the receivers are not one
//! process's event loop. Each process runs a single-threaded runtime: the
//! machine has two cores shared with the relay, and threads would only add
//! contention. Per connection there is a reader task (records latency, keeps
//! per-sender order) and a writer task (drains a small queue, so one slow
//! socket never stalls the sender).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use cue_wire::{AdmissionKey, Frame, FrameKind, FrameRef, PeerId, RoomId};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{interval, sleep, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use crate::hist::AtomicHistogram;
use crate::proto::{unix_ns, Command, Layout, Reply, Stamp, MAX_STEPS};
use crate::sys;

/// Frames waiting to be written on one connection. Each connection sends a
/// message every few seconds at most, so a full queue means this process is
/// starved of CPU; the sender then skips (and counts) rather than waits.
const SEND_QUEUE: usize = 32;

/// Failure messages kept per Connect, to explain failures without flooding.
const ERRORS_KEPT: usize = 5;

/// Close code recorded when a connection ends without a close frame.
const ABNORMAL: u16 = 1006;

/// Everything a client process needs, from the parent's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Relay base URL, `ws://HOST:PORT`.
    #[arg(long)]
    relay: String,
    /// This process's number, 0-based.
    #[arg(long)]
    index: u32,
    /// Client processes in the run.
    #[arg(long)]
    procs: u32,
    /// Connections over all processes.
    #[arg(long)]
    connections: u32,
    /// Peers per room.
    #[arg(long)]
    room_size: u32,
    /// The run's nonce, which all ids derive from.
    #[arg(long)]
    nonce: u64,
    /// Bytes of payload per broadcast.
    #[arg(long)]
    payload_bytes: usize,
    /// Connection attempts in flight at once in this process.
    #[arg(long)]
    connect_concurrency: usize,
    /// Seconds one connection attempt (TCP, upgrade, Welcome) may take.
    #[arg(long)]
    connect_timeout_secs: u64,
}

/// Runs a client process until the parent says Quit or closes its stdin.
pub fn run(args: ClientArgs) -> anyhow::Result<()> {
    let layout = Layout {
        nonce: args.nonce,
        connections: args.connections,
        room_size: args.room_size.max(1),
        procs: args.procs.max(1),
    };
    let mine = layout.connections_of(args.index).count();
    let limit = sys::raise_open_files_limit().context("cannot read the open-files limit")?;
    if (mine as u64) + 64 > limit {
        bail!(
            "{mine} connections need more than this process's open-files limit ({limit}); \
             use more processes (--procs)"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the client runtime")?;
    runtime.block_on(Client::new(&args, layout)?.serve())
}

/// Per-step counters, shared by every reader task.
#[derive(Debug, Default)]
struct StepStats {
    received: AtomicU64,
    latency_us: AtomicHistogram,
}

/// What the reader tasks record, read by the command loop.
#[derive(Debug)]
struct Stats {
    steps: Vec<StepStats>,
    out_of_order: AtomicU64,
    closes: Mutex<BTreeMap<u16, u64>>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            steps: (0..MAX_STEPS).map(|_| StepStats::default()).collect(),
            out_of_order: AtomicU64::new(0),
            closes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one received WebSocket message. `now_ns` is read before
    /// decoding, so the latency does not include this process's parsing.
    fn on_message(&self, bytes: &[u8], now_ns: u64, last_seq: &mut HashMap<u32, u64>) {
        let Ok(frame) = FrameRef::decode(bytes) else {
            return;
        };
        if frame.header.kind != FrameKind::Broadcast {
            return; // Welcome, PeerJoined, PeerLeft: membership, not load
        }
        let Some(stamp) = Stamp::decode(frame.payload) else {
            return;
        };
        if let Some(step) = self.steps.get(stamp.step as usize) {
            step.received.fetch_add(1, Ordering::Relaxed);
            step.latency_us
                .record(now_ns.saturating_sub(stamp.sent_unix_ns) / 1000);
        }
        if let Some(previous) = last_seq.insert(stamp.sender, stamp.seq) {
            if previous >= stamp.seq {
                self.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn closed(&self, code: u16) {
        let mut closes = self.closes.lock().unwrap_or_else(PoisonError::into_inner);
        *closes.entry(code).or_default() += 1;
    }

    fn take_closes(&self) -> Vec<(u16, u64)> {
        let mut closes = self.closes.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *closes).into_iter().collect()
    }
}

/// How to open one connection; shared by the concurrent attempts.
#[derive(Debug)]
struct Dialer {
    base_url: String,
    tcp_addr: String,
    token: Option<String>,
    ws_config: WebSocketConfig,
    timeout: Duration,
    stats: Arc<Stats>,
}

/// An open connection: where to queue frames, whether it is still open, and
/// the peer id the relay assigned it.
#[derive(Debug)]
struct Conn {
    queue: mpsc::Sender<Message>,
    alive: Arc<AtomicBool>,
    peer: PeerId,
}

impl Conn {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

/// One of this process's connections, open or not.
#[derive(Debug)]
struct Slot {
    g: u32,
    room: u32,
    room_id: RoomId,
    /// The room's admission key (shared by every slot of the room).
    key: Arc<AdmissionKey>,
    /// Next sequence number; survives reconnects so receivers never see it go back.
    seq: u64,
    conn: Option<Conn>,
}

impl Slot {
    fn is_open(&self) -> bool {
        self.conn.as_ref().is_some_and(Conn::is_alive)
    }
}

struct Client {
    dialer: Arc<Dialer>,
    slots: Vec<Slot>,
    payload_bytes: usize,
    concurrency: usize,
    room_size: u32,
}

impl Client {
    fn new(args: &ClientArgs, layout: Layout) -> anyhow::Result<Client> {
        let base_url = args.relay.trim_end_matches('/').to_owned();
        let tcp_addr = base_url
            .strip_prefix("ws://")
            .with_context(|| format!("relay URL {base_url:?} must start with ws://"))?
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let token = std::env::var(crate::AUTH_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty());
        let stats = Arc::new(Stats::new());
        let mut keys: HashMap<u32, Arc<AdmissionKey>> = HashMap::new();
        let slots = layout
            .connections_of(args.index)
            .map(|g| {
                let room = layout.room_of(g);
                let key = Arc::clone(
                    keys.entry(room)
                        .or_insert_with(|| Arc::new(layout.room_key(room))),
                );
                Slot {
                    g,
                    room,
                    room_id: key.room_id(),
                    key,
                    seq: 0,
                    conn: None,
                }
            })
            .collect();
        Ok(Client {
            dialer: Arc::new(Dialer {
                base_url,
                tcp_addr,
                token,
                // Small buffers: thousands of connections, small frames. The
                // default 128 KiB read buffer would cost 320 MB per process.
                ws_config: WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
                    .write_buffer_size(0),
                timeout: Duration::from_secs(args.connect_timeout_secs.max(1)),
                stats,
            }),
            slots,
            payload_bytes: args.payload_bytes,
            concurrency: args.connect_concurrency.max(1),
            room_size: layout.room_size,
        })
    }

    /// Reads commands from stdin, one JSON line each, and answers on stdout.
    async fn serve(mut self) -> anyhow::Result<()> {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
            if line.trim().is_empty() {
                continue;
            }
            let reply = match serde_json::from_str::<Command>(&line) {
                Ok(Command::Quit) => {
                    self.quit().await;
                    answer(&Reply::Bye)?;
                    return Ok(());
                }
                Ok(command) => self.handle(command).await,
                Err(err) => Reply::Error {
                    message: format!("bad command {line:?}: {err}"),
                },
            };
            answer(&reply)?;
        }
        // The parent went away: nothing left to measure for.
        self.quit().await;
        Ok(())
    }

    async fn handle(&mut self, command: Command) -> Reply {
        match command {
            Command::Connect => self.connect_missing().await,
            Command::Step {
                step,
                rate,
                start_unix_ns,
                duration_ms,
            } => {
                if step as usize >= MAX_STEPS {
                    return Reply::Error {
                        message: format!("step {step} is beyond the last one ({MAX_STEPS})"),
                    };
                }
                self.send_step(step, rate, start_unix_ns, duration_ms).await
            }
            Command::Count { step } => Reply::Counted {
                received: self
                    .step_stats(step)
                    .map_or(0, |s| s.received.load(Ordering::Relaxed)),
            },
            Command::Report { step } => {
                let stats = &self.dialer.stats;
                let (received, latency_us) = match self.step_stats(step) {
                    Some(s) => (s.received.load(Ordering::Relaxed), s.latency_us.snapshot()),
                    None => (0, Default::default()),
                };
                Reply::Report {
                    received,
                    latency_us,
                    out_of_order: stats.out_of_order.load(Ordering::Relaxed),
                    held: self.held(),
                    closes: stats.take_closes(),
                }
            }
            Command::Quit => Reply::Bye,
        }
    }

    fn step_stats(&self, step: u32) -> Option<&StepStats> {
        self.dialer.stats.steps.get(step as usize)
    }

    fn held(&self) -> u64 {
        self.slots.iter().filter(|s| s.is_open()).count() as u64
    }

    /// Opens every connection that is not open, `concurrency` at a time, so the
    /// relay's accept queue is never flooded with thousands of handshakes at once.
    async fn connect_missing(&mut self) -> Reply {
        let started = Instant::now();
        let missing: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].is_open())
            .collect();
        let attempts = missing.into_iter().map(|i| {
            let dialer = Arc::clone(&self.dialer);
            let key = Arc::clone(&self.slots[i].key);
            async move { (i, dialer.open(&key).await) }
        });
        let results: Vec<_> = futures_util::stream::iter(attempts)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut failed = 0;
        let mut errors = Vec::new();
        for (i, result) in results {
            match result {
                Ok(conn) => self.slots[i].conn = Some(conn),
                Err(err) => {
                    failed += 1;
                    if errors.len() < ERRORS_KEPT {
                        errors.push(format!("connection {}: {err:#}", self.slots[i].g));
                    }
                }
            }
        }
        let mut held_by_room: BTreeMap<u32, u32> = BTreeMap::new();
        for slot in self.slots.iter().filter(|s| s.is_open()) {
            *held_by_room.entry(slot.room).or_default() += 1;
        }
        Reply::Connected {
            held: self.held(),
            failed,
            errors,
            held_by_room: held_by_room.into_iter().collect(),
            closes: self.dialer.stats.take_closes(),
            secs: started.elapsed().as_secs_f64(),
        }
    }

    /// Sends `rate` broadcasts per second from `start_unix_ns` for `duration_ms`,
    /// round-robin over the open connections, so each peer sends at
    /// rate / connections: far below the relay's 100/s per-peer limit.
    ///
    /// The schedule is absolute (messages due = rate × elapsed), so a process
    /// that falls behind catches up instead of silently offering less; how far
    /// behind it fell is reported.
    async fn send_step(
        &mut self,
        step: u32,
        rate: f64,
        start_unix_ns: u64,
        duration_ms: u64,
    ) -> Reply {
        let wait = Duration::from_nanos(start_unix_ns.saturating_sub(unix_ns()));
        let start = Instant::now() + wait;
        sleep_until(start).await;
        let duration = Duration::from_millis(duration_ms);
        // Consecutive messages go to different rooms (first member of every
        // room, then the second...), so no room gets a burst while others idle.
        let mut senders: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_open())
            .collect();
        senders.sort_by_key(|&i| (self.slots[i].g % self.room_size, self.slots[i].room));
        let mut sent_by_room: BTreeMap<u32, u64> = BTreeMap::new();
        let (mut sent, mut skipped, mut max_behind) = (0u64, 0u64, 0u64);
        let mut cursor = 0usize;
        let mut tick = interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        'sending: while !senders.is_empty() && rate > 0.0 {
            tick.tick().await;
            let elapsed = start.elapsed().min(duration);
            let due = (rate * elapsed.as_secs_f64()) as u64;
            max_behind = max_behind.max(due.saturating_sub(sent + skipped));
            while sent + skipped < due {
                // Find the next open connection; stop if none is left.
                let mut tries = 0;
                let slot = loop {
                    let slot = &mut self.slots[senders[cursor % senders.len()]];
                    cursor += 1;
                    if slot.is_open() {
                        break slot;
                    }
                    tries += 1;
                    if tries >= senders.len() {
                        break 'sending;
                    }
                };
                let Some(conn) = &slot.conn else { continue };
                let payload = Stamp {
                    step,
                    sender: slot.g,
                    seq: slot.seq,
                    sent_unix_ns: unix_ns(),
                }
                .encode(self.payload_bytes);
                let frame = Frame::broadcast(slot.room_id, conn.peer, payload).encode();
                match conn.queue.try_send(Message::Binary(frame.into())) {
                    Ok(()) => {
                        sent += 1;
                        slot.seq += 1;
                        *sent_by_room.entry(slot.room).or_default() += 1;
                    }
                    Err(TrySendError::Full(_)) => skipped += 1,
                    // The writer is gone: the connection is closing; try the next one.
                    Err(TrySendError::Closed(_)) => {}
                }
            }
            if elapsed >= duration {
                break;
            }
        }
        Reply::Sent {
            sent_by_room: sent_by_room.into_iter().collect(),
            skipped,
            max_behind_ms: if rate > 0.0 {
                max_behind as f64 / rate * 1000.0
            } else {
                0.0
            },
            secs: start.elapsed().as_secs_f64().min(duration.as_secs_f64()),
        }
    }

    /// Closes every connection (close frames are sent by the writers) and
    /// gives them a moment to go out.
    async fn quit(&mut self) {
        for slot in &mut self.slots {
            slot.conn = None;
        }
        sleep(Duration::from_millis(300)).await;
    }
}

impl Dialer {
    /// TCP connect, WebSocket upgrade, room admission and the relay's
    /// Welcome: a connection counts as held only once the relay has seated
    /// it in its room.
    async fn open(&self, key: &AdmissionKey) -> anyhow::Result<Conn> {
        let (ws, peer) = timeout(self.timeout, self.handshake(key))
            .await
            .with_context(|| format!("no Welcome within {:?}", self.timeout))??;
        let (sink, stream) = ws.split();
        let (queue, outgoing) = mpsc::channel(SEND_QUEUE);
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(write_loop(sink, outgoing));
        tokio::spawn(read_loop(
            stream,
            Arc::clone(&self.stats),
            Arc::clone(&alive),
        ));
        Ok(Conn { queue, alive, peer })
    }

    async fn handshake(
        &self,
        key: &AdmissionKey,
    ) -> anyhow::Result<(WebSocketStream<TcpStream>, PeerId)> {
        let tcp = TcpStream::connect(&self.tcp_addr)
            .await
            .with_context(|| format!("TCP connect to {}", self.tcp_addr))?;
        // Small frames must leave at once, not wait for Nagle's algorithm.
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let url = format!("{}/v2/rooms/{}", self.base_url, key.room_id());
        let mut request = url
            .as_str()
            .into_client_request()
            .context("bad relay URL")?;
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the auth token is not a valid header value")?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let (mut ws, _) = client_async_with_config(request, tcp, Some(self.ws_config))
            .await
            .context("WebSocket upgrade")?;
        let challenge = next_binary(&mut ws, "Challenge").await?;
        let (peer, auth) = key.answer(&challenge).context("bad challenge")?;
        ws.send(Message::Binary(auth.encode().into()))
            .await
            .context("sending the Auth frame")?;
        let welcome = next_binary(&mut ws, "Welcome").await?;
        let frame = FrameRef::decode(&welcome).context("bad frame after the Auth")?;
        if frame.header.kind != FrameKind::Welcome {
            bail!(
                "the frame after the Auth was {}, not Welcome",
                frame.header.kind
            );
        }
        Ok((ws, peer))
    }
}

/// The next binary message, or why there is none; `what` names it in errors.
async fn next_binary(ws: &mut WebSocketStream<TcpStream>, what: &str) -> anyhow::Result<Vec<u8>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes.to_vec()),
            Some(Ok(Message::Close(close))) => match close {
                Some(close) => bail!(
                    "relay closed it before the {what}: {} {}",
                    u16::from(close.code),
                    close.reason
                ),
                None => bail!("relay closed it before the {what}"),
            },
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err).with_context(|| format!("reading the {what}")),
            None => bail!("connection ended before the {what}"),
        }
    }
}

/// Writes queued frames, several per flush when they pile up, then closes
/// the WebSocket once the slot lets go of the queue.
async fn write_loop(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut outgoing: mpsc::Receiver<Message>,
) {
    while let Some(message) = outgoing.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(more) = outgoing.try_recv() {
            if sink.feed(more).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Records every delivery until the connection ends, then marks it closed
/// with the relay's close code (1006 if there was none).
async fn read_loop(
    mut stream: SplitStream<WebSocketStream<TcpStream>>,
    stats: Arc<Stats>,
    alive: Arc<AtomicBool>,
) {
    let mut last_seq = HashMap::new();
    let code = loop {
        match stream.next().await {
            Some(Ok(Message::Binary(bytes))) => stats.on_message(&bytes, unix_ns(), &mut last_seq),
            Some(Ok(Message::Close(close))) => break close.map_or(ABNORMAL, |c| u16::from(c.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break ABNORMAL,
        }
    };
    alive.store(false, Ordering::Release);
    stats.closed(code);
}

/// Writes one reply line to stdout, where the parent reads it.
fn answer(reply: &Reply) -> anyhow::Result<()> {
    let line = serde_json::to_string(reply).context("cannot encode a reply")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .context("cannot write to the parent")
}
