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

use std::collections::{HashMap, HashSet};

use super::{commit, Author, ChangeHash, DocError};
use crate::diff;
use crate::frontmatter::{self, FmValue};
use crate::guard::LimitError;
use crate::limits::{MAX_LIST_ITEMS, MAX_MAP_FIELDS, MAX_OPS_PER_DOC};
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

    /// Reads a document that came from elsewhere (a bundle, a peer): as
    /// [`Self::load`], but refused (never a panic) when automerge cannot take
    /// it, and when its changes are dated beyond what every peer can merge
    /// (see [`merge_untrusted`](crate::doc::merge_untrusted)).
    pub fn load_untrusted(bytes: &[u8], actor: ActorId) -> Result<Self, DocError> {
        let mut doc = FileDoc::empty(actor);
        doc.apply(bytes)?;
        Ok(doc)
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
        match self.fields() {
            Ok(fields) => Ok(frontmatter::patch(&content, &fields)),
            // Fields past a size limit (only another peer's document can hold
            // them) are not applied: the text as last written stands, on every peer.
            Err(DocError::Limit(_)) => Ok(content),
            Err(e) => Err(e),
        }
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
        let splices = diff::splices(&old, text);
        // Refused before anything changes: peers would refuse the document
        // past the limit anyway. One operation per inserted or deleted character.
        let edit_ops: u64 = splices
            .iter()
            .map(|s| s.insert.chars().count() as u64 + s.delete as u64)
            .sum();
        let ops = self.doc.stats().num_ops.saturating_add(edit_ops);
        if ops > MAX_OPS_PER_DOC {
            return Err(LimitError::DocTooLarge {
                items: "operations",
                count: ops,
                limit: MAX_OPS_PER_DOC,
            }
            .into());
        }
        for s in splices.iter().rev() {
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
        if out.len() >= MAX_MAP_FIELDS {
            return Err(LimitError::Count {
                what: "a frontmatter map",
                items: "fields or more",
                count: MAX_MAP_FIELDS as u64 + 1,
                limit: MAX_MAP_FIELDS as u64,
            }
            .into());
        }
        let key = item.key.to_string();
        let v = {
            let id = item.id();
            read_value_at(doc, item.value.into(), &id, depth)
        }?;
        out.push((key, v));
    }
    Ok(out)
}

/// A list's items without duplicates, first occurrence first: the union
/// rule. Linear (a hash set of canonical forms); at most [`MAX_LIST_ITEMS`].
fn read_list_at(doc: &AutoCommit, obj: &ObjId, depth: usize) -> Result<Vec<FmValue>, DocError> {
    let mut out: Vec<FmValue> = Vec::new();
    let mut seen = HashSet::new();
    for (n, item) in doc.list_range(obj, ..).enumerate() {
        if n >= MAX_LIST_ITEMS {
            return Err(list_too_long());
        }
        let v = {
            let id = item.id();
            read_value_at(doc, item.value.into(), &id, depth)
        }?;
        if seen.insert(v.canonical()) {
            out.push(v);
        }
    }
    Ok(out)
}

fn list_too_long() -> DocError {
    LimitError::Count {
        what: "a frontmatter list",
        items: "items or more",
        count: MAX_LIST_ITEMS as u64 + 1,
        limit: MAX_LIST_ITEMS as u64,
    }
    .into()
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
            insert_items(doc, &list, 0, &dedup(items))?;
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
            insert_items(doc, &inner, 0, &dedup(items))?;
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

/// Inserts `items` at `at`, in order: each run of scalars in one splice (one
/// insertion at a time walks the list each time: 5,000 tags took 3 s).
fn insert_items<V: std::borrow::Borrow<FmValue>>(
    doc: &mut AutoCommit,
    list: &ObjId,
    at: usize,
    items: &[V],
) -> Result<(), DocError> {
    let mut pos = at;
    let mut rest = items;
    while let Some(first) = rest.first() {
        let scalars = rest
            .iter()
            .take_while(|v| !matches!(v.borrow(), FmValue::List(_) | FmValue::Map(_)))
            .count();
        if scalars == 0 {
            insert_value(doc, list, pos, first.borrow())?;
            pos += 1;
            rest = &rest[1..];
            continue;
        }
        let run = &rest[..scalars];
        doc.splice(
            list,
            pos,
            0,
            run.iter()
                .map(|v| automerge::hydrate::Value::from(to_scalar(v.borrow()))),
        )?;
        pos += scalars;
        rest = &rest[scalars..];
    }
    Ok(())
}

/// `items` without repeats, first occurrence first. Linear: repeats are
/// found by canonical form in a hash set (pairwise, 100,000 tags took minutes).
fn dedup(items: &[FmValue]) -> Vec<FmValue> {
    let mut seen = HashSet::with_capacity(items.len());
    items
        .iter()
        .filter(|i| seen.insert(i.canonical()))
        .cloned()
        .collect()
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
    let base_by_key: HashMap<&str, &FmValue> = base.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let new_keys: HashSet<&str> = new.iter().map(|(k, _)| k.as_str()).collect();
    for (key, nv) in new {
        let bv = base_by_key.get(key.as_str()).copied();
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
        if !new_keys.contains(key.as_str()) {
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
///
/// O(n log n) in the list's length: items are compared by canonical form in
/// hash sets, the document's list is read once, and where each insertion
/// lands is counted with a Fenwick tree instead of re-reading the list.
fn write_list_diff(
    doc: &mut AutoCommit,
    list: &ObjId,
    base: &[FmValue],
    new: &[FmValue],
) -> Result<(), DocError> {
    let new = dedup(new);
    if new.len() > MAX_LIST_ITEMS {
        return Err(list_too_long());
    }
    let new_keys: Vec<Vec<u8>> = new.iter().map(FmValue::canonical).collect();
    let in_new: HashSet<&[u8]> = new_keys.iter().map(Vec::as_slice).collect();
    let in_base: HashSet<Vec<u8>> = base.iter().map(FmValue::canonical).collect();
    let removed: HashSet<&Vec<u8>> = in_base
        .iter()
        .filter(|k| !in_new.contains(k.as_slice()))
        .collect();
    let mut current: Vec<Vec<u8>> = read_list_raw(doc, list)?
        .iter()
        .map(FmValue::canonical)
        .collect();
    if !removed.is_empty() {
        for i in (0..current.len()).rev() {
            if removed.contains(&current[i]) {
                doc.delete(list, i)?;
            }
        }
        current.retain(|k| !removed.contains(k));
    }
    // Where each item of the list (after the removals) first occurs.
    let mut first: HashMap<&[u8], usize> = HashMap::with_capacity(current.len());
    for (i, k) in current.iter().enumerate() {
        first.entry(k.as_slice()).or_insert(i);
    }
    // Slot s holds what is inserted after current[s - 1] (slot 0: at the
    // front); an insertion goes after the nearest earlier item of the user's
    // list that the document has, which is always the last of its slot.
    let mut inserted = Fenwick::new(current.len() + 1);
    let mut slot_of: HashMap<&[u8], usize> = HashMap::new();
    // Items bound for the end of one slot, inserted together in one splice.
    let mut run: Vec<&FmValue> = Vec::new();
    let mut run_slot = 0;
    for (i, item) in new.iter().enumerate() {
        if in_base.contains(&new_keys[i]) {
            continue;
        }
        let mut slot = 0;
        for prev in new_keys[..i].iter().rev() {
            if let Some(p) = first.get(prev.as_slice()) {
                slot = p + 1;
                break;
            }
            if let Some(s) = slot_of.get(prev.as_slice()) {
                slot = *s;
                break;
            }
        }
        if slot != run_slot && !run.is_empty() {
            flush_run(doc, list, &mut inserted, run_slot, &mut run)?;
        }
        run_slot = slot;
        run.push(item);
        slot_of.insert(&new_keys[i], slot);
    }
    flush_run(doc, list, &mut inserted, run_slot, &mut run)
}

/// Inserts `run` at the end of `slot`'s insertions.
fn flush_run(
    doc: &mut AutoCommit,
    list: &ObjId,
    inserted: &mut Fenwick,
    slot: usize,
    run: &mut Vec<&FmValue>,
) -> Result<(), DocError> {
    if run.is_empty() {
        return Ok(());
    }
    let at = slot + inserted.prefix(slot);
    insert_items(doc, list, at, run)?;
    for _ in 0..run.len() {
        inserted.add(slot);
    }
    run.clear();
    Ok(())
}

/// Counts per slot, with prefix sums in O(log n).
struct Fenwick(Vec<usize>);

impl Fenwick {
    fn new(n: usize) -> Self {
        Fenwick(vec![0; n + 1])
    }
    /// Adds one to slot `i`.
    fn add(&mut self, i: usize) {
        let mut i = i + 1;
        while i < self.0.len() {
            self.0[i] += 1;
            i += i & i.wrapping_neg();
        }
    }
    /// The sum of slots `0..=i`.
    fn prefix(&self, i: usize) -> usize {
        let mut i = (i + 1).min(self.0.len() - 1);
        let mut sum = 0;
        while i > 0 {
            sum += self.0[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// The quadratic version this module had before, as the reference.
    fn old_write_list_diff(
        doc: &mut AutoCommit,
        list: &ObjId,
        base: &[FmValue],
        new: &[FmValue],
    ) -> Result<(), DocError> {
        let mut new_d: Vec<FmValue> = Vec::new();
        for i in new {
            if !new_d.contains(i) {
                new_d.push(i.clone());
            }
        }
        let new = new_d;
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

    fn item(rng: &mut StdRng) -> FmValue {
        match rng.random_range(0..10) {
            0 => FmValue::Int(rng.random_range(0..4)),
            1 => FmValue::Float(if rng.random_bool(0.5) { 0.0 } else { -0.0 }),
            2 => FmValue::List(vec![FmValue::Int(rng.random_range(0..2))]),
            _ => FmValue::Str(format!("t{}", rng.random_range(0..30))),
        }
    }

    /// The new list diff writes the same list as the old one, on random
    /// bases, documents (with concurrent additions) and edits.
    #[test]
    fn list_diff_matches_the_quadratic_reference() {
        for seed in 0..300u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let base: Vec<FmValue> = (0..rng.random_range(0..12))
                .map(|_| item(&mut rng))
                .collect();
            let base = dedup(&base);
            // The document: the base, in its order, with concurrent additions
            // (never equal to what the user adds: see write_list_diff).
            let mut doc_items = base.clone();
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..=doc_items.len());
                doc_items.insert(at, FmValue::Str(format!("c{}", rng.random_range(0..5))));
            }
            // The user's new list: some of the base, shuffled a little, plus new items.
            let mut new: Vec<FmValue> = base
                .iter()
                .filter(|_| rng.random_bool(0.7))
                .cloned()
                .collect();
            for _ in 0..rng.random_range(0..8) {
                let at = rng.random_range(0..=new.len());
                new.insert(at, FmValue::Str(format!("n{}", rng.random_range(0..6))));
            }
            if new.len() > 1 && rng.random_bool(0.3) {
                let (a, b) = (
                    rng.random_range(0..new.len()),
                    rng.random_range(0..new.len()),
                );
                new.swap(a, b);
            }
            let mut results = Vec::new();
            for old in [false, true] {
                let mut doc = AutoCommit::new().with_actor(ActorId::from([1; 16]));
                put_value(&mut doc, &ROOT, "tags", &FmValue::List(Vec::new()))
                    .unwrap_or_else(|e| panic!("{e}"));
                let list = match doc.get(ROOT, "tags") {
                    Ok(Some((_, id))) => id,
                    other => panic!("{other:?}"),
                };
                for (i, v) in doc_items.iter().enumerate() {
                    insert_value(&mut doc, &list, i, v).unwrap_or_else(|e| panic!("{e}"));
                }
                let r = if old {
                    old_write_list_diff(&mut doc, &list, &base, &new)
                } else {
                    write_list_diff(&mut doc, &list, &base, &new)
                };
                r.unwrap_or_else(|e| panic!("{e}"));
                results.push(read_list_raw(&doc, &list).unwrap_or_else(|e| panic!("{e}")));
            }
            let canon = |v: &Vec<FmValue>| v.iter().map(FmValue::canonical).collect::<Vec<_>>();
            assert_eq!(
                canon(&results[0]),
                canon(&results[1]),
                "seed {seed}: base {base:?}, doc {doc_items:?}, new {new:?}"
            );
        }
    }
}
