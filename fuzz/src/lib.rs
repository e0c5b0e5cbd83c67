//! Shared pieces of the fuzz targets: a small real workspace to attack, the
//! automerge checksum fix-up that lets mutated documents past the checksum
//! check, and a builder that turns fuzz bytes into hostile (but well-formed)
//! automerge changes.
//!
//! Nothing here uses libFuzzer, so `cargo run --example gen_corpus` can build it
//! on stable to regenerate the seed corpus.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, ROOT};
use cue_core::bundle::Bundle;
use cue_core::store::{DocKey, MemStore};
use cue_core::workspace::{DiskOp, Stat};
use cue_core::{SyncPath, Workspace, WorkspaceId};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

// ---- panics inside automerge ------------------------------------------------------

thread_local! {
    static LAST_AUTOMERGE_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn in_automerge(info: &std::panic::PanicHookInfo<'_>) -> bool {
    info.location().is_some_and(|l| {
        let file = l.file();
        file.contains("/automerge-") || file.contains("/hexane-")
    })
}

/// Call from `fuzz_target!(init: ...)`. libFuzzer's panic hook aborts on every
/// panic, even one that is caught; `cue_core::doc` deliberately catches the
/// panics automerge raises on hostile bytes (a known upstream bug, see
/// `cue_core::doc::MAX_CHANGE_TIME_S`) and turns them into errors. This hook
/// lets panics raised inside automerge unwind (remembering where they came
/// from), and still aborts on every other panic. A panic inside automerge that
/// our guard does not catch reaches [`run`], which aborts with its message.
pub fn let_guarded_automerge_panics_unwind() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if in_automerge(info) {
            LAST_AUTOMERGE_PANIC.with(|l| *l.borrow_mut() = info.to_string());
        } else {
            abort(info);
        }
    }));
}

/// Runs one fuzz input; a panic that unwinds this far (only ones from inside
/// automerge do, see [`let_guarded_automerge_panics_unwind`]) was not caught by
/// our guard, and is a crash.
pub fn run(body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        LAST_AUTOMERGE_PANIC.with(|l| {
            eprintln!(
                "panic inside automerge not caught by cue_core's guard: {}",
                l.borrow()
            )
        });
        std::process::abort();
    }
}

/// Runs attacker-side automerge code (building hostile changes), where a
/// panic means only that this input cannot be built: `None`.
pub fn attacker<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

// ---- automerge chunk checksums ------------------------------------------------------

const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Rewrites the checksum of every automerge chunk in `bytes` so that it matches
/// the chunk's contents. automerge refuses a chunk whose checksum is wrong
/// before decoding anything, so without this almost every mutation of a saved
/// document would stop at that check and the decoders behind it would never
/// see fuzzed bytes. Compressed chunks (type 2) carry the checksum of their
/// uncompressed form and are left alone; parsing stops at the first thing that
/// is not a whole chunk.
pub fn fix_checksums(bytes: &mut [u8]) {
    let mut pos = 0;
    while pos + 9 < bytes.len() && bytes[pos..pos + 4] == CHUNK_MAGIC {
        let kind = bytes[pos + 8];
        let Some((len, len_bytes)) = read_uleb(&bytes[pos + 9..]) else {
            return;
        };
        let data_start = pos + 9 + len_bytes;
        let Some(data_end) = usize::try_from(len)
            .ok()
            .and_then(|l| data_start.checked_add(l))
            .filter(|end| *end <= bytes.len())
        else {
            return;
        };
        if kind <= 3 && kind != 2 {
            let mut hasher = Sha256::new();
            hasher.update([kind]);
            hasher.update(uleb(len));
            hasher.update(&bytes[data_start..data_end]);
            let hash = hasher.finalize();
            bytes[pos + 4..pos + 8].copy_from_slice(&hash[..4]);
        }
        pos = data_end;
    }
}

fn read_uleb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn uleb(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

// ---- the workspace under attack ---------------------------------------------------

/// The files alice's workspace starts with: frontmatter of every shape the
/// merge rules know (scalars, flow and block lists, a nested map, CRLF,
/// comments, broken YAML) and a `project/` path.
pub const FILES: [(&str, &str); 5] = [
    ("docs/auth.md", "# Auth\n\nLogin flow.\n"),
    (
        "cards/c1.md",
        "---\ntitle: Fix login\npriority: high   # why\ntags: [auth, api]\nowner:\n  name: alice\n  team: core\n---\nBody of the card.\n",
    ),
    (
        "docs/sub/notes.md",
        "---\r\n# comment\r\nstatus: draft\r\nlist:\r\n  - a\r\n  - b\r\n---\r\nline one\r\n",
    ),
    ("cards/broken.md", "---\ntitle: [unclosed\n---\nbody\n"),
    ("project/docs/x.md", "plain text, no frontmatter"),
];

/// A real workspace and what was exchanged while making it.
pub struct Fixture {
    /// Alice's store, every file recorded and checked out: open it with
    /// [`Fixture::open`] for a fresh workspace per fuzz input.
    pub store: MemStore,
    /// The workspace id every seed bundle carries.
    pub workspace: WorkspaceId,
    /// Alice's first export: the index and one document per file in [`FILES`].
    pub alice_bundle: Vec<u8>,
    /// Bob's export after cloning and editing concurrently (rename, delete,
    /// same-path create, frontmatter edits).
    pub bob_bundle: Vec<u8>,
    /// Alice's export after her own concurrent edits.
    pub alice_later_bundle: Vec<u8>,
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

impl Fixture {
    /// A fresh copy of alice's workspace.
    pub fn open(&self) -> Workspace<MemStore> {
        Workspace::open(self.store.clone(), "alice").expect("fixture store opens")
    }

    /// The documents of alice's first export (index first).
    pub fn base_docs(&self) -> Vec<(DocKey, Vec<u8>)> {
        Bundle::decode(&self.alice_bundle)
            .expect("fixture bundle decodes")
            .docs
    }
}

fn stat(text: &str) -> Stat {
    Stat {
        size: text.len() as u64,
        mtime_ns: 0,
    }
}

fn path(s: &str) -> SyncPath {
    SyncPath::parse(s).expect("fixture path is valid")
}

/// Brings the workspace's disk (here: nothing) up to date, as the file-system
/// layer would, so that its local state matches its documents.
fn checkout(ws: &mut Workspace<MemStore>) {
    let plan = ws.plan().expect("fixture plan");
    for op in &plan.ops {
        let st = match op {
            DiskOp::Write { bytes, .. } => stat(bytes),
            DiskOp::Remove { .. } => Stat::default(),
        };
        ws.applied(op, st).expect("fixture applied");
    }
}

fn build_fixture() -> Fixture {
    let mut rng = StdRng::seed_from_u64(0xC0E_DEC);
    let mut alice = Workspace::create(MemStore::default(), "team", "alice", 1_000_000, &mut rng)
        .expect("create workspace");
    for (i, (p, text)) in FILES.iter().enumerate() {
        alice
            .record_write(&path(p), text, stat(text), 1_000_100 + i as i64, &mut rng)
            .expect("record fixture file");
    }
    checkout(&mut alice);
    let workspace = alice.meta().expect("meta").workspace_id;
    let alice_bundle = alice.export_bundle().expect("export");
    let store = alice.store_mut().clone();

    let mut bob = Workspace::clone_from_bundle(MemStore::default(), &alice_bundle, "bob", &mut rng)
        .expect("clone");
    checkout(&mut bob);
    let card = "---\ntitle: Fix login\npriority: low   # why\ntags: [auth, api, ops]\nowner:\n  name: bob\n  team: core\n---\nBody of the card.\nBob's line.\n";
    bob.record_write(&path("cards/c1.md"), card, stat(card), 2_000_000, &mut rng)
        .expect("bob edit");
    bob.record_rename("docs/sub/notes.md", &path("docs/notes.md"), 2_000_100)
        .expect("bob rename");
    bob.record_removal("cards/broken.md", 2_000_200)
        .expect("bob delete");
    let same = "# Bob's own x\n";
    bob.record_write(&path("docs/new.md"), same, stat(same), 2_000_300, &mut rng)
        .expect("bob create");
    let bob_bundle = bob.export_bundle().expect("bob export");

    let mut later = Workspace::open(store.clone(), "alice").expect("reopen");
    let auth = "# Auth\n\nLogin flow.\nAlice's line.\n";
    later
        .record_write(&path("docs/auth.md"), auth, stat(auth), 3_000_000, &mut rng)
        .expect("alice edit");
    let same = "---\ntitle: same path\n---\nalice\n";
    later
        .record_write(&path("docs/new.md"), same, stat(same), 3_000_100, &mut rng)
        .expect("alice create");
    let alice_later_bundle = later.export_bundle().expect("alice export");

    Fixture {
        store,
        workspace,
        alice_bundle,
        bob_bundle,
        alice_later_bundle,
    }
}

// ---- hostile changes ----------------------------------------------------------------

/// Keys the documents' schemas use (`docs/FORMAT.md`), so that fuzzed changes
/// hit the fields our code reads instead of random names.
pub const KNOWN_KEYS: &[&str] = &[
    "content",
    "frontmatter",
    "frontmatter_broken",
    "version",
    "file_id",
    "last_modified_by",
    "metadata",
    "workspace_id",
    "name",
    "created_at",
    "members",
    "actors",
    "files",
    "path",
    "created_by",
    "deleted_at",
    "deleted_by",
    "deleted_heads",
    "title",
    "tags",
    "priority",
];

/// Paths a hostile peer would try.
pub const NASTY_PATHS: &[&str] = &[
    "../../etc/passwd.md",
    "/etc/passwd.md",
    "docs/../../x.md",
    "docs/./x.md",
    "docs\\x.md",
    "C:/x.md",
    "docs//x.md",
    "project/.git/hooks/x.md",
    "project/.cuedeck/sync/x.md",
    "docs/auth.md",
    "docs/auth.conflict-000000.md",
    "cards/c1.md",
    "docs/x\u{0}.md",
    "docs/x.png",
];

/// A key to write at: one the schema uses, a file id, or anything.
#[derive(Arbitrary, Debug)]
pub enum Key {
    Known(u8),
    /// A file id from the fixture's index, so `files.<id>` entries are hit.
    FileId(u8),
    Any(String),
}

/// A scalar of any type automerge has, including the ones our schema never writes.
#[derive(Arbitrary, Debug)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    F64(f64),
    Str(String),
    NastyPath(u8),
    Counter(i64),
    Timestamp(i64),
    Bytes(Vec<u8>),
    Unknown(u8, Vec<u8>),
}

/// The object types automerge has.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Kind {
    Map,
    List,
    Text,
    Table,
}

/// One operation of a hostile change. `obj` picks from the objects seen so
/// far (the root, every object already in the document, and new ones).
#[derive(Arbitrary, Debug)]
pub enum Op {
    Put {
        obj: u8,
        key: Key,
        value: Scalar,
    },
    PutObject {
        obj: u8,
        key: Key,
        kind: Kind,
    },
    Insert {
        obj: u8,
        index: u16,
        value: Scalar,
    },
    InsertObject {
        obj: u8,
        index: u16,
        kind: Kind,
    },
    Splice {
        obj: u8,
        pos: u16,
        del: i16,
        text: String,
    },
    Delete {
        obj: u8,
        key: Key,
    },
    DeleteAt {
        obj: u8,
        index: u16,
    },
    Increment {
        obj: u8,
        key: Key,
        by: i64,
    },
    Commit {
        time: i64,
        message: Option<String>,
    },
}

fn scalar(value: Scalar) -> ScalarValue {
    match value {
        Scalar::Null => ScalarValue::Null,
        Scalar::Bool(b) => ScalarValue::Boolean(b),
        Scalar::Int(i) => ScalarValue::Int(i),
        Scalar::Uint(u) => ScalarValue::Uint(u),
        Scalar::F64(f) => ScalarValue::F64(f),
        Scalar::Str(s) => ScalarValue::Str(s.into()),
        Scalar::NastyPath(i) => {
            ScalarValue::Str(NASTY_PATHS[usize::from(i) % NASTY_PATHS.len()].into())
        }
        Scalar::Counter(c) => ScalarValue::counter(c),
        Scalar::Timestamp(t) => ScalarValue::Timestamp(t),
        Scalar::Bytes(b) => ScalarValue::Bytes(b),
        Scalar::Unknown(type_code, bytes) => ScalarValue::Unknown {
            type_code: type_code | 0x10,
            bytes,
        },
    }
}

fn obj_type(kind: Kind) -> ObjType {
    match kind {
        Kind::Map => ObjType::Map,
        Kind::List => ObjType::List,
        Kind::Text => ObjType::Text,
        Kind::Table => ObjType::Table,
    }
}

/// Every object in `doc`, breadth first, at most `limit`.
fn objects(doc: &AutoCommit, limit: usize) -> Vec<ObjId> {
    let mut out = vec![ROOT];
    let mut i = 0;
    while i < out.len() && out.len() < limit {
        let obj = out[i].clone();
        i += 1;
        let children: Vec<ObjId> = match doc.object_type(&obj) {
            Ok(ObjType::Map) | Ok(ObjType::Table) => doc
                .map_range(&obj, ..)
                .filter(|item| matches!(item.value, automerge::ValueRef::Object(_)))
                .map(|item| item.id())
                .collect(),
            Ok(ObjType::List) => doc
                .list_range(&obj, ..)
                .filter(|item| matches!(item.value, automerge::ValueRef::Object(_)))
                .map(|item| item.id())
                .collect(),
            _ => Vec::new(),
        };
        out.extend(children);
    }
    out.truncate(limit);
    out
}

/// The keys of `files` in the fixture's index, for [`Key::FileId`].
fn file_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        fixture()
            .base_docs()
            .into_iter()
            .filter_map(|(k, _)| match k {
                DocKey::File(id) => Some(id.to_hex()),
                DocKey::Index => None,
            })
            .collect()
    })
}

fn key(k: Key) -> String {
    match k {
        Key::Known(i) => KNOWN_KEYS[usize::from(i) % KNOWN_KEYS.len()].to_string(),
        Key::FileId(i) => {
            let keys = file_keys();
            keys[usize::from(i) % keys.len()].clone()
        }
        Key::Any(s) => s,
    }
}

/// Most ops one input makes, to keep each execution fast.
const MAX_OPS: usize = 64;

/// Applies the ops decoded from `u` to `doc`, ignoring the ones automerge
/// refuses (a put on a list, an index out of range...): what is left is a
/// well-formed change a malicious peer could send. Commits at the end.
pub fn apply_ops(doc: &mut AutoCommit, u: &mut Unstructured<'_>) {
    let mut pool = objects(doc, 256);
    let mut done = 0;
    while done < MAX_OPS && !u.is_empty() {
        let Ok(op) = Op::arbitrary(u) else { break };
        done += 1;
        let pick = |pool: &[ObjId], i: u8| pool[usize::from(i) % pool.len()].clone();
        match op {
            Op::Put { obj, key: k, value } => {
                let _ = doc.put(pick(&pool, obj), key(k), scalar(value));
            }
            Op::PutObject { obj, key: k, kind } => {
                if let Ok(id) = doc.put_object(pick(&pool, obj), key(k), obj_type(kind)) {
                    pool.push(id);
                }
            }
            Op::Insert { obj, index, value } => {
                let _ = doc.insert(pick(&pool, obj), usize::from(index), scalar(value));
            }
            Op::InsertObject { obj, index, kind } => {
                if let Ok(id) =
                    doc.insert_object(pick(&pool, obj), usize::from(index), obj_type(kind))
                {
                    pool.push(id);
                }
            }
            Op::Splice {
                obj,
                pos,
                del,
                text,
            } => {
                let _ =
                    doc.splice_text(pick(&pool, obj), usize::from(pos), isize::from(del), &text);
            }
            Op::Delete { obj, key: k } => {
                let _ = doc.delete(pick(&pool, obj), key(k));
            }
            Op::DeleteAt { obj, index } => {
                let _ = doc.delete(pick(&pool, obj), usize::from(index));
            }
            Op::Increment { obj, key: k, by } => {
                let _ = doc.increment(pick(&pool, obj), key(k), by);
            }
            Op::Commit { time, message } => {
                let mut opts = automerge::transaction::CommitOptions::default().with_time(time);
                if let Some(m) = message {
                    opts = opts.with_message(m);
                }
                doc.commit_with(opts);
            }
        }
    }
    doc.commit();
}

/// A copy of the saved document `base` as a different peer (`actor` byte)
/// would hold it, ready for hostile ops; `None` if `base` does not load.
pub fn peer_copy(base: &[u8], actor: u8) -> Option<AutoCommit> {
    let doc = AutoCommit::load(base).ok()?;
    Some(doc.with_actor(ActorId::from([actor | 0x80; 16])))
}
