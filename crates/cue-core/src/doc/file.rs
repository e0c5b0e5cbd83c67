//! One file's document: its text and its frontmatter fields.
//!
//! Schema (root map): `file_id` (str), `content` (Text: the whole file as the
//! user wrote it, frontmatter fences included), `frontmatter` (map of fields:
//! scalars, lists, nested maps), `frontmatter_broken` (bool: the YAML did not
//! parse, so the text alone is the truth), `last_modified_by` (str), `version`
//! (counter). The file's bytes are [`FileDoc::render`]: the content, with any
//! top-level field that a merge changed rewritten by [`crate::frontmatter::patch`].

use automerge::{
    transaction::Transactable, ActorId, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value,
    ROOT,
};

use super::{commit, Author, ChangeHash, DocError};
use crate::diff;
use crate::frontmatter::{self, FmValue};
use crate::FileId;

/// A file's CRDT document.
pub struct FileDoc {
    doc: AutoCommit,
}

type Fields = Vec<(String, FmValue)>;

impl FileDoc {
    /// Creates the document for a new file. Only the peer that creates the file
    /// calls this; others receive the document, so its objects exist once.
    pub fn create(
        actor: ActorId,
        id: FileId,
        text: &str,
        author: &Author<'_>,
    ) -> Result<Self, DocError> {
        let mut doc = AutoCommit::new().with_actor(actor);
        doc.put(ROOT, "file_id", id.to_hex())?;
        doc.put_object(ROOT, "content", ObjType::Text)?;
        doc.put_object(ROOT, "frontmatter", ObjType::Map)?;
        doc.put(ROOT, "frontmatter_broken", false)?;
        doc.put(ROOT, "version", ScalarValue::counter(0))?;
        let mut file = FileDoc { doc };
        file.record(text, author)?;
        Ok(file)
    }

    /// Reads a document from saved bytes (a snapshot then incremental chunks).
    pub fn load(chunks: &[Vec<u8>], actor: ActorId) -> Result<Self, DocError> {
        let mut doc = AutoCommit::new().with_actor(actor);
        super::load_chunks(&mut doc, chunks)?;
        Ok(FileDoc { doc })
    }

    /// Takes `next`, this document after a merge of bytes from elsewhere.
    fn accept(&mut self, next: AutoCommit, _usage: crate::guard::Usage) -> Result<(), DocError> {
        self.doc = next;
        Ok(())
    }

    /// An empty document, to be filled with a peer's changes.
    pub fn empty(actor: ActorId) -> Self {
        FileDoc {
            doc: AutoCommit::new().with_actor(actor),
        }
    }

    fn content_obj(&self) -> Result<ObjId, DocError> {
        match self.doc.get(ROOT, "content")? {
            Some((Value::Object(ObjType::Text), id)) => Ok(id),
            _ => Err(DocError::Shape("content")),
        }
    }

    fn fields_obj(&self) -> Result<ObjId, DocError> {
        match self.doc.get(ROOT, "frontmatter")? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(DocError::Shape("frontmatter")),
        }
    }

    /// Whether the document has received its creator's first change yet.
    pub fn is_ready(&self) -> bool {
        self.content_obj().is_ok() && self.fields_obj().is_ok()
    }

    /// The file's text exactly as last written by someone (see [`Self::render`]).
    pub fn content(&self) -> Result<String, DocError> {
        Ok(self.doc.text(self.content_obj()?)?)
    }

    /// The merged frontmatter fields.
    pub fn fields(&self) -> Result<Fields, DocError> {
        read_map(&self.doc, &self.fields_obj()?)
    }

    /// True while the latest frontmatter text is not valid YAML.
    pub fn frontmatter_broken(&self) -> bool {
        matches!(self.doc.get(ROOT, "frontmatter_broken"), Ok(Some((Value::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Boolean(true)))
    }

    /// Who changed the file last, as a display name.
    pub fn last_modified_by(&self) -> Option<String> {
        match self.doc.get(ROOT, "last_modified_by") {
            Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_string),
            _ => None,
        }
    }

    /// How many edits the file has had, across all peers.
    pub fn version(&self) -> i64 {
        match self.doc.get(ROOT, "version") {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Counter(c) => i64::from(c),
                ScalarValue::Int(i) => *i,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// The file's bytes: a pure function of the document, so every peer that
    /// holds the same changes writes the same bytes.
    pub fn render(&self) -> Result<String, DocError> {
        let content = self.content()?;
        if self.frontmatter_broken() {
            return Ok(content);
        }
        Ok(frontmatter::patch(&content, &self.fields()?))
    }

    /// Records that the user's file now reads `text`, as the smallest edit from
    /// this document's current state: a text diff for the content, a per-field
    /// diff for the frontmatter (only changed fields are written, so concurrent
    /// changes to other fields survive). Returns false if nothing changed.
    pub fn record(&mut self, text: &str, author: &Author<'_>) -> Result<bool, DocError> {
        let content_obj = self.content_obj()?;
        let fields_obj = self.fields_obj()?;
        let old = self.doc.text(&content_obj)?;
        let mut changed = false;
        for s in diff::splices(&old, text).iter().rev() {
            let del = isize::try_from(s.delete).unwrap_or(isize::MAX);
            self.doc.splice_text(&content_obj, s.pos, del, &s.insert)?;
            changed = true;
        }
        let was_broken = self.frontmatter_broken();
        match frontmatter::parse_file(text) {
            Ok(new_fields) => {
                let base = read_map(&self.doc, &fields_obj)?;
                changed |= write_map_diff(&mut self.doc, &fields_obj, &base, &new_fields)?;
                if was_broken {
                    self.doc.put(ROOT, "frontmatter_broken", false)?;
                    changed = true;
                }
            }
            Err(_) => {
                if !was_broken {
                    self.doc.put(ROOT, "frontmatter_broken", true)?;
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(false);
        }
        if self.last_modified_by().as_deref() != Some(author.member) {
            self.doc.put(ROOT, "last_modified_by", author.member)?;
        }
        self.doc.increment(ROOT, "version", 1)?;
        commit(&mut self.doc, author, "edit".into());
        Ok(true)
    }

    /// The document as it was at `heads` (what was on disk then), to record an
    /// edit against as `actor`; merge it back with [`Self::merge`]. The caller
    /// picks the actor: automerge's own pick is random, which would make the
    /// same inputs give different change hashes (and a seeded simulation
    /// unrepeatable).
    pub fn fork_at(&mut self, heads: &[ChangeHash], actor: ActorId) -> Result<FileDoc, DocError> {
        Ok(FileDoc {
            doc: self.doc.fork_at(heads)?.with_actor(actor),
        })
    }

    /// Takes in every change `other` has that this document lacks.
    pub fn merge(&mut self, other: &mut FileDoc) -> Result<(), DocError> {
        self.doc.merge(&mut other.doc)?;
        super::forget_patches(&mut self.doc);
        Ok(())
    }

    /// Whether the document has changes that `heads` does not cover: used to
    /// decide that an edit was made concurrently with (or after) a deletion.
    ///
    /// Heads not received yet (the deleting peer saw changes that are still on
    /// their way here) cannot tell which of our changes it saw, so any change
    /// beyond the heads we do hold counts: the deletion waits for the missing
    /// changes rather than removing an edit just saved here (found by `cue-sim`).
    pub fn has_changes_beyond(&mut self, heads: &[ChangeHash]) -> bool {
        let held: Vec<ChangeHash> = heads
            .iter()
            .filter(|h| self.doc.get_change_by_hash(h).is_some())
            .copied()
            .collect();
        !self.doc.get_changes(&held).is_empty()
    }
}

fn scalar_to_fm(s: &ScalarValue) -> FmValue {
    match s {
        ScalarValue::Str(s) => FmValue::Str(s.to_string()),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => FmValue::Int(*i),
        ScalarValue::Uint(u) => i64::try_from(*u)
            .map(FmValue::Int)
            .unwrap_or(FmValue::Float(*u as f64)),
        ScalarValue::F64(f) => FmValue::Float(*f),
        ScalarValue::Boolean(b) => FmValue::Bool(*b),
        ScalarValue::Counter(c) => FmValue::Int(i64::from(c)),
        _ => FmValue::Null,
    }
}

/// Deepest object nesting read from a document: a hostile peer's document
/// could otherwise make reading it overflow the stack.
const MAX_DEPTH: usize = 64;

fn read_value(doc: &AutoCommit, value: Value<'_>, id: &ObjId) -> Result<FmValue, DocError> {
    read_value_at(doc, value, id, 0)
}

fn read_value_at(
    doc: &AutoCommit,
    value: Value<'_>,
    id: &ObjId,
    depth: usize,
) -> Result<FmValue, DocError> {
    if depth > MAX_DEPTH {
        return Ok(FmValue::Null);
    }
    Ok(match value {
        Value::Scalar(s) => scalar_to_fm(s.as_ref()),
        Value::Object(ObjType::Map) | Value::Object(ObjType::Table) => {
            FmValue::Map(read_map_at(doc, id, depth + 1)?)
        }
        Value::Object(ObjType::List) => FmValue::List(read_list_at(doc, id, depth + 1)?),
        Value::Object(ObjType::Text) => FmValue::Str(doc.text(id)?),
    })
}

fn read_map(doc: &AutoCommit, obj: &ObjId) -> Result<Fields, DocError> {
    read_map_at(doc, obj, 0)
}

fn read_map_at(doc: &AutoCommit, obj: &ObjId, depth: usize) -> Result<Fields, DocError> {
    let mut out = Vec::new();
    for item in doc.map_range(obj, ..) {
        let key = item.key.to_string();
        let v = {
            let id = item.id();
            read_value_at(doc, item.value.into(), &id, depth)
        }?;
        out.push((key, v));
    }
    Ok(out)
}

/// A list's items without duplicates, first occurrence first: the union rule.
fn read_list_at(doc: &AutoCommit, obj: &ObjId, depth: usize) -> Result<Vec<FmValue>, DocError> {
    let mut out: Vec<FmValue> = Vec::new();
    for item in doc.list_range(obj, ..) {
        let v = {
            let id = item.id();
            read_value_at(doc, item.value.into(), &id, depth)
        }?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

fn to_scalar(v: &FmValue) -> ScalarValue {
    match v {
        FmValue::Null => ScalarValue::Null,
        FmValue::Bool(b) => ScalarValue::Boolean(*b),
        FmValue::Int(i) => ScalarValue::Int(*i),
        FmValue::Float(f) => ScalarValue::F64(*f),
        FmValue::Str(s) => ScalarValue::Str(s.as_str().into()),
        FmValue::List(_) | FmValue::Map(_) => ScalarValue::Null,
    }
}

fn put_value(doc: &mut AutoCommit, obj: &ObjId, key: &str, v: &FmValue) -> Result<(), DocError> {
    match v {
        FmValue::List(items) => {
            let list = doc.put_object(obj, key, ObjType::List)?;
            for (i, item) in dedup(items).iter().enumerate() {
                insert_value(doc, &list, i, item)?;
            }
        }
        FmValue::Map(entries) => {
            let map = doc.put_object(obj, key, ObjType::Map)?;
            for (k, v) in entries {
                put_value(doc, &map, k, v)?;
            }
        }
        scalar => doc.put(obj, key, to_scalar(scalar))?,
    }
    Ok(())
}

fn insert_value(
    doc: &mut AutoCommit,
    list: &ObjId,
    at: usize,
    v: &FmValue,
) -> Result<(), DocError> {
    match v {
        FmValue::List(items) => {
            let inner = doc.insert_object(list, at, ObjType::List)?;
            for (i, item) in dedup(items).iter().enumerate() {
                insert_value(doc, &inner, i, item)?;
            }
        }
        FmValue::Map(entries) => {
            let map = doc.insert_object(list, at, ObjType::Map)?;
            for (k, v) in entries {
                put_value(doc, &map, k, v)?;
            }
        }
        scalar => doc.insert(list, at, to_scalar(scalar))?,
    }
    Ok(())
}

fn dedup(items: &[FmValue]) -> Vec<FmValue> {
    let mut out: Vec<FmValue> = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    out
}

/// Writes only what differs between `base` (what the user's file said before)
/// and `new` (what it says now). Returns whether anything was written.
fn write_map_diff(
    doc: &mut AutoCommit,
    obj: &ObjId,
    base: &Fields,
    new: &Fields,
) -> Result<bool, DocError> {
    let mut changed = false;
    for (key, nv) in new {
        let bv = base.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        if bv == Some(nv) {
            continue;
        }
        changed = true;
        let existing = doc.get(obj, key.as_str())?;
        match (bv, nv, existing) {
            (
                Some(FmValue::List(b)),
                FmValue::List(n),
                Some((Value::Object(ObjType::List), list)),
            ) => {
                write_list_diff(doc, &list, b, n)?;
            }
            (Some(FmValue::Map(b)), FmValue::Map(n), Some((Value::Object(ObjType::Map), map))) => {
                write_map_diff(doc, &map, b, n)?;
            }
            _ => put_value(doc, obj, key, nv)?,
        }
    }
    for (key, _) in base {
        if !new.iter().any(|(k, _)| k == key) {
            doc.delete(obj, key.as_str())?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Union semantics: remove what the user removed (only the copies this peer
/// saw, so a concurrent add of the same item survives), insert what the user
/// added next to its neighbour in the user's order. A pure reordering is kept
/// as formatting and not synced.
fn write_list_diff(
    doc: &mut AutoCommit,
    list: &ObjId,
    base: &[FmValue],
    new: &[FmValue],
) -> Result<(), DocError> {
    let new = dedup(new);
    let removed: Vec<&FmValue> = base.iter().filter(|b| !new.contains(b)).collect();
    if !removed.is_empty() {
        let len = doc.length(list);
        for i in (0..len).rev() {
            if let Some((v, id)) = doc.get(list, i)? {
                let v = read_value(doc, v, &id)?;
                if removed.contains(&&v) {
                    doc.delete(list, i)?;
                }
            }
        }
    }
    for (i, item) in new.iter().enumerate() {
        if base.contains(item) {
            continue;
        }
        // Insert after the nearest earlier item (in the user's list) that the document has.
        let mut at = 0;
        let current = read_list_raw(doc, list)?;
        for prev in new[..i].iter().rev() {
            if let Some(pos) = current.iter().position(|c| c == prev) {
                at = pos + 1;
                break;
            }
        }
        insert_value(doc, list, at, item)?;
    }
    Ok(())
}

fn read_list_raw(doc: &AutoCommit, list: &ObjId) -> Result<Vec<FmValue>, DocError> {
    let mut out = Vec::new();
    for item in doc.list_range(list, ..) {
        out.push({
            let id = item.id();
            read_value(doc, item.value.into(), &id)
        }?);
    }
    Ok(out)
}

super::impl_storage!(FileDoc);
