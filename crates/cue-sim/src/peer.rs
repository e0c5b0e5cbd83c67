//! One simulated peer: its disk, its durable store, and (while it runs) its
//! workspace and sync engine.
//!
//! The disk is a [`MemFs`], and scanning and checking out run the core's disk
//! layer (`cue_core::disk`): the very code the daemon runs on the real disk.
//! Crashes fall where they meet the core: the disk can tear a checkout after
//! any operation (it reached the disk, its record did not), and the store
//! keeps exactly its committed batches.

use std::collections::{BTreeMap, BTreeSet};

use cue_core::disk::{self, MemFs, ScanOptions, Scope};
use cue_core::store::MemStore;
use cue_core::sync::{SyncEngine, WorkspaceKey};
use cue_core::{Workspace, WorkspaceError};
use cue_wire::PeerId;
use rand::rngs::StdRng;

/// `sync.max_offline_days` (7), in ms: the engine's full-resync threshold.
pub const MAX_OFFLINE_MS: i64 = 7 * 86_400_000;

/// A running peer: what a crash throws away (the store inside survives).
pub struct Node {
    pub ws: Workspace<MemStore>,
    pub engine: SyncEngine,
}

/// What a user did on disk that the daemon has not recorded yet, per path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// A new file.
    Created,
    /// A change to a file that was there.
    Edited,
    /// Moved here from another path, bytes unchanged.
    Moved,
}

/// How a checkout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckoutEnd {
    /// Operations the never-clobber rule refused.
    pub refused: u64,
    /// The checkout stopped after changing the disk and before recording it:
    /// the caller crashes the peer now.
    pub torn: bool,
}

/// One peer of the simulation.
pub struct Peer {
    pub index: usize,
    pub id: PeerId,
    pub member: String,
    /// The daemon's memory; `None` while the peer is down.
    pub node: Option<Node>,
    /// The durable store while the peer is down (inside `node` while it runs).
    pub parked: Option<MemStore>,
    /// The user's files: what survives every crash.
    pub disk: MemFs,
    /// The connection this peer believes it has to the relay.
    pub conn: Option<u64>,
    pub partitioned: bool,
    /// Whether the workspace has arrived (the user cannot edit before).
    pub initialised: bool,
    /// User changes not recorded yet.
    pub pending: BTreeMap<String, Pending>,
    /// Tags removed by those changes, per path.
    pub pending_untagged: BTreeMap<String, Vec<String>>,
    /// Paths the user removed or moved away since the last scan: the only
    /// ones a scan may record as deleted.
    pub user_gone: BTreeSet<String>,
}

/// A core call failed: with an in-memory store, that is a bug.
pub fn core_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Peer `index`'s id in the room (never the reserved all-zero id).
pub fn peer_id(index: usize) -> PeerId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(index as u64 + 1).to_be_bytes());
    PeerId(id)
}

impl Peer {
    pub fn new(index: usize, node: Node, initialised: bool) -> Peer {
        Peer {
            index,
            id: peer_id(index),
            member: format!("member{index}"),
            node: Some(node),
            parked: None,
            disk: MemFs::new(),
            conn: None,
            partitioned: false,
            initialised,
            pending: BTreeMap::new(),
            pending_untagged: BTreeMap::new(),
            user_gone: BTreeSet::new(),
        }
    }

    /// The daemon dies: memory (workspace caches, staged merges, engine
    /// sessions) is gone, the store keeps exactly its committed batches.
    pub fn crash(&mut self) {
        if let Some(mut node) = self.node.take() {
            self.parked = Some(std::mem::take(node.ws.store_mut()));
        }
        self.conn = None;
    }

    /// The daemon starts again from its store and disk. Returns whether the
    /// engine begins with a full resync (it was away past `max_offline_days`).
    pub fn start(
        &mut self,
        key: &WorkspaceKey,
        seed: [u8; 32],
        now_ms: i64,
        rng: &mut StdRng,
    ) -> Result<bool, String> {
        let store = self.parked.take().unwrap_or_default();
        let mut ws = match Workspace::open(store.clone(), &self.member) {
            Ok(ws) => ws,
            // A clone that crashed before the index arrived starts its join over.
            Err(WorkspaceError::NotInitialised) => Workspace::join(store, &self.member, rng)
                .map_err(|e| core_err("join after a crash", e))?,
            Err(e) => return Err(core_err("reopening the store", e)),
        };
        // As the daemon does on start: finish recording a checkout a crash cut short.
        self.disk.set_now_ms(now_ms);
        disk::settle(&mut ws, &mut self.disk)
            .map_err(|e| core_err("settling an interrupted checkout", e))?;
        ws.commit()
            .map_err(|e| core_err("committing the settled checkout", e))?;
        let mut engine = SyncEngine::new(&mut ws, key, self.id, seed, now_ms, MAX_OFFLINE_MS)
            .map_err(|e| core_err("starting the engine", e))?;
        engine.set_member(&self.member);
        let full = engine.status().full_resync;
        self.node = Some(Node { ws, engine });
        Ok(full)
    }

    /// The daemon's scan: records every difference between the disk and the
    /// last recorded state. A tracked path missing from disk that the user
    /// did not remove is a deletion nobody made: an error.
    ///
    /// Returns the *detached* edits (their text and the tags they removed): a
    /// user changed or moved a file, and before the daemon recorded it, a
    /// checkout moved that file's record to another path (a rename or a same-path conflict
    /// from a peer; the write over the user's bytes was refused, the move was
    /// not). The edit is then recorded as a new file beside the moved one:
    /// nothing is lost, but it is a copy, and the original keeps what the
    /// edit removed.
    pub fn scan(
        &mut self,
        now_ms: i64,
        rng: &mut StdRng,
    ) -> Result<Vec<(String, Vec<String>)>, String> {
        let mut detached = Vec::new();
        let Some(node) = self.node.as_mut() else {
            return Ok(detached);
        };
        let ws = &mut node.ws;
        let tracked: BTreeSet<String> = ws.local_under("").map(|(p, _)| p.to_string()).collect();
        // Tombstones that exist before the scan: deleting such a file again changes nothing.
        let deleted_before: BTreeSet<String> = ws
            .entries()
            .map_err(|e| core_err("entries", e))?
            .into_iter()
            .filter(|e| e.deleted.is_some())
            .map(|e| e.id.to_hex())
            .collect();
        let ids: BTreeMap<String, String> = ws
            .local_under("")
            .filter_map(|(p, _)| {
                ws.local_by_path(p)
                    .map(|(id, _)| (p.to_string(), id.to_hex()))
            })
            .collect();
        self.disk.set_now_ms(now_ms);
        let opts = ScanOptions {
            dry_run: false,
            now_ms,
        };
        let changes = disk::scan(ws, &mut self.disk, Scope::All, opts, rng, &mut |_, _| {})
            .map_err(|e| core_err("scan", e))?;
        ws.commit()
            .map_err(|e| core_err("commit after a scan", e))?;
        if let Some(bad) = changes.skipped.first() {
            return Err(format!("peer {}: the scan skipped {bad}", self.index));
        }
        for path in changes.created.iter().chain(&changes.edited) {
            if !tracked.contains(path)
                && matches!(
                    self.pending.get(path),
                    Some(Pending::Edited | Pending::Moved)
                )
            {
                let text = self.disk.text(path).unwrap_or_default();
                let untagged = self.pending_untagged.get(path).cloned().unwrap_or_default();
                detached.push((text, untagged));
            }
        }
        for path in &changes.removed {
            let already_deleted = ids.get(path).is_some_and(|id| deleted_before.contains(id));
            if !self.user_gone.contains(path) && !already_deleted {
                return Err(format!(
                    "peer {} found {path} missing from its disk without any user removing it; \
                     the scan records a deletion nobody made",
                    self.index
                ));
            }
        }
        self.pending.clear();
        self.pending_untagged.clear();
        self.user_gone.clear();
        Ok(detached)
    }

    /// The daemon's checkout: writes what the documents say, never over a
    /// change the user made since it was recorded. With `tear_at = Some(k)`,
    /// operation `k` reaches the disk but neither it nor the ones before are
    /// recorded, and the checkout stops there (the caller crashes the peer).
    pub fn checkout(&mut self, now_ms: i64, tear_at: Option<usize>) -> Result<CheckoutEnd, String> {
        let mut end = CheckoutEnd::default();
        let Some(node) = self.node.as_mut() else {
            return Ok(end);
        };
        self.disk.set_now_ms(now_ms);
        self.disk.tear_after(tear_at);
        let result = disk::checkout(&mut node.ws, &mut self.disk, &mut |_, _| {});
        self.disk.tear_after(None);
        let applied = match result {
            Ok(applied) => applied,
            Err(e) if e.is_crash() => {
                end.torn = true;
                return Ok(end);
            }
            Err(e) => return Err(core_err("checkout", e)),
        };
        node.ws
            .commit()
            .map_err(|e| core_err("commit after a checkout", e))?;
        if !applied.unplaced.is_empty() {
            return Err(format!(
                "peer {}: plan problems (no peer here is hostile): {:?}",
                self.index, applied.unplaced
            ));
        }
        // A SyncPath is checked on construction; parse it again so a bug in
        // that check, or a path built around it, cannot go unnoticed.
        for path in applied.written.iter().chain(&applied.removed) {
            match cue_core::SyncPath::parse(path.as_str()) {
                Ok(p) if p == *path => {}
                other => {
                    return Err(format!(
                        "peer {}: checkout wrote outside the workspace: {path:?} ({other:?})",
                        self.index
                    ))
                }
            }
        }
        end.refused = applied.refused.len() as u64;
        Ok(end)
    }

    /// How many operations the next checkout has (to pick where to tear it).
    pub fn plan_len(&mut self) -> Result<usize, String> {
        match self.node.as_mut() {
            Some(node) => Ok(node
                .ws
                .plan(&|_| true)
                .map_err(|e| core_err("plan", e))?
                .ops
                .len()),
            None => Ok(0),
        }
    }
}
