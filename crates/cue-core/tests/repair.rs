//! Poisoned index entries from a hostile member: what this peer does not
//! write (and says so), and `Workspace::repair`, whose fix syncs like any
//! other edit of the index.

use cue_core::bundle::Bundle;
use cue_core::disk::{self, MemFs, ScanOptions, Scope};
use cue_core::doc::{Author, FileDoc, IndexDoc};
use cue_core::store::{DocKey, MemStore};
use cue_core::workspace::{NotWrittenReason, PoisonReason, RepairAction};
use cue_core::{FileId, Workspace};
use rand::rngs::StdRng;
use rand::SeedableRng;

const MALLORY: Author<'static> = Author {
    member: "mallory",
    now_ms: 5_000,
};

fn scan(ws: &mut Workspace<MemStore>, fs: &mut MemFs) {
    let opts = ScanOptions {
        dry_run: false,
        now_ms: 2_000,
    };
    disk::scan(
        ws,
        fs,
        Scope::All,
        opts,
        &mut StdRng::seed_from_u64(3),
        &mut |_, _| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    ws.commit().unwrap_or_else(|e| panic!("{e}"));
}

fn checkout(ws: &mut Workspace<MemStore>, fs: &mut MemFs) -> disk::Applied {
    let applied = disk::checkout(ws, fs, &mut |_, _| {}).unwrap_or_else(|e| panic!("{e}"));
    ws.commit().unwrap_or_else(|e| panic!("{e}"));
    applied
}

/// What a hostile member's bundle does to `ws`'s index: renames the file at
/// `docs/a.md` to `docs/CON.md`, and adds `../evil.md` and
/// `project/CLAUDE.md` (with documents) and `docs/ghost.md` (without).
fn poison(ws: &mut Workspace<MemStore>) -> Vec<u8> {
    let bundle = ws.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    let mut bundle = Bundle::decode(&bundle).unwrap_or_else(|e| panic!("{e}"));
    let actor = automerge::ActorId::from([0x66u8; 16]);
    let (at, index_bytes) = bundle
        .docs
        .iter()
        .enumerate()
        .find(|(_, (k, _))| *k == DocKey::Index)
        .map(|(i, (_, b))| (i, b.clone()))
        .unwrap_or_else(|| panic!("no index"));
    let mut index = IndexDoc::load(&[index_bytes], actor.clone()).unwrap_or_else(|e| panic!("{e}"));
    let a = index
        .files()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|e| e.path == "docs/a.md")
        .unwrap_or_else(|| panic!("no docs/a.md"));
    index
        .rename(a.id, "docs/CON.md", &MALLORY)
        .unwrap_or_else(|e| panic!("{e}"));
    for (n, path, with_doc) in [
        (1u8, "../evil.md", true),
        (2, "project/CLAUDE.md", true),
        (3, "docs/ghost.md", false),
    ] {
        let id = FileId([n; 16]);
        index
            .add_file(id, path, &MALLORY)
            .unwrap_or_else(|e| panic!("{e}"));
        if with_doc {
            let mut doc = FileDoc::create(actor.clone(), id, "do as I say\n", &MALLORY)
                .unwrap_or_else(|e| panic!("{e}"));
            bundle.docs.push((DocKey::File(id), doc.save()));
        }
    }
    bundle.docs[at].1 = index.save();
    bundle.encode()
}

#[test]
fn poisoned_entries_are_listed_not_written_and_repaired_on_every_peer() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut ws = Workspace::create(MemStore::default(), "team", "ana", 1_000, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut fs = MemFs::new();
    // This peer syncs no project files.
    fs.set_include(Some(Vec::new()));
    fs.put("docs/a.md", "# A\n\nana's text\n");
    scan(&mut ws, &mut fs);
    let original = ws.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    let mut bo = Workspace::clone_from_bundle(MemStore::default(), &original, "bo", &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));

    let bad = poison(&mut ws);
    ws.import_bundle(&bad).unwrap_or_else(|e| panic!("{e}"));
    let applied = checkout(&mut ws, &mut fs);
    // Nothing of it is written, and ana's file stays where it is.
    assert_eq!(
        fs.texts().into_keys().collect::<Vec<_>>(),
        ["docs/a.md"],
        "{applied:?}"
    );
    assert_eq!(applied.not_kept.len(), 1, "{:?}", applied.not_kept);
    assert_eq!(applied.not_kept[0].as_str(), "project/CLAUDE.md");

    let not_written = ws.not_written(&|p| disk::FileSystem::keeps(&fs, p));
    let shown: Vec<(&str, bool)> = not_written
        .iter()
        .map(|n| {
            (
                n.path.as_str(),
                matches!(n.reason, NotWrittenReason::NotIncluded),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("../evil.md", false),
            ("docs/CON.md", false),
            ("project/CLAUDE.md", true)
        ]
    );

    let found = ws.poisoned().unwrap_or_else(|e| panic!("{e}"));
    let summary: Vec<(&str, &RepairAction, bool)> = found
        .iter()
        .map(|p| {
            (
                p.path.as_str(),
                &p.action,
                p.reason == PoisonReason::NoDocument,
            )
        })
        .collect();
    let back = cue_core::SyncPath::parse("docs/a.md").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summary,
        [
            ("../evil.md", &RepairAction::Drop, false),
            ("docs/CON.md", &RepairAction::MoveBack(back), false),
            ("docs/ghost.md", &RepairAction::Drop, true),
        ]
    );

    let done = ws.repair(9_000).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done, found);
    assert!(ws.poisoned().unwrap_or_else(|e| panic!("{e}")).is_empty());
    checkout(&mut ws, &mut fs);
    assert_eq!(fs.text("docs/a.md").as_deref(), Some("# A\n\nana's text\n"));
    // Only the project file (a good one, for members who include it) stays
    // out of this disk.
    let left: Vec<String> = ws
        .not_written(&|p| disk::FileSystem::keeps(&fs, p))
        .into_iter()
        .map(|n| n.path)
        .collect();
    assert_eq!(left, ["project/CLAUDE.md"]);

    // The repair reaches bo with the poison, as one more edit of the index.
    bo.import_bundle(&bad).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bo.poisoned().unwrap_or_else(|e| panic!("{e}")).len(), 3);
    let fixed = ws.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    bo.import_bundle(&fixed).unwrap_or_else(|e| panic!("{e}"));
    assert!(bo.poisoned().unwrap_or_else(|e| panic!("{e}")).is_empty());
    let live: Vec<String> = bo
        .files("")
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|f| f.path.to_string())
        .collect();
    assert_eq!(live, ["docs/a.md", "project/CLAUDE.md"]);
}

/// A document that arrives after its entry was dropped brings the file back:
/// dropping an entry whose document is missing loses nothing.
#[test]
fn a_dropped_entry_comes_back_when_its_document_arrives() {
    let mut rng = StdRng::seed_from_u64(8);
    let mut ws = Workspace::create(MemStore::default(), "team", "ana", 1_000, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let bundle = ws.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    let mut bundle = Bundle::decode(&bundle).unwrap_or_else(|e| panic!("{e}"));
    let actor = automerge::ActorId::from([0x55u8; 16]);
    let mut index = IndexDoc::load(&[bundle.docs[0].1.clone()], actor.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    let id = FileId([4; 16]);
    index
        .add_file(id, "docs/late.md", &MALLORY)
        .unwrap_or_else(|e| panic!("{e}"));
    bundle.docs[0].1 = index.save();
    let workspace = bundle.workspace;
    ws.import_bundle(&bundle.encode())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ws.repair(9_000).unwrap_or_else(|e| panic!("{e}")).len(), 1);
    assert!(ws.files("").unwrap_or_else(|e| panic!("{e}")).is_empty());

    let mut doc =
        FileDoc::create(actor, id, "late but real\n", &MALLORY).unwrap_or_else(|e| panic!("{e}"));
    // A bundle holds the index too: this peer's own, with the tombstone.
    let own = ws.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    let mut late = Bundle::decode(&own).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(late.workspace, workspace);
    late.docs.push((DocKey::File(id), doc.save()));
    ws.import_bundle(&late.encode())
        .unwrap_or_else(|e| panic!("{e}"));
    let live: Vec<String> = ws
        .files("")
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|f| f.path.to_string())
        .collect();
    assert_eq!(live, ["docs/late.md"]);
}
