//! The workspace engine: files in, documents out, and back.
//!
//! [`Workspace`] owns the index document, a small cache of file documents and
//! the record of what is on the user's disk. The file-system layer tells it
//! what the user did ([`Workspace::record_write`], [`Workspace::record_removal`],
//! [`Workspace::record_rename`]) and asks it what to write ([`Workspace::plan`]),
//! then reports what it wrote ([`Workspace::applied`]). Every change is committed
//! to the [`Store`] before the call returns, so a crash loses nothing recorded.
//!
//! An edit is always recorded against the document state that was on disk when
//! the user read the file (`LocalFile::heads`): if other peers' changes arrived
//! in between, the edit is made on a fork at those heads and merged, so neither
//! side's work is lost (a three-way merge, done by the CRDT).

use std::collections::{BTreeMap, HashMap};

use automerge::ActorId;
use sha2::{Digest, Sha256};

use crate::bundle::{Bundle, BundleError};
use crate::doc::{
    Author, ChangeHash, ChangeInfo, DocError, FileDoc, FileEntry, IndexDoc, SyncState,
    WorkspaceMeta,
};
use crate::frontmatter::FmValue;
use crate::store::{ActivityRow, Batch, BatchOp, DocInfo, DocKey, LocalFile, Store, StoreError};
use crate::{FileId, PathError, SyncPath, WorkspaceId};

/// After this many incremental chunks a document is rewritten as one snapshot.
const COMPACT_AFTER: u32 = 32;
/// File documents kept in memory; the rest are loaded on demand.
const CACHE_DOCS: usize = 128;
/// How long a deleted file stays restorable unless configured otherwise.
pub const DEFAULT_TOMBSTONE_DAYS: u32 = 7;
const DAY_MS: i64 = 86_400_000;

/// Errors from workspace operations; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Doc(#[from] DocError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("this folder's sync state has no workspace; run `cue init` or `cue clone`")]
    NotInitialised,
    #[error(
        "the bundle belongs to workspace {theirs}, this is workspace {ours}; nothing was imported"
    )]
    WrongWorkspace {
        ours: WorkspaceId,
        theirs: WorkspaceId,
    },
    #[error("the bundle has no index document; nothing was imported")]
    NoIndex,
    #[error(
        "refusing {source_name}: file {file} has an unsafe path: {reason}; nothing was imported"
    )]
    UnsafePath {
        source_name: String,
        file: FileId,
        reason: PathError,
    },
    #[error("no deleted file at {0}; `cue trash list` shows what can be restored")]
    NotInTrash(String),
    #[error("{0} is not tracked by the workspace")]
    NotTracked(String),
}

/// A file's size and modification time, to skip re-reading unchanged files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
}

/// What recording a file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Unchanged,
    Created(FileId),
    Edited(FileId),
}

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
    pub ops: Vec<DiskOp>,
    /// Files that will not be written, with the reason (an unsafe path from a peer...).
    pub problems: Vec<String>,
}

/// A deleted file that can still be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    pub file: FileId,
    pub path: String,
    pub deleted_at_ms: i64,
    pub deleted_by: String,
    pub expires_at_ms: i64,
}

/// What an import brought in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub docs_changed: usize,
    pub docs_unchanged: usize,
}

/// A line of the activity log, with the author's name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub time_s: i64,
    pub member: String,
    pub path: String,
    pub action: String,
}

/// A live file's place and fields, for listings.
#[derive(Debug, Clone)]
pub struct FileSummary {
    pub id: FileId,
    pub path: SyncPath,
    pub fields: Vec<(String, FmValue)>,
}

/// The SHA-256 of a file's bytes: how we tell whether the user changed it.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A peer's whole view of a workspace.
pub struct Workspace<S: Store> {
    store: S,
    actor: ActorId,
    member: String,
    index: IndexDoc,
    docs: BTreeMap<DocKey, DocInfo>,
    cache: HashMap<FileId, FileDoc>,
    local: DiskState,
    tombstone_ms: i64,
    /// What merges from peers have staged; committed by [`Workspace::commit_remote`].
    remote: Batch,
}

/// Either kind of document, for merges that treat both alike.
enum DocMut<'a> {
    Index(&'a mut IndexDoc),
    File(&'a mut FileDoc),
}

/// What this peer last put on disk, by file and by path: every recorded save
/// looks its file up by path, so the path lookup must not scan every file.
#[derive(Default)]
struct DiskState {
    files: BTreeMap<FileId, LocalFile>,
    by_path: HashMap<String, FileId>,
}

impl DiskState {
    fn new(files: BTreeMap<FileId, LocalFile>) -> Self {
        let by_path = files.iter().map(|(id, f)| (f.path.clone(), *id)).collect();
        DiskState { files, by_path }
    }

    fn get(&self, id: &FileId) -> Option<&LocalFile> {
        self.files.get(id)
    }

    fn at_path(&self, path: &str) -> Option<(FileId, &LocalFile)> {
        let id = self.by_path.get(path)?;
        self.files.get(id).map(|f| (*id, f))
    }

    fn insert(&mut self, id: FileId, file: LocalFile) {
        self.by_path.insert(file.path.clone(), id);
        if let Some(old) = self.files.insert(id, file) {
            self.unlink_path(&old.path, id);
        }
    }

    fn remove(&mut self, id: &FileId) {
        if let Some(old) = self.files.remove(id) {
            self.unlink_path(&old.path, *id);
        }
    }

    /// Forgets `path -> id` unless the path now belongs to another file.
    fn unlink_path(&mut self, path: &str, id: FileId) {
        if self.by_path.get(path) == Some(&id) && self.files.get(&id).is_none_or(|f| f.path != path)
        {
            self.by_path.remove(path);
        }
    }
}

impl<S: Store> Workspace<S> {
    /// Starts a brand-new workspace in an empty store.
    pub fn create(
        mut store: S,
        name: &str,
        member: &str,
        now_ms: i64,
        rng: &mut impl rand::Rng,
    ) -> Result<Self, WorkspaceError> {
        let actor = new_actor(rng);
        let id = WorkspaceId::random(rng);
        let author = Author { member, now_ms };
        let index = IndexDoc::create(actor.clone(), id, name, &author)?;
        let mut batch = Batch::default();
        batch.push(BatchOp::PutMeta {
            key: "actor".into(),
            value: actor.to_bytes().to_vec(),
        });
        store.commit(batch)?;
        let mut ws = Self::assemble(store, actor, member, index)?;
        let mut batch = Batch::default();
        ws.persist_index(&mut batch)?;
        ws.store.commit(batch)?;
        Ok(ws)
    }

    /// Opens the workspace a store already holds.
    pub fn open(mut store: S, member: &str) -> Result<Self, WorkspaceError> {
        let actor = match store.meta("actor")? {
            Some(bytes) => ActorId::from(bytes),
            None => return Err(WorkspaceError::NotInitialised),
        };
        let chunks = store
            .load_doc(DocKey::Index)?
            .ok_or(WorkspaceError::NotInitialised)?;
        let index = IndexDoc::load(&chunks, actor.clone())?;
        Self::assemble(store, actor, member, index)
    }

    /// Makes a new peer of an existing workspace from a bundle.
    pub fn clone_from_bundle(
        store: S,
        bundle: &[u8],
        member: &str,
        rng: &mut impl rand::Rng,
    ) -> Result<Self, WorkspaceError> {
        let bundle = Bundle::decode(bundle)?;
        let mut ws = Self::join(store, member, rng)?;
        ws.merge_bundle(bundle, "the bundle", None)?;
        Ok(ws)
    }

    /// Makes a new, still empty peer of an existing workspace that will be
    /// filled by live sync (`cue clone CODE`): the index and every file arrive
    /// from peers. [`Self::workspace_id`] is `None` until the index has come.
    pub fn join(
        mut store: S,
        member: &str,
        rng: &mut impl rand::Rng,
    ) -> Result<Self, WorkspaceError> {
        let actor = new_actor(rng);
        let mut batch = Batch::default();
        batch.push(BatchOp::PutMeta {
            key: "actor".into(),
            value: actor.to_bytes().to_vec(),
        });
        store.commit(batch)?;
        let index = IndexDoc::empty(actor.clone());
        Self::assemble(store, actor, member, index)
    }

    fn assemble(
        mut store: S,
        actor: ActorId,
        member: &str,
        index: IndexDoc,
    ) -> Result<Self, WorkspaceError> {
        let docs = store.docs()?;
        let local = DiskState::new(store.local_files()?);
        Ok(Workspace {
            store,
            actor,
            member: member.to_string(),
            index,
            docs,
            cache: HashMap::new(),
            local,
            tombstone_ms: i64::from(DEFAULT_TOMBSTONE_DAYS) * DAY_MS,
            remote: Batch::default(),
        })
    }

    /// How long deleted files stay restorable (`sync.max_offline_days`).
    pub fn set_tombstone_days(&mut self, days: u32) {
        self.tombstone_ms = i64::from(days.max(1)) * DAY_MS;
    }

    /// Workspace id, name, members.
    pub fn meta(&self) -> Result<WorkspaceMeta, WorkspaceError> {
        Ok(self.index.meta()?)
    }

    /// This peer's automerge actor id, in hex.
    pub fn actor_hex(&self) -> String {
        self.actor.to_hex_string()
    }

    /// The store, for the binary's own bookkeeping.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// What this peer last put on disk, per file.
    pub fn local_files(&self) -> &BTreeMap<FileId, LocalFile> {
        &self.local.files
    }

    /// The tracked file at `path`, as last seen on disk.
    pub fn local_by_path(&self, path: &str) -> Option<(FileId, &LocalFile)> {
        self.local.at_path(path)
    }

    /// Every file in the index, live or deleted.
    pub fn entries(&self) -> Result<Vec<FileEntry>, WorkspaceError> {
        Ok(self.index.files()?)
    }

    fn author(&self, now_ms: i64) -> Author<'_> {
        Author {
            member: &self.member,
            now_ms,
        }
    }

    // ---- documents, cache and persistence -------------------------------------------

    fn doc(&mut self, id: FileId) -> Result<Option<&mut FileDoc>, WorkspaceError> {
        if !self.cache.contains_key(&id) {
            let Some(chunks) = self.store.load_doc(DocKey::File(id))? else {
                return Ok(None);
            };
            let doc = FileDoc::load(&chunks, self.actor.clone())?;
            if self.cache.len() >= CACHE_DOCS {
                // An evicted document reloads from the store, so what remote
                // merges staged must be there first.
                self.commit_remote()?;
                if let Some(victim) = self.cache.keys().next().copied() {
                    self.cache.remove(&victim);
                }
            }
            self.cache.insert(id, doc);
        }
        Ok(self.cache.get_mut(&id))
    }

    fn persist_file(
        &mut self,
        id: FileId,
        batch: &mut Batch,
        path: &str,
    ) -> Result<(), WorkspaceError> {
        let key = DocKey::File(id);
        let Some(doc) = self.cache.get_mut(&id) else {
            return Ok(());
        };
        let since = self
            .docs
            .get(&key)
            .map(|i| i.heads.clone())
            .unwrap_or_default();
        let heads = doc.heads();
        if heads == since {
            return Ok(());
        }
        for c in doc.changes_since(&since) {
            batch.push(activity_row(c, Some(id), path.to_string()));
        }
        stage_doc(&mut self.docs, key, heads, batch, |after| match after {
            Some(h) => doc.save_after(h),
            None => doc.save(),
        });
        Ok(())
    }

    fn persist_index(&mut self, batch: &mut Batch) -> Result<(), WorkspaceError> {
        let since = self
            .docs
            .get(&DocKey::Index)
            .map(|i| i.heads.clone())
            .unwrap_or_default();
        let heads = self.index.heads();
        if heads == since {
            return Ok(());
        }
        for c in self.index.changes_since(&since) {
            let (verb, rest) = c
                .message
                .split_once(' ')
                .unwrap_or((c.message.as_str(), ""));
            let path = match verb {
                "create" | "delete" | "restore" => rest.to_string(),
                "rename" => rest.split(" -> ").nth(1).unwrap_or(rest).to_string(),
                _ => String::new(),
            };
            batch.push(activity_row(c, None, path));
        }
        let index = &mut self.index;
        stage_doc(
            &mut self.docs,
            DocKey::Index,
            heads,
            batch,
            |after| match after {
                Some(h) => index.save_after(h),
                None => index.save(),
            },
        );
        Ok(())
    }

    /// Commits `batch` together with the new on-disk record of one file, then
    /// updates the in-memory copy (only after the commit succeeded).
    fn commit_with_local(
        &mut self,
        mut batch: Batch,
        id: FileId,
        file: LocalFile,
    ) -> Result<(), WorkspaceError> {
        batch.push(BatchOp::PutLocalFile {
            id,
            file: file.clone(),
        });
        self.store.commit(batch)?;
        self.local.insert(id, file);
        Ok(())
    }

    // ---- disk -> documents ----------------------------------------------------------

    /// Records that the user's file at `path` now holds `text`: a new file, an
    /// edit of a tracked one, or (same hash) nothing at all.
    pub fn record_write(
        &mut self,
        path: &SyncPath,
        text: &str,
        stat: Stat,
        now_ms: i64,
        rng: &mut impl rand::Rng,
    ) -> Result<Recorded, WorkspaceError> {
        let hash = content_hash(text.as_bytes());
        let mut batch = Batch::default();
        let tracked = self
            .local_by_path(path.as_str())
            .map(|(id, f)| (id, f.clone()));
        let (id, base_heads) = match tracked {
            Some((id, lf)) if lf.hash == hash => {
                if lf.size != stat.size || lf.mtime_ns != stat.mtime_ns {
                    let file = LocalFile {
                        size: stat.size,
                        mtime_ns: stat.mtime_ns,
                        ..lf
                    };
                    self.commit_with_local(batch, id, file)?;
                }
                return Ok(Recorded::Unchanged);
            }
            Some((id, lf)) => (id, Some(lf.heads)),
            None => match self.adoptable(path, hash)? {
                Some(id) => (id, None),
                None => return self.create_file(path, text, hash, stat, now_ms, rng),
            },
        };
        let member = self.member.clone();
        let author = Author {
            member: &member,
            now_ms,
        };
        let Some(doc) = self.doc(id)? else {
            return self.create_file(path, text, hash, stat, now_ms, rng);
        };
        // The disk already shows the documents' current state: our own write
        // that a crash kept us from recording, or the user typed the same
        // change. Either way it is not a new edit (recording it would duplicate
        // the text that was merged in).
        if doc.is_ready() && content_hash(doc.render()?.as_bytes()) == hash {
            let file = on_disk(path, hash, stat, doc.heads());
            self.commit_with_local(batch, id, file)?;
            return Ok(Recorded::Unchanged);
        }
        let disk_heads = match base_heads {
            Some(base) if doc.heads() != base && doc.has_all(&base) => {
                let mut fork = doc.fork_at(&base, new_actor(rng))?;
                fork.record(text, &author)?;
                let heads = fork.heads();
                doc.merge(&mut fork)?;
                heads
            }
            _ => {
                doc.record(text, &author)?;
                doc.heads()
            }
        };
        self.persist_file(id, &mut batch, path.as_str())?;
        if self.index.ensure_registered(&author)? {
            self.persist_index(&mut batch)?;
        }
        let file = on_disk(path, hash, stat, disk_heads);
        self.commit_with_local(batch, id, file)?;
        Ok(Recorded::Edited(id))
    }

    /// A file the index places at `path` that this peer has not put on disk (an
    /// interrupted clone, say): a file found there is that file, not a new one.
    /// Only when the bytes are exactly what we would write: anything else is
    /// the user's own file, kept side by side by the same-path rule.
    fn adoptable(
        &mut self,
        path: &SyncPath,
        hash: [u8; 32],
    ) -> Result<Option<FileId>, WorkspaceError> {
        // Cheap test first: every stored file document is on disk, nothing to adopt.
        if self
            .docs
            .keys()
            .filter(|k| matches!(k, DocKey::File(_)))
            .count()
            <= self.local.files.len()
        {
            return Ok(None);
        }
        let layout = self.layout()?.0;
        let Some(id) = layout
            .get(path)
            .copied()
            .filter(|id| self.local.get(id).is_none())
        else {
            return Ok(None);
        };
        match self.doc(id)? {
            Some(doc) if doc.is_ready() && content_hash(doc.render()?.as_bytes()) == hash => {
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }

    fn create_file(
        &mut self,
        path: &SyncPath,
        text: &str,
        hash: [u8; 32],
        stat: Stat,
        now_ms: i64,
        rng: &mut impl rand::Rng,
    ) -> Result<Recorded, WorkspaceError> {
        let id = FileId::random(rng);
        let member = self.member.clone();
        let author = Author {
            member: &member,
            now_ms,
        };
        let mut doc = FileDoc::create(self.actor.clone(), id, text, &author)?;
        let heads = doc.heads();
        self.cache.insert(id, doc);
        self.index.add_file(id, path.as_str(), &author)?;
        let mut batch = Batch::default();
        self.persist_file(id, &mut batch, path.as_str())?;
        self.persist_index(&mut batch)?;
        let file = on_disk(path, hash, stat, heads);
        self.commit_with_local(batch, id, file)?;
        Ok(Recorded::Created(id))
    }

    /// Records that the user deleted the file at `path`: it becomes a tombstone.
    pub fn record_removal(&mut self, path: &str, now_ms: i64) -> Result<FileId, WorkspaceError> {
        let (id, lf) = self
            .local_by_path(path)
            .map(|(id, f)| (id, f.clone()))
            .ok_or_else(|| WorkspaceError::NotTracked(path.to_string()))?;
        let author = self.author(now_ms).member.to_string();
        self.index.delete(
            id,
            &lf.heads,
            &Author {
                member: &author,
                now_ms,
            },
        )?;
        let mut batch = Batch::default();
        self.persist_index(&mut batch)?;
        batch.push(BatchOp::DeleteLocalFile { id });
        self.store.commit(batch)?;
        self.local.remove(&id);
        Ok(id)
    }

    /// Records that the user moved a file; its document and history move with it.
    pub fn record_rename(
        &mut self,
        from: &str,
        to: &SyncPath,
        now_ms: i64,
    ) -> Result<FileId, WorkspaceError> {
        let (id, lf) = self
            .local_by_path(from)
            .map(|(id, f)| (id, f.clone()))
            .ok_or_else(|| WorkspaceError::NotTracked(from.to_string()))?;
        let member = self.member.clone();
        self.index.rename(
            id,
            to.as_str(),
            &Author {
                member: &member,
                now_ms,
            },
        )?;
        let mut batch = Batch::default();
        self.persist_index(&mut batch)?;
        let file = LocalFile {
            path: to.to_string(),
            ..lf
        };
        self.commit_with_local(batch, id, file)?;
        Ok(id)
    }

    // ---- documents -> disk ----------------------------------------------------------

    /// Where every live file belongs. Files created at the same path on two
    /// peers are both kept: the older (then lower id) keeps the name, the other
    /// gets `name.conflict-<id>.md`. Unsafe paths are reported, never placed.
    fn layout(&mut self) -> Result<(BTreeMap<SyncPath, FileId>, Vec<String>), WorkspaceError> {
        let mut problems = Vec::new();
        let mut by_path: BTreeMap<SyncPath, Vec<(i64, FileId)>> = BTreeMap::new();
        for entry in self.index.files()? {
            if !self.is_live(&entry)? {
                continue;
            }
            match SyncPath::parse(&entry.path) {
                Ok(p) => by_path
                    .entry(p)
                    .or_default()
                    .push((entry.created_at_ms, entry.id)),
                Err(e) => problems.push(format!("not writing file {}: {e}", entry.id)),
            }
        }
        let mut out = BTreeMap::new();
        let taken: std::collections::BTreeSet<SyncPath> = by_path.keys().cloned().collect();
        for (path, mut ids) in by_path {
            ids.sort();
            for (i, (_, id)) in ids.into_iter().enumerate() {
                let place = if i == 0 {
                    path.clone()
                } else {
                    // A name no file has as its own path and none was given
                    // yet: a user can save a file under a conflict name (a
                    // detached edit is recorded at the name it had), and the
                    // map must never give two files one name (the one it
                    // dropped would be removed from disk).
                    let hex = id.to_hex();
                    let mut place = path.conflict_copy(&hex[..6]);
                    let mut n = 0u64;
                    while taken.contains(&place) || out.contains_key(&place) {
                        n += 1;
                        place = match n {
                            1 => path.conflict_copy(&hex),
                            n => path.conflict_copy(&format!("{hex}-{n}")),
                        };
                    }
                    place
                };
                out.insert(place, id);
            }
        }
        Ok((out, problems))
    }

    /// A file is live unless tombstoned, and a tombstoned file comes back when
    /// its document has edits the deleting peer had not seen (delete vs edit:
    /// the edit wins, and the delete can be repeated).
    fn is_live(&mut self, entry: &FileEntry) -> Result<bool, WorkspaceError> {
        let Some(tomb) = &entry.deleted else {
            return Ok(true);
        };
        match self.docs.get(&DocKey::File(entry.id)) {
            None => Ok(false),
            Some(info) if info.heads == tomb.heads => Ok(false),
            Some(_) => match self.doc(entry.id)? {
                Some(doc) => Ok(doc.has_changes_beyond(&tomb.heads)),
                None => Ok(false),
            },
        }
    }

    /// What must be written or removed so the disk shows the documents.
    pub fn plan(&mut self) -> Result<Plan, WorkspaceError> {
        let (layout, problems) = self.layout()?;
        let mut plan = Plan {
            ops: Vec::new(),
            problems,
        };
        let placed: HashMap<FileId, &SyncPath> = layout.iter().map(|(p, id)| (*id, p)).collect();
        for (id, lf) in &self.local.files {
            if placed.get(id).map(|p| p.as_str()) == Some(lf.path.as_str()) {
                continue;
            }
            let Ok(path) = SyncPath::parse(&lf.path) else {
                continue;
            };
            // Removed first even when another file takes this name next: a
            // crash between the two steps then leaves no bytes on disk that
            // no record owns (the next scan would take them for a new file).
            plan.ops.push(DiskOp::Remove {
                file: *id,
                path,
                expect: lf.hash,
            });
        }
        let mut writes = Vec::new();
        let mut synced = Vec::new();
        for (path, id) in &layout {
            let Some(info) = self.docs.get(&DocKey::File(*id)) else {
                continue;
            };
            let here = self.local.get(id).filter(|lf| lf.path == path.as_str());
            if here.is_some_and(|lf| lf.heads == info.heads) {
                continue;
            }
            let heads = info.heads.clone();
            // A path this plan removes first is empty when the write comes.
            let expect = self
                .local
                .at_path(path.as_str())
                .filter(|(owner, _)| owner == id)
                .map(|(_, f)| f.hash);
            writes.push((*id, path.clone(), heads, expect, here.map(|lf| lf.hash)));
        }
        for (id, path, heads, expect, here_hash) in writes {
            let Some(doc) = self.doc(id)? else { continue };
            if !doc.is_ready() {
                continue;
            }
            let bytes = doc.render()?;
            if here_hash == Some(content_hash(bytes.as_bytes())) {
                synced.push((id, heads));
                continue;
            }
            plan.ops.push(DiskOp::Write {
                file: id,
                path,
                bytes,
                expect,
                heads,
            });
        }
        if !synced.is_empty() {
            let mut batch = Batch::default();
            for (id, heads) in synced {
                if let Some(lf) = self.local.get(&id) {
                    let file = LocalFile {
                        heads,
                        ..lf.clone()
                    };
                    batch.push(BatchOp::PutLocalFile {
                        id,
                        file: file.clone(),
                    });
                    self.local.insert(id, file);
                }
            }
            self.store.commit(batch)?;
        }
        Ok(plan)
    }

    /// Records what an interrupted checkout had already done to the disk.
    ///
    /// A crash between a disk write and its record would make the next scan
    /// take our own write for a user's edit (a duplicate file) and our own
    /// removal for a user's deletion (a deletion nobody made, carried out on
    /// every peer). Call it when a process opens the state, before any scan.
    /// `disk` gives the hash and stat of the file at a path, `None` if there
    /// is none. Returns how many operations were found done.
    pub fn settle_checkout(
        &mut self,
        mut disk: impl FnMut(&SyncPath) -> Option<([u8; 32], Stat)>,
    ) -> Result<usize, WorkspaceError> {
        let plan = self.plan()?;
        let mut settled = 0;
        for op in &plan.ops {
            let done = match op {
                DiskOp::Write { path, bytes, .. } => disk(path)
                    .filter(|(hash, _)| *hash == content_hash(bytes.as_bytes()))
                    .map(|(_, stat)| stat),
                // A tracked file gone from a path where the documents no longer
                // place it: removed by us, or by a user whose deletion would
                // only repeat what the documents say (or lose to a rename).
                DiskOp::Remove { path, .. } => match disk(path) {
                    None => Some(Stat::default()),
                    Some(_) => None,
                },
            };
            if let Some(stat) = done {
                self.applied(op, stat)?;
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Records that a [`DiskOp`] was carried out, with the written file's stat.
    pub fn applied(&mut self, op: &DiskOp, stat: Stat) -> Result<(), WorkspaceError> {
        let mut batch = Batch::default();
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
                    batch.push(BatchOp::DeleteLocalFile { id: other });
                    self.local.remove(&other);
                }
                let lf = LocalFile {
                    path: path.to_string(),
                    hash: content_hash(bytes.as_bytes()),
                    size: stat.size,
                    mtime_ns: stat.mtime_ns,
                    heads: heads.clone(),
                };
                batch.push(BatchOp::PutLocalFile {
                    id: *file,
                    file: lf.clone(),
                });
                self.local.insert(*file, lf);
            }
            DiskOp::Remove { file, path, .. } => {
                if self
                    .local
                    .get(file)
                    .is_some_and(|f| f.path == path.as_str())
                {
                    batch.push(BatchOp::DeleteLocalFile { id: *file });
                    self.local.remove(file);
                }
            }
        }
        self.store.commit(batch)?;
        Ok(())
    }

    // ---- trash ------------------------------------------------------------------------

    /// Deleted files still within the retention period, newest first.
    pub fn trash(&mut self, now_ms: i64) -> Result<Vec<TrashEntry>, WorkspaceError> {
        let mut out = Vec::new();
        for entry in self.index.files()? {
            let Some(t) = &entry.deleted else { continue };
            if self.is_live(&entry)? || now_ms - t.at_ms > self.tombstone_ms {
                continue;
            }
            out.push(TrashEntry {
                file: entry.id,
                path: entry.path.clone(),
                deleted_at_ms: t.at_ms,
                deleted_by: t.by.clone(),
                expires_at_ms: t.at_ms + self.tombstone_ms,
            });
        }
        out.sort_by(|a, b| {
            b.deleted_at_ms
                .cmp(&a.deleted_at_ms)
                .then(a.file.cmp(&b.file))
        });
        Ok(out)
    }

    /// Brings a deleted file back. If its path is taken by a live file, it comes
    /// back beside it as `name.restored-<id>.md`. Returns where it will appear.
    pub fn restore(&mut self, path: &str, now_ms: i64) -> Result<SyncPath, WorkspaceError> {
        let entry = self
            .trash(now_ms)?
            .into_iter()
            .find(|t| t.path == path || t.file.to_hex().starts_with(path))
            .ok_or_else(|| WorkspaceError::NotInTrash(path.to_string()))?;
        let original =
            SyncPath::parse(&entry.path).map_err(|reason| WorkspaceError::UnsafePath {
                source_name: "the trash".into(),
                file: entry.file,
                reason,
            })?;
        let occupied = self.layout()?.0.contains_key(&original);
        let target = if occupied {
            let stem = original.as_str().trim_end_matches(".md");
            SyncPath::parse(&format!("{stem}.restored-{}.md", &entry.file.to_hex()[..6])).map_err(
                |reason| WorkspaceError::UnsafePath {
                    source_name: "the trash".into(),
                    file: entry.file,
                    reason,
                },
            )?
        } else {
            original.clone()
        };
        let member = self.member.clone();
        let new_path = (target != original).then_some(target.as_str());
        self.index.restore(
            entry.file,
            new_path,
            &Author {
                member: &member,
                now_ms,
            },
        )?;
        let mut batch = Batch::default();
        self.persist_index(&mut batch)?;
        self.store.commit(batch)?;
        Ok(target)
    }

    // ---- exchange -----------------------------------------------------------------------

    /// Every document, each as one standard saved automerge document.
    pub fn export_bundle(&mut self) -> Result<Vec<u8>, WorkspaceError> {
        let meta = self.index.meta()?;
        let mut docs = vec![(DocKey::Index, self.index.save())];
        let keys: Vec<DocKey> = self
            .docs
            .keys()
            .copied()
            .filter(|k| *k != DocKey::Index)
            .collect();
        for key in keys {
            let DocKey::File(id) = key else { continue };
            let bytes = match self.cache.get_mut(&id) {
                Some(doc) => doc.save(),
                None => {
                    let Some(chunks) = self.store.load_doc(key)? else {
                        continue;
                    };
                    if chunks.len() == 1 {
                        chunks.into_iter().next().unwrap_or_default()
                    } else {
                        FileDoc::load(&chunks, self.actor.clone())?.save()
                    }
                }
            };
            docs.push((key, bytes));
        }
        Ok(Bundle {
            workspace: meta.workspace_id,
            docs,
        }
        .encode())
    }

    /// Merges a bundle from another peer of this workspace. Every path in it is
    /// checked before anything is merged; a bad one refuses the whole bundle.
    pub fn import_bundle(
        &mut self,
        bytes: &[u8],
        source_name: &str,
    ) -> Result<ImportReport, WorkspaceError> {
        let bundle = Bundle::decode(bytes)?;
        let ours = self.index.meta()?.workspace_id;
        self.merge_bundle(bundle, source_name, Some(ours))
    }

    fn merge_bundle(
        &mut self,
        bundle: Bundle,
        source_name: &str,
        expect: Option<WorkspaceId>,
    ) -> Result<ImportReport, WorkspaceError> {
        if let Some(ours) = expect {
            if bundle.workspace != ours {
                return Err(WorkspaceError::WrongWorkspace {
                    ours,
                    theirs: bundle.workspace,
                });
            }
        }
        let index_bytes = bundle
            .docs
            .iter()
            .find(|(k, _)| *k == DocKey::Index)
            .map(|(_, b)| b)
            .ok_or(WorkspaceError::NoIndex)?;
        let mut preview = self.index.preview(index_bytes)?;
        let theirs = preview.meta()?.workspace_id;
        if theirs != bundle.workspace {
            return Err(WorkspaceError::WrongWorkspace {
                ours: bundle.workspace,
                theirs,
            });
        }
        let entries = preview.files()?;
        for entry in &entries {
            if let Err(reason) = SyncPath::parse(&entry.path) {
                return Err(WorkspaceError::UnsafePath {
                    source_name: source_name.to_string(),
                    file: entry.id,
                    reason,
                });
            }
        }
        let paths: BTreeMap<FileId, String> = entries.into_iter().map(|e| (e.id, e.path)).collect();
        // All or nothing: a document refused halfway, or a commit that fails,
        // must not leave the ones before it merged in memory (where the next
        // export or edit would carry them). The preview is the merged index.
        let index_changed = preview.heads() != self.index.heads();
        let index_before = std::mem::replace(&mut self.index, preview);
        let docs_before = self.docs.clone();
        let mut touched = Vec::new();
        let merged = self
            .merge_bundle_docs(&bundle, &paths, &mut touched)
            .and_then(|(report, batch)| {
                self.store.commit(batch)?;
                Ok(report)
            });
        match merged {
            Ok(mut report) => {
                if index_changed {
                    report.docs_changed += 1;
                } else {
                    report.docs_unchanged += 1;
                }
                Ok(report)
            }
            Err(e) => {
                for id in touched {
                    self.cache.remove(&id);
                }
                self.docs = docs_before;
                self.index = index_before;
                Err(e)
            }
        }
    }

    /// Merges a bundle's file documents and stages them, with the index
    /// (already merged), in one batch for the caller to commit.
    fn merge_bundle_docs(
        &mut self,
        bundle: &Bundle,
        paths: &BTreeMap<FileId, String>,
        touched: &mut Vec<FileId>,
    ) -> Result<(ImportReport, Batch), WorkspaceError> {
        let mut report = ImportReport::default();
        let mut batch = Batch::default();
        for (key, bytes) in &bundle.docs {
            let DocKey::File(id) = key else { continue };
            let before = self
                .docs
                .get(key)
                .map(|i| i.heads.clone())
                .unwrap_or_default();
            if self.doc(*id)?.is_none() {
                self.cache.insert(*id, FileDoc::empty(self.actor.clone()));
            }
            touched.push(*id);
            if let Some(doc) = self.cache.get_mut(id) {
                doc.apply(bytes)?;
                if doc.heads() == before {
                    report.docs_unchanged += 1;
                    continue;
                }
            }
            report.docs_changed += 1;
            let path = paths.get(id).cloned().unwrap_or_default();
            self.persist_file(*id, &mut batch, &path)?;
        }
        self.persist_index(&mut batch)?;
        // Documents merged from the bundle were cached as they came.
        while self.cache.len() > CACHE_DOCS {
            let Some(victim) = self.cache.keys().next().copied() else {
                break;
            };
            self.cache.remove(&victim);
        }
        Ok((report, batch))
    }

    // ---- live sync ------------------------------------------------------------------------

    /// The stored heads of every document: what the sync engine compares
    /// between peers without loading any document.
    pub fn doc_heads(&self) -> &BTreeMap<DocKey, DocInfo> {
        &self.docs
    }

    /// Whether the index names file `id` (live or deleted).
    pub fn names_file(&self, id: FileId) -> Result<bool, WorkspaceError> {
        Ok(self.index.file(id)?.is_some())
    }

    /// The workspace's id, or `None` before a clone has received the index.
    pub fn workspace_id(&self) -> Option<WorkspaceId> {
        self.index.meta().ok().map(|m| m.workspace_id)
    }

    /// The changes of `key` after `heads`: the body of a broadcast edit.
    pub fn changes_after(
        &mut self,
        key: DocKey,
        heads: &[ChangeHash],
    ) -> Result<Vec<u8>, WorkspaceError> {
        Ok(match key {
            DocKey::Index => self.index.save_after(heads),
            DocKey::File(id) => match self.doc(id)? {
                Some(doc) => doc.save_after(heads),
                None => Vec::new(),
            },
        })
    }

    /// Whether `key` holds every change in `heads`; false means a gap that
    /// only the sync protocol can fill.
    pub fn has_heads(&mut self, key: DocKey, heads: &[ChangeHash]) -> Result<bool, WorkspaceError> {
        if heads.is_empty() {
            return Ok(true);
        }
        Ok(match key {
            DocKey::Index => self.index.has_all(heads),
            DocKey::File(id) => match self.doc(id)? {
                Some(doc) => doc.has_all(heads),
                None => false,
            },
        })
    }

    /// Merges changes a peer broadcast. Staged: nothing is durable (and
    /// nothing may be acknowledged) before [`Self::commit_remote`].
    pub fn merge_changes(&mut self, key: DocKey, bytes: &[u8]) -> Result<bool, WorkspaceError> {
        self.with_remote_doc(key, |doc| match doc {
            DocMut::Index(d) => d.apply(bytes),
            DocMut::File(d) => d.apply(bytes),
        })
    }

    /// The next automerge sync message for `key`, for the peer whose sync
    /// state this is; `None` when that peer is known to be up to date.
    pub fn sync_message(
        &mut self,
        key: DocKey,
        state: &mut SyncState,
    ) -> Result<Option<Vec<u8>>, WorkspaceError> {
        Ok(match key {
            DocKey::Index => self.index.sync_generate(state),
            DocKey::File(id) => match self.doc(id)? {
                Some(doc) => doc.sync_generate(state),
                None => FileDoc::empty(self.actor.clone()).sync_generate(state),
            },
        })
    }

    /// Takes in a sync message for `key`; staged like [`Self::merge_changes`].
    pub fn receive_sync(
        &mut self,
        key: DocKey,
        state: &mut SyncState,
        message: &[u8],
    ) -> Result<bool, WorkspaceError> {
        self.with_remote_doc(key, |doc| match doc {
            DocMut::Index(d) => d.sync_receive(state, message),
            DocMut::File(d) => d.sync_receive(state, message),
        })
    }

    /// Runs a remote merge on the index or a file document (created empty if
    /// this peer has never seen it) and stages what changed.
    fn with_remote_doc(
        &mut self,
        key: DocKey,
        merge: impl FnOnce(DocMut<'_>) -> Result<(), DocError>,
    ) -> Result<bool, WorkspaceError> {
        let before = self
            .docs
            .get(&key)
            .map(|i| i.heads.clone())
            .unwrap_or_default();
        let mut batch = std::mem::take(&mut self.remote);
        let result = match key {
            DocKey::Index => merge(DocMut::Index(&mut self.index))
                .map_err(WorkspaceError::from)
                .and_then(|()| self.persist_index(&mut batch)),
            DocKey::File(id) => {
                if self.doc(id)?.is_none() {
                    self.cache.insert(id, FileDoc::empty(self.actor.clone()));
                }
                let applied = match self.cache.get_mut(&id) {
                    Some(doc) => merge(DocMut::File(doc)).map_err(WorkspaceError::from),
                    None => Ok(()),
                };
                let path = self.index.file(id)?.map(|e| e.path).unwrap_or_default();
                applied.and_then(|()| self.persist_file(id, &mut batch, &path))
            }
        };
        self.remote = batch;
        result?;
        Ok(self.docs.get(&key).map(|i| i.heads.as_slice()) != Some(before.as_slice()))
    }

    /// Stages a metadata value to be committed with the remote merges.
    pub fn stage_meta(&mut self, key: &str, value: Vec<u8>) {
        self.remote.push(BatchOp::PutMeta {
            key: key.to_string(),
            value,
        });
    }

    /// Makes every staged remote merge durable in one transaction.
    pub fn commit_remote(&mut self) -> Result<(), WorkspaceError> {
        let batch = std::mem::take(&mut self.remote);
        if !batch.is_empty() {
            self.store.commit(batch)?;
        }
        // Documents that arrived from peers were cached as they merged.
        while self.cache.len() > CACHE_DOCS {
            let Some(victim) = self.cache.keys().next().copied() else {
                break;
            };
            self.cache.remove(&victim);
        }
        Ok(())
    }

    // ---- reading --------------------------------------------------------------------------

    /// Live files whose path starts with `prefix` (`"cards/"`, or `""` for all),
    /// with their frontmatter fields, in path order. Only those documents load.
    pub fn files(&mut self, prefix: &str) -> Result<Vec<FileSummary>, WorkspaceError> {
        let (layout, _) = self.layout()?;
        let mut out = Vec::new();
        for (path, id) in layout {
            if !path.as_str().starts_with(prefix) {
                continue;
            }
            let fields = match self.doc(id)? {
                Some(doc) if doc.is_ready() => doc.fields()?,
                _ => Vec::new(),
            };
            out.push(FileSummary { id, path, fields });
        }
        Ok(out)
    }

    /// The activity log since `since_s` (Unix seconds), oldest first.
    pub fn activity(&mut self, since_s: i64) -> Result<Vec<Activity>, WorkspaceError> {
        let rows = self.store.activity(since_s)?;
        let paths: BTreeMap<FileId, String> = self
            .index
            .files()?
            .into_iter()
            .map(|e| (e.id, e.path))
            .collect();
        Ok(rows
            .into_iter()
            .map(|r| Activity {
                time_s: r.time_s,
                member: self
                    .index
                    .member_of(&r.actor)
                    .unwrap_or_else(|| format!("peer {}", &r.actor[..r.actor.len().min(8)])),
                path: match r.file {
                    Some(id) => paths.get(&id).cloned().unwrap_or(r.path),
                    None => r.path,
                },
                action: r.action.split(' ').next().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// Documents the index names that this peer has not received yet.
    pub fn missing_docs(&self) -> Result<usize, WorkspaceError> {
        Ok(self
            .index
            .files()?
            .iter()
            .filter(|e| !self.docs.contains_key(&DocKey::File(e.id)))
            .count())
    }
}

/// Stages a document's new state: its changes appended as one chunk, or the
/// whole document as one snapshot when it is new or has [`COMPACT_AFTER`] chunks.
/// `save(Some(heads))` must return the changes after `heads`, `save(None)` the document.
fn stage_doc(
    docs: &mut BTreeMap<DocKey, DocInfo>,
    key: DocKey,
    heads: Vec<ChangeHash>,
    batch: &mut Batch,
    save: impl FnOnce(Option<&[ChangeHash]>) -> Vec<u8>,
) {
    let info = docs.get(&key).cloned().unwrap_or_default();
    let chunks = if info.heads.is_empty() || info.chunks >= COMPACT_AFTER {
        batch.push(BatchOp::ReplaceDoc {
            doc: key,
            snapshot: save(None),
            heads: heads.clone(),
        });
        0
    } else {
        batch.push(BatchOp::AppendChunk {
            doc: key,
            bytes: save(Some(&info.heads)),
            heads: heads.clone(),
        });
        info.chunks + 1
    };
    docs.insert(key, DocInfo { heads, chunks });
}

fn activity_row(c: ChangeInfo, file: Option<FileId>, path: String) -> BatchOp {
    BatchOp::AddActivity(ActivityRow {
        change: c.hash,
        time_s: c.time_s,
        actor: c.actor,
        file,
        path,
        action: c.message,
    })
}

/// The record of a file as it now is on disk.
fn on_disk(path: &SyncPath, hash: [u8; 32], stat: Stat, heads: Vec<ChangeHash>) -> LocalFile {
    LocalFile {
        path: path.to_string(),
        hash,
        size: stat.size,
        mtime_ns: stat.mtime_ns,
        heads,
    }
}

fn new_actor(rng: &mut impl rand::Rng) -> ActorId {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    ActorId::from(bytes)
}
