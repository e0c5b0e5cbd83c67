//! One scenario: K peers, a relay and a network, driven by one seed.
//!
//! Everything is an event on a simulated clock (ms): frame deliveries,
//! reconnections, heals, restarts. A scenario runs `steps` steps; each step is
//! one action (a user edit, a daemon scan, a restore, a fault, or idle time),
//! then the clock moves on a little, every event that fell due runs, and every
//! running peer's engine ticks (heartbeats). Then everything heals and the
//! network runs until it is quiet, and [`crate::check`] judges the result.
//!
//! The network, as the relay sees it:
//! - Delivery has a random delay per frame and copy, so frames overtake each
//!   other, and may be dropped or duplicated. The relay's own frames (Welcome,
//!   PeerJoined, PeerLeft) keep their order on each link and are barriers: no
//!   peer frame crosses one. A real relay keeps per-link FIFO order over TCP
//!   (and drops nothing without closing the connection), so this is harsher
//!   than reality for peer frames and exactly reality for membership, which a
//!   connection must see in order (a PeerLeft overtaking the PeerJoined of a
//!   reconnection would describe a room that never existed).
//! - Partitions cut a peer off: its engine is told (`disconnected`) and the
//!   relay either notices at once (PeerLeft to the others) or keeps a
//!   half-open seat until a timeout or the peer's reconnection takes it over
//!   (PeerJoined again, no PeerLeft), as `cue-relay` does.
//! - Relay restarts drop every connection and everything in flight; peers
//!   reconnect with jitter once it is back.
//! - Crashes drop a peer's memory (workspace, engine) and keep its store and
//!   disk; a crash can also fall right after a merge was committed (before the
//!   disk was written or anything sent) or in the middle of a checkout.
//! - Long outages (partitions and power-offs) last past `max_offline_days`, so
//!   restarted engines run a full resync and tombstones expire meanwhile.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use cue_core::store::DocKey;
use cue_core::store::MemStore;
use cue_core::sync::message::decode_batch;
use cue_core::sync::{Message, Sealer};
use cue_core::sync::{SyncEngine, WorkspaceKey};
use cue_core::Workspace;
use cue_wire::{Frame, FrameKind, FrameRef, PeerId, RoomId};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use crate::edits::{tags_of, user_edit, Oracle, UserEdit};
use crate::peer::{core_err, peer_id, Node, Peer, Pending, MAX_OFFLINE_MS};
use crate::stats::Stats;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const DAY: i64 = 86_400_000;
/// Events of the last steps kept for a failure report.
const TRACE_LEN: usize = 40;
/// Quiet rounds (each > 10 s of simulated time) before a scenario is declared stuck.
const MAX_QUIET_ROUNDS: usize = 60;
/// Events one quiet round may take before the protocol is declared to loop.
const MAX_ROUND_EVENTS: usize = 500_000;
/// Events a whole scenario may take: past this the peers are in a message
/// storm (each message causing more), which is a failure in itself.
const MAX_EVENTS: u64 = 1_000_000;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub seed: u64,
    /// Peers; `None`: chosen by the seed, 2 to 20.
    pub peers: Option<usize>,
    pub steps: usize,
    /// Keep every event for the failure report, not only the last ones.
    pub full_trace: bool,
}

/// Why a scenario failed, with the events that led there.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: String,
    /// The step at which it was noticed; `None` for the final check.
    pub step: Option<usize>,
    pub trace: Vec<String>,
}

/// A finished scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub peers: usize,
    pub steps: usize,
    pub result: Result<(), Failure>,
    pub stats: Stats,
    /// A hash of every event in order: equal runs of one seed must agree.
    pub fingerprint: u64,
}

/// How hostile this scenario is; drawn from the seed so that some seeds are
/// calm and some are storms.
#[derive(Debug, Clone, Copy)]
struct Profile {
    max_delay_ms: i64,
    drop_p: f64,
    dup_p: f64,
    partition_p: f64,
    crash_p: f64,
    relay_p: f64,
    /// Of partitions and crashes, the share that lasts past `max_offline_days`.
    long_p: f64,
    /// Per delivery: crash right after the merge was committed.
    crash_after_merge_p: f64,
    /// Per checkout: crash between a disk operation and its record.
    tear_p: f64,
    /// The daemon records a user's save at once (otherwise later: a scan, a restart).
    record_now_p: f64,
    max_step_ms: i64,
}

impl Profile {
    fn draw(rng: &mut StdRng) -> Profile {
        let pick = |rng: &mut StdRng, xs: &[f64]| xs[rng.random_range(0..xs.len())];
        Profile {
            max_delay_ms: [5, 50, 400, 3_000][rng.random_range(0..4)],
            drop_p: pick(rng, &[0.0, 0.01, 0.05, 0.2]),
            dup_p: pick(rng, &[0.0, 0.02, 0.1]),
            partition_p: pick(rng, &[0.0, 0.01, 0.03]),
            crash_p: pick(rng, &[0.0, 0.01, 0.02]),
            relay_p: pick(rng, &[0.0, 0.003, 0.01]),
            long_p: pick(rng, &[0.0, 0.1, 0.3]),
            crash_after_merge_p: pick(rng, &[0.0, 0.0005, 0.002]),
            tear_p: pick(rng, &[0.0, 0.02, 0.05]),
            record_now_p: pick(rng, &[1.0, 0.8, 0.4]),
            max_step_ms: [200, 2_000, 8_000][rng.random_range(0..3)],
        }
    }
}

enum Event {
    /// A frame reaches peer `to` over connection `epoch`.
    Deliver {
        to: usize,
        epoch: u64,
        bytes: Vec<u8>,
    },
    /// The peer tries to connect to the relay.
    Connect(usize),
    /// A partition ends.
    Heal(usize),
    /// A crashed peer starts again.
    Restart(usize),
    /// The relay notices a dead connection it had kept open.
    SeatTimeout {
        id: PeerId,
        epoch: u64,
    },
    RelayUp,
}

struct Scheduled {
    at: i64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Ordering state of the relay's link to one peer.
#[derive(Default, Clone, Copy)]
struct Link {
    /// Delivery time of the last relay frame: nothing sent later arrives before it.
    barrier: i64,
    /// Latest delivery time scheduled on the link: a relay frame comes after it.
    last: i64,
}

/// The whole simulated world of one scenario.
pub struct Sim {
    pub(crate) rng: StdRng,
    pub(crate) now: i64,
    key: WorkspaceKey,
    sealer: Sealer,
    room: RoomId,
    pub(crate) peers: Vec<Peer>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    next_epoch: u64,
    relay_up: bool,
    relay_up_at: i64,
    /// The relay's seats, by peer id: which simulated peer, and the
    /// connection the relay routes its frames to.
    seats: BTreeMap<PeerId, (usize, u64)>,
    /// Every id a peer has had (a daemon picks a new one each time it starts).
    ids: BTreeMap<PeerId, usize>,
    links: Vec<Link>,
    profile: Profile,
    faults: bool,
    last_tick: i64,
    pub(crate) oracle: Oracle,
    pub(crate) stats: Stats,
    trace: VecDeque<String>,
    fingerprint: u64,
    step: Option<usize>,
    full_trace: bool,
    events: u64,
}

type SimResult<T = ()> = Result<T, String>;

impl Sim {
    /// Builds the world: peer 0 creates the workspace, the others join empty
    /// and receive everything by live sync.
    pub fn new(config: &Config) -> SimResult<Sim> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        // 2 to 20 peers, most scenarios small: the cost grows with the square
        // of the peer count (every broadcast and heartbeat reaches everyone),
        // and most bugs need only a few peers; the large rooms still come up
        // often enough (one scenario in six has 15 or more).
        let k = config
            .peers
            .unwrap_or_else(|| {
                let u: f64 = rng.random();
                2 + (18.0 * u * u).round() as usize
            })
            .max(1);
        let profile = Profile::draw(&mut rng);
        let mut key_bytes = [0u8; 32];
        rng.fill_bytes(&mut key_bytes);
        let key = WorkspaceKey::from_bytes(key_bytes);
        let now = 1_000;
        let mut list = Vec::with_capacity(k);
        for i in 0..k {
            let member = format!("member{i}");
            let mut ws = if i == 0 {
                Workspace::create(MemStore::default(), "team", &member, now, &mut rng)
            } else {
                Workspace::join(MemStore::default(), &member, &mut rng)
            }
            .map_err(|e| core_err("creating the peers", e))?;
            let mut seed_bytes = [0u8; 32];
            rng.fill_bytes(&mut seed_bytes);
            let mut engine =
                SyncEngine::new(&mut ws, &key, peer_id(i), seed_bytes, now, MAX_OFFLINE_MS)
                    .map_err(|e| core_err("starting an engine", e))?;
            engine.set_member(&member);
            list.push(Peer::new(i, Node { ws, engine }, i == 0));
        }
        let mut sim = Sim {
            rng,
            now,
            room: key.room_id(),
            sealer: key.sealer(),
            key,
            peers: list,
            queue: BinaryHeap::new(),
            seq: 0,
            next_epoch: 1,
            relay_up: true,
            relay_up_at: 0,
            seats: BTreeMap::new(),
            ids: (0..k).map(|i| (peer_id(i), i)).collect(),
            links: vec![Link::default(); k],
            profile,
            faults: true,
            last_tick: now,
            oracle: Oracle::default(),
            stats: Stats {
                scenarios: 1,
                peers: k as u64,
                ..Stats::default()
            },
            trace: VecDeque::new(),
            fingerprint: 0xcbf2_9ce4_8422_2325,
            step: None,
            full_trace: config.full_trace,
            events: 0,
        };
        sim.note(format!("{k} peers, {:?}", sim.profile));
        for i in 0..k {
            let at = sim.now + sim.rng.random_range(0..3_000);
            sim.schedule(at, Event::Connect(i));
        }
        Ok(sim)
    }

    // ---- bookkeeping -----------------------------------------------------------------

    fn note(&mut self, what: String) {
        for b in what.as_bytes() {
            self.fingerprint = (self.fingerprint ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        let step = match self.step {
            Some(s) => format!("#{s}"),
            None => "final".into(),
        };
        if self.trace.len() == TRACE_LEN && !self.full_trace {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("[{:.3}s {step}] {what}", self.now as f64 / 1000.0));
    }

    fn schedule(&mut self, at: i64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn delay(&mut self) -> i64 {
        self.rng.random_range(1..=self.profile.max_delay_ms)
    }

    /// A frame as a trace line shows it: kind, sender and the messages inside
    /// (opened with the workspace key, as any peer would).
    fn describe(&self, bytes: &[u8]) -> String {
        let Ok(frame) = FrameRef::decode(bytes) else {
            return "an undecodable frame".into();
        };
        let h = frame.header;
        let who = match self.index_of(h.sender) {
            Some(i) => format!(" from p{i}"),
            None => String::new(),
        };
        if h.kind.is_from_relay() {
            return format!("{}{who}", h.kind);
        }
        let msgs = self
            .sealer
            .open(&h, frame.payload)
            .ok()
            .and_then(|env| {
                // version u8 | stream u32 | part u32 | parts u32 | data
                let parts = u32::from_be_bytes(env.get(9..13)?.try_into().ok()?);
                if parts != 1 {
                    return Some(format!("part of a {parts}-part stream"));
                }
                let msgs = decode_batch(env.get(13..)?).ok()?;
                Some(msgs.iter().map(brief).collect::<Vec<_>>().join(", "))
            })
            .unwrap_or_else(|| "unreadable".into());
        format!("{}{who}: {msgs}", h.kind)
    }

    fn index_of(&self, id: PeerId) -> Option<usize> {
        self.ids.get(&id).copied()
    }

    /// Whether the relay routes peer `j`'s frames over its live connection.
    fn seated(&self, j: usize) -> bool {
        let p = &self.peers[j];
        p.conn.is_some() && self.seats.get(&p.id).map(|s| s.1) == p.conn
    }

    /// Every seat but the one of `id`: where a broadcast from `id` goes.
    fn others(&self, id: PeerId) -> Vec<(usize, u64)> {
        self.seats
            .iter()
            .filter(|(o, _)| **o != id)
            .map(|(_, s)| *s)
            .collect()
    }

    // ---- the relay and the network ---------------------------------------------------

    /// A relay frame to `to`: in order with the relay's other frames on that
    /// link, and after every frame already scheduled on it.
    fn send_relay_frame(&mut self, to: usize, epoch: u64, frame: Frame) {
        let at = (self.now + self.delay()).max(self.links[to].last);
        self.links[to] = Link {
            barrier: at,
            last: at,
        };
        self.schedule(
            at,
            Event::Deliver {
                to,
                epoch,
                bytes: frame.encode(),
            },
        );
    }

    /// A peer frame to `to`: any order with other peer frames, never before
    /// the relay frame that preceded it.
    fn send_peer_frame(&mut self, to: usize, epoch: u64, bytes: Vec<u8>) {
        let at = (self.now + self.delay()).max(self.links[to].barrier);
        self.links[to].last = self.links[to].last.max(at);
        self.schedule(at, Event::Deliver { to, epoch, bytes });
    }

    /// What the relay does with frames a peer sent.
    fn route(&mut self, from: usize, frames: Vec<Frame>) {
        for frame in frames {
            // Frames made while offline go nowhere (the daemon drops them).
            if !self.seated(from) {
                continue;
            }
            self.stats.frames_sent += 1;
            let targets: Vec<(usize, u64)> = match frame.header.kind {
                // A Direct to a peer that is not seated is lost, as on the relay.
                FrameKind::Direct => self
                    .seats
                    .get(&frame.header.recipient)
                    .copied()
                    .into_iter()
                    .collect(),
                _ => self.others(self.peers[from].id),
            };
            let bytes = frame.encode();
            for (j, epoch) in targets {
                if self.faults && self.rng.random_bool(self.profile.drop_p) {
                    self.stats.dropped += 1;
                    continue;
                }
                self.send_peer_frame(j, epoch, bytes.clone());
                if self.faults && self.rng.random_bool(self.profile.dup_p) {
                    self.stats.duplicated += 1;
                    self.send_peer_frame(j, epoch, bytes.clone());
                }
            }
        }
    }

    /// Peer `j` connects, if it can: the relay seats it (taking over a
    /// half-open seat), welcomes it and tells the others.
    fn connect(&mut self, j: usize) {
        let p = &self.peers[j];
        if p.conn.is_some() || p.partitioned || p.node.is_none() {
            return;
        }
        if !self.relay_up {
            let at = self.relay_up_at + self.rng.random_range(100..5_000);
            self.schedule(at, Event::Connect(j));
            return;
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.peers[j].conn = Some(epoch);
        let id = self.peers[j].id;
        // Sorted, as the relay sends them (the seats are ordered by id).
        let present: Vec<PeerId> = self.seats.keys().filter(|o| **o != id).copied().collect();
        self.note(format!(
            "p{j} connects (conn {epoch}, {} present)",
            present.len()
        ));
        self.send_relay_frame(j, epoch, Frame::welcome(self.room, &present));
        // A seat with this id still there (half-open) is taken over: the
        // others get a PeerJoined again and no PeerLeft.
        self.seats.insert(id, (j, epoch));
        for (o, e) in self.others(id) {
            self.send_relay_frame(o, e, Frame::peer_joined(self.room, id));
        }
    }

    /// Peer `j`'s connection drops. The relay notices now (PeerLeft to the
    /// others) or keeps the seat half-open until a timeout.
    fn disconnect(&mut self, j: usize, relay_notices: bool) {
        let Some(conn) = self.peers[j].conn.take() else {
            return;
        };
        if let Some(node) = self.peers[j].node.as_mut() {
            node.engine.disconnected();
        }
        let id = self.peers[j].id;
        if self.seats.get(&id) != Some(&(j, conn)) {
            return;
        }
        if relay_notices {
            self.leave(id);
        } else {
            self.stats.half_open += 1;
            let at = self.now + self.rng.random_range(5 * SECOND..60 * SECOND);
            self.schedule(at, Event::SeatTimeout { id, epoch: conn });
        }
    }

    /// The relay frees the seat of `id` and tells the others.
    fn leave(&mut self, id: PeerId) {
        self.seats.remove(&id);
        for (o, e) in self.others(id) {
            self.send_relay_frame(o, e, Frame::peer_left(self.room, id));
        }
    }

    fn relay_restart(&mut self) {
        self.stats.relay_restarts += 1;
        let down = self.rng.random_range(200..30 * SECOND);
        self.note(format!("relay restarts, down {down} ms"));
        for j in 0..self.peers.len() {
            if let Some(_conn) = self.peers[j].conn.take() {
                if let Some(node) = self.peers[j].node.as_mut() {
                    node.engine.disconnected();
                }
            }
        }
        self.seats.clear();
        self.relay_up = false;
        self.relay_up_at = self.now + down;
        self.schedule(self.relay_up_at, Event::RelayUp);
        for j in 0..self.peers.len() {
            let at = self.relay_up_at + self.rng.random_range(100..5_000);
            self.schedule(at, Event::Connect(j));
        }
    }

    // ---- peers -------------------------------------------------------------------------

    /// Runs one due event.
    fn handle(&mut self, event: Event) -> SimResult {
        match event {
            Event::Deliver { to, epoch, bytes } => self.deliver(to, epoch, &bytes)?,
            Event::Connect(j) => self.connect(j),
            Event::Heal(j) => {
                if self.peers[j].partitioned {
                    self.peers[j].partitioned = false;
                    self.note(format!("p{j} partition heals"));
                    let at = self.now + self.rng.random_range(100..3_000);
                    self.schedule(at, Event::Connect(j));
                }
            }
            Event::Restart(j) => self.restart(j)?,
            Event::SeatTimeout { id, epoch } => {
                if let Some(&(j, e)) = self.seats.get(&id) {
                    if e == epoch && self.peers[j].conn != Some(epoch) {
                        self.note(format!("relay times out a dead connection of p{j}"));
                        self.leave(id);
                    }
                }
            }
            Event::RelayUp => {
                self.relay_up = true;
                self.note("relay is back".into());
            }
        }
        Ok(())
    }

    fn deliver(&mut self, to: usize, epoch: u64, bytes: &[u8]) -> SimResult {
        if self.peers[to].conn != Some(epoch) {
            self.stats.lost_in_disconnect += 1;
            return Ok(());
        }
        let now = self.now;
        let Some(node) = self.peers[to].node.as_mut() else {
            self.stats.lost_in_disconnect += 1;
            return Ok(());
        };
        self.stats.delivered += 1;
        let out = node
            .engine
            .on_frame(&mut node.ws, bytes, now)
            .map_err(|e| core_err(&format!("p{to} on_frame"), e))?;
        let initialised = node.ws.workspace_id().is_some();
        let from_desc = self.describe(bytes);
        self.note(format!(
            "p{to} <- {from_desc} ({} B){}{}",
            bytes.len(),
            if out.changed { ", changed" } else { "" },
            if out.frames.is_empty() {
                String::new()
            } else {
                format!(", sends {}", out.frames.len())
            }
        ));
        if !out.problems.is_empty() {
            return Err(format!(
                "p{to} reports sync problems, but every peer here is honest: {:?}",
                out.problems
            ));
        }
        self.peers[to].initialised |= initialised;
        if self.faults && self.rng.random_bool(self.profile.crash_after_merge_p) {
            self.stats.crashes_after_merge += 1;
            self.note(format!("p{to} crashes after committing the merge"));
            self.crash(to, 0);
            return Ok(());
        }
        if out.changed && !self.checkout(to)? {
            return Ok(());
        }
        self.route(to, out.frames);
        Ok(())
    }

    /// Writes the plan to `j`'s disk; may tear it (a crash between a disk
    /// operation and its record). False if the peer crashed.
    fn checkout(&mut self, j: usize) -> SimResult<bool> {
        let mut tear = None;
        if self.faults && self.rng.random_bool(self.profile.tear_p) {
            let n = self.peers[j].plan_len()?;
            if n > 0 {
                tear = Some(self.rng.random_range(0..n));
            }
        }
        let end = self.peers[j].checkout(self.now, tear)?;
        self.stats.refused_writes += end.refused;
        if end.torn {
            self.stats.crashes_mid_checkout += 1;
            self.note(format!("p{j} crashes in the middle of a checkout"));
            self.crash(j, 0);
            return Ok(false);
        }
        Ok(true)
    }

    /// The daemon records what changed on disk, writes the plan and
    /// broadcasts its new changes.
    fn record_and_publish(&mut self, j: usize) -> SimResult {
        if self.peers[j].node.is_none() {
            return Ok(());
        }
        self.scan(j)?;
        if !self.checkout(j)? {
            return Ok(());
        }
        self.publish(j)
    }

    /// The daemon's scan on peer `j`, noting detached edits (see
    /// [`Peer::scan`]): their tags may outlive a removal made on the original.
    fn scan(&mut self, j: usize) -> SimResult {
        let detached = self.peers[j].scan(self.now, &mut self.rng)?;
        for (text, untagged) in detached {
            self.stats.detached_edits += 1;
            self.note(format!(
                "p{j}: an unrecorded edit was detached from its moved file"
            ));
            self.oracle.detached_tags.extend(tags_of(&text));
            self.oracle.detached_tags.extend(untagged);
        }
        Ok(())
    }

    /// Writes peer 0's restores to its disk and broadcasts them (the checker's
    /// restore-everything pass; faults are off by then).
    pub(crate) fn restore_published(&mut self) -> SimResult {
        self.checkout(0)?;
        self.publish(0)
    }

    fn publish(&mut self, j: usize) -> SimResult {
        let Some(node) = self.peers[j].node.as_mut() else {
            return Ok(());
        };
        let out = node
            .engine
            .local_changes(&mut node.ws)
            .map_err(|e| core_err("local_changes", e))?;
        self.route(j, out.frames);
        Ok(())
    }

    /// Crashes `j` and schedules its restart `down_ms` later (0: at once).
    fn crash(&mut self, j: usize, down_ms: i64) {
        let notices = self.rng.random_bool(0.6);
        self.disconnect(j, notices);
        self.peers[j].crash();
        let at = self.now + down_ms.max(1);
        self.schedule(at, Event::Restart(j));
    }

    fn restart(&mut self, j: usize) -> SimResult {
        if self.peers[j].node.is_some() {
            return Ok(());
        }
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        // A daemon takes a new random peer id each time it starts.
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        id[0] |= 0x80;
        self.peers[j].id = PeerId(id);
        self.ids.insert(PeerId(id), j);
        let full = self.peers[j].start(&self.key, seed, self.now, &mut self.rng)?;
        if full {
            self.stats.full_resyncs += 1;
        }
        let init = self.peers[j]
            .node
            .as_ref()
            .is_some_and(|n| n.ws.workspace_id().is_some());
        self.peers[j].initialised = init;
        self.note(format!(
            "p{j} restarts{}",
            if full { " (full resync)" } else { "" }
        ));
        self.record_and_publish(j)?;
        let at = self.now + self.rng.random_range(10..2_000);
        self.schedule(at, Event::Connect(j));
        Ok(())
    }

    fn tick_all(&mut self) {
        self.last_tick = self.now;
        for j in 0..self.peers.len() {
            let now = self.now;
            let Some(node) = self.peers[j].node.as_mut() else {
                continue;
            };
            let out = node.engine.tick(&mut node.ws, now);
            self.route(j, out.frames);
        }
    }

    /// Runs every event due by `until`, in order, moving the clock along
    /// (with heartbeats at least once a simulated second).
    fn run_until(&mut self, until: i64) -> SimResult {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until {
                break;
            }
            let Some(Reverse(ev)) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(ev.at);
            self.handle(ev.event)?;
            self.events += 1;
            if self.events > MAX_EVENTS {
                return Err(format!(
                    "message storm: more than {MAX_EVENTS} events in one scenario"
                ));
            }
            if self.now - self.last_tick >= SECOND {
                self.tick_all();
            }
        }
        self.now = self.now.max(until);
        self.tick_all();
        Ok(())
    }

    // ---- actions ------------------------------------------------------------------------

    /// A user edits files on peer `j`'s disk; the daemon records it at once
    /// or later.
    fn user_action(&mut self, j: usize) -> SimResult {
        if !self.peers[j].initialised {
            return Ok(());
        }
        let mut trial = self.peers[j].disk.texts();
        let Some(made) = user_edit(&mut self.rng, &mut trial, j, &mut self.oracle) else {
            return Ok(());
        };
        // Edits the daemon could only misread if it had not seen the earlier
        // ones (deleting a file whose edit it never saw, reusing a path the
        // user just freed...) wait for a scan; with the daemon down, the user
        // does something else.
        let p = &self.peers[j];
        let needs_scan = match &made.edit {
            UserEdit::Write { path, .. } => {
                p.pending.get(path) == Some(&Pending::Moved) || p.user_gone.contains(path)
            }
            UserEdit::Rename { from, to } => {
                p.pending.contains_key(from) || p.user_gone.contains(to)
            }
            UserEdit::Remove { path } => p.pending.contains_key(path),
        };
        if needs_scan {
            if self.peers[j].node.is_none() {
                return Ok(());
            }
            self.scan(j)?;
        }
        self.oracle.commit(&made);
        self.stats.edits += 1;
        let p = &mut self.peers[j];
        p.disk.set_now_ms(self.now);
        p.disk.set_texts(&trial);
        let desc = match &made.edit {
            UserEdit::Write { path, what } => {
                if *what == "create" {
                    self.stats.creates += 1;
                }
                let kind = if *what == "create" {
                    Pending::Created
                } else {
                    Pending::Edited
                };
                p.pending.entry(path.clone()).or_insert(kind);
                p.pending_untagged
                    .entry(path.clone())
                    .or_default()
                    .extend(made.tags_removed.iter().cloned());
                let mut d = format!("{what} {path}");
                for m in &made.markers {
                    d.push_str(&format!(" +{m}"));
                }
                for t in &made.tags_added {
                    d.push_str(&format!(" +tag {t}"));
                }
                for t in &made.tags_removed {
                    d.push_str(&format!(" -tag {t}"));
                }
                d
            }
            UserEdit::Rename { from, to } => {
                self.stats.renames += 1;
                p.pending.insert(to.clone(), Pending::Moved);
                p.user_gone.insert(from.clone());
                format!("rename {from} -> {to}")
            }
            UserEdit::Remove { path } => {
                self.stats.deletes += 1;
                p.user_gone.insert(path.clone());
                format!("delete {path}")
            }
        };
        let now = p.node.is_some() && self.rng.random_bool(self.profile.record_now_p);
        self.note(format!(
            "p{j} user: {desc}{}",
            if now { "" } else { " (not recorded yet)" }
        ));
        if now {
            self.record_and_publish(j)?;
            // What was just recorded and written back must still be on this disk.
            if self.peers[j].node.is_some() {
                let all: String = self.peers[j]
                    .disk
                    .texts()
                    .values()
                    .map(String::as_str)
                    .collect();
                if let Some(m) = made.markers.iter().find(|m| !all.contains(m.as_str())) {
                    return Err(format!(
                        "p{j}: edit {m} vanished from its own disk as it was recorded ({desc})"
                    ));
                }
            }
            Ok(())
        } else {
            self.stats.deferred_edits += 1;
            Ok(())
        }
    }

    /// `cue restore` of a random trash entry on peer `j`.
    fn restore_action(&mut self, j: usize) -> SimResult {
        if self.peers[j].node.is_none() || !self.peers[j].initialised {
            return Ok(());
        }
        self.scan(j)?;
        let now = self.now;
        let Some(node) = self.peers[j].node.as_mut() else {
            return Ok(());
        };
        let trash = node.ws.trash(now).map_err(|e| core_err("trash", e))?;
        if trash.is_empty() {
            return Ok(());
        }
        let t = &trash[self.rng.random_range(0..trash.len())];
        let to = node
            .ws
            .restore(&t.file.to_hex(), now)
            .map_err(|e| core_err(&format!("restore of {} listed in the trash", t.path), e))?;
        self.stats.restores += 1;
        self.note(format!("p{j} user: restore {} -> {to}", t.path));
        if !self.checkout(j)? {
            return Ok(());
        }
        self.publish(j)
    }

    fn outage(&mut self) -> i64 {
        if self.rng.random_bool(self.profile.long_p) {
            self.stats.long_outages += 1;
            self.rng
                .random_range(MAX_OFFLINE_MS + DAY / 2..MAX_OFFLINE_MS + 2 * DAY)
        } else {
            self.rng.random_range(SECOND..5 * MINUTE)
        }
    }

    /// One step: an action, then time passes and due events run.
    fn step(&mut self) -> SimResult {
        let k = self.peers.len();
        let j = self.rng.random_range(0..k);
        let r: f64 = self.rng.random();
        let pr = self.profile;
        let mut acc = pr.partition_p;
        if r < acc {
            if !self.peers[j].partitioned {
                self.stats.partitions += 1;
                let d = self.outage();
                self.note(format!("p{j} is cut off for {d} ms"));
                self.peers[j].partitioned = true;
                let notices = self.rng.random_bool(0.7);
                self.disconnect(j, notices);
                self.schedule(self.now + d, Event::Heal(j));
            }
        } else if r < {
            acc += pr.crash_p;
            acc
        } {
            if self.peers[j].node.is_some() {
                self.stats.crashes += 1;
                let d = if self.rng.random_bool(0.5) {
                    0
                } else {
                    self.outage()
                };
                self.note(format!("p{j} crashes, down {d} ms"));
                self.crash(j, d);
            }
        } else if r < {
            acc += pr.relay_p;
            acc
        } {
            if self.relay_up {
                self.relay_restart();
            }
        } else if r < acc + 0.08 {
            // The daemon's periodic scan.
            if self.peers[j].node.is_some() {
                self.note(format!("p{j} scans its disk"));
            }
            self.record_and_publish(j)?;
        } else if r < acc + 0.11 {
            self.restore_action(j)?;
        } else if r < acc + 0.14 {
            // Nobody does anything for a while.
        } else {
            self.user_action(j)?;
        }
        let until = self.now + self.rng.random_range(0..=pr.max_step_ms);
        self.run_until(until)
    }

    /// Runs the scenario's steps, then heals everything and runs until quiet.
    pub fn run(&mut self, steps: usize) -> Result<(), Failure> {
        for s in 0..steps {
            self.step = Some(s);
            self.stats.steps += 1;
            self.step().map_err(|reason| self.failure(reason))?;
        }
        self.step = None;
        self.heal().map_err(|reason| self.failure(reason))?;
        let result = crate::check::check(self).map_err(|reason| self.failure(reason));
        self.stats.sim_ms = self.now;
        result
    }

    pub(crate) fn failure(&self, reason: String) -> Failure {
        Failure {
            reason,
            step: self.step,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Ends every fault: outages run their course (the clock jumps to the
    /// last heal or restart), then everyone records, connects and talks until
    /// the network is quiet.
    pub(crate) fn heal(&mut self) -> SimResult {
        self.faults = false;
        self.note("healing: no more faults".into());
        // Outages run their course: every pending event runs in order, and the
        // clock jumps over the idle time between them (no heartbeats meanwhile:
        // days of them would only repeat themselves).
        self.drain()?;
        for j in 0..self.peers.len() {
            if self.peers[j].partitioned {
                self.peers[j].partitioned = false;
            }
            if self.peers[j].node.is_none() {
                self.restart(j)?;
            }
            self.record_and_publish(j)?;
            self.connect(j);
        }
        self.quiesce()
    }

    /// Runs every queued event in order, without heartbeats, until none is left.
    fn drain(&mut self) -> SimResult {
        let mut events = 0;
        while let Some(Reverse(next)) = self.queue.pop() {
            events += 1;
            if events > MAX_ROUND_EVENTS {
                return Err(format!(
                    "the protocol does not settle: more than {MAX_ROUND_EVENTS} events without a heartbeat"
                ));
            }
            self.now = self.now.max(next.at);
            self.handle(next.event)?;
        }
        Ok(())
    }

    /// Runs rounds of more than 10 s (so heartbeats compare digests and
    /// re-request what differs) until every peer holds the same documents and
    /// nothing is in flight.
    pub(crate) fn quiesce(&mut self) -> SimResult {
        let mut calm = 0;
        for _ in 0..MAX_QUIET_ROUNDS {
            let until = self.now + 11 * SECOND;
            self.run_until(until)?;
            // No heartbeats while draining: they would refill the queue
            // forever. The next round's 11 s bring them back.
            self.drain()?;
            if self.converged() {
                calm += 1;
                if calm >= 2 {
                    return Ok(());
                }
            } else {
                calm = 0;
            }
        }
        Err(format!(
            "peers still differ after {MAX_QUIET_ROUNDS} quiet rounds of 11 s: {}",
            self.divergence()
        ))
    }

    /// Every peer is up, seated on its live connection, and holds the same heads.
    fn converged(&self) -> bool {
        let heads = |p: &Peer| p.node.as_ref().map(|n| heads_of(&n.ws));
        let first = heads(&self.peers[0]);
        self.peers
            .iter()
            .all(|p| self.seated(p.index) && heads(p) == first)
    }

    /// Which peers differ from peer 0, for a report.
    fn divergence(&self) -> String {
        let heads = |p: &Peer| p.node.as_ref().map(|n| heads_of(&n.ws));
        let first = heads(&self.peers[0]);
        let mut out = Vec::new();
        for p in &self.peers {
            let h = heads(p);
            let docs = h.as_ref().map(|m| m.len()).unwrap_or(0);
            let same = h == first;
            let seated = self.seated(p.index);
            if !same || !seated {
                out.push(format!(
                    "p{} ({} docs, {}, {})",
                    p.index,
                    docs,
                    if same { "same heads" } else { "heads differ" },
                    if seated { "connected" } else { "not connected" }
                ));
            }
        }
        out.join("; ")
    }
}

/// A message in a few characters, for traces.
fn brief(m: &Message) -> String {
    fn doc(d: &DocKey) -> String {
        match d {
            DocKey::Index => "index".into(),
            DocKey::File(id) => id.to_hex()[..6].to_string(),
        }
    }
    match m {
        Message::Handshake { digest, .. } => {
            format!("Handshake({:02x}{:02x})", digest[0], digest[1])
        }
        Message::SyncRequest { full, entries } => {
            format!(
                "SyncRequest({} docs{})",
                entries.len(),
                if *full { ", full" } else { "" }
            )
        }
        Message::SyncResponse { doc: d, sync } => {
            format!(
                "SyncResponse({}, {} B{})",
                doc(d),
                sync.len(),
                sync_summary(sync)
            )
        }
        Message::Change {
            id, doc: d, deps, ..
        } => {
            format!("Change(#{id}, {}, {} deps)", doc(d), deps.len())
        }
        Message::Heartbeat {
            digest,
            catching_up,
        } => format!(
            "Heartbeat({:02x}{:02x}{})",
            digest[0],
            digest[1],
            if *catching_up { ", catching up" } else { "" }
        ),
        Message::Snapshot { doc: d, bytes } => format!("Snapshot({}, {} B)", doc(d), bytes.len()),
        Message::Ack { id, doc: d } => format!("Ack(#{id}, {})", doc(d)),
        Message::Rotation { record } => format!("Rotation({} B)", record.len()),
    }
}

/// Every document's heads (not its storage layout, which differs by peer).
fn heads_of(ws: &Workspace<MemStore>) -> BTreeMap<DocKey, Vec<cue_core::doc::ChangeHash>> {
    ws.doc_heads()
        .iter()
        .map(|(k, i)| {
            let mut h = i.heads.clone();
            h.sort();
            (*k, h)
        })
        .collect()
}

/// What an automerge sync message says: heads, needs, haves and changes.
fn sync_summary(bytes: &[u8]) -> String {
    let short = |h: &[cue_core::doc::ChangeHash]| -> String {
        h.iter()
            .map(|h| h.to_string()[..6].to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match automerge::sync::Message::decode(bytes) {
        Ok(m) => format!(
            ": heads [{}] need [{}] have {} changes {}",
            short(&m.heads),
            short(&m.need),
            m.have
                .iter()
                .map(|h| format!("[{}]", short(&h.last_sync)))
                .collect::<Vec<_>>()
                .join(""),
            if m.changes.is_empty() { "none" } else { "some" }
        ),
        Err(_) => ": undecodable".into(),
    }
}
