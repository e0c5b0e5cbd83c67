//! The documents and their persistence: what the store holds, what is staged
//! for the next commit, and which file documents are in memory.
//!
//! Every change to a document is staged here as soon as it is made (its new
//! changes as one chunk, or the whole document when it is compacted), and
//! [`Docs::commit`] writes everything staged in one transaction. A document
//! loaded while changes to it are staged is read from the store *and* the
//! staged bytes, so the in-memory cache can drop any document at any time: it
//! is a real least-recently-used cache, bounded by [`CACHE_DOCS`].

use std::collections::{BTreeMap, HashMap};

use automerge::ActorId;

use crate::doc::{ChangeHash, ChangeInfo, FileDoc, IndexDoc};
use crate::store::{ActivityRow, Batch, BatchOp, DocInfo, DocKey, LocalFile, Store, StoreError};
use crate::FileId;

use super::WorkspaceError;

/// File documents kept in memory; the rest are loaded on demand (about 1 ms
/// each for a few KB of Markdown).
pub const CACHE_DOCS: usize = 128;
/// Chunks below this many bytes in all are never worth compacting.
const COMPACT_MIN_BYTES: u64 = 16 * 1024;
/// A document is compacted when its chunks outgrow its snapshot, or when it
/// has this many (loading many small chunks costs more than one snapshot).
const COMPACT_MAX_CHUNKS: u32 = 256;

#[derive(Default)]
struct StagedDoc {
    /// Replaces everything the store holds for the document.
    snapshot: Option<Vec<u8>>,
    /// Changes after the snapshot (or after what the store holds), concatenated.
    chunks: Vec<u8>,
}

/// What the next commit writes.
#[derive(Default)]
struct Staged {
    docs: BTreeMap<DocKey, StagedDoc>,
    local: BTreeMap<FileId, Option<LocalFile>>,
    meta: BTreeMap<String, Vec<u8>>,
    activity: Vec<ActivityRow>,
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.docs.is_empty()
            && self.local.is_empty()
            && self.meta.is_empty()
            && self.activity.is_empty()
    }
}

/// A least-recently-used set of loaded file documents.
#[derive(Default)]
struct Lru {
    docs: HashMap<FileId, (FileDoc, u64)>,
    order: BTreeMap<u64, FileId>,
    tick: u64,
}

impl Lru {
    fn get_mut(&mut self, id: &FileId) -> Option<&mut FileDoc> {
        let (doc, used) = self.docs.get_mut(id)?;
        self.order.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.order.insert(self.tick, *id);
        Some(doc)
    }

    fn contains(&self, id: &FileId) -> bool {
        self.docs.contains_key(id)
    }

    fn insert(&mut self, id: FileId, doc: FileDoc) {
        self.remove(&id);
        while self.docs.len() >= CACHE_DOCS {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            self.docs.remove(&victim);
        }
        self.tick += 1;
        self.order.insert(self.tick, id);
        self.docs.insert(id, (doc, self.tick));
    }

    fn remove(&mut self, id: &FileId) {
        if let Some((_, used)) = self.docs.remove(id) {
            self.order.remove(&used);
        }
    }

    fn clear(&mut self) {
        self.docs.clear();
        self.order.clear();
    }
}

/// Where the documents are: the store, the staged changes, the cache.
pub(super) struct Docs<S: Store> {
    store: S,
    actor: ActorId,
    /// Heads and sizes of every document, committed or staged.
    infos: BTreeMap<DocKey, DocInfo>,
    /// Bumped whenever any document's heads change.
    generation: u64,
    staged: Staged,
    cache: Lru,
}

/// What [`Docs::rollback`] goes back to.
pub(super) struct Checkpoint {
    infos: BTreeMap<DocKey, DocInfo>,
}

impl<S: Store> Docs<S> {
    pub fn open(mut store: S, actor: ActorId) -> Result<Self, StoreError> {
        let infos = store.docs()?;
        Ok(Docs {
            store,
            actor,
            infos,
            generation: next_generation(),
            staged: Staged::default(),
            cache: Lru::default(),
        })
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }

    pub fn infos(&self) -> &BTreeMap<DocKey, DocInfo> {
        &self.infos
    }

    /// Changes whenever any document's heads change: lets a digest of every
    /// document's heads be computed once per change, not once per use.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn heads(&self, key: DocKey) -> Vec<ChangeHash> {
        self.infos
            .get(&key)
            .map(|i| i.heads.clone())
            .unwrap_or_default()
    }

    /// A document's stored bytes: its snapshot and chunks, committed or staged,
    /// in order (what `load_incremental` takes, one after the other).
    pub fn chunks(&mut self, key: DocKey) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let staged = self.staged.docs.get(&key);
        let mut chunks = match staged.and_then(|s| s.snapshot.clone()) {
            Some(snapshot) => vec![snapshot],
            None => match self.store.load_doc(key)? {
                Some(chunks) => chunks,
                None => return Ok(None),
            },
        };
        if let Some(s) = staged.filter(|s| !s.chunks.is_empty()) {
            chunks.push(s.chunks.clone());
        }
        Ok(Some(chunks))
    }

    /// A file's document, loaded if need be; `None` if this peer has none.
    pub fn file(&mut self, id: FileId) -> Result<Option<&mut FileDoc>, WorkspaceError> {
        if !self.cache.contains(&id) {
            let Some(chunks) = self.chunks(DocKey::File(id))? else {
                return Ok(None);
            };
            let doc = FileDoc::load(&chunks, self.actor.clone())?;
            self.cache.insert(id, doc);
        }
        Ok(self.cache.get_mut(&id))
    }

    /// Loads many files' documents into the cache at once, on every core: a
    /// branch switch, a find-and-replace or a peer's batch touches many files
    /// that are not in memory, and loading them one after the other was most
    /// of the time (about 1.5 ms each). At most half the cache is filled, so
    /// what is loaded is still there when it is used. A document that fails
    /// to load is left out; the caller's own load then reports it.
    pub fn prefetch(&mut self, ids: &[FileId]) -> Result<(), WorkspaceError> {
        let mut wanted = Vec::new();
        for &id in ids {
            if wanted.len() >= CACHE_DOCS / 2 {
                break;
            }
            if self.cache.contains(&id) || wanted.iter().any(|(w, _)| *w == id) {
                continue;
            }
            if let Some(chunks) = self.chunks(DocKey::File(id))? {
                wanted.push((id, chunks));
            }
        }
        let actor = self.actor.clone();
        let loaded = crate::parallel::map(
            &wanted,
            |(_, chunks)| FileDoc::load(chunks, actor.clone()).ok(),
            || None,
        );
        for ((id, _), doc) in wanted.iter().zip(loaded) {
            if let Some(doc) = doc {
                self.cache.insert(*id, doc);
            }
        }
        Ok(())
    }

    /// A file's document, or a new empty one to merge a peer's changes into.
    pub fn file_or_empty(&mut self, id: FileId) -> Result<&mut FileDoc, WorkspaceError> {
        if self.file(id)?.is_none() {
            self.cache.insert(id, FileDoc::empty(self.actor.clone()));
        }
        self.cache.get_mut(&id).ok_or(WorkspaceError::Internal(
            "a document vanished from the cache",
        ))
    }

    /// Puts a document just made into the cache (persist it next).
    pub fn insert(&mut self, id: FileId, doc: FileDoc) {
        self.cache.insert(id, doc);
    }

    /// Drops a loaded document without saving it: what a refused merge may
    /// have left half-done is reloaded from what was stored and staged.
    pub fn forget(&mut self, id: FileId) {
        self.cache.remove(&id);
    }

    /// Stages a file document's changes since it was last staged, with an
    /// activity row per change (`path`: where the file is now).
    pub fn persist_file(&mut self, id: FileId, path: &str) -> Result<(), WorkspaceError> {
        let key = DocKey::File(id);
        let since = self.heads(key);
        let Some(doc) = self.cache.get_mut(&id) else {
            return Ok(());
        };
        let heads = doc.heads();
        if heads == since {
            return Ok(());
        }
        for c in doc.changes_since(&since) {
            self.staged
                .activity
                .push(activity_row(c, Some(id), path.to_string()));
        }
        let info = self.infos.get(&key).cloned().unwrap_or_default();
        let doc = self.cache.get_mut(&id).ok_or(WorkspaceError::Internal(
            "a document vanished from the cache",
        ))?;
        let new = stage_doc(&mut self.staged, key, info, heads, |after| match after {
            Some(h) => doc.save_after(h),
            None => doc.save(),
        });
        self.infos.insert(key, new);
        self.generation = next_generation();
        Ok(())
    }

    /// Stages a document exactly as the bytes that arrived (a document this
    /// peer did not have): no re-encoding.
    /// `doc` is those bytes loaded: what tells their heads and history.
    pub fn stage_received(&mut self, id: FileId, doc: &mut FileDoc, bytes: Vec<u8>, path: &str) {
        let key = DocKey::File(id);
        let heads = doc.heads();
        for c in doc.changes_since(&[]) {
            self.staged
                .activity
                .push(activity_row(c, Some(id), path.to_string()));
        }
        let info = DocInfo {
            heads,
            chunks: 0,
            snapshot_bytes: bytes.len() as u64,
            chunk_bytes: 0,
        };
        self.staged.docs.insert(
            key,
            StagedDoc {
                snapshot: Some(bytes),
                chunks: Vec::new(),
            },
        );
        self.infos.insert(key, info);
        self.generation = next_generation();
    }

    /// Stages the index's changes since it was last staged.
    pub fn persist_index(&mut self, index: &mut IndexDoc) {
        let since = self.heads(DocKey::Index);
        let heads = index.heads();
        if heads == since {
            return;
        }
        for c in index.changes_since(&since) {
            let (verb, rest) = c
                .message
                .split_once(' ')
                .unwrap_or((c.message.as_str(), ""));
            let path = match verb {
                "create" | "delete" | "restore" => rest.to_string(),
                "rename" => rest.split(" -> ").nth(1).unwrap_or(rest).to_string(),
                _ => String::new(),
            };
            self.staged.activity.push(activity_row(c, None, path));
        }
        let info = self.infos.get(&DocKey::Index).cloned().unwrap_or_default();
        let new = stage_doc(
            &mut self.staged,
            DocKey::Index,
            info,
            heads,
            |after| match after {
                Some(h) => index.save_after(h),
                None => index.save(),
            },
        );
        self.infos.insert(DocKey::Index, new);
        self.generation = next_generation();
    }

    /// Stages what is on disk for one file (`None`: nothing any more).
    pub fn stage_local(&mut self, id: FileId, file: Option<LocalFile>) {
        self.staged.local.insert(id, file);
    }

    pub fn stage_meta(&mut self, key: &str, value: Vec<u8>) {
        self.staged.meta.insert(key.to_string(), value);
    }

    pub fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.staged.meta.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None => self.store.meta(key),
        }
    }

    /// Writes everything staged in one transaction. After a failure the
    /// caller must open the workspace again: memory is ahead of the store.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        let mut batch = Batch::default();
        for (key, doc) in staged.docs {
            let heads = self.heads(key);
            if let Some(snapshot) = doc.snapshot {
                batch.push(BatchOp::ReplaceDoc {
                    doc: key,
                    snapshot,
                    heads: heads.clone(),
                });
            }
            if !doc.chunks.is_empty() {
                batch.push(BatchOp::AppendChunk {
                    doc: key,
                    bytes: doc.chunks,
                    heads,
                });
            }
        }
        for (id, file) in staged.local {
            batch.push(match file {
                Some(file) => BatchOp::PutLocalFile { id, file },
                None => BatchOp::DeleteLocalFile { id },
            });
        }
        for (key, value) in staged.meta {
            batch.push(BatchOp::PutMeta { key, value });
        }
        for row in staged.activity {
            batch.push(BatchOp::AddActivity(row));
        }
        self.store.commit(batch)
    }

    /// Where [`Self::rollback`] returns to. Commit first: staged work is
    /// dropped by a rollback.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            infos: self.infos.clone(),
        }
    }

    /// Forgets everything staged and loaded since `checkpoint`.
    pub fn rollback(&mut self, checkpoint: Checkpoint) {
        self.infos = checkpoint.infos;
        self.generation = next_generation();
        self.staged = Staged::default();
        self.cache.clear();
    }
}

/// Stages a document's new state: its changes appended to the staged chunk,
/// or the whole document as a new snapshot when it is new or its chunks have
/// outgrown its snapshot. `save(Some(heads))` must return the changes after
/// `heads`, `save(None)` the whole document. Returns the document's new info.
fn stage_doc(
    staged: &mut Staged,
    key: DocKey,
    mut info: DocInfo,
    heads: Vec<ChangeHash>,
    save: impl FnOnce(Option<&[ChangeHash]>) -> Vec<u8>,
) -> DocInfo {
    let slot = staged.docs.entry(key).or_default();
    let compact = info.heads.is_empty()
        || info.chunks >= COMPACT_MAX_CHUNKS
        || info.chunk_bytes > info.snapshot_bytes.max(COMPACT_MIN_BYTES);
    if compact {
        let snapshot = save(None);
        info.snapshot_bytes = snapshot.len() as u64;
        info.chunk_bytes = 0;
        info.chunks = 0;
        *slot = StagedDoc {
            snapshot: Some(snapshot),
            chunks: Vec::new(),
        };
    } else {
        let bytes = save(Some(&info.heads));
        if slot.chunks.is_empty() {
            info.chunks += 1;
        }
        info.chunk_bytes += bytes.len() as u64;
        slot.chunks.extend_from_slice(&bytes);
    }
    info.heads = heads;
    info
}

/// Generations are unique across every workspace of the process, so a digest
/// cached against one is never taken for another's (a daemon reopens its
/// workspace after another process committed).
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn activity_row(c: ChangeInfo, file: Option<FileId>, path: String) -> ActivityRow {
    ActivityRow {
        change: c.hash,
        time_s: c.time_s,
        actor: c.actor,
        file,
        path,
        action: c.message,
    }
}
