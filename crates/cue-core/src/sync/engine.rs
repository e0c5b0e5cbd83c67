//! The sync engine: one peer's side of the protocol, with no I/O.
//!
//! It takes frames from the relay, the fact that local edits were recorded,
//! and clock ticks; it returns sealed frames to send and whether the files on
//! disk need rewriting. The daemon feeds it real sockets and a real clock, the
//! simulator a simulated network, and both run the same decisions.
//!
//! The protocol, per pair of peers:
//! 1. On meeting (the relay's Welcome or PeerJoined), each sends a Handshake
//!    with a digest of all its documents' heads. Equal digests: nothing to do.
//! 2. Otherwise each sends a SyncRequest listing a short hash of every
//!    document's heads; the other starts automerge's sync protocol (heads and
//!    bloom filters, one `SyncState` per document and peer) for each document
//!    that differs, or for every document when `full` (back from a long time
//!    offline).
//! 3. A local edit is broadcast at once as a Change carrying its dependencies.
//!    A receiver holding the dependencies merges it and acknowledges it; one
//!    missing them has found a gap and falls back to the sync protocol for
//!    that document.
//! 4. Heartbeats carry the digest, so a lost message is noticed and repaired
//!    by a new SyncRequest.
//!
//! Merges are committed to the store before the Acks that follow them leave.

use std::collections::{BTreeMap, HashMap};

use cue_wire::{Frame, FrameKind, FrameRef, Header, PeerId, RoomId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::message::{pack, Message, Reassembler, PROTOCOL};
use super::seal::{Sealer, WorkspaceKey, NONCE_LEN};
use crate::doc::{ChangeHash, DocError, SyncState};
use crate::limits::MAX_UNNAMED_DOCS;
use crate::store::{DocKey, Store};
use crate::workspace::{Workspace, WorkspaceError};
use crate::WorkspaceId;

/// How often a peer says it is alive and what its digest is.
pub const HEARTBEAT_MS: i64 = 5_000;
/// A peer whose digest still differs this long after the last sync request
/// gets another one: what repairs a lost message.
const RESYNC_AFTER_MS: i64 = 10_000;
/// Meta key under which the time of the last exchange with a peer is kept.
pub const LAST_SYNC_META: &str = "last_sync_ms";

/// Something the engine could not do with what it received; the engine keeps
/// running, and the caller shows these to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncProblem {
    #[error("peer {peer} sent data this workspace's key cannot open: it holds a different workspace key, so nothing from it is merged (check the join code it was cloned from)")]
    WrongKey { peer: PeerId },
    #[error("peer {peer} sent a malformed message: {reason}")]
    Malformed { peer: PeerId, reason: String },
    #[error("peer {peer} speaks protocol {theirs}, this build speaks {PROTOCOL}; update cue on the older peer")]
    Protocol { peer: PeerId, theirs: u16 },
    #[error("could not merge what peer {peer} sent: {reason}")]
    Merge { peer: PeerId, reason: String },
    #[error("peer {peer} belongs to another workspace ({theirs}) that uses this room; nothing is exchanged with it")]
    WrongWorkspace { peer: PeerId, theirs: WorkspaceId },
    #[error("the relay sent a frame that does not parse: {reason}")]
    Relay { reason: String },
    #[error("peer {peer} sent more than this peer accepts: {reason}; ignored, syncing goes on")]
    Refused { peer: PeerId, reason: String },
}

/// What one step of the engine produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Sealed frames for the relay, in order.
    pub frames: Vec<Frame>,
    /// Documents changed: the caller should write the files (plan + apply).
    pub changed: bool,
    /// Problems to report; none of them stops the engine.
    pub problems: Vec<SyncProblem>,
}

/// What the daemon shows in `cue sync status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// Peers in the room, with the member name each announced.
    pub peers: Vec<(PeerId, Option<String>)>,
    /// Last time anything was exchanged with a peer (ms since the epoch).
    pub last_sync_ms: Option<i64>,
    /// Documents with local edits no peer has acknowledged yet.
    pub unsent: usize,
    /// Whether the next sync will be a full one (after a long time offline).
    pub full_resync: bool,
}

/// What this peer knows about another peer in the room.
#[derive(Default)]
struct Remote {
    member: Option<String>,
    sessions: HashMap<DocKey, SyncState>,
    last_request_ms: i64,
    /// Per document, a hash of the last sync message from this peer and of
    /// our answer (compared, never read back: a copy could be megabytes).
    last_exchange: HashMap<DocKey, [u8; 32]>,
    warned_key: bool,
    /// Whether this peer was told once that its unnamed documents were ignored.
    warned_unnamed: bool,
    /// Another workspace: everything it sends is ignored.
    foreign: bool,
}

/// Where a batch of messages goes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    All,
    One(PeerId),
}

/// One peer's protocol state.
pub struct SyncEngine {
    room: RoomId,
    me: PeerId,
    member: String,
    sealer: Sealer,
    rng: StdRng,
    stream: u32,
    reassembler: Reassembler,
    peers: BTreeMap<PeerId, Remote>,
    /// Heads each document had when last sent or received: a difference is a
    /// local edit to broadcast.
    known: BTreeMap<DocKey, Vec<ChangeHash>>,
    /// Local edits per document (the latest Change id) that no peer acknowledged.
    unacked: BTreeMap<DocKey, (u64, Vec<ChangeHash>)>,
    next_change: u64,
    last_sync_ms: Option<i64>,
    full_resync: bool,
    last_heartbeat_ms: i64,
    outbox: Vec<(Target, Message)>,
    /// File documents held or being fetched that the index does not name,
    /// at most [`MAX_UNNAMED_DOCS`]: counted from the store when first needed.
    unnamed: Option<std::collections::BTreeSet<DocKey>>,
    /// The index heads when `unnamed` was last pruned of documents it names.
    unnamed_pruned_at: Vec<ChangeHash>,
}

impl SyncEngine {
    /// An engine for peer `me`. `max_offline_ms`: past this long since the last
    /// exchange, the first sync compares every document (a full resync).
    pub fn new<S: Store>(
        ws: &mut Workspace<S>,
        key: &WorkspaceKey,
        me: PeerId,
        seed: [u8; 32],
        now_ms: i64,
        max_offline_ms: i64,
    ) -> Result<Self, WorkspaceError> {
        let last_sync_ms = ws
            .store_mut()
            .meta(LAST_SYNC_META)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_be_bytes);
        let full_resync = last_sync_ms.is_some_and(|t| now_ms - t > max_offline_ms);
        let known = ws
            .doc_heads()
            .iter()
            .map(|(k, i)| (*k, i.heads.clone()))
            .collect();
        Ok(SyncEngine {
            room: key.room_id(),
            me,
            member: String::new(),
            sealer: key.sealer(),
            rng: StdRng::from_seed(seed),
            stream: 0,
            reassembler: Reassembler::default(),
            peers: BTreeMap::new(),
            known,
            unacked: BTreeMap::new(),
            next_change: 1,
            last_sync_ms,
            full_resync,
            last_heartbeat_ms: now_ms,
            outbox: Vec::new(),
            unnamed: None,
            unnamed_pruned_at: Vec::new(),
        })
    }

    /// The member name this peer announces in its handshakes.
    pub fn set_member(&mut self, member: &str) {
        self.member = member.to_string();
    }

    /// The room this engine's frames belong to.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// This peer's id in the room.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The connection to the relay dropped: every peer is gone until the next
    /// Welcome, and sync sessions start over then.
    pub fn disconnected(&mut self) {
        self.peers.clear();
        self.reassembler = Reassembler::default();
        self.outbox.clear();
    }

    /// The workspace was reloaded from the store after a failure (a full
    /// disk): what was merged in memory but not committed is gone, so every
    /// sync session starts over and the next heartbeat compares digests anew.
    pub fn reset<S: Store>(&mut self, ws: &Workspace<S>) {
        for remote in self.peers.values_mut() {
            remote.sessions.clear();
            remote.last_request_ms = i64::MIN / 2;
        }
        self.reassembler = Reassembler::default();
        self.outbox.clear();
        self.known = ws
            .doc_heads()
            .iter()
            .map(|(k, i)| (*k, i.heads.clone()))
            .collect();
    }

    /// Handles one frame from the relay.
    pub fn on_frame<S: Store>(
        &mut self,
        ws: &mut Workspace<S>,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<Output, WorkspaceError> {
        let mut out = Output::default();
        let frame = match FrameRef::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                out.problems.push(SyncProblem::Relay {
                    reason: e.to_string(),
                });
                return Ok(out);
            }
        };
        if frame.header.room != self.room {
            out.problems.push(SyncProblem::Relay {
                reason: "frame for another room".into(),
            });
            return Ok(out);
        }
        match frame.header.kind {
            FrameKind::Welcome => {
                self.peers.clear();
                for peer in frame.welcome_peers() {
                    if peer != self.me {
                        self.peers.insert(peer, Remote::default());
                    }
                }
                if !self.peers.is_empty() {
                    let hello = self.handshake(ws);
                    self.outbox.push((Target::All, hello));
                }
            }
            FrameKind::PeerJoined => {
                let peer = frame.header.sender;
                if peer != self.me {
                    self.peers.insert(peer, Remote::default());
                    let hello = self.handshake(ws);
                    self.outbox.push((Target::One(peer), hello));
                }
            }
            FrameKind::PeerLeft => {
                self.peers.remove(&frame.header.sender);
                self.reassembler.forget(&frame.header.sender);
            }
            FrameKind::Broadcast | FrameKind::Direct => {
                self.on_peer_frame(ws, &frame.header, frame.payload, now_ms, &mut out)?;
            }
        }
        ws.commit_remote()?;
        self.flush(&mut out);
        Ok(out)
    }

    fn on_peer_frame<S: Store>(
        &mut self,
        ws: &mut Workspace<S>,
        header: &Header,
        payload: &[u8],
        now_ms: i64,
        out: &mut Output,
    ) -> Result<(), WorkspaceError> {
        let from = header.sender;
        if from == self.me || (header.kind == FrameKind::Direct && header.recipient != self.me) {
            return Ok(());
        }
        let envelope = match self.sealer.open(header, payload) {
            Ok(e) => e,
            Err(_) => {
                let remote = self.peers.entry(from).or_default();
                if !remote.warned_key {
                    remote.warned_key = true;
                    out.problems.push(SyncProblem::WrongKey { peer: from });
                }
                return Ok(());
            }
        };
        let msgs = match self.reassembler.push(from, &envelope) {
            Ok(m) => m,
            Err(e) if e.is_limit() => {
                out.problems.push(SyncProblem::Refused {
                    peer: from,
                    reason: e.to_string(),
                });
                return Ok(());
            }
            Err(e) => {
                out.problems.push(SyncProblem::Malformed {
                    peer: from,
                    reason: e.to_string(),
                });
                return Ok(());
            }
        };
        if self.peers.entry(from).or_default().foreign {
            return Ok(());
        }
        for msg in msgs {
            if let Err(e) = self.on_message(ws, from, msg, now_ms, out) {
                // A document a peer sent that does not merge is refused; the
                // store error of a full disk is not the peer's fault and stops here.
                match e {
                    WorkspaceError::Store(_) => return Err(e),
                    WorkspaceError::Doc(DocError::Limit(limit)) if !limit.is_malformed() => {
                        out.problems.push(SyncProblem::Refused {
                            peer: from,
                            reason: limit.to_string(),
                        })
                    }
                    other => out.problems.push(SyncProblem::Merge {
                        peer: from,
                        reason: other.to_string(),
                    }),
                }
            }
        }
        Ok(())
    }

    fn on_message<S: Store>(
        &mut self,
        ws: &mut Workspace<S>,
        from: PeerId,
        msg: Message,
        now_ms: i64,
        out: &mut Output,
    ) -> Result<(), WorkspaceError> {
        match msg {
            Message::Handshake {
                protocol,
                member,
                workspace,
                digest,
            } => {
                if protocol != PROTOCOL {
                    out.problems.push(SyncProblem::Protocol {
                        peer: from,
                        theirs: protocol,
                    });
                    return Ok(());
                }
                if let (Some(ours), Some(theirs)) = (ws.workspace_id(), workspace.map(WorkspaceId))
                {
                    if ours != theirs {
                        self.peers.entry(from).or_default().foreign = true;
                        out.problems
                            .push(SyncProblem::WrongWorkspace { peer: from, theirs });
                        return Ok(());
                    }
                }
                self.peers.entry(from).or_default().member = Some(member);
                let same = digest == self.digest(ws);
                self.delivered_if(same);
                if self.full_resync || !same {
                    self.request_sync(ws, from, now_ms);
                }
            }
            Message::SyncRequest { full, entries } => {
                // Ordered: the order of the replies must not depend on hashing (seeded simulation).
                let theirs: BTreeMap<DocKey, [u8; 8]> = entries.into_iter().collect();
                let mut docs: Vec<DocKey> = ws.doc_heads().keys().copied().collect();
                let unknown: Vec<DocKey> = theirs
                    .keys()
                    .filter(|k| !ws.doc_heads().contains_key(k))
                    .copied()
                    .collect();
                for doc in unknown {
                    if self.admit(ws, from, doc, out)? {
                        docs.push(doc);
                    }
                }
                for doc in docs {
                    let ours = ws.doc_heads().get(&doc).map(|i| heads_hash(&i.heads));
                    if !full && ours.is_some() && ours.as_ref() == theirs.get(&doc) {
                        continue;
                    }
                    self.start_session(ws, from, doc)?;
                }
            }
            Message::SyncResponse { doc, sync } => {
                if !self.admit(ws, from, doc, out)? {
                    return Ok(());
                }
                let mut state = self
                    .peers
                    .entry(from)
                    .or_default()
                    .sessions
                    .remove(&doc)
                    .unwrap_or_default();
                let result = ws.receive_sync(doc, &mut state, &sync);
                let changed = match result {
                    Ok(c) => c,
                    Err(e) => {
                        // Start this document over with this peer next time.
                        return Err(e);
                    }
                };
                out.changed |= changed;
                self.note_remote(ws, doc, now_ms);
                if let Some(theirs) = &state.their_heads {
                    if let Some((_, heads)) = self.unacked.get(&doc) {
                        if heads.iter().all(|h| theirs.contains(h)) {
                            self.unacked.remove(&doc);
                        }
                    }
                }
                let reply = ws.sync_message(doc, &mut state)?;
                self.full_resync = false;
                let remote = self.peers.entry(from).or_default();
                let exchange = reply.as_ref().map(|r| exchange_hash(&sync, r));
                let circling =
                    exchange.is_some() && remote.last_exchange.get(&doc) == exchange.as_ref();
                if circling {
                    // The same answer to the same message: the exchange goes
                    // round in circles, and would at network speed until a
                    // heartbeat noticed (found by `cue-sim`). automerge's sync
                    // state remembers what it sent, so after a lost frame one
                    // end keeps asking for a change the other is sure it sent.
                    // Both ends start over: our state for it is dropped here,
                    // the peer's by the request.
                    self.request_sync(ws, from, now_ms);
                    return Ok(());
                }
                match (reply, exchange) {
                    (Some(reply), Some(exchange)) => {
                        remote.last_exchange.insert(doc, exchange);
                        self.outbox.push((
                            Target::One(from),
                            Message::SyncResponse { doc, sync: reply },
                        ));
                    }
                    _ => {
                        remote.last_exchange.remove(&doc);
                    }
                }
                if let Some(remote) = self.peers.get_mut(&from) {
                    remote.sessions.insert(doc, state);
                }
            }
            Message::Change {
                id,
                doc,
                deps,
                bytes,
            } => {
                if !self.admit(ws, from, doc, out)? {
                    return Ok(());
                }
                if ws.has_heads(doc, &deps)? {
                    out.changed |= ws.merge_changes(doc, &bytes)?;
                    self.note_remote(ws, doc, now_ms);
                    self.outbox
                        .push((Target::One(from), Message::Ack { id, doc }));
                } else {
                    // A gap: we missed something this change builds on.
                    self.start_session(ws, from, doc)?;
                }
            }
            Message::Heartbeat { digest } => {
                let due = self
                    .peers
                    .get(&from)
                    .is_some_and(|r| now_ms - r.last_request_ms >= RESYNC_AFTER_MS);
                let same = digest == self.digest(ws);
                self.delivered_if(same);
                if due && !same {
                    self.request_sync(ws, from, now_ms);
                }
            }
            Message::Ack { id, doc } => {
                if self
                    .unacked
                    .get(&doc)
                    .is_some_and(|(latest, _)| *latest <= id)
                {
                    self.unacked.remove(&doc);
                }
                self.touch(now_ms, ws);
            }
        }
        Ok(())
    }

    /// A peer whose digest equals ours holds every edit we made, so none is
    /// undelivered, even if the Acks for them were lost (they are not resent).
    fn delivered_if(&mut self, same_digest: bool) {
        if same_digest {
            self.unacked.clear();
        }
    }

    /// Whether to take in (or fetch) `doc` from `peer`: always for the index
    /// and documents this peer holds or its index names; for others (a file
    /// document arrives before the index entry that names it) only while
    /// fewer than [`MAX_UNNAMED_DOCS`] such documents are held. Refusals are
    /// reported once per peer; the sync protocol fetches a refused document
    /// again once the index names it.
    fn admit<S: Store>(
        &mut self,
        ws: &mut Workspace<S>,
        peer: PeerId,
        doc: DocKey,
        out: &mut Output,
    ) -> Result<bool, WorkspaceError> {
        let DocKey::File(id) = doc else {
            return Ok(true);
        };
        // Held already (nothing grows), fetched already, or named: welcome.
        if ws.doc_heads().contains_key(&doc)
            || self.unnamed.as_ref().is_some_and(|u| u.contains(&doc))
            || ws.names_file(id)?
        {
            return Ok(true);
        }
        let unnamed = match self.unnamed.take() {
            Some(u) => u,
            None => {
                // Once per run: the unnamed documents the store already holds.
                let mut u = std::collections::BTreeSet::new();
                for key in ws.doc_heads().keys() {
                    if let DocKey::File(f) = key {
                        if !ws.names_file(*f)? {
                            u.insert(*key);
                        }
                    }
                }
                u
            }
        };
        let mut unnamed = unnamed;
        if unnamed.len() as u64 >= MAX_UNNAMED_DOCS {
            let heads = ws
                .doc_heads()
                .get(&DocKey::Index)
                .map(|i| i.heads.clone())
                .unwrap_or_default();
            if heads != self.unnamed_pruned_at {
                // The index changed: drop what it now names.
                let mut kept = std::collections::BTreeSet::new();
                for key in unnamed {
                    if let DocKey::File(f) = key {
                        if !ws.names_file(f)? {
                            kept.insert(key);
                        }
                    }
                }
                unnamed = kept;
                self.unnamed_pruned_at = heads;
            }
        }
        let admitted = (unnamed.len() as u64) < MAX_UNNAMED_DOCS;
        if admitted {
            unnamed.insert(doc);
        }
        self.unnamed = Some(unnamed);
        if !admitted {
            let remote = self.peers.entry(peer).or_default();
            if !remote.warned_unnamed {
                remote.warned_unnamed = true;
                out.problems.push(SyncProblem::Refused {
                    peer,
                    reason: format!(
                        "documents the index does not name, past the {MAX_UNNAMED_DOCS} held (MAX_UNNAMED_DOCS); they are fetched again once the index names them"
                    ),
                });
            }
        }
        Ok(admitted)
    }

    /// Starts automerge's sync protocol for `doc` with `peer` from scratch.
    fn start_session<S: Store>(
        &mut self,
        ws: &mut Workspace<S>,
        peer: PeerId,
        doc: DocKey,
    ) -> Result<(), WorkspaceError> {
        let mut state = SyncState::new();
        if let Some(sync) = ws.sync_message(doc, &mut state)? {
            self.outbox
                .push((Target::One(peer), Message::SyncResponse { doc, sync }));
        }
        self.peers
            .entry(peer)
            .or_default()
            .sessions
            .insert(doc, state);
        Ok(())
    }

    /// Broadcasts whatever was recorded locally since the last call.
    pub fn local_changes<S: Store>(
        &mut self,
        ws: &mut Workspace<S>,
    ) -> Result<Output, WorkspaceError> {
        let mut changed: Vec<(DocKey, Vec<ChangeHash>)> = ws
            .doc_heads()
            .iter()
            .filter(|(k, i)| self.known.get(k) != Some(&i.heads))
            .map(|(k, i)| (*k, i.heads.clone()))
            .collect();
        // Files first, so a peer that merges the index already holds the files it names.
        changed.sort_by_key(|(k, _)| *k == DocKey::Index);
        for (doc, heads) in changed {
            let deps = self.known.get(&doc).cloned().unwrap_or_default();
            let bytes = ws.changes_after(doc, &deps)?;
            let id = self.next_change;
            self.next_change += 1;
            self.unacked.insert(doc, (id, heads.clone()));
            self.known.insert(doc, heads);
            self.outbox.push((
                Target::All,
                Message::Change {
                    id,
                    doc,
                    deps,
                    bytes,
                },
            ));
        }
        let mut out = Output::default();
        self.flush(&mut out);
        Ok(out)
    }

    /// Heartbeats; call every few hundred milliseconds.
    pub fn tick<S: Store>(&mut self, ws: &mut Workspace<S>, now_ms: i64) -> Output {
        let mut out = Output::default();
        if now_ms - self.last_heartbeat_ms >= HEARTBEAT_MS && !self.peers.is_empty() {
            self.last_heartbeat_ms = now_ms;
            let digest = self.digest(ws);
            self.outbox
                .push((Target::All, Message::Heartbeat { digest }));
            self.flush(&mut out);
        }
        out
    }

    /// What `cue sync status` shows.
    pub fn status(&self) -> SyncStatus {
        SyncStatus {
            peers: self
                .peers
                .iter()
                .map(|(p, r)| (*p, r.member.clone()))
                .collect(),
            last_sync_ms: self.last_sync_ms,
            unsent: self.unacked.len(),
            full_resync: self.full_resync,
        }
    }

    fn handshake<S: Store>(&self, ws: &Workspace<S>) -> Message {
        Message::Handshake {
            protocol: PROTOCOL,
            member: self.member.clone(),
            workspace: ws.workspace_id().map(|id| id.0),
            digest: self.digest(ws),
        }
    }

    fn request_sync<S: Store>(&mut self, ws: &Workspace<S>, peer: PeerId, now_ms: i64) {
        let entries = ws
            .doc_heads()
            .iter()
            .map(|(k, i)| (*k, heads_hash(&i.heads)))
            .collect();
        let remote = self.peers.entry(peer).or_default();
        remote.last_request_ms = now_ms;
        remote.last_exchange.clear();
        self.outbox.push((
            Target::One(peer),
            Message::SyncRequest {
                full: self.full_resync,
                entries,
            },
        ));
    }

    /// A document now holds what a peer sent: not a local edit to broadcast.
    /// (Local edits are broadcast right after they are recorded, so none can
    /// be pending underneath a remote merge.)
    fn note_remote<S: Store>(&mut self, ws: &mut Workspace<S>, doc: DocKey, now_ms: i64) {
        if let Some(info) = ws.doc_heads().get(&doc) {
            self.known.insert(doc, info.heads.clone());
        }
        self.touch(now_ms, ws);
    }

    fn touch<S: Store>(&mut self, now_ms: i64, ws: &mut Workspace<S>) {
        let stale = self.last_sync_ms.is_none_or(|t| now_ms - t >= 60_000);
        self.last_sync_ms = Some(now_ms);
        if stale {
            ws.stage_meta(LAST_SYNC_META, now_ms.to_be_bytes().to_vec());
        }
    }

    fn digest<S: Store>(&self, ws: &Workspace<S>) -> [u8; 32] {
        let mut h = Sha256::new();
        for (k, i) in ws.doc_heads() {
            h.update(k.as_string().as_bytes());
            for head in &i.heads {
                h.update(head.0);
            }
        }
        h.finalize().into()
    }

    /// Seals the outbox into frames, one batch per target.
    fn flush(&mut self, out: &mut Output) {
        let mut by_target: BTreeMap<Target, Vec<Message>> = BTreeMap::new();
        for (t, m) in self.outbox.drain(..) {
            by_target.entry(t).or_default().push(m);
        }
        for (target, msgs) in by_target {
            let (kind, recipient) = match target {
                Target::All => (FrameKind::Broadcast, PeerId::ZERO),
                Target::One(p) => (FrameKind::Direct, p),
            };
            for envelope in pack(&msgs, &mut self.stream) {
                let header = Header {
                    kind,
                    room: self.room,
                    sender: self.me,
                    recipient,
                };
                let mut nonce = [0u8; NONCE_LEN];
                self.rng.fill_bytes(&mut nonce);
                let payload = self.sealer.seal(&header, &envelope, nonce);
                out.frames.push(Frame { header, payload });
            }
        }
    }
}

/// One sync message received and the answer to it, as a hash: the same pair
/// twice in a row means the exchange goes round in circles.
fn exchange_hash(got: &[u8], sent: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((got.len() as u64).to_be_bytes());
    h.update(got);
    h.update(sent);
    h.finalize().into()
}

/// A short, order-independent summary of a document's heads for SyncRequests.
fn heads_hash(heads: &[ChangeHash]) -> [u8; 8] {
    let mut sorted = heads.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
    for head in &sorted {
        h.update(head.0);
    }
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}
