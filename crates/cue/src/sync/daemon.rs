//! The sync daemon: one thread owns the workspace and the engine and handles
//! events one at a time (a burst of file edits, a frame from the relay, a
//! tick), so the SQLite state and the files are only ever touched in order.
//! The relay connection runs on a small tokio runtime in its own thread and
//! the file watcher in another; both only send events.
//!
//! Every queue between them is bounded: a thread that produces faster than
//! the engine consumes waits (the relay connection stops reading, so TCP
//! slows the relay down; the watcher's own queue overflows into one full
//! scan) instead of growing memory without limit.
//!
//! Order of work for a local edit: record it (committed to SQLite), then
//! broadcast it. For a remote change: merge and commit, then write the files,
//! then acknowledge. A crash between any two steps loses nothing: what was
//! committed is sent or written again after a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cue_core::sync::{Beacon, MemberSecret, Rotation, SyncEngine, SyncProblem, WorkspaceKey};
use cue_wire::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::members::{self, Step};
use super::net::{self, RelayTarget};
use super::status::{self, DaemonStatus, PeerStatus};
use crate::disk;
use crate::session::{open_session, Session};
use crate::store::WriteLock;
use cue_core::disk::Scope;

/// What changed on disk, as the watcher saw it.
#[derive(Debug)]
pub enum DiskChange {
    /// These paths or folders (relative to `.cuedeck/`, `project/…`).
    Paths(Vec<String>),
    /// Events were lost: everything must be looked at.
    Everything,
}

/// What the engine thread reacts to.
#[derive(Debug)]
pub enum Event {
    /// Something changed under the watched folders.
    Disk(DiskChange),
    /// A frame from the relay.
    Frame(Vec<u8>),
    /// A frame from the relay, on the beacon's connection to the room of a
    /// workspace key this peer rotated away from.
    BeaconFrame(Vec<u8>),
    Connected,
    Disconnected,
    /// The relay could not be reached (retrying).
    Unreachable(String),
    /// The connection gave up for good (wrong token, refused).
    Fatal(String),
    Tick,
}

/// An error that ends the daemon (a refused token, a clone that cannot
/// finish); every other error is reported and recovered from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(String);

/// Whether the event loop goes on.
enum Flow {
    Continue,
    Stop,
}

const TICK: Duration = Duration::from_millis(250);
/// A full scan this often, as a safety net: the watcher reports the paths
/// that changed, and a lost event makes it ask for a full scan itself.
const RESCAN: Duration = Duration::from_secs(300);
/// Paths recorded and sent together when many change at once.
const SCAN_SLICE: usize = 256;
/// How soon a write of received changes that failed is tried again.
const RETRY_WRITES: Duration = Duration::from_secs(2);
/// Events waiting for the engine. Frames are at most 256 KiB, so a full
/// queue holds at most 32 MiB; it absorbs a burst while the engine commits.
const EVENT_QUEUE: usize = 128;
/// Frames waiting for the relay connection, bounded for the same reason.
const OUT_QUEUE: usize = 128;

/// What the daemon is for.
pub enum Mode {
    /// `cue watch --sync`: run until stopped.
    Watch,
    /// `cue clone CODE`: run until the workspace has arrived, then stop.
    Clone {
        /// Give up if no peer has sent the workspace by then.
        deadline: Instant,
        /// Files arrived of files named by the index.
        bar: indicatif::ProgressBar,
    },
}

/// The running pieces.
pub struct Daemon {
    session: Session,
    engine: SyncEngine,
    relay: String,
    status: DaemonStatus,
    /// When the status file was last written (`None`: never).
    status_written: Option<Instant>,
    out: Option<mpsc::Sender<Vec<u8>>>,
    quiet_since: Instant,
    /// When the last full scan ran (`None`: one is due now).
    last_scan: Option<Instant>,
    /// When to try again the writes of received changes that failed.
    retry_writes: Option<Instant>,
    saw_peer: bool,
    verbose: bool,
    /// Problems already logged: a file that cannot sync is reported once,
    /// not at every scan.
    reported: std::collections::HashSet<String>,
    /// The workspace key this peer syncs under now (it changes when a member
    /// is removed), and what is needed to move to the next one.
    key: WorkspaceKey,
    rotation: Option<Rotating>,
    target: RelayTarget,
    events: mpsc::Sender<Event>,
    /// Which relay connection is the current one: events of an older one
    /// (the room of a key rotated away from) are dropped.
    link: Arc<AtomicU64>,
    beacon: Option<(Beacon, mpsc::Sender<Vec<u8>>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    max_offline_ms: i64,
    /// Cancelled on Ctrl-C or SIGTERM; every relay connection ends with it.
    shutdown: CancellationToken,
}

/// What a member needs to follow key rotations (not a clone in progress).
struct Rotating {
    member: String,
    secret: MemberSecret,
}

/// Starts one relay connection (a "link") in its own thread; the returned
/// sender is how frames leave. Its events reach `events` while `link` is the
/// current one (`current`); a beacon's (`beacon`) only as beacon frames.
fn start_link(
    target: RelayTarget,
    key: &WorkspaceKey,
    events: mpsc::Sender<Event>,
    link: u64,
    current: Arc<AtomicU64>,
    beacon: bool,
    shutdown: CancellationToken,
) -> Result<(mpsc::Sender<Vec<u8>>, std::thread::JoinHandle<()>)> {
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let admission = key.admission_key();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    // Bounded like the event queue, and forwarded with backpressure: a
    // link whose events wait stops reading from the relay.
    let (link_tx, mut link_rx) = mpsc::channel(EVENT_QUEUE);
    std::thread::Builder::new()
        .name("cue-link".into())
        .spawn(move || {
            while let Some(event) = link_rx.blocking_recv() {
                let event = match (beacon, event) {
                    (true, Event::Frame(bytes)) => Event::BeaconFrame(bytes),
                    (true, _) => continue,
                    (false, e) if current.load(Ordering::SeqCst) == link => e,
                    (false, _) => continue,
                };
                if events.blocking_send(event).is_err() {
                    return;
                }
            }
        })
        .context("starting the link thread")?;
    let thread = std::thread::Builder::new()
        .name("cue-net".into())
        .spawn(move || {
            rt.block_on(net::run(target, admission, link_tx, out_rx, shutdown));
        })
        .context("starting the network thread")?;
    Ok((out_tx, thread))
}

/// Ctrl-C and SIGTERM cancel `shutdown`, from a thread of their own (relay
/// connections come and go with key rotations).
fn start_signal_thread(shutdown: CancellationToken) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    std::thread::Builder::new()
        .name("cue-signals".into())
        .spawn(move || rt.block_on(wait_for_signal(shutdown)))
        .context("starting the signal thread")?;
    Ok(())
}

async fn wait_for_signal(shutdown: CancellationToken) {
    {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    }
}

/// Prints a progress line. `println!` panics when stdout fails (a log file
/// on a full disk, a closed pipe); the daemon must not die of that.
fn print_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("reading the system's random source")?;
    Ok(seed)
}

/// Runs the daemon in this process until shut down (Watch) or done (Clone).
pub fn run(
    mut session: Session,
    key: &WorkspaceKey,
    target: RelayTarget,
    mode: Mode,
    verbose: bool,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let shutdown = CancellationToken::new();
    let watching = matches!(mode, Mode::Watch);
    // Watch before the first scan, so that no save falls between the two.
    let _watch = if watching {
        Some(super::watch::start(
            &session.layout,
            &session.filters,
            tx.clone(),
        )?)
    } else {
        None
    };
    // When catching up fails (a full disk, say), the daemon still starts and
    // the first tick retries, as the event loop does with any such problem.
    let mut first_scan = Some(Instant::now());
    let mut problem = None;
    if watching {
        // Edits made while no daemon ran are recorded (and later synced) first.
        let _lock = WriteLock::acquire(&session.layout.sync_dir())?;
        if let Err(e) = catch_up(&mut session, verbose) {
            warn!("{e:#}; retrying in a moment");
            problem = Some(format!("{e:#}"));
            session = open_session(session.layout.clone())
                .context("reloading the sync state after an error")?;
            first_scan = None;
        }
    }
    let seed = random_seed()?;
    let mut peer = [0u8; 16];
    peer.copy_from_slice(&seed[..16]);
    let max_offline_ms = i64::from(session.config.sync.max_offline_days.max(1)) * 86_400_000;
    let mut engine = SyncEngine::new(
        &mut session.ws,
        key,
        PeerId(peer),
        random_seed()?,
        disk::now_ms(),
        max_offline_ms,
    )?;
    let member = session.config.workspace.member.clone().unwrap_or_default();
    engine.set_member(&member);
    if engine.status().full_resync {
        info!("offline longer than sync.max_offline_days: every document will be compared");
    }
    // A member (not a clone still arriving) follows key rotations: it needs
    // its own key pair, published in the index for the others to seal to.
    let rotation = if watching {
        let _lock = WriteLock::acquire(&session.layout.sync_dir())?;
        members::publish_own_key(&session.layout, &mut session.ws)?;
        Some(Rotating {
            member: crate::session::member_name(None, &session.config),
            secret: super::key::ensure_member_secret(&session.layout)?,
        })
    } else {
        None
    };
    if watching {
        start_signal_thread(shutdown.clone())?;
    }
    let link = Arc::new(AtomicU64::new(1));
    let (out, net_thread) = start_link(
        target.clone(),
        key,
        tx.clone(),
        1,
        link.clone(),
        false,
        shutdown.clone(),
    )?;
    let ticker = tx.clone();
    std::thread::Builder::new()
        .name("cue-tick".into())
        .spawn(move || {
            // A tick that finds the queue full is skipped: the engine is
            // busy, and the next one does the same work.
            while !ticker.is_closed() {
                let _ = ticker.try_send(Event::Tick);
                std::thread::sleep(TICK);
            }
        })
        .context("starting the tick thread")?;

    let now = disk::now_ms();
    let mut daemon = Daemon {
        status: DaemonStatus {
            pid: std::process::id(),
            started_ms: now,
            updated_ms: now,
            relay: target.url.clone(),
            last_problem: problem,
            ..DaemonStatus::default()
        },
        relay: target.url.clone(),
        session,
        engine,
        status_written: None,
        out: Some(out),
        quiet_since: Instant::now(),
        last_scan: first_scan,
        // Whatever the catch-up at start could not write is tried again.
        retry_writes: Some(Instant::now() + RETRY_WRITES),
        saw_peer: false,
        verbose,
        reported: std::collections::HashSet::new(),
        key: key.clone(),
        rotation,
        target,
        events: tx,
        link,
        beacon: None,
        threads: vec![net_thread],
        max_offline_ms,
        shutdown: shutdown.clone(),
    };
    daemon.write_status(true);
    let result = daemon
        .start_rotation()
        .and_then(|()| daemon.event_loop(&mut rx, &mode, &shutdown));
    // The network tasks send a Close and end; dropping the senders also
    // frees them if they wait for room in the event queue.
    shutdown.cancel();
    daemon.out = None;
    daemon.beacon = None;
    daemon.status.connected = false;
    daemon.write_status(true);
    for t in daemon.threads.drain(..) {
        let _ = t.join();
    }
    result
}

/// Records the edits made while no daemon ran and writes what peers sent
/// meanwhile.
fn catch_up(session: &mut Session, verbose: bool) -> Result<()> {
    if session.ws.store_mut().changed_by_others()? {
        *session = open_session(session.layout.clone())?;
    }
    let changes = session.record()?;
    if !changes.is_empty() && verbose {
        print_line(&format!(
            "Recorded {} edits made while offline.",
            changes.count()
        ));
    }
    session.checkout("writing")?;
    Ok(())
}

/// Joins the disk changes waiting in `rx` to `change`; the first other
/// event met is kept in `next`.
fn coalesce(
    mut change: DiskChange,
    rx: &mut mpsc::Receiver<Event>,
    next: &mut Option<Event>,
) -> DiskChange {
    while let Ok(event) = rx.try_recv() {
        match (event, &mut change) {
            (Event::Disk(DiskChange::Paths(more)), DiskChange::Paths(paths)) => paths.extend(more),
            (Event::Disk(_), _) => change = DiskChange::Everything,
            (other, _) => {
                *next = Some(other);
                break;
            }
        }
    }
    change
}

impl Daemon {
    fn event_loop(
        &mut self,
        rx: &mut mpsc::Receiver<Event>,
        mode: &Mode,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let mut next = None;
        loop {
            // Seen within a tick at most: ticks keep arriving while idle.
            if shutdown.is_cancelled() {
                self.say("Stopping.");
                return Ok(());
            }
            let event = match next.take() {
                Some(e) => e,
                None => match rx.blocking_recv() {
                    Some(e) => e,
                    None => break,
                },
            };
            // Disk changes queued behind one another are one scan.
            let event = match event {
                Event::Disk(change) => Event::Disk(coalesce(change, rx, &mut next)),
                other => other,
            };
            let _lock = WriteLock::acquire(&self.session.layout.sync_dir())?;
            match self.handle(event, mode) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return Ok(()),
                Err(e) if e.downcast_ref::<Fatal>().is_some() => return Err(e),
                Err(e) => {
                    // A full disk, a file the editor holds, a document that
                    // would not load: report it, drop what was only in memory,
                    // and carry on. Nothing committed is lost, and whatever
                    // failed is retried by the next scan or resync.
                    // Logged once per distinct problem: a full disk fails
                    // every event until space is freed.
                    self.report(&format!("{e:#}; recovering from the last committed state"));
                    let layout = self.session.layout.clone();
                    self.session =
                        open_session(layout).context("reloading the sync state after an error")?;
                    self.engine.reset(&self.session.ws);
                }
            }
            self.write_status(false);
        }
        Ok(())
    }

    fn handle(&mut self, event: Event, mode: &Mode) -> Result<Flow> {
        self.reload_if_needed()?;
        match event {
            Event::Disk(DiskChange::Paths(mut paths)) => {
                // Many files at once go in slices, each recorded, committed
                // and sent before the next: the first arrive while the rest
                // are still being recorded. (A rename split across two
                // slices is recorded as a delete and a create: no bytes lost.)
                paths.sort_unstable();
                for slice in paths.chunks(SCAN_SLICE) {
                    self.on_disk(Scope::Under(slice))?;
                }
            }
            Event::Disk(DiskChange::Everything) => self.on_disk(Scope::All)?,
            Event::Frame(bytes) => self.on_frame(&bytes, mode)?,
            Event::BeaconFrame(bytes) => {
                if let Some((beacon, out)) = &mut self.beacon {
                    for f in beacon.on_frame(&bytes) {
                        let _ = out.blocking_send(f.encode());
                    }
                }
            }
            Event::Connected => {
                self.status.connected = true;
                self.status.last_problem = None;
                self.say(&format!("Connected to the relay at {}.", self.relay));
            }
            Event::Disconnected => {
                if self.status.connected {
                    self.say("Lost the relay connection; reconnecting.");
                }
                self.engine.disconnected();
                self.status.connected = false;
            }
            Event::Unreachable(why) => {
                if self.status.last_problem.is_none() {
                    self.say(&format!(
                        "Cannot reach the relay at {} ({why}); retrying.",
                        self.relay
                    ));
                }
                self.status.connected = false;
                self.status.last_problem = Some(format!("relay unreachable: {why}"));
            }
            Event::Fatal(msg) => return Err(Fatal(msg).into()),
            Event::Tick => {
                let out = self.engine.tick(&mut self.session.ws, disk::now_ms());
                self.send(out.frames);
                if matches!(mode, Mode::Watch)
                    && self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN)
                {
                    self.on_disk(Scope::All)?;
                }
                if matches!(mode, Mode::Watch)
                    && self.retry_writes.is_some_and(|at| Instant::now() >= at)
                {
                    self.write_received()?;
                }
                if let Mode::Clone { deadline, bar } = mode {
                    let (have, total) = self.clone_progress()?;
                    bar.set_length(total);
                    bar.set_position(have);
                    if self.clone_done()? {
                        return Ok(Flow::Stop);
                    }
                    if Instant::now() > *deadline {
                        return Err(Fatal(format!(
                            "{}: no peer of this workspace sent it in time; start `cue watch --sync` on a peer that has it, then retry",
                            if self.saw_peer { "the workspace did not finish arriving" } else { "nobody else is in this workspace's room on the relay" }
                        )).into());
                    }
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// A `cue` command in another process committed to the state: reload it,
    /// and broadcast whatever it recorded.
    fn reload_if_needed(&mut self) -> Result<()> {
        if !self.session.ws.store_mut().changed_by_others()? {
            return Ok(());
        }
        let layout = self.session.layout.clone();
        self.session = open_session(layout)?;
        let out = self.engine.local_changes(&mut self.session.ws)?;
        self.send(out.frames);
        // `cue member remove` may have written a rotation record: it has
        // just been sent to the old room, and this peer moves now.
        self.follow(Vec::new())
    }

    fn on_disk(&mut self, scope: Scope<'_>) -> Result<()> {
        if matches!(scope, Scope::All) {
            self.last_scan = Some(Instant::now());
        }
        let changes = self.session.scan(scope, false, &mut |_, _| {})?;
        for s in &changes.skipped {
            self.report(&s.to_string());
        }
        if changes.is_empty() {
            return Ok(());
        }
        let out = self.engine.local_changes(&mut self.session.ws)?;
        self.send(out.frames);
        // A save that raced a received change (its write was refused to keep
        // the user's bytes) is merged now: write the result at once.
        self.write_received()?;
        if self.verbose {
            let names: Vec<&str> = changes
                .created
                .iter()
                .chain(&changes.edited)
                .chain(&changes.removed)
                .map(String::as_str)
                .collect();
            print_line(&format!("Sent: {}", names.join(", ")));
        }
        Ok(())
    }

    fn on_frame(&mut self, bytes: &[u8], mode: &Mode) -> Result<()> {
        // A frame of the room this peer just rotated away from, queued
        // before the switch: not the relay's fault, and nothing to do.
        if let Ok(h) = cue_wire::Header::decode(bytes) {
            if self
                .beacon
                .as_ref()
                .is_some_and(|(b, _)| b.room() == h.room)
            {
                return Ok(());
            }
        }
        self.quiet_since = Instant::now();
        let before = self.engine.status().peers.len();
        let out = self
            .engine
            .on_frame(&mut self.session.ws, bytes, disk::now_ms())?;
        for p in &out.problems {
            self.report(&p.to_string());
            if matches!(mode, Mode::Clone { .. }) && matches!(p, SyncProblem::WrongKey { .. }) {
                return Err(Fatal(p.to_string()).into());
            }
        }
        let peers = self.engine.status().peers.len();
        if peers > 0 {
            self.saw_peer = true;
        }
        if peers != before {
            self.say(&format!("{peers} other peer(s) online."));
        }
        if out.changed {
            self.write_received()?;
        }
        self.send(out.frames);
        if out.changed || !out.rotations.is_empty() {
            self.follow(out.rotations)?;
        }
        Ok(())
    }

    /// At start: follow the rotations the index already holds (made while
    /// this peer was stopped, or brought by a bundle), then keep a beacon in
    /// the room this peer last rotated away from, for as long as a member
    /// offline since could still come back there (`sync.max_offline_days`).
    fn start_rotation(&mut self) -> Result<()> {
        if self.rotation.is_none() {
            return Ok(());
        }
        self.follow(Vec::new())?;
        if self.beacon.is_some() {
            return Ok(());
        }
        let Some(previous) = super::key::read_previous_key(&self.session.layout)? else {
            return Ok(());
        };
        let room = self.key.room_id();
        let records = self.session.ws.rotations()?;
        let current = records.into_iter().find_map(|(_, bytes)| {
            Rotation::decode_verified(&bytes, &previous)
                .ok()
                .filter(|r| r.new_room == room)
                .map(|r| (r.at_ms, bytes))
        });
        if let Some((at_ms, record)) = current {
            if disk::now_ms() - at_ms < self.max_offline_ms {
                self.start_beacon(&previous, record)?;
            }
        }
        Ok(())
    }

    /// Moves this peer along the rotation records it knows (in the index, or
    /// `received` from a beacon), one epoch at a time. A record that is not
    /// from a member, or malformed, is refused with one log line.
    fn follow(&mut self, received: Vec<Vec<u8>>) -> Result<()> {
        let Some(rotating) = &self.rotation else {
            return Ok(());
        };
        let member = rotating.member.clone();
        let secret = rotating.secret.clone();
        let mut received_records = Vec::new();
        for bytes in received {
            match Rotation::decode(&bytes) {
                Ok(r) => received_records.push((r.epoch, bytes)),
                Err(e) => self.report(&format!(
                    "a peer sent a rotation record that was refused: {e}"
                )),
            }
        }
        loop {
            let mut records = self.session.ws.rotations()?;
            records.extend(received_records.iter().cloned());
            let mut refused = Vec::new();
            let step = members::next_step(&records, &self.key, &member, &secret, &mut refused);
            for r in refused {
                self.report(&r);
            }
            match step {
                Step::Stay => return Ok(()),
                Step::Removed { epoch, by } => {
                    self.report(&format!(
                        "this member ({member}) was removed from the workspace by {by} (key epoch {epoch}): the others moved to a new key and room, and nothing they write reaches this peer any more"
                    ));
                    return Ok(());
                }
                Step::NoCopy { epoch, by } => {
                    self.report(&format!(
                        "{by} moved the workspace to a new key (epoch {epoch}) with no copy this member can open (no key of {member} was published then); ask a member for a new join code (`cue sync invite`) and run `cue sync join` here"
                    ));
                    return Ok(());
                }
                Step::Move {
                    key,
                    epoch,
                    record,
                    by,
                    removed,
                } => self.switch(key, epoch, record, &by, &removed)?,
            }
        }
    }

    /// Moves to `key`: the key file, a new relay connection in the new room
    /// (a fresh engine: peers and sync sessions start over), and a beacon in
    /// the old room that hands `record` to members who come back there.
    fn switch(
        &mut self,
        key: WorkspaceKey,
        epoch: u32,
        record: Vec<u8>,
        by: &str,
        removed: &str,
    ) -> Result<()> {
        let old = std::mem::replace(&mut self.key, key);
        super::key::rotate_key(&self.session.layout, &old, &self.key)?;
        // What was queued for the old room (the record itself, if this peer
        // made it) still leaves before that connection closes.
        self.out = None;
        let link = self.link.fetch_add(1, Ordering::SeqCst) + 1;
        let seed = random_seed()?;
        let mut peer = [0u8; 16];
        peer.copy_from_slice(&seed[..16]);
        let member = self
            .session
            .config
            .workspace
            .member
            .clone()
            .unwrap_or_default();
        self.engine = SyncEngine::new(
            &mut self.session.ws,
            &self.key,
            PeerId(peer),
            random_seed()?,
            disk::now_ms(),
            self.max_offline_ms,
        )?;
        self.engine.set_member(&member);
        let (out, thread) = start_link(
            self.target.clone(),
            &self.key,
            self.events.clone(),
            link,
            self.link.clone(),
            false,
            self.shutdown.clone(),
        )?;
        self.out = Some(out);
        self.threads.push(thread);
        self.status.connected = false;
        self.start_beacon(&old, record)?;
        self.say(&format!(
            "{by} removed {removed}: moved to the workspace's new key (epoch {epoch}) and its room; a beacon stays in the old room for members who come back there."
        ));
        Ok(())
    }

    fn start_beacon(&mut self, old: &WorkspaceKey, record: Vec<u8>) -> Result<()> {
        let beacon = Beacon::new(old, record, random_seed()?);
        let (out, thread) = start_link(
            self.target.clone(),
            old,
            self.events.clone(),
            0,
            self.link.clone(),
            true,
            self.shutdown.clone(),
        )?;
        self.threads.push(thread);
        self.beacon = Some((beacon, out));
        Ok(())
    }

    /// Writes what peers sent to the user's files. A write that could not be
    /// made (a full disk, a file the editor locked) is retried in a moment,
    /// not only when the next change arrives: it may be the last one.
    fn write_received(&mut self) -> Result<()> {
        let applied = self.session.write_files(&mut |_, _| {})?;
        for s in &applied.refused {
            self.report(&s.to_string());
        }
        if let Some(first) = applied.unplaced.first() {
            self.report(&format!(
                "{} file(s) from peers have names that are not safe to write and stay only in the documents (first: {first})",
                applied.unplaced.len()
            ));
        }
        // Not a problem (other members may sync project files this peer does
        // not include), but a member could use it to plant files: say so once.
        if let Some(first) = applied.not_kept.first() {
            let line = format!(
                "{} file(s) from peers are outside this peer's sync.include and are not written here (first: {first}); `cue status` lists them",
                applied.not_kept.len()
            );
            if self.reported.insert(line.clone()) {
                warn!("{line}");
            }
        }
        // Not for files that cannot be placed (an unsafe path from a peer):
        // planning again every 2 s cannot change that, a new change can.
        self.retry_writes = (!applied.refused.is_empty()).then(|| Instant::now() + RETRY_WRITES);
        if self.verbose && !(applied.written.is_empty() && applied.removed.is_empty()) {
            let names: Vec<&str> = applied
                .written
                .iter()
                .chain(&applied.removed)
                .map(|p| p.as_str())
                .collect();
            print_line(&format!("Received: {}", names.join(", ")));
        }
        Ok(())
    }

    /// A clone is done when the index has arrived, every file it names has
    /// too, and the peers have gone quiet (no sync message in flight).
    fn clone_done(&mut self) -> Result<bool> {
        let ws = &mut self.session.ws;
        if ws.workspace_id().is_none() || ws.missing_docs() > 0 {
            return Ok(false);
        }
        Ok(self.quiet_since.elapsed() >= Duration::from_millis(500))
    }

    /// Files the index names, and how many of them have arrived.
    fn clone_progress(&self) -> Result<(u64, u64)> {
        let ws = &self.session.ws;
        let missing = ws.missing_docs() as u64;
        let total = ws.doc_heads().len().saturating_sub(1) as u64 + missing;
        Ok((total - missing, total))
    }

    fn send(&mut self, frames: Vec<cue_wire::Frame>) {
        if let Some(out) = &self.out {
            for f in frames {
                // Waits while the connection is behind. An error means the
                // network task has ended (shut down, or refused for good).
                let _ = out.blocking_send(f.encode());
            }
        }
    }

    /// Logs a problem the first time it is seen, and shows it in the status.
    fn report(&mut self, problem: &str) {
        if self.reported.len() > 10_000 {
            self.reported.clear();
        }
        if self.reported.insert(problem.to_string()) {
            warn!("{problem}");
        }
        self.status.last_problem = Some(problem.to_string());
    }

    fn say(&self, line: &str) {
        info!("{line}");
        if self.verbose {
            print_line(line);
        }
    }

    fn write_status(&mut self, force: bool) {
        let s = self.engine.status();
        let peers: Vec<PeerStatus> = s
            .peers
            .iter()
            .map(|(p, m)| PeerStatus {
                peer: p.to_string(),
                member: m.clone().filter(|m| !m.is_empty()),
            })
            .collect();
        let changed = peers != self.status.peers
            || s.last_sync_ms != self.status.last_sync_ms
            || s.unsent != self.status.unsent_changes;
        self.status.peers = peers;
        self.status.last_sync_ms = s.last_sync_ms;
        self.status.unsent_changes = s.unsent;
        self.status.full_resync = s.full_resync;
        if force
            || self.status_written.is_none_or(|t| {
                (changed && t.elapsed() >= Duration::from_millis(200))
                    || t.elapsed() >= Duration::from_secs(2)
            })
        {
            self.status.updated_ms = disk::now_ms();
            if let Err(e) = status::write_status(&self.session.layout, &self.status) {
                warn!("cannot write the daemon status: {e}");
            }
            self.status_written = Some(Instant::now());
        }
    }
}
