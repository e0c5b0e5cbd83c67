//! Documents to disk: what must be written or removed, and recording that it was.
//!
//! Only files marked dirty (their place, document or record changed since
//! they were last found in step with the disk) are looked at, so planning
//! after one received edit costs one file, not the whole workspace.

use crate::doc::ChangeHash;
use crate::store::{DocKey, LocalFile, Store};
use crate::{FileId, SyncPath};

use super::{content_hash, Stat, Unplaced, Workspace, WorkspaceError};

/// One thing the file-system layer must do to make the disk match the documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    /// Write `bytes` at `path`, but only if the file there still hashes to
    /// `expect` (`None`: only if there is no file): never clobber a user's edit.
    Write {
        file: FileId,
        path: SyncPath,
        bytes: String,
        expect: Option<[u8; 32]>,
        heads: Vec<ChangeHash>,
    },
    /// Remove `path` if it still hashes to `expect`.
    Remove {
        file: FileId,
        path: SyncPath,
        expect: [u8; 32],
    },
}

/// The writes that bring the disk up to date, and what could not be placed.
#[derive(Debug, Default)]
pub struct Plan {
    /// Removals first (a file moving off a name leaves before another takes
    /// it), then writes, each in path order.
    pub ops: Vec<DiskOp>,
    /// Files that cannot be written anywhere (an unsafe path from a peer...).
    pub unplaced: Vec<Unplaced>,
    /// Files this plan looked at that are placed where this peer keeps
    /// nothing (a project file outside its `sync.include`): they stay in the
    /// documents only. Only files whose place or document changed since the
    /// last plan, so each is reported once, not on every plan.
    pub not_kept: Vec<SyncPath>,
}

/// Renderings of received files kept for a later plan, at most.
const RENDERED_MAX: usize = 1024;

struct PendingWrite {
    id: FileId,
    path: SyncPath,
    heads: Vec<ChangeHash>,
    expect: Option<[u8; 32]>,
    here: Option<[u8; 32]>,
}

impl<S: Store> Workspace<S> {
    /// What must be written or removed so the disk shows the documents.
    /// `keeps` says which paths this peer keeps on its disk (see
    /// [`FileSystem::keeps`](crate::disk::FileSystem::keeps)): a file placed
    /// elsewhere is not written here, and leaves this disk if it was.
    pub fn plan(&mut self, keeps: &dyn Fn(&SyncPath) -> bool) -> Result<Plan, WorkspaceError> {
        let ids: Vec<FileId> = self.dirty.iter().copied().collect();
        let mut removes = Vec::new();
        let mut writes = Vec::new();
        let mut clean = Vec::new();
        let mut not_kept = Vec::new();
        for id in ids {
            let place = self.layout.place_of(&id);
            if let Some(p) = place.filter(|p| !keeps(p)) {
                not_kept.push(p.clone());
            }
            let placed = place.filter(|p| keeps(p)).cloned();
            let lf = self.local.get(&id);
            let mut pending = false;
            // A file a peer moved to a name that cannot be written stays
            // where it is on this disk (`cue repair` drops such entries).
            let stays = self.layout.is_unplaced(&id);
            if let Some(lf) = lf.filter(|_| !stays) {
                if placed.as_ref().map(|p| p.as_str()) != Some(lf.path.as_str()) {
                    // Removed first even when another file takes this name
                    // next: a crash between the two steps then leaves no bytes
                    // on disk that no record owns (the next scan would take
                    // them for a new file).
                    if let Ok(path) = SyncPath::parse(&lf.path) {
                        removes.push(DiskOp::Remove {
                            file: id,
                            path,
                            expect: lf.hash,
                        });
                        pending = true;
                    }
                }
            }
            if let (Some(path), Some(info)) = (placed, self.docs.infos().get(&DocKey::File(id))) {
                let here = lf.filter(|lf| lf.path == path.as_str());
                if here.is_none_or(|lf| lf.heads != info.heads) {
                    // A path this plan removes first is empty when the write comes.
                    let expect = self
                        .local
                        .at_path(path.as_str())
                        .filter(|(owner, _)| *owner == id)
                        .map(|(_, f)| f.hash);
                    writes.push(PendingWrite {
                        id,
                        path,
                        heads: info.heads.clone(),
                        expect,
                        here: here.map(|lf| lf.hash),
                    });
                    pending = true;
                }
            }
            if !pending {
                clean.push(id);
            }
        }
        removes.sort_by(|a, b| op_path(a).cmp(op_path(b)));
        writes.sort_by(|a, b| a.path.cmp(&b.path));
        let written_ids: Vec<FileId> = writes.iter().map(|w| w.id).collect();
        let mut ops = removes;
        // Documents not rendered yet are loaded on every core, as many at a
        // time as the cache keeps (a bundle clone or a long catch-up writes
        // thousands of files; one load after another was most of its time).
        let group = super::CACHE_DOCS / 2;
        for (n, w) in writes.into_iter().enumerate() {
            if n % group == 0 {
                let rendered = &self.rendered;
                let ids: Vec<FileId> = written_ids[n..]
                    .iter()
                    .take(group)
                    .filter(|id| !rendered.contains_key(id))
                    .copied()
                    .collect();
                self.docs.prefetch(&ids)?;
            }
            let fresh = self
                .rendered
                .remove(&w.id)
                .filter(|(heads, _)| *heads == w.heads);
            let bytes = match fresh {
                Some((_, bytes)) => bytes,
                None => {
                    let Some(doc) = self.docs.file(w.id)? else {
                        clean.push(w.id);
                        continue;
                    };
                    if !doc.is_ready() {
                        // Its creator's first change has not arrived: when
                        // it does, the file is marked again.
                        clean.push(w.id);
                        continue;
                    }
                    doc.render()?
                }
            };
            if w.here == Some(content_hash(bytes.as_bytes())) {
                if let Some(lf) = self.local.get(&w.id) {
                    let file = LocalFile {
                        heads: w.heads,
                        ..lf.clone()
                    };
                    self.put_local(w.id, file);
                }
                clean.push(w.id);
                continue;
            }
            ops.push(DiskOp::Write {
                file: w.id,
                path: w.path,
                bytes,
                expect: w.expect,
                heads: w.heads,
            });
        }
        // Renderings not used yet (a file not placed yet) wait, within a bound.
        if self.rendered.len() > RENDERED_MAX {
            self.rendered.clear();
        }
        // A file with an operation still pending stays marked.
        let pending: std::collections::HashSet<FileId> = ops.iter().map(op_file).collect();
        for id in clean {
            if !pending.contains(&id) {
                self.dirty.remove(&id);
            }
        }
        not_kept.sort();
        Ok(Plan {
            ops,
            unplaced: self.unplaced(),
            not_kept,
        })
    }

    /// Records (staged) that a [`DiskOp`] was carried out, with the written
    /// file's stat.
    pub fn applied(&mut self, op: &DiskOp, stat: Stat) -> Result<(), WorkspaceError> {
        match op {
            DiskOp::Write {
                file,
                path,
                bytes,
                heads,
                ..
            } => {
                // The file this one replaces at its path is no longer on disk.
                if let Some((other, _)) = self
                    .local
                    .at_path(path.as_str())
                    .filter(|(id, _)| id != file)
                {
                    self.drop_local(other);
                    self.dirty.insert(other);
                }
                let lf = LocalFile {
                    path: path.to_string(),
                    hash: content_hash(bytes.as_bytes()),
                    size: stat.size,
                    mtime_ns: stat.mtime_ns,
                    heads: heads.clone(),
                };
                self.put_local(*file, lf);
            }
            DiskOp::Remove { file, path, .. } => {
                if self
                    .local
                    .get(file)
                    .is_some_and(|f| f.path == path.as_str())
                {
                    self.drop_local(*file);
                }
            }
        }
        Ok(())
    }
}

fn op_path(op: &DiskOp) -> &SyncPath {
    match op {
        DiskOp::Write { path, .. } | DiskOp::Remove { path, .. } => path,
    }
}

fn op_file(op: &DiskOp) -> FileId {
    match op {
        DiskOp::Write { file, .. } | DiskOp::Remove { file, .. } => *file,
    }
}
