//! Changes from a hostile or broken peer that used to crash whoever merged
//! them. Found by the `bundle_import` fuzz target (fuzz/README.md): automerge
//! 0.12 panics ("delta value overflows i64") once two changes' times differ
//! by more than an i64 holds, so one change dated near `i64::MIN` crashed the
//! peer that applied it, or its next commit. `cue_core::doc` now refuses such
//! changes, and runs every merge of outside bytes on a copy so that a refusal
//! leaves the document as it was.

use automerge::sync::SyncDoc;
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ROOT};
use cue_core::bundle::Bundle;
use cue_core::doc::{Author, DocError, FileDoc, IndexDoc, SyncState, MAX_CHANGE_TIME_S};
use cue_core::store::{DocKey, MemStore};
use cue_core::{FileId, SyncPath, Workspace, WorkspaceId};
use rand::rngs::StdRng;
use rand::SeedableRng;

const AUTHOR: Author<'static> = Author {
    member: "alice",
    now_ms: 1_700_000_000_000,
};

/// A document of one change dated `time_s`, as any automerge client can make
/// it (from nothing: on top of a normal change the maker would crash first).
fn dated(time_s: i64) -> AutoCommit {
    let mut evil = AutoCommit::new().with_actor(ActorId::from([0xee; 16]));
    evil.put(ROOT, "content", "not what you think").unwrap();
    evil.commit_with(CommitOptions::default().with_time(time_s));
    evil
}

fn refused(result: Result<(), DocError>) {
    match result {
        // "dated ... beyond" when the time check catches it first, "automerge
        // panicked" when merging next to our own changes already overflowed.
        Err(DocError::Refused(why)) => {
            assert!(why.contains("dated") || why.contains("panicked"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn file_doc_refuses_a_change_dated_near_i64_min() {
    let text = "---\ntitle: t\n---\nbody\n";
    let mut doc = FileDoc::create(ActorId::from([1; 16]), FileId([1; 16]), text, &AUTHOR).unwrap();
    let heads = doc.heads();
    let mut evil = dated(i64::MIN + 5);
    for bytes in [evil.save(), evil.save_after(&[])] {
        refused(doc.apply(&bytes));
        assert_eq!(doc.heads(), heads, "a refused merge changed the document");
        assert_eq!(doc.render().unwrap(), text);
    }
    // The next local commit is where automerge used to panic.
    assert!(doc
        .record("---\ntitle: t\n---\nbody\nmore\n", &AUTHOR)
        .unwrap());
}

#[test]
fn times_within_the_bound_are_accepted() {
    let mut doc = FileDoc::empty(ActorId::from([1; 16]));
    doc.apply(&dated(-MAX_CHANGE_TIME_S).save()).unwrap();
    let mut other = FileDoc::empty(ActorId::from([2; 16]));
    refused(other.apply(&dated(MAX_CHANGE_TIME_S + 1).save()));
}

#[test]
fn index_preview_and_apply_refuse_it() {
    let mut index = IndexDoc::create(
        ActorId::from([1; 16]),
        WorkspaceId([3; 16]),
        "team",
        &AUTHOR,
    )
    .unwrap();
    let bytes = dated(i64::MIN).save();
    assert!(matches!(index.preview(&bytes), Err(DocError::Refused(_))));
    refused(index.apply(&bytes));
    index
        .add_file(FileId([4; 16]), "docs/a.md", &AUTHOR)
        .unwrap();
    assert_eq!(index.files().unwrap().len(), 1);
}

#[test]
fn sync_message_carrying_it_is_refused() {
    let mut doc =
        FileDoc::create(ActorId::from([1; 16]), FileId([1; 16]), "body\n", &AUTHOR).unwrap();
    let heads = doc.heads();
    let mut evil = dated(i64::MIN + 5);
    let (mut ours, mut theirs) = (SyncState::new(), automerge::sync::State::new());
    let mut refusals = 0;
    for _ in 0..6 {
        if let Some(m) = doc.sync_generate(&mut ours) {
            let m = automerge::sync::Message::decode(&m).unwrap();
            evil.sync().receive_sync_message(&mut theirs, m).unwrap();
        }
        if let Some(m) = evil.sync().generate_sync_message(&mut theirs) {
            match doc.sync_receive(&mut ours, &m.encode()) {
                Ok(()) => {}
                Err(DocError::Refused(_)) => refusals += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(refusals > 0, "the hostile change never arrived");
    assert_eq!(doc.heads(), heads);
    assert!(doc.record("body\nmore\n", &AUTHOR).unwrap());
}

#[test]
fn bundle_with_it_is_refused_and_the_workspace_keeps_working() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut ws = Workspace::create(MemStore::default(), "team", "alice", 1_000, &mut rng).unwrap();
    let path = SyncPath::parse("docs/a.md").unwrap();
    let stat = cue_core::workspace::Stat {
        size: 2,
        mtime_ns: 0,
    };
    ws.record_write(&path, "a\n", stat, 2_000, &mut rng)
        .unwrap();
    let exported = ws.export_bundle().unwrap();
    let mut bundle = Bundle::decode(&exported).unwrap();
    let (key, _) = bundle
        .docs
        .iter()
        .find(|(k, _)| matches!(k, DocKey::File(_)))
        .cloned()
        .unwrap();
    let DocKey::File(id) = key else {
        unreachable!()
    };
    bundle
        .docs
        .push((DocKey::File(id), dated(i64::MIN + 5).save()));
    assert!(ws.import_bundle(&bundle.encode()).is_err());
    assert!(ws.plan(&|_| true).unwrap().ops.len() <= 1);
    assert!(ws
        .record_write(&path, "a\nb\n", stat, 3_000, &mut rng)
        .is_ok());
}

/// A refused bundle must leave the workspace as it was ("otherwise nothing is
/// imported", docs/FORMAT.md). Found by the `bundle_import` fuzz target with
/// `CUE_FUZZ_STRICT_IMPORT=1`: `Workspace::merge_bundle` merges file
/// documents one at a time into its cache (and marks them staged), so the
/// documents before a bad entry stay merged in memory, and the next export,
/// plan or edit carries them; past 512 staged ops they are even committed.
#[test]
fn refused_bundle_changes_nothing() {
    let mut rng = StdRng::seed_from_u64(5);
    let stat = cue_core::workspace::Stat {
        size: 2,
        mtime_ns: 0,
    };
    let path = SyncPath::parse("docs/a.md").unwrap();
    let mut alice =
        Workspace::create(MemStore::default(), "team", "alice", 1_000, &mut rng).unwrap();
    alice
        .record_write(&path, "a\n", stat, 2_000, &mut rng)
        .unwrap();
    let first = alice.export_bundle().unwrap();
    let mut bob =
        Workspace::clone_from_bundle(MemStore::default(), &first, "bob", &mut rng).unwrap();
    let plan = bob.plan(&|_| true).unwrap();
    for op in &plan.ops {
        bob.applied(op, stat).unwrap();
    }
    bob.record_write(&path, "a\nbob\n", stat, 3_000, &mut rng)
        .unwrap();
    let mut bundle = Bundle::decode(&bob.export_bundle().unwrap()).unwrap();
    // Bob's good edit first, then a document that is refused.
    bundle
        .docs
        .push((DocKey::File(FileId([9; 16])), dated(i64::MIN + 5).save()));
    assert!(alice.import_bundle(&bundle.encode()).is_err());
    let after = Bundle::decode(&alice.export_bundle().unwrap()).unwrap();
    let before = Bundle::decode(&first).unwrap();
    let heads = |b: &Bundle| -> Vec<_> {
        b.docs
            .iter()
            .map(|(k, bytes)| (*k, AutoCommit::load(bytes).unwrap().get_heads()))
            .collect()
    };
    assert_eq!(
        heads(&after),
        heads(&before),
        "the refused bundle was partly imported"
    );
}
