//! One simulated peer: its disk, its durable store, and (while it runs) its
//! workspace and sync engine, plus a model of the daemon's file-system layer.
//!
//! The file-system layer mirrors `crates/cue/src/disk.rs`, because that is
//! where crashes meet the core: a scan (`record_changes`) records whatever
//! differs between the disk and the last recorded state (a new path whose bytes
//! equal a vanished file's is a rename), and a checkout (`apply_plan`) carries
//! out a plan with the never-clobber checks, recording each operation after it
//! reached the disk. A crash can fall between the two halves of one operation.

use std::collections::{BTreeMap, BTreeSet};

use cue_core::store::MemStore;
use cue_core::sync::{SyncEngine, WorkspaceKey};
use cue_core::workspace::{content_hash, DiskOp, Stat};
use cue_core::{SyncPath, Workspace, WorkspaceError};
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
    /// The user's files, path to bytes: what survives every crash.
    pub disk: BTreeMap<String, String>,
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
pub fn core_err(what: &str, e: WorkspaceError) -> String {
    format!("{what}: {e}")
}

fn stat_of(text: &str) -> Stat {
    Stat {
        size: text.len() as u64,
        mtime_ns: 0,
    }
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
            disk: BTreeMap::new(),
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
        let disk = &self.disk;
        ws.settle_checkout(|path| {
            disk.get(path.as_str())
                .map(|text| (content_hash(text.as_bytes()), stat_of(text)))
        })
        .map_err(|e| core_err("settling an interrupted checkout", e))?;
        let mut engine = SyncEngine::new(&mut ws, key, self.id, seed, now_ms, MAX_OFFLINE_MS)
            .map_err(|e| core_err("starting the engine", e))?;
        engine.set_member(&self.member);
        let full = engine.status().full_resync;
        self.node = Some(Node { ws, engine });
        Ok(full)
    }

    /// The daemon's scan (`record_changes`): records every difference between
    /// the disk and the last recorded state. A tracked path missing from disk
    /// that the user did not remove is a deletion nobody made: an error.
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
        let tracked: BTreeMap<String, [u8; 32]> = ws
            .local_files()
            .values()
            .map(|f| (f.path.clone(), f.hash))
            .collect();
        let mut missing: Vec<(String, [u8; 32])> = tracked
            .iter()
            .filter(|(path, _)| !self.disk.contains_key(*path))
            .map(|(p, h)| (p.clone(), *h))
            .collect();
        for (path, text) in &self.disk {
            let hash = content_hash(text.as_bytes());
            if tracked.get(path) == Some(&hash) {
                continue;
            }
            let sp = SyncPath::parse(path).map_err(|e| format!("disk path {path}: {e}"))?;
            if !tracked.contains_key(path) {
                // A new path whose bytes equal a vanished file's: a rename.
                if let Some(pos) = missing.iter().position(|(_, h)| *h == hash) {
                    let (from, _) = missing.remove(pos);
                    ws.record_rename(&from, &sp, now_ms)
                        .map_err(|e| core_err("record_rename", e))?;
                    ws.record_write(&sp, text, stat_of(text), now_ms, rng)
                        .map_err(|e| core_err("record_write after a rename", e))?;
                    continue;
                }
            }
            if !tracked.contains_key(path)
                && matches!(
                    self.pending.get(path),
                    Some(Pending::Edited | Pending::Moved)
                )
            {
                let untagged = self.pending_untagged.get(path).cloned().unwrap_or_default();
                detached.push((text.clone(), untagged));
            }
            ws.record_write(&sp, text, stat_of(text), now_ms, rng)
                .map_err(|e| core_err("record_write", e))?;
        }
        for (path, _) in missing {
            if !self.user_gone.contains(&path) {
                let id = ws.local_by_path(&path).map(|(id, _)| id);
                let entry = match id {
                    Some(id) => ws
                        .entries()
                        .map_err(|e| core_err("entries", e))?
                        .into_iter()
                        .find(|e| e.id == id),
                    None => None,
                };
                // Already deleted by some user elsewhere: recording it again changes nothing.
                if entry.as_ref().is_none_or(|e| e.deleted.is_none()) {
                    return Err(format!(
                        "peer {} found {path} missing from its disk without any user removing it; \
                         the scan records a deletion nobody made (index entry: {entry:?})",
                        self.index
                    ));
                }
            }
            ws.record_removal(&path, now_ms)
                .map_err(|e| core_err("record_removal", e))?;
        }
        self.pending.clear();
        self.pending_untagged.clear();
        self.user_gone.clear();
        Ok(detached)
    }

    /// The daemon's checkout (`apply_plan`): writes what the documents say,
    /// never over a change the user made since it was recorded. With
    /// `tear_at = Some(k)`, operation `k` reaches the disk but is not recorded,
    /// and the checkout stops there (the caller crashes the peer).
    pub fn checkout(&mut self, tear_at: Option<usize>) -> Result<CheckoutEnd, String> {
        let mut end = CheckoutEnd::default();
        let Some(node) = self.node.as_mut() else {
            return Ok(end);
        };
        let ws = &mut node.ws;
        let plan = ws.plan().map_err(|e| core_err("plan", e))?;
        if !plan.problems.is_empty() {
            return Err(format!(
                "peer {}: plan problems (no peer here is hostile): {:?}",
                self.index, plan.problems
            ));
        }
        for (k, op) in plan.ops.iter().enumerate() {
            let path = match op {
                DiskOp::Write { path, .. } | DiskOp::Remove { path, .. } => path,
            };
            // A SyncPath is checked on construction; parse it again so a bug in
            // that check, or a path built around it, cannot go unnoticed.
            match SyncPath::parse(path.as_str()) {
                Ok(p) if p == *path => {}
                other => {
                    return Err(format!(
                        "peer {}: plan writes outside the workspace: {path:?} ({other:?})",
                        self.index
                    ))
                }
            }
            let current = self
                .disk
                .get(path.as_str())
                .map(|t| content_hash(t.as_bytes()));
            match op {
                DiskOp::Write { bytes, expect, .. } => {
                    if current != *expect {
                        end.refused += 1;
                        continue;
                    }
                    self.disk.insert(path.to_string(), bytes.clone());
                    if tear_at == Some(k) {
                        end.torn = true;
                        return Ok(end);
                    }
                    ws.applied(op, stat_of(bytes))
                        .map_err(|e| core_err("applied", e))?;
                }
                DiskOp::Remove { expect, .. } => {
                    if current != Some(*expect) {
                        end.refused += 1;
                        continue;
                    }
                    self.disk.remove(path.as_str());
                    if tear_at == Some(k) {
                        end.torn = true;
                        return Ok(end);
                    }
                    ws.applied(op, Stat::default())
                        .map_err(|e| core_err("applied", e))?;
                }
            }
        }
        Ok(end)
    }

    /// How many operations the next checkout has (to pick where to tear it).
    pub fn plan_len(&mut self) -> Result<usize, String> {
        match self.node.as_mut() {
            Some(node) => Ok(node.ws.plan().map_err(|e| core_err("plan", e))?.ops.len()),
            None => Ok(0),
        }
    }
}
