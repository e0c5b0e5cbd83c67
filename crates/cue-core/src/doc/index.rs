//! The index document: the workspace's metadata and the list of its files.

use automerge::{
    transaction::Transactable, ActorId, AutoCommit, ObjType, ReadDoc, ScalarValue, Value, ROOT,
};

use super::{commit, Author, ChangeHash, DocError};
use crate::guard::{LimitError, Usage};
use crate::limits::MAX_FILES_PER_WORKSPACE;
use crate::{FileId, WorkspaceId};

/// Workspace-wide facts every member sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceMeta {
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub created_at_ms: i64,
    /// Everyone who has ever made a change, by display name.
    pub members: Vec<String>,
}

/// A deleted file, kept so it can be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub at_ms: i64,
    pub by: String,
    /// The file document's heads when it was deleted: an edit not covered by
    /// them was made concurrently (or later) and brings the file back.
    pub heads: Vec<ChangeHash>,
}

/// One file as the index knows it. `path` is raw: it came from a peer and is
/// validated before it is ever used on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub id: FileId,
    pub path: String,
    pub created_at_ms: i64,
    pub created_by: String,
    pub deleted: Option<Tombstone>,
}

/// Which file entries a merge into the index touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    Entries(std::collections::BTreeSet<FileId>),
    /// Too much to say (the first index a clone receives): read them all.
    All,
}

/// The index document. Its map of files is keyed by [`FileId`], so two peers
/// creating the same path make two entries and neither is lost.
pub struct IndexDoc {
    doc: AutoCommit,
    /// An upper bound on the entries of `files`: each merge adds at most as
    /// many entries as it has operations, so the exact count (a walk of the
    /// map) is needed only when this bound could pass
    /// [`MAX_FILES_PER_WORKSPACE`]. `None`: not known yet.
    files_bound: Option<u64>,
}

/// Entries in the index's `files` map (live and deleted files).
fn count_files(doc: &AutoCommit) -> u64 {
    match doc.get(ROOT, "files") {
        Ok(Some((Value::Object(ObjType::Map), files))) => doc.length(&files) as u64,
        _ => 0,
    }
}

/// The new bound on `next`'s files after a merge of `usage` into a document
/// whose bound was `bound`, or the refusal if it names too many files. An
/// index already past the limit (made before it existed) may still merge
/// changes that do not add files.
fn check_files(
    before: &AutoCommit,
    next: &AutoCommit,
    bound: Option<u64>,
    added_ops: u64,
) -> Result<u64, DocError> {
    if let Some(b) = bound.and_then(|b| b.checked_add(added_ops)) {
        if b <= MAX_FILES_PER_WORKSPACE {
            return Ok(b);
        }
    }
    let n = count_files(next);
    if n > MAX_FILES_PER_WORKSPACE && n > count_files(before) {
        return Err(LimitError::Count {
            what: "the index",
            items: "files",
            count: n,
            limit: MAX_FILES_PER_WORKSPACE,
        }
        .into());
    }
    Ok(n)
}

fn str_of(v: Option<(Value<'_>, automerge::ObjId)>) -> Option<String> {
    match v {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn int_of(v: Option<(Value<'_>, automerge::ObjId)>) -> Option<i64> {
    match v {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Some(*i),
            ScalarValue::Uint(u) => i64::try_from(*u).ok(),
            _ => None,
        },
        _ => None,
    }
}

impl IndexDoc {
    /// Starts a new workspace. Only `cue init` calls this; everyone else loads.
    pub fn create(
        actor: ActorId,
        id: WorkspaceId,
        name: &str,
        author: &Author<'_>,
    ) -> Result<Self, DocError> {
        let mut doc = AutoCommit::new().with_actor(actor);
        let meta = doc.put_object(ROOT, "metadata", ObjType::Map)?;
        doc.put(&meta, "workspace_id", id.to_hex())?;
        doc.put(&meta, "name", name)?;
        doc.put(&meta, "created_at", ScalarValue::Timestamp(author.now_ms))?;
        doc.put_object(&meta, "members", ObjType::Map)?;
        doc.put_object(&meta, "member_keys", ObjType::Map)?;
        doc.put_object(ROOT, "rotations", ObjType::Map)?;
        doc.put_object(ROOT, "actors", ObjType::Map)?;
        doc.put_object(ROOT, "files", ObjType::Map)?;
        let mut index = IndexDoc {
            doc,
            files_bound: Some(0),
        };
        index.register(author)?;
        commit(&mut index.doc, author, "init workspace".into());
        Ok(index)
    }

    /// Reads an index from saved bytes (a snapshot followed by incremental chunks).
    pub fn load(chunks: &[Vec<u8>], actor: ActorId) -> Result<Self, DocError> {
        let mut doc = AutoCommit::new().with_actor(actor);
        super::load_chunks(&mut doc, chunks)?;
        let index = IndexDoc {
            doc,
            files_bound: None,
        };
        index.files_obj()?;
        Ok(index)
    }

    /// A document that has nothing yet: a clone fills it from a peer or bundle.
    pub fn empty(actor: ActorId) -> Self {
        IndexDoc {
            doc: AutoCommit::new().with_actor(actor),
            files_bound: Some(0),
        }
    }

    /// Takes `next`, this index after a merge of bytes from elsewhere, unless
    /// it names more than [`MAX_FILES_PER_WORKSPACE`] files.
    fn accept(&mut self, next: AutoCommit, usage: Usage) -> Result<(), DocError> {
        self.files_bound = Some(check_files(&self.doc, &next, self.files_bound, usage.ops)?);
        self.doc = next;
        Ok(())
    }

    fn obj(&self, key: &'static str) -> Result<automerge::ObjId, DocError> {
        match self.doc.get(ROOT, key)? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(DocError::Shape(key)),
        }
    }

    /// A joining peer's index before the first sync: no files yet, not an error.
    fn is_blank(&self) -> bool {
        self.doc.length(ROOT) == 0
    }

    fn files_obj(&self) -> Result<automerge::ObjId, DocError> {
        self.obj("files")
    }

    /// Records this peer's actor under the member's name, once.
    fn register(&mut self, author: &Author<'_>) -> Result<(), DocError> {
        let actors = self.obj("actors")?;
        let me = self.doc.get_actor().to_hex_string();
        if str_of(self.doc.get(&actors, me.as_str())?).as_deref() != Some(author.member) {
            self.doc.put(&actors, me.as_str(), author.member)?;
        }
        let meta = self.obj("metadata")?;
        if let Some((Value::Object(ObjType::Map), members)) = self.doc.get(&meta, "members")? {
            if self.doc.get(&members, author.member)?.is_none() {
                self.doc.put(
                    &members,
                    author.member,
                    ScalarValue::Timestamp(author.now_ms),
                )?;
            }
        }
        Ok(())
    }

    /// Makes sure this peer's actor maps to the member's name, so the activity
    /// log can name who made a file edit. Commits only when something changed.
    pub fn ensure_registered(&mut self, author: &Author<'_>) -> Result<bool, DocError> {
        let before = self.doc.get_heads();
        self.register(author)?;
        if self.doc.pending_ops() == 0 {
            return Ok(false);
        }
        commit(&mut self.doc, author, format!("join {}", author.member));
        Ok(self.doc.get_heads() != before)
    }

    /// The workspace metadata, or a shape error if the document is not an index.
    pub fn meta(&self) -> Result<WorkspaceMeta, DocError> {
        let meta = self.obj("metadata")?;
        let id = str_of(self.doc.get(&meta, "workspace_id")?)
            .and_then(|s| WorkspaceId::parse(&s))
            .ok_or(DocError::Shape("metadata.workspace_id"))?;
        let members = match self.doc.get(&meta, "members")? {
            Some((Value::Object(ObjType::Map), m)) => self.doc.keys(&m).collect(),
            _ => Vec::new(),
        };
        Ok(WorkspaceMeta {
            workspace_id: id,
            name: str_of(self.doc.get(&meta, "name")?).unwrap_or_default(),
            created_at_ms: int_of(self.doc.get(&meta, "created_at")?).unwrap_or_default(),
            members,
        })
    }

    /// Each member's published public key (raw text: it came from a peer and
    /// is parsed before use), by name.
    pub fn member_keys(&self) -> Result<Vec<(String, String)>, DocError> {
        let meta = self.obj("metadata")?;
        let Some((Value::Object(ObjType::Map), keys)) = self.doc.get(&meta, "member_keys")? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for name in self.doc.keys(&keys) {
            if let Some(text) = str_of(self.doc.get(&keys, name.as_str())?) {
                out.push((name, text));
            }
        }
        Ok(out)
    }

    /// When each member first changed something (`metadata.members`).
    pub fn member_joined(&self) -> Result<Vec<(String, i64)>, DocError> {
        let meta = self.obj("metadata")?;
        let Some((Value::Object(ObjType::Map), members)) = self.doc.get(&meta, "members")? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for name in self.doc.keys(&members) {
            let at = int_of(self.doc.get(&members, name.as_str())?).unwrap_or_default();
            out.push((name, at));
        }
        Ok(out)
    }

    /// Publishes this member's public key (hex) under its name; commits only
    /// if it was not there already.
    pub fn publish_member_key(
        &mut self,
        key_hex: &str,
        author: &Author<'_>,
    ) -> Result<bool, DocError> {
        let meta = self.obj("metadata")?;
        let keys = self.map_in(&meta, "member_keys")?;
        if str_of(self.doc.get(&keys, author.member)?).as_deref() == Some(key_hex) {
            return Ok(false);
        }
        self.register(author)?;
        self.doc.put(&keys, author.member, key_hex)?;
        commit(&mut self.doc, author, format!("key {}", author.member));
        Ok(true)
    }

    /// Key rotation records, by epoch (raw bytes: checked before use).
    pub fn rotations(&self) -> Result<Vec<(u32, Vec<u8>)>, DocError> {
        let Some((Value::Object(ObjType::Map), rot)) = self.doc.get(ROOT, "rotations")? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for epoch in self.doc.keys(&rot) {
            let Ok(n) = epoch.parse::<u32>() else {
                continue;
            };
            if let Some((Value::Scalar(v), _)) = self.doc.get(&rot, epoch.as_str())? {
                if let ScalarValue::Bytes(b) = v.as_ref() {
                    out.push((n, b.clone()));
                }
            }
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// Records a key rotation (`cue member remove`).
    pub fn add_rotation(
        &mut self,
        epoch: u32,
        record: &[u8],
        removed: &str,
        author: &Author<'_>,
    ) -> Result<(), DocError> {
        self.register(author)?;
        let rot = self.map_in(&ROOT, "rotations")?;
        self.doc
            .put(&rot, epoch.to_string(), ScalarValue::Bytes(record.to_vec()))?;
        commit(
            &mut self.doc,
            author,
            format!("remove member {removed} (key rotation, epoch {epoch})"),
        );
        Ok(())
    }

    /// The map under `key` in `parent`, made if missing (a workspace made by
    /// an older `cue` has no `member_keys` or `rotations` map; two peers
    /// making it at once would each make one and automerge keep one, so the
    /// loser's entry is written again by its next publish).
    fn map_in(
        &mut self,
        parent: &automerge::ObjId,
        key: &str,
    ) -> Result<automerge::ObjId, DocError> {
        match self.doc.get(parent, key)? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Ok(self.doc.put_object(parent, key, ObjType::Map)?),
        }
    }

    /// The member name behind an automerge actor (hex), if it registered.
    pub fn member_of(&self, actor_hex: &str) -> Option<String> {
        let actors = self.obj("actors").ok()?;
        str_of(self.doc.get(&actors, actor_hex).ok()?)
    }

    /// Every file the index knows, live or deleted, in file-id order.
    pub fn files(&self) -> Result<Vec<FileEntry>, DocError> {
        if self.is_blank() {
            return Ok(Vec::new());
        }
        let files = self.files_obj()?;
        let mut out = Vec::new();
        for item in self.doc.map_range(&files, ..) {
            let Some(id) = FileId::parse(&item.key) else {
                continue;
            };
            if let Some(entry) = self.entry_at(id, &item.id())? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// One file's entry.
    pub fn file(&self, id: FileId) -> Result<Option<FileEntry>, DocError> {
        if self.is_blank() {
            return Ok(None);
        }
        let files = self.files_obj()?;
        match self.doc.get(&files, id.to_hex())? {
            Some((Value::Object(ObjType::Map), obj)) => self.entry_at(id, &obj),
            _ => Ok(None),
        }
    }

    fn entry_at(&self, id: FileId, obj: &automerge::ObjId) -> Result<Option<FileEntry>, DocError> {
        let Some(path) = str_of(self.doc.get(obj, "path")?) else {
            return Ok(None);
        };
        let deleted = match int_of(self.doc.get(obj, "deleted_at")?) {
            None => None,
            Some(at_ms) => {
                let mut heads = Vec::new();
                if let Some((Value::Object(ObjType::List), list)) =
                    self.doc.get(obj, "deleted_heads")?
                {
                    for v in self.doc.list_range(&list, ..) {
                        if let Value::Scalar(s) = Value::from(v.value) {
                            if let ScalarValue::Str(h) = s.as_ref() {
                                if let Ok(hash) = h.parse::<ChangeHash>() {
                                    heads.push(hash);
                                }
                            }
                        }
                    }
                }
                Some(Tombstone {
                    at_ms,
                    by: str_of(self.doc.get(obj, "deleted_by")?).unwrap_or_default(),
                    heads,
                })
            }
        };
        Ok(Some(FileEntry {
            id,
            path,
            created_at_ms: int_of(self.doc.get(obj, "created_at")?).unwrap_or_default(),
            created_by: str_of(self.doc.get(obj, "created_by")?).unwrap_or_default(),
            deleted,
        }))
    }

    fn entry_obj(&self, id: FileId) -> Result<Option<automerge::ObjId>, DocError> {
        let files = self.files_obj()?;
        Ok(match self.doc.get(&files, id.to_hex())? {
            Some((Value::Object(ObjType::Map), obj)) => Some(obj),
            _ => None,
        })
    }

    /// Adds a new file under a fresh id.
    pub fn add_file(
        &mut self,
        id: FileId,
        path: &str,
        author: &Author<'_>,
    ) -> Result<(), DocError> {
        let bound = match self.files_bound {
            Some(b) if b < MAX_FILES_PER_WORKSPACE => b,
            _ => count_files(&self.doc),
        };
        if bound >= MAX_FILES_PER_WORKSPACE {
            return Err(LimitError::Count {
                what: "a new file",
                items: "files in the workspace already",
                count: bound,
                limit: MAX_FILES_PER_WORKSPACE,
            }
            .into());
        }
        self.files_bound = Some(bound + 1);
        self.register(author)?;
        let files = self.files_obj()?;
        let obj = self.doc.put_object(&files, id.to_hex(), ObjType::Map)?;
        self.doc.put(&obj, "path", path)?;
        self.doc
            .put(&obj, "created_at", ScalarValue::Timestamp(author.now_ms))?;
        self.doc.put(&obj, "created_by", author.member)?;
        commit(&mut self.doc, author, format!("create {path}"));
        Ok(())
    }

    /// Moves a file to a new path; its document and history stay.
    pub fn rename(&mut self, id: FileId, to: &str, author: &Author<'_>) -> Result<(), DocError> {
        self.register(author)?;
        let Some(obj) = self.entry_obj(id)? else {
            return Ok(());
        };
        let from = str_of(self.doc.get(&obj, "path")?).unwrap_or_default();
        self.doc.put(&obj, "path", to)?;
        commit(&mut self.doc, author, format!("rename {from} -> {to}"));
        Ok(())
    }

    /// Tombstones a file; `heads` are its document's heads as this peer saw them.
    pub fn delete(
        &mut self,
        id: FileId,
        heads: &[ChangeHash],
        author: &Author<'_>,
    ) -> Result<(), DocError> {
        self.register(author)?;
        let Some(obj) = self.entry_obj(id)? else {
            return Ok(());
        };
        let path = str_of(self.doc.get(&obj, "path")?).unwrap_or_default();
        self.doc
            .put(&obj, "deleted_at", ScalarValue::Timestamp(author.now_ms))?;
        self.doc.put(&obj, "deleted_by", author.member)?;
        let list = self.doc.put_object(&obj, "deleted_heads", ObjType::List)?;
        for (i, h) in heads.iter().enumerate() {
            self.doc.insert(&list, i, h.to_string())?;
        }
        commit(&mut self.doc, author, format!("delete {path}"));
        Ok(())
    }

    /// Clears a tombstone (optionally at a new path, when the old one is taken).
    pub fn restore(
        &mut self,
        id: FileId,
        path: Option<&str>,
        author: &Author<'_>,
    ) -> Result<(), DocError> {
        self.register(author)?;
        let Some(obj) = self.entry_obj(id)? else {
            return Ok(());
        };
        for key in ["deleted_at", "deleted_by", "deleted_heads"] {
            self.doc.delete(&obj, key)?;
        }
        if let Some(p) = path {
            self.doc.put(&obj, "path", p)?;
        }
        let shown = str_of(self.doc.get(&obj, "path")?).unwrap_or_default();
        commit(&mut self.doc, author, format!("restore {shown}"));
        Ok(())
    }

    /// Merges changes from elsewhere in place and says which file entries they
    /// touched, read from automerge's patches (cost in proportion to the
    /// change, where reading every entry costs ~20 µs per file). No copy of
    /// the index is made: on an error this document may hold part of the
    /// merge, and the caller must load it again from storage.
    pub fn apply_tracked(&mut self, bytes: &[u8]) -> Result<Touched, DocError> {
        // Bounded before automerge inflates or expands anything.
        let usage = crate::guard::check_chunks(bytes)?;
        self.merge_in_place(usage, |doc| {
            doc.load_incremental(bytes)?;
            Ok(())
        })
    }

    /// [`Self::apply_tracked`] for an automerge sync message.
    pub fn sync_receive_tracked(
        &mut self,
        state: &mut crate::doc::SyncState,
        message: &[u8],
    ) -> Result<Touched, DocError> {
        use automerge::sync::SyncDoc;
        let usage = crate::guard::check_sync_message(message)?;
        let mut next_state = state.clone();
        let touched = self.merge_in_place(usage, |doc| {
            let message =
                automerge::sync::Message::decode(message).map_err(|_| DocError::BadSyncMessage)?;
            doc.sync().receive_sync_message(&mut next_state, message)?;
            Ok(())
        })?;
        *state = next_state;
        Ok(touched)
    }

    fn merge_in_place(
        &mut self,
        usage: Usage,
        merge: impl FnOnce(&mut AutoCommit) -> Result<(), DocError>,
    ) -> Result<Touched, DocError> {
        let was_blank = self.is_blank();
        // The file count is recounted only near the limit (see `check_files`).
        let fast = self
            .files_bound
            .and_then(|b| b.checked_add(usage.ops))
            .filter(|b| *b <= MAX_FILES_PER_WORKSPACE);
        let count_before = if fast.is_none() {
            count_files(&self.doc)
        } else {
            0
        };
        let before = self.doc.get_heads();
        super::forget_patches(&mut self.doc);
        self.doc.update_diff_cursor();
        let doc = &mut self.doc;
        let merged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| merge(doc)));
        let result = match merged {
            Ok(r) => r,
            Err(_) => Err(DocError::Refused(
                "automerge panicked while merging them".into(),
            )),
        };
        if let Err(e) = result {
            super::forget_patches(&mut self.doc);
            return Err(e);
        }
        let checked = super::check_times(&mut self.doc, &before)
            .and_then(|()| super::check_size(&self.doc))
            .and_then(|()| match fast {
                Some(bound) => Ok(bound),
                None => {
                    let n = count_files(&self.doc);
                    if n > MAX_FILES_PER_WORKSPACE && n > count_before {
                        Err(LimitError::Count {
                            what: "the index",
                            items: "files",
                            count: n,
                            limit: MAX_FILES_PER_WORKSPACE,
                        }
                        .into())
                    } else {
                        Ok(n)
                    }
                }
            });
        let bound = checked.inspect_err(|_| {
            super::forget_patches(&mut self.doc);
        })?;
        self.files_bound = Some(bound);
        let patches = self.doc.diff_incremental();
        super::forget_patches(&mut self.doc);
        if was_blank {
            return Ok(Touched::All);
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in patches {
            match (p.path.first(), p.path.get(1)) {
                (Some((_, automerge::Prop::Map(top))), Some((_, automerge::Prop::Map(key))))
                    if top == "files" =>
                {
                    if let Some(id) = FileId::parse(key) {
                        ids.insert(id);
                    }
                }
                (Some((_, automerge::Prop::Map(top))), None) if top == "files" => match &p.action {
                    automerge::PatchAction::PutMap { key, .. }
                    | automerge::PatchAction::DeleteMap { key } => {
                        if let Some(id) = FileId::parse(key) {
                            ids.insert(id);
                        }
                    }
                    _ => return Ok(Touched::All),
                },
                // The files map itself replaced, or a change at the root.
                (None, _) => return Ok(Touched::All),
                _ => {}
            }
        }
        Ok(Touched::Entries(ids))
    }

    /// The index as it would be after merging `bytes`, without changing this one:
    /// lets an import check every path before accepting anything.
    pub fn preview(&mut self, bytes: &[u8]) -> Result<IndexDoc, DocError> {
        let usage = crate::guard::check_chunks(bytes)?;
        let doc = super::merge_untrusted(&mut self.doc, |doc| {
            doc.load_incremental(bytes)?;
            Ok(())
        })?;
        let files_bound = Some(check_files(&self.doc, &doc, self.files_bound, usage.ops)?);
        Ok(IndexDoc { doc, files_bound })
    }

    /// This peer's actor id (hex).
    pub fn actor_hex(&self) -> String {
        self.doc.get_actor().to_hex_string()
    }
}

super::impl_storage!(IndexDoc);
