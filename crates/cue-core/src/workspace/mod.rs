//! The workspace engine: files in, documents out, and back.
//!
//! [`Workspace`] owns the index document, the file documents (through a
//! bounded cache that also owns their persistence), a mirror of where every
//! file belongs, and the record of what is on the user's disk. The disk layer
//! ([`crate::disk`]) tells it what the user did (`record_*`, in `record.rs`),
//! asks it what to write ([`Workspace::plan`], in `checkout.rs`) and reports
//! what it wrote ([`Workspace::applied`]); the sync engine merges what peers
//! send (`remote.rs`). Trash, bundles and the activity log have a module each.
//!
//! Every change is staged, and [`Workspace::commit`] writes what was staged in
//! one transaction: a scan of a thousand files is one commit, and so is a
//! frame of a thousand received documents. Nothing is sent to a peer or
//! acknowledged before the commit that holds it. After a failed commit, open
//! the workspace again (memory is ahead of the store).
//!
//! An edit is always recorded against the document state that was on disk when
//! the user read the file (`LocalFile::heads`): if other peers' changes arrived
//! in between, the edit is made on a fork at those heads and merged, so neither
//! side's work is lost (a three-way merge, done by the CRDT).

mod activity;
mod checkout;
mod docs;
mod exchange;
mod layout;
mod local;
mod record;
mod remote;
mod repair;
mod trash;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::ActorId;
use sha2::{Digest, Sha256};

use crate::bundle::BundleError;
use crate::doc::{Author, ChangeHash, DocError, FileEntry, IndexDoc, WorkspaceMeta};
use crate::frontmatter::FmValue;
use crate::store::{DocInfo, DocKey, LocalFile, Store, StoreError};
use crate::{FileId, PathError, SyncPath, WorkspaceId};

pub use crate::disk::Stat;
pub use activity::Activity;
pub use checkout::{DiskOp, Plan};
pub use docs::CACHE_DOCS;
pub use exchange::ImportReport;
pub use record::NewFile;
pub use repair::{PoisonReason, Poisoned, RepairAction};
pub use trash::TrashEntry;

use docs::Docs;
use layout::Layout;
use local::DiskState;

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
    /// A bug: an invariant of this module did not hold.
    #[error("internal error: {0}; please report it")]
    Internal(&'static str),
}

/// What recording a file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Unchanged,
    Created(FileId),
    Edited(FileId),
}

/// A live file the layout cannot place on any disk: its path, from a peer,
/// is unsafe. It stays in the documents and is never written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub file: FileId,
    pub path: String,
    pub reason: PathError,
}

impl std::fmt::Display for Unplaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not writing file {}: {}", self.file, self.reason)
    }
}

/// Why a live file the documents hold is not on this peer's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotWrittenReason {
    /// Its path, from a peer, is unsafe or not portable: no peer writes it.
    Unsafe(PathError),
    /// It is a project file (`project/…`) that this peer's `sync.include`
    /// globs do not match: other members sync it, this peer only keeps it
    /// in the documents.
    NotIncluded,
}

/// A live file that is in the documents but not written here, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotWritten {
    pub file: FileId,
    pub path: String,
    pub reason: NotWrittenReason,
}

impl std::fmt::Display for NotWrittenReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotWrittenReason::Unsafe(e) => write!(f, "not safe to write: {e}"),
            NotWrittenReason::NotIncluded => f.write_str("outside this peer's sync.include globs"),
        }
    }
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
    actor: ActorId,
    member: String,
    index: IndexDoc,
    docs: Docs<S>,
    layout: Layout,
    local: DiskState,
    tombstone_ms: i64,
    /// Files whose disk state may differ from what the documents say: the
    /// next plan looks at these only.
    dirty: BTreeSet<FileId>,
    /// Files rendered as they arrived, by heads: a plan right after a bulk
    /// merge writes them without loading each document again.
    rendered: HashMap<FileId, (Vec<ChangeHash>, String)>,
}

impl<S: Store> Workspace<S> {
    /// Starts a brand-new workspace in an empty store.
    pub fn create(
        store: S,
        name: &str,
        member: &str,
        now_ms: i64,
        rng: &mut impl rand::Rng,
    ) -> Result<Self, WorkspaceError> {
        let actor = new_actor(rng);
        let id = WorkspaceId::random(rng);
        let author = Author { member, now_ms };
        let index = IndexDoc::create(actor.clone(), id, name, &author)?;
        let mut ws = Self::assemble(store, actor, member, index)?;
        ws.docs.stage_meta("actor", ws.actor.to_bytes().to_vec());
        ws.docs.persist_index(&mut ws.index);
        ws.commit()?;
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

    /// Makes a new, still empty peer of an existing workspace that will be
    /// filled by live sync (`cue clone CODE`): the index and every file arrive
    /// from peers. [`Self::workspace_id`] is `None` until the index has come.
    pub fn join(store: S, member: &str, rng: &mut impl rand::Rng) -> Result<Self, WorkspaceError> {
        let actor = new_actor(rng);
        let index = IndexDoc::empty(actor.clone());
        let mut ws = Self::assemble(store, actor, member, index)?;
        ws.docs.stage_meta("actor", ws.actor.to_bytes().to_vec());
        ws.commit()?;
        Ok(ws)
    }

    fn assemble(
        mut store: S,
        actor: ActorId,
        member: &str,
        index: IndexDoc,
    ) -> Result<Self, WorkspaceError> {
        let local = DiskState::new(store.local_files()?);
        let docs = Docs::open(store, actor.clone())?;
        let mut ws = Workspace {
            actor,
            member: member.to_string(),
            index,
            docs,
            layout: Layout::default(),
            local,
            tombstone_ms: i64::from(DEFAULT_TOMBSTONE_DAYS) * DAY_MS,
            dirty: BTreeSet::new(),
            rendered: HashMap::new(),
        };
        ws.reread_entries()?;
        ws.dirty.extend(ws.local.ids());
        Ok(ws)
    }

    /// How long deleted files stay restorable (`sync.max_offline_days`).
    pub fn set_tombstone_days(&mut self, days: u32) {
        self.tombstone_ms = i64::from(days.max(1)) * DAY_MS;
    }

    /// Workspace id, name, members.
    pub fn meta(&self) -> Result<WorkspaceMeta, WorkspaceError> {
        Ok(self.index.meta()?)
    }

    /// Each member's published public key (raw text, from peers), by name.
    pub fn member_keys(&self) -> Result<Vec<(String, String)>, WorkspaceError> {
        Ok(self.index.member_keys()?)
    }

    /// When each member first changed something, by name.
    pub fn member_joined(&self) -> Result<Vec<(String, i64)>, WorkspaceError> {
        Ok(self.index.member_joined()?)
    }

    /// Publishes this member's public key in the index (committed); true if
    /// the index changed. Needs the index: not before a clone has it.
    pub fn publish_member_key(
        &mut self,
        key_hex: &str,
        now_ms: i64,
    ) -> Result<bool, WorkspaceError> {
        let member = self.member.clone();
        let author = Author {
            member: &member,
            now_ms,
        };
        let changed = self.index.publish_member_key(key_hex, &author)?;
        if changed {
            self.docs.persist_index(&mut self.index);
            self.commit()?;
        }
        Ok(changed)
    }

    /// Key rotation records in the index, by epoch (unchecked bytes).
    pub fn rotations(&self) -> Result<Vec<(u32, Vec<u8>)>, WorkspaceError> {
        Ok(self.index.rotations()?)
    }

    /// Writes a key rotation record into the index (committed).
    pub fn add_rotation(
        &mut self,
        epoch: u32,
        record: &[u8],
        removed: &str,
        now_ms: i64,
    ) -> Result<(), WorkspaceError> {
        let member = self.member.clone();
        let author = Author {
            member: &member,
            now_ms,
        };
        self.index.add_rotation(epoch, record, removed, &author)?;
        self.docs.persist_index(&mut self.index);
        self.commit()
    }

    /// The workspace's id, or `None` before a clone has received the index.
    pub fn workspace_id(&self) -> Option<WorkspaceId> {
        self.index.meta().ok().map(|m| m.workspace_id)
    }

    /// This peer's automerge actor id, in hex.
    pub fn actor_hex(&self) -> String {
        self.actor.to_hex_string()
    }

    /// The store, for the binary's own bookkeeping.
    pub fn store_mut(&mut self) -> &mut S {
        self.docs.store_mut()
    }

    /// A value this peer keeps for itself (never synced), staged or stored.
    pub fn meta_value(&mut self, key: &str) -> Result<Option<Vec<u8>>, WorkspaceError> {
        Ok(self.docs.meta(key)?)
    }

    /// Stages a value this peer keeps for itself, for the next commit.
    pub fn stage_meta(&mut self, key: &str, value: Vec<u8>) {
        self.docs.stage_meta(key, value);
    }

    /// Writes everything staged in one transaction.
    pub fn commit(&mut self) -> Result<(), WorkspaceError> {
        Ok(self.docs.commit()?)
    }

    /// Gives the store back (the simulator's crash keeps only what was committed).
    pub fn into_store(self) -> S {
        self.docs.into_store()
    }

    /// What this peer last put on disk, per file.
    pub fn local_files(&self) -> &BTreeMap<FileId, LocalFile> {
        self.local.files()
    }

    /// The tracked file at `path`, as last seen on disk.
    pub fn local_by_path(&self, path: &str) -> Option<(FileId, &LocalFile)> {
        self.local.at_path(path)
    }

    /// The tracked files at `under` or inside the folder `under` (`""`: all),
    /// by path: what a scan of that part of the disk compares against.
    pub fn local_under<'a>(
        &'a self,
        under: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a LocalFile)> {
        self.local.under(under)
    }

    /// Every file in the index, live or deleted, in id order.
    pub fn entries(&self) -> Result<Vec<FileEntry>, WorkspaceError> {
        Ok(self.layout.entries().cloned().collect())
    }

    /// The stored heads of every document: what the sync engine compares
    /// between peers without loading any document.
    pub fn doc_heads(&self) -> &BTreeMap<DocKey, DocInfo> {
        self.docs.infos()
    }

    /// Whether the index names file `id` (live or deleted).
    pub fn names_file(&self, id: FileId) -> bool {
        self.layout.entry(&id).is_some()
    }

    /// Changes whenever any document's heads change (see [`Self::doc_heads`]).
    pub fn heads_generation(&self) -> u64 {
        self.docs.generation()
    }

    /// A document as stored (its snapshot and chunks, one after the other),
    /// without loading it: what a peer that has none of it receives.
    pub fn saved_doc(&mut self, key: DocKey) -> Result<Option<Vec<u8>>, WorkspaceError> {
        if key == DocKey::Index {
            return Ok(Some(self.index.save()));
        }
        Ok(self.docs.chunks(key)?.map(|chunks| chunks.concat()))
    }

    /// Live files whose path starts with `prefix` (`"cards/"`, or `""` for all),
    /// with their frontmatter fields, in path order. Only those documents load.
    pub fn files(&mut self, prefix: &str) -> Result<Vec<FileSummary>, WorkspaceError> {
        let placed: Vec<(SyncPath, FileId)> = self
            .layout
            .placed()
            .iter()
            .filter(|(p, _)| p.as_str().starts_with(prefix))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        let mut out = Vec::with_capacity(placed.len());
        for (path, id) in placed {
            let fields = match self.docs.file(id)? {
                Some(doc) if doc.is_ready() => doc.fields()?,
                _ => Vec::new(),
            };
            out.push(FileSummary { id, path, fields });
        }
        Ok(out)
    }

    /// Documents the index names that this peer has not received yet.
    pub fn missing_docs(&self) -> usize {
        self.layout
            .entries()
            .filter(|e| !self.docs.infos().contains_key(&DocKey::File(e.id)))
            .count()
    }

    /// Files the index names that cannot be placed on any disk.
    pub fn unplaced(&self) -> Vec<Unplaced> {
        self.layout.unplaced().cloned().collect()
    }

    /// Live files this peer does not write, in path order: those whose path
    /// is unsafe (on every peer), and those placed where `keeps` (see
    /// [`crate::disk::FileSystem::keeps`]) says this peer keeps nothing.
    /// Reads the layout only (no document loads): for `cue status`.
    pub fn not_written(&self, keeps: &dyn Fn(&SyncPath) -> bool) -> Vec<NotWritten> {
        let mut out: Vec<NotWritten> = self
            .layout
            .unplaced()
            .map(|u| NotWritten {
                file: u.file,
                path: u.path.clone(),
                reason: NotWrittenReason::Unsafe(u.reason.clone()),
            })
            .collect();
        out.extend(
            self.layout
                .placed()
                .iter()
                .filter(|(path, _)| !keeps(path))
                .map(|(path, id)| NotWritten {
                    file: *id,
                    path: path.to_string(),
                    reason: NotWrittenReason::NotIncluded,
                }),
        );
        out.sort_by(|a, b| a.path.cmp(&b.path).then(a.file.cmp(&b.file)));
        out
    }

    /// Records (staged) what is now on disk for one file.
    fn put_local(&mut self, id: FileId, file: LocalFile) {
        self.docs.stage_local(id, Some(file.clone()));
        self.local.insert(id, file);
    }

    /// Records (staged) that nothing of one file is on disk any more.
    fn drop_local(&mut self, id: FileId) {
        self.docs.stage_local(id, None);
        self.local.remove(&id);
    }

    fn author(&self, now_ms: i64) -> Author<'_> {
        Author {
            member: &self.member,
            now_ms,
        }
    }

    // ---- the layout, kept up to date --------------------------------------------------

    /// Reads every entry of the index again (at open, and after a merge too
    /// large to track entry by entry).
    fn reread_entries(&mut self) -> Result<(), WorkspaceError> {
        let mut ids: BTreeSet<FileId> = self.layout.entries().map(|e| e.id).collect();
        ids.extend(self.index.files()?.into_iter().map(|e| e.id));
        self.refresh(ids)
    }

    /// Reads the entries of `ids` from the index and places them again; files
    /// whose place changed are marked for the next plan.
    fn refresh(&mut self, ids: impl IntoIterator<Item = FileId>) -> Result<(), WorkspaceError> {
        let mut changed = Vec::new();
        for id in ids {
            let now = match self.index.file(id)? {
                Some(entry) => {
                    let live = self.is_live(&entry)?;
                    Some((entry, live))
                }
                None => None,
            };
            self.dirty.insert(id);
            changed.push((id, now));
        }
        let moved = self.layout.update(changed);
        self.dirty.extend(moved);
        Ok(())
    }

    /// A file document changed: its file may need writing, and a tombstoned
    /// file may have come back (an edit made concurrently with its deletion).
    fn doc_changed(&mut self, id: FileId) -> Result<(), WorkspaceError> {
        self.dirty.insert(id);
        if self.layout.entry(&id).is_some_and(|e| e.deleted.is_some()) {
            self.refresh([id])?;
        }
        Ok(())
    }

    /// A file is live unless tombstoned, and a tombstoned file comes back when
    /// its document has edits the deleting peer had not seen (delete vs edit:
    /// the edit wins, and the delete can be repeated).
    fn is_live(&mut self, entry: &FileEntry) -> Result<bool, WorkspaceError> {
        let Some(tomb) = &entry.deleted else {
            return Ok(true);
        };
        match self.docs.infos().get(&DocKey::File(entry.id)) {
            None => Ok(false),
            Some(info) if info.heads == tomb.heads => Ok(false),
            Some(_) => match self.docs.file(entry.id)? {
                Some(doc) => Ok(doc.has_changes_beyond(&tomb.heads)),
                None => Ok(false),
            },
        }
    }
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
