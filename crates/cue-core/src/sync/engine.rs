//! The sync engine: one peer's side of the protocol, with no I/O.
//!
//! It takes frames from the relay, the fact that local edits were recorded,
//! and clock ticks; it returns sealed frames to send and whether the files on
//! disk need rewriting. The daemon feeds it real sockets and a real clock, the
//! simulator a simulated network, and both run the same decisions.
//!
//! The protocol, per pair of peers:
//! 1. On meeting (the relay's Welcome or PeerJoined), each sends the other a
//!    Handshake with a digest of all its documents' heads and a fresh
//!    challenge nonce; each answers the other's nonce by echoing it. What the
//!    relay says about who is in the room only triggers these challenges: a
//!    peer is *present* (counted in status, sent directed traffic, its
//!    digests believed) once a sealed Handshake from it echoes the nonce we
//!    drew for it, so neither a relay nor a replayed handshake can make a
//!    ghost appear. Equal digests: nothing to do.
//! 2. Otherwise the peer that arrived (the one whose Welcome listed the other)
//!    catches up, from one peer at a time: it sends a SyncRequest listing a
//!    short hash of every document's heads; the other sends every document
//!    the list lacks whole (a Snapshot: a newcomer gets the workspace as one
//!    stream), and starts automerge's sync protocol (heads and bloom filters,
//!    one `SyncState` per document and peer) for each document that differs,
//!    or for every document when `full` (back from a long time offline). The
//!    sync protocol runs both ways, so one request settles a pair; when several
//!    peers are behind, each document travels about once per peer that lacks
//!    it, not once per pair of peers.
//! 3. A local edit is broadcast at once as a Change carrying its dependencies.
//!    A receiver holding the dependencies merges it and acknowledges it; one
//!    missing them has found a gap and falls back to the sync protocol for
//!    that document.
//! 4. Heartbeats carry the digest, so a lost message is noticed and repaired
//!    by a new SyncRequest, once the digests have differed for a while with
//!    no progress (changes in flight are not lost) and the other peer is not
//!    itself catching up.
//!
//! Merges are committed to the store before the Acks that follow them leave.

use std::collections::{BTreeMap, HashMap, VecDeque};

use cue_wire::{Frame, FrameKind, FrameRef, Header, PeerId, RoomId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::message::{pack, Message, Reassembler, CHALLENGE_LEN, PROTOCOL};
use super::seal::{Sealer, WorkspaceKey};
use crate::doc::{ChangeHash, DocError, SyncState};
use crate::limits::MAX_UNNAMED_DOCS;
use crate::store::{DocKey, Store};
use crate::workspace::{Workspace, WorkspaceError};
use crate::WorkspaceId;

/// How often a peer says it is alive and what its digest is.
pub const HEARTBEAT_MS: i64 = 5_000;
/// A peer whose digest has differed this long, with nothing arriving from it
/// meanwhile, gets a sync request: what repairs a lost message.
const RESYNC_AFTER_MS: i64 = 10_000;
/// A catch-up with one peer is over once nothing came from it for this long;
/// the next peer in line is asked then.
const CATCH_UP_IDLE_MS: i64 = 1_500;
/// Meta key under which the time of the last exchange with a peer is kept.
pub const LAST_SYNC_META: &str = "last_sync_ms";
/// A handshake to a peer that has not proved itself yet goes at most this
/// often when it is only a repeat (a lost challenge, or a peer answering
/// with a stale echo): replays cost at most a small frame a second.
const CHALLENGE_REPEAT_MS: i64 = 1_000;
/// A peer the relay announced but that has not answered is challenged again
/// each heartbeat, this many times in a row with nothing arriving from it;
/// after that only when it sends something.
const MAX_CHALLENGES: u32 = 12;
/// Peers (present or not) this engine keeps state for: a relay has at most
/// 50 per room, and frames from more senders than this are ignored so a
/// hostile relay cannot grow our memory with made-up peer ids.
const MAX_REMOTES: usize = 1_024;

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
    /// Key rotation records peers sent: the caller checks each (its MAC,
    /// then its sealed copy for this member) and moves to the new key.
    pub rotations: Vec<Vec<u8>>,
}

/// What the daemon shows in `cue sync status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// Peers in the room that proved themselves live (echoed our fresh
    /// challenge), with the member name each announced.
    pub peers: Vec<(PeerId, Option<String>)>,
    /// Last time anything was exchanged with a peer (ms since the epoch).
    pub last_sync_ms: Option<i64>,
    /// Documents with local edits no peer has acknowledged yet.
    pub unsent: usize,
    /// Whether the next sync will be a full one (after a long time offline).
    pub full_resync: bool,
}

/// What this peer knows about another peer in the room.
struct Remote {
    /// The nonce we drew for this encounter with the peer: it must come back
    /// in a sealed Handshake before the peer counts as present.
    challenge: [u8; CHALLENGE_LEN],
    /// The peer echoed `challenge`: it holds the key and is live now.
    present: bool,
    /// The peer's latest nonce, and the one we last echoed to it.
    their_nonce: Option<[u8; CHALLENGE_LEN]>,
    echoed: Option<[u8; CHALLENGE_LEN]>,
    /// When we last sent it a Handshake, and how many heartbeat-time
    /// challenges went out with nothing sealed arriving from it since.
    last_challenge_ms: i64,
    challenges: u32,
    /// The relay said it is in the room: worth challenging again.
    announced: bool,
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
    /// Was in the room when we arrived: a peer we catch up from.
    was_here: bool,
    /// The digest it last announced, and whether it is catching up itself.
    digest: Option<[u8; 32]>,
    catching_up: bool,
    /// Since when its digest has differed from ours with nothing arriving.
    mismatch_since: Option<i64>,
    /// When something last arrived from it.
    last_heard_ms: i64,
}

impl Remote {
    fn new(challenge: [u8; CHALLENGE_LEN]) -> Remote {
        Remote {
            challenge,
            present: false,
            their_nonce: None,
            echoed: None,
            last_challenge_ms: i64::MIN / 2,
            challenges: 0,
            announced: false,
            member: None,
            sessions: HashMap::new(),
            last_request_ms: 0,
            last_exchange: HashMap::new(),
            warned_key: false,
            warned_unnamed: false,
            foreign: false,
            was_here: false,
            digest: None,
            catching_up: false,
            mismatch_since: None,
            last_heard_ms: 0,
        }
    }
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
    /// Peers to catch up from, one at a time, in order.
    catch_up: VecDeque<PeerId>,
    /// The peer we are catching up from now.
    syncing: Option<PeerId>,
    /// Our digest, and the heads generation it was computed at.
    digest_cache: std::cell::Cell<Option<(u64, [u8; 32])>>,
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
            .meta_value(LAST_SYNC_META)?
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
            catch_up: VecDeque::new(),
            syncing: None,
            digest_cache: std::cell::Cell::new(None),
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
        self.catch_up.clear();
        self.syncing = None;
    }

    /// The workspace was reloaded from the store after a failure (a full
    /// disk): what was merged in memory but not committed is gone, so every
    /// sync session starts over and the next heartbeat compares digests anew.
    pub fn reset<S: Store>(&mut self, ws: &Workspace<S>) {
        for remote in self.peers.values_mut() {
            remote.sessions.clear();
            remote.last_request_ms = i64::MIN / 2;
            remote.mismatch_since = None;
        }
        self.syncing = None;
        self.digest_cache.set(None);
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
                // The relay assigns this connection's peer id; a relay that
                // assigns none (the simulator's model relay) sends zero.
                if !frame.header.recipient.is_zero() {
                    self.me = frame.header.recipient;
                }
                // A Handshake may have overtaken the Welcome: such a peer
                // keeps what it said (and is caught up from if it differs).
                // The relay's list is only a list of peers to challenge:
                // none of them counts as present before it answers.
                let mut before = std::mem::take(&mut self.peers);
                self.catch_up.clear();
                self.syncing = None;
                let ours = self.digest(ws);
                let mut listed = Vec::new();
                for peer in frame.welcome_peers() {
                    if peer != self.me && self.peers.len() < MAX_REMOTES {
                        let mut remote = match before.remove(&peer) {
                            Some(r) => r,
                            None => {
                                let mut challenge = [0u8; CHALLENGE_LEN];
                                self.rng.fill_bytes(&mut challenge);
                                Remote::new(challenge)
                            }
                        };
                        remote.was_here = true;
                        remote.announced = true;
                        if remote.present && remote.digest.is_some_and(|d| d != ours) {
                            self.catch_up.push_back(peer);
                        }
                        self.peers.insert(peer, remote);
                        listed.push(peer);
                    }
                }
                for peer in listed {
                    self.challenge(ws, peer, now_ms);
                }
            }
            FrameKind::PeerJoined => {
                // A challenge, nothing more: the newcomer is present once it
                // echoes it.
                let peer = frame.header.sender;
                if peer != self.me
                    && (self.peers.contains_key(&peer) || self.peers.len() < MAX_REMOTES)
                {
                    let mut challenge = [0u8; CHALLENGE_LEN];
                    self.rng.fill_bytes(&mut challenge);
                    let mut remote = Remote::new(challenge);
                    remote.announced = true;
                    self.peers.insert(peer, remote);
                    self.challenge(ws, peer, now_ms);
                }
            }
            FrameKind::PeerLeft => {
                // A relay may always drop a peer; it cannot add one.
                let gone = frame.header.sender;
                self.peers.remove(&gone);
                self.reassembler.forget(&gone);
                self.catch_up.retain(|p| *p != gone);
                if self.syncing == Some(gone) {
                    self.syncing = None;
                }
            }
            FrameKind::Broadcast | FrameKind::Direct => {
                self.on_peer_frame(ws, &frame.header, frame.payload, now_ms, &mut out)?;
            }
            // Room admission is the transport's business, done before it
            // reports the connection; neither kind carries sync data.
            FrameKind::Challenge | FrameKind::Auth => {}
        }
        ws.commit()?;
        self.pump_catch_up(ws, now_ms);
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
        if !self.peers.contains_key(&from) && self.peers.len() >= MAX_REMOTES {
            return Ok(());
        }
        let envelope = match self.sealer.open(header, payload) {
            Ok(e) => e,
            Err(_) => {
                let remote = remote_entry(&mut self.peers, &mut self.rng, from);
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
        let remote = remote_entry(&mut self.peers, &mut self.rng, from);
        if remote.foreign {
            return Ok(());
        }
        let present = remote.present;
        // Something sealed came from it: worth challenging again, if need be.
        remote.challenges = 0;
        let msgs = if present {
            remote.last_heard_ms = now_ms;
            msgs
        } else {
            // Not proved live yet (a replay looks just like this): only its
            // handshakes count, and its changes may be merged (they are
            // sealed, so a member made them, and merging is idempotent), but
            // nothing is sent to it in answer except a challenge.
            let mut kept = Vec::new();
            let mut other = false;
            for m in msgs {
                match m {
                    Message::Handshake { .. }
                    | Message::Change { .. }
                    | Message::Snapshot { .. }
                    | Message::Rotation { .. } => kept.push(m),
                    _ => other = true,
                }
            }
            let handshake = kept.iter().any(|m| matches!(m, Message::Handshake { .. }));
            if !handshake && (other || !kept.is_empty()) {
                self.challenge(ws, from, now_ms);
            }
            kept
        };
        let rest = self.merge_in_bulk(ws, from, msgs, present, now_ms, out)?;
        for msg in rest {
            if let Err(e) = self.on_message(ws, from, msg, now_ms, out) {
                out.problems.push(refusal(from, e)?);
            }
        }
        Ok(())
    }

    /// Merges the whole documents and ready changes of one batch together
    /// (documents new to this peer load on every core); returns the other
    /// messages, for [`Self::on_message`].
    fn merge_in_bulk<S: Store>(
        &mut self,
        ws: &mut Workspace<S>,
        from: PeerId,
        msgs: Vec<Message>,
        present: bool,
        now_ms: i64,
        out: &mut Output,
    ) -> Result<Vec<Message>, WorkspaceError> {
        let mut bulk: Vec<(DocKey, Vec<u8>)> = Vec::new();
        let mut acks: Vec<Option<u64>> = Vec::new();
        let mut rest = Vec::new();
        for msg in msgs {
            match msg {
                Message::Snapshot { doc, bytes } => {
                    if self.admit(ws, from, doc, out)? {
                        bulk.push((doc, bytes));
                        acks.push(None);
                    }
                }
                Message::Change {
                    id,
                    doc,
                    deps,
                    bytes,
                } => {
                    if !self.admit(ws, from, doc, out)? {
                        continue;
                    }
                    if ws.has_heads(doc, &deps)? {
                        bulk.push((doc, bytes));
                        acks.push(present.then_some(id));
                    } else if present {
                        // A gap: we missed something this change builds on.
                        self.start_session(ws, from, doc)?;
                    }
                }
                other => rest.push(other),
            }
        }
        if bulk.is_empty() {
            return Ok(rest);
        }
        let docs: Vec<DocKey> = bulk.iter().map(|(k, _)| *k).collect();
        for ((doc, result), ack) in docs.into_iter().zip(ws.merge_many(bulk)).zip(acks) {
            match result {
                Ok(changed) => {
                    out.changed |= changed;
                    self.note_remote(ws, doc, now_ms);
                    if changed {
                        self.progress(from, now_ms);
                    }
                    if let Some(id) = ack {
                        self.outbox
                            .push((Target::One(from), Message::Ack { id, doc }));
                    }
                }
                Err(e) => out.problems.push(refusal(from, e)?),
            }
        }
        Ok(rest)
    }

    /// Something arrived from `peer` that changed our documents: a catch-up
    /// with it is still going, and a digest mismatch is not a lost message.
    fn progress(&mut self, peer: PeerId, now_ms: i64) {
        if let Some(remote) = self.peers.get_mut(&peer) {
            if remote.mismatch_since.is_some() {
                remote.mismatch_since = Some(now_ms);
            }
        }
    }

    /// Asks the next peer in line for what we lack, once the catch-up with
    /// the previous one has gone quiet.
    fn pump_catch_up<S: Store>(&mut self, ws: &Workspace<S>, now_ms: i64) {
        if let Some(p) = self.syncing {
            let quiet = self
                .peers
                .get(&p)
                .is_none_or(|r| now_ms - r.last_heard_ms >= CATCH_UP_IDLE_MS);
            if !quiet {
                return;
            }
            self.syncing = None;
        }
        let ours = self.digest(ws);
        while let Some(p) = self.catch_up.pop_front() {
            let Some(remote) = self.peers.get(&p) else {
                continue;
            };
            if remote.digest == Some(ours) || remote.foreign || !remote.present {
                continue;
            }
            self.request_sync(ws, p, now_ms);
            self.syncing = Some(p);
            break;
        }
    }

    /// Puts `peer` in line to catch up from (once).
    fn queue_catch_up(&mut self, peer: PeerId) {
        if self.syncing != Some(peer) && !self.catch_up.contains(&peer) {
            self.catch_up.push_back(peer);
        }
    }

    /// Whether this peer is still catching up (its heartbeats say so).
    fn catching_up<S: Store>(&self, ws: &Workspace<S>) -> bool {
        self.syncing.is_some() || !self.catch_up.is_empty() || ws.workspace_id().is_none()
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
                nonce,
                echo,
                proved,
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
                        remote_entry(&mut self.peers, &mut self.rng, from).foreign = true;
                        out.problems
                            .push(SyncProblem::WrongWorkspace { peer: from, theirs });
                        return Ok(());
                    }
                }
                let remote = remote_entry(&mut self.peers, &mut self.rng, from);
                // Only an echo of the nonce we drew for this encounter proves
                // the sender live: anything else may be a replay.
                let fresh = echo == remote.challenge;
                if fresh {
                    remote.present = true;
                    remote.challenges = 0;
                    remote.last_heard_ms = now_ms;
                }
                let unanswered = remote.echoed != Some(nonce);
                remote.their_nonce = Some(nonce);
                let present = remote.present;
                if unanswered {
                    self.send_handshake(ws, from, now_ms);
                } else if !proved || !present {
                    // Our answer to it, or our challenge, was lost (or this
                    // is a replay): again, but not at the pace of replays.
                    self.challenge(ws, from, now_ms);
                }
                if !fresh {
                    return Ok(());
                }
                let same = digest == self.digest(ws);
                let remote = remote_entry(&mut self.peers, &mut self.rng, from);
                remote.member = Some(member);
                remote.digest = Some(digest);
                let was_here = remote.was_here;
                if same {
                    remote.mismatch_since = None;
                } else if !was_here {
                    // The newcomer catches up from us; if it never asks,
                    // heartbeats will notice.
                    remote.mismatch_since.get_or_insert(now_ms);
                }
                self.delivered_if(same);
                if (self.full_resync || !same) && was_here {
                    self.queue_catch_up(from);
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
                // The index first: each file placed as soon as it arrives is
                // written while its rendering is at hand.
                docs.sort_by_key(|k| *k != DocKey::Index);
                for doc in docs {
                    let ours = ws.doc_heads().get(&doc).map(|i| heads_hash(&i.heads));
                    if ours.is_some() && !theirs.contains_key(&doc) {
                        // They have none of it: the whole document, as stored.
                        if let Some(bytes) = ws.saved_doc(doc)? {
                            self.outbox
                                .push((Target::One(from), Message::Snapshot { doc, bytes }));
                            continue;
                        }
                    }
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
                let mut state = remote_entry(&mut self.peers, &mut self.rng, from)
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
                if changed {
                    self.progress(from, now_ms);
                }
                if let Some(theirs) = &state.their_heads {
                    if let Some((_, heads)) = self.unacked.get(&doc) {
                        if heads.iter().all(|h| theirs.contains(h)) {
                            self.unacked.remove(&doc);
                        }
                    }
                }
                let reply = ws.sync_message(doc, &mut state)?;
                self.full_resync = false;
                let remote = remote_entry(&mut self.peers, &mut self.rng, from);
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
            // Checked by the caller, which holds the member's own key.
            Message::Rotation { record } => out.rotations.push(record),
            // Merged in bulk before the rest (see `merge_in_bulk`).
            Message::Change { .. } | Message::Snapshot { .. } => {}
            Message::Heartbeat {
                digest,
                catching_up,
            } => {
                let same = digest == self.digest(ws);
                self.delivered_if(same);
                let remote = remote_entry(&mut self.peers, &mut self.rng, from);
                remote.digest = Some(digest);
                remote.catching_up = catching_up;
                if same {
                    remote.mismatch_since = None;
                    self.catch_up.retain(|p| *p != from);
                    return Ok(());
                }
                // Differing digests with nothing arriving for a while, from a
                // peer not busy catching up itself: something was lost.
                let since = *remote.mismatch_since.get_or_insert(now_ms);
                let due = now_ms - since >= RESYNC_AFTER_MS
                    && now_ms - remote.last_request_ms >= RESYNC_AFTER_MS
                    && !catching_up;
                if due {
                    self.queue_catch_up(from);
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
            || ws.names_file(id)
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
                        if !ws.names_file(*f) {
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
                        if !ws.names_file(f) {
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
            let remote = remote_entry(&mut self.peers, &mut self.rng, peer);
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
        remote_entry(&mut self.peers, &mut self.rng, peer)
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
        // The index first: each file placed as soon as it arrives is written
        // while its rendering is at hand (a file the index names before its
        // document arrives waits for it).
        changed.sort_by_key(|(k, _)| *k != DocKey::Index);
        for (doc, heads) in changed {
            let deps = self.known.get(&doc).cloned().unwrap_or_default();
            // A document no peer has seen from us goes as stored (the
            // document format): it loads several times faster than the same
            // changes one by one, and costs no encoding here.
            let bytes = if deps.is_empty() {
                ws.saved_doc(doc)?.unwrap_or_default()
            } else {
                ws.changes_after(doc, &deps)?
            };
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
        self.pump_catch_up(ws, now_ms);
        // Peers the relay announced that have not answered: their challenge
        // (or their answer) may have been lost.
        let unproved: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, r)| {
                !r.present
                    && r.announced
                    && !r.foreign
                    && r.challenges < MAX_CHALLENGES
                    && now_ms - r.last_challenge_ms >= HEARTBEAT_MS
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in unproved {
            if let Some(r) = self.peers.get_mut(&peer) {
                r.challenges = r.challenges.saturating_add(1);
            }
            self.send_handshake(ws, peer, now_ms);
        }
        if now_ms - self.last_heartbeat_ms >= HEARTBEAT_MS && self.peers.values().any(|r| r.present)
        {
            self.last_heartbeat_ms = now_ms;
            let digest = self.digest(ws);
            let catching_up = self.catching_up(ws);
            self.outbox.push((
                Target::All,
                Message::Heartbeat {
                    digest,
                    catching_up,
                },
            ));
        }
        self.flush(&mut out);
        out
    }

    /// What `cue sync status` shows.
    pub fn status(&self) -> SyncStatus {
        SyncStatus {
            peers: self
                .peers
                .iter()
                .filter(|(_, r)| r.present)
                .map(|(p, r)| (*p, r.member.clone()))
                .collect(),
            last_sync_ms: self.last_sync_ms,
            unsent: self.unacked.len(),
            full_resync: self.full_resync,
        }
    }

    /// Sends `peer` our Handshake: the challenge we drew for it, and the
    /// echo of its latest nonce (which proves us to it).
    fn send_handshake<S: Store>(&mut self, ws: &Workspace<S>, peer: PeerId, now_ms: i64) {
        let digest = self.digest(ws);
        let Some(remote) = self.peers.get_mut(&peer) else {
            return;
        };
        remote.echoed = remote.their_nonce;
        remote.last_challenge_ms = now_ms;
        let msg = Message::Handshake {
            protocol: PROTOCOL,
            member: self.member.clone(),
            workspace: ws.workspace_id().map(|id| id.0),
            digest,
            nonce: remote.challenge,
            echo: remote.their_nonce.unwrap_or_default(),
            proved: remote.present,
        };
        self.outbox.push((Target::One(peer), msg));
    }

    /// Our Handshake to `peer`, unless one went less than
    /// [`CHALLENGE_REPEAT_MS`] ago: what a peer not proved yet gets, however
    /// many frames (replayed, perhaps) arrive from it.
    fn challenge<S: Store>(&mut self, ws: &Workspace<S>, peer: PeerId, now_ms: i64) {
        if self
            .peers
            .get(&peer)
            .is_some_and(|r| now_ms - r.last_challenge_ms >= CHALLENGE_REPEAT_MS)
        {
            self.send_handshake(ws, peer, now_ms);
        }
    }

    fn request_sync<S: Store>(&mut self, ws: &Workspace<S>, peer: PeerId, now_ms: i64) {
        let entries = ws
            .doc_heads()
            .iter()
            .map(|(k, i)| (*k, heads_hash(&i.heads)))
            .collect();
        let remote = remote_entry(&mut self.peers, &mut self.rng, peer);
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
        let generation = ws.heads_generation();
        if let Some((g, d)) = self.digest_cache.get() {
            if g == generation {
                return d;
            }
        }
        let mut h = Sha256::new();
        for (k, i) in ws.doc_heads() {
            h.update(k.as_string().as_bytes());
            for head in &i.heads {
                h.update(head.0);
            }
        }
        let digest: [u8; 32] = h.finalize().into();
        self.digest_cache.set(Some((generation, digest)));
        digest
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
            let header = Header {
                kind,
                room: self.room,
                sender: self.me,
                recipient,
            };
            let envelopes = pack(&msgs, &mut self.stream);
            out.frames
                .extend(self.sealer.seal_frames(header, envelopes, &mut self.rng));
        }
    }
}

/// The state kept for `peer`, made (with a fresh challenge) on first use.
/// A free function, so that it borrows only the two fields it needs.
fn remote_entry<'a>(
    peers: &'a mut BTreeMap<PeerId, Remote>,
    rng: &mut StdRng,
    peer: PeerId,
) -> &'a mut Remote {
    peers.entry(peer).or_insert_with(|| {
        let mut challenge = [0u8; CHALLENGE_LEN];
        rng.fill_bytes(&mut challenge);
        Remote::new(challenge)
    })
}

/// The problem to report for what a peer sent that could not be merged. A
/// store error (a full disk) is not the peer's fault: it is returned, and
/// stops the handling of the frame.
fn refusal(peer: PeerId, e: WorkspaceError) -> Result<SyncProblem, WorkspaceError> {
    Ok(match e {
        WorkspaceError::Store(_) => return Err(e),
        WorkspaceError::Doc(DocError::Limit(limit)) if !limit.is_malformed() => {
            SyncProblem::Refused {
                peer,
                reason: limit.to_string(),
            }
        }
        other => SyncProblem::Merge {
            peer,
            reason: other.to_string(),
        },
    })
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
