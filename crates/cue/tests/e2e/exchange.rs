//! Offline exchange through bundles: clone, concurrent edits, merge, restore.

use crate::testkit::{run_in, Peer};

const AUTH: &str = "---\n# owned by the auth team\ntitle: Auth flow\npriority: low\ntags: [security]\n---\n# Auth\n\nline one\nline two\nline three\n";

#[test]
fn concurrent_edits_merge_both_ways() {
    let alice = Peer::new("alice");
    alice.write("docs/auth.md", AUTH);
    alice.ok(&["init", "--name", "team"]);
    let bob = Peer::clone_of(&alice, "bob");
    assert_eq!(
        bob.read("docs/auth.md"),
        AUTH,
        "clone writes the file byte for byte"
    );

    alice.write(
        "docs/auth.md",
        &AUTH
            .replace("line one", "line one (alice)")
            .replace("priority: low", "priority: high"),
    );
    bob.write(
        "docs/auth.md",
        &AUTH
            .replace("line three", "line three (bob)")
            .replace("[security]", "[security, api]"),
    );
    bob.write("docs/bob-notes.md", "# Bob's notes\n");

    bob.pull(&alice);
    alice.pull(&bob);
    let merged = alice.read("docs/auth.md");
    assert_eq!(
        merged,
        "---\n# owned by the auth team\ntitle: Auth flow\npriority: high\ntags: [security, api]\n---\n# Auth\n\nline one (alice)\nline two\nline three (bob)\n"
    );
    assert_eq!(
        alice.files(),
        bob.files(),
        "both peers hold byte-identical files"
    );
    // Importing the same bundle again changes nothing.
    let again = bob.export();
    alice.ok(&["import", again.to_str().unwrap_or_default()]);
    assert_eq!(alice.files(), bob.files());
    let log = alice.ok(&["activity", "log", "--since", "1d"]);
    assert!(
        log.contains("bob") && log.contains("docs/bob-notes.md"),
        "{log}"
    );
}

#[test]
fn delete_then_restore() {
    let alice = Peer::init("alice");
    alice.write("docs/old.md", "---\ntitle: Old\n---\nkeep me\n");
    let bob = Peer::clone_of(&alice, "bob");
    std::fs::remove_file(bob.path("docs/old.md")).unwrap_or_else(|e| panic!("{e}"));
    alice.pull(&bob);
    assert!(
        !alice.path("docs/old.md").exists(),
        "the delete reached alice"
    );
    let trash = alice.ok(&["trash", "list", "--json"]);
    assert!(
        trash.contains("docs/old.md") && trash.contains("\"deleted_by\": \"bob\""),
        "{trash}"
    );
    alice.ok(&["restore", "docs/old.md"]);
    assert_eq!(alice.read("docs/old.md"), "---\ntitle: Old\n---\nkeep me\n");
    bob.pull(&alice);
    assert_eq!(bob.read("docs/old.md"), "---\ntitle: Old\n---\nkeep me\n");
    let missing = alice.run(&["restore", "docs/never.md"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no deleted file at docs/never.md"));
}

#[test]
fn delete_versus_concurrent_edit_keeps_the_edit() {
    let alice = Peer::init("alice");
    alice.write("docs/x.md", "one\n");
    let bob = Peer::clone_of(&alice, "bob");
    std::fs::remove_file(alice.path("docs/x.md")).unwrap_or_else(|e| panic!("{e}"));
    alice.ok(&["list"]);
    bob.write("docs/x.md", "one\ntwo by bob\n");
    alice.pull(&bob);
    bob.pull(&alice);
    assert_eq!(alice.read("docs/x.md"), "one\ntwo by bob\n");
    assert_eq!(alice.files(), bob.files());
}

#[test]
fn same_path_created_on_two_peers_keeps_both() {
    let alice = Peer::init("alice");
    let bob = Peer::clone_of(&alice, "bob");
    alice.write("docs/plan.md", "alice's plan\n");
    bob.write("docs/plan.md", "bob's plan\n");
    alice.pull(&bob);
    bob.pull(&alice);
    assert_eq!(alice.files(), bob.files());
    let all: String = alice
        .files()
        .into_iter()
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .collect();
    assert!(
        all.contains("alice's plan") && all.contains("bob's plan"),
        "{all}"
    );
    assert_eq!(alice.files().len(), 2);
}

#[test]
fn rename_keeps_concurrent_edit() {
    let alice = Peer::init("alice");
    alice.write("docs/a.md", "first\nsecond\n");
    let bob = Peer::clone_of(&alice, "bob");
    std::fs::rename(alice.path("docs/a.md"), alice.path("docs/renamed.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    bob.write("docs/a.md", "first\nsecond\nthird by bob\n");
    alice.pull(&bob);
    bob.pull(&alice);
    assert_eq!(
        alice.read("docs/renamed.md"),
        "first\nsecond\nthird by bob\n"
    );
    assert!(!alice.path("docs/a.md").exists());
    assert_eq!(alice.files(), bob.files());
}

#[test]
fn editor_atomic_save_is_one_edit() {
    let alice = Peer::init("alice");
    alice.write("docs/f.md", "v1\n");
    alice.ok(&["list"]); // any command but status records on-disk edits
                         // vim's default: rename the original to a backup, write a new file, delete the backup.
    std::fs::rename(alice.path("docs/f.md"), alice.path("docs/f.md~"))
        .unwrap_or_else(|e| panic!("{e}"));
    alice.write("docs/f.md", "v2\n");
    let status = alice.ok(&["status", "--json"]);
    assert!(
        status.contains("\"edited\": [\n      \"docs/f.md\""),
        "{status}"
    );
    std::fs::remove_file(alice.path("docs/f.md~")).unwrap_or_else(|e| panic!("{e}"));
    // temp file + rename, as most editors and `os.replace` do.
    alice.write("docs/.f.md.123.tmp", "v3\n");
    std::fs::rename(alice.path("docs/.f.md.123.tmp"), alice.path("docs/f.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    alice.ok(&["list"]);
    let log = alice.ok(&["activity", "log"]);
    assert!(
        !log.contains("delete"),
        "an atomic save is an edit, not a delete: {log}"
    );
    assert_eq!(log.matches("create").count(), 1, "{log}");
    let bob = Peer::clone_of(&alice, "bob");
    assert_eq!(bob.read("docs/f.md"), "v3\n");
    assert_eq!(bob.files().len(), 1, "no backup or temp file was synced");
}

#[test]
fn formatting_of_untouched_files_is_preserved() {
    let alice = Peer::new("alice");
    let crlf = "---\r\ntitle:   spaced   # comment\r\nb: 2\r\na: 1\r\n---\r\nbody without trailing newline";
    let broken = "---\ntitle: [unclosed\n---\nbody\n";
    alice.write("docs/crlf.md", crlf);
    alice.write("docs/broken.md", broken);
    alice.ok(&["init"]);
    let bob = Peer::clone_of(&alice, "bob");
    assert_eq!(bob.read("docs/crlf.md"), crlf);
    assert_eq!(
        bob.read("docs/broken.md"),
        broken,
        "broken YAML still syncs, as text"
    );
    bob.write(
        "docs/broken.md",
        "---\ntitle: [unclosed\n---\nbody, edited by bob\n",
    );
    alice.pull(&bob);
    assert_eq!(
        alice.read("docs/broken.md"),
        "---\ntitle: [unclosed\n---\nbody, edited by bob\n"
    );
    assert_eq!(alice.read("docs/crlf.md"), crlf);
}

/// A bundle renaming a file to `../../../evil.md`: the rest of the bundle is
/// imported, the file stays where it was on this disk, one warning names the
/// unsafe path, and nothing is written outside the workspace.
#[test]
fn path_traversal_in_a_bundle_is_never_written() {
    use cue_core::bundle::Bundle;
    use cue_core::doc::IndexDoc;
    use cue_core::store::DocKey;

    let alice = Peer::init("alice");
    alice.write("docs/ok.md", "fine\n");
    let good = std::fs::read(alice.export()).unwrap_or_else(|e| panic!("{e}"));
    let bob = Peer::clone_of(&alice, "bob");

    let mut bundle = Bundle::decode(&good).unwrap_or_else(|e| panic!("{e}"));
    let (_, index_bytes) = bundle
        .docs
        .iter_mut()
        .find(|(k, _)| *k == DocKey::Index)
        .unwrap_or_else(|| panic!("no index"));
    let mut index = IndexDoc::load(
        std::slice::from_ref(index_bytes),
        automerge::ActorId::from([9u8; 16]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let file = index.files().unwrap_or_default()[0].id;
    let author = cue_core::doc::Author {
        member: "mallory",
        now_ms: 1,
    };
    index
        .rename(file, "../../../evil.md", &author)
        .unwrap_or_else(|e| panic!("{e}"));
    *index_bytes = index.save();
    let evil = bob.root.parent().unwrap_or(&bob.root).join("evil.cue");
    std::fs::write(&evil, bundle.encode()).unwrap_or_else(|e| panic!("{e}"));

    let before = bob.files();
    let out = bob.run(&["import", evil.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not safe to write") && err.contains("../../../evil.md"),
        "{err}"
    );
    assert_eq!(err.matches("warning").count(), 1, "{err}");
    assert_eq!(bob.files(), before);
    for dir in bob.root.ancestors().take(4) {
        assert!(
            !dir.join("evil.md").exists(),
            "wrote outside the workspace at {}",
            dir.display()
        );
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let alice = Peer::init("alice");
    let junk = alice.root.join("junk.cue");
    std::fs::write(&junk, b"definitely not a bundle").unwrap_or_else(|e| panic!("{e}"));
    let out = alice.run(&["import", junk.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a cue bundle"));

    let other = Peer::init("carol");
    let foreign = other.export();
    let out = alice.run(&["import", foreign.to_str().unwrap_or_default()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to workspace"),
        "{out:?}"
    );

    std::fs::write(alice.path("docs/bin.md"), [0xff, 0xfe, 0x00, 0x41])
        .unwrap_or_else(|e| panic!("{e}"));
    let status = alice.ok(&["status"]);
    assert!(status.contains("not valid UTF-8"), "{status}");

    std::fs::write(alice.path("config.toml"), "[sync\nbroken").unwrap_or_else(|e| panic!("{e}"));
    let out = alice.run(&["status"]);
    assert_eq!(out.status.code(), Some(101), "config errors exit 101");
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.toml is not valid TOML"));

    let out = run_in(alice.root.parent().unwrap_or(&alice.root), "x", &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cue init"));
    let out = alice.run(&["card", "new", "x", "--priority", "urgent"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn init_is_idempotent_and_cards_list() {
    let alice = Peer::init("alice");
    let again = alice.ok(&["init"]);
    assert!(again.contains("already initialised"), "{again}");
    alice.ok(&[
        "card",
        "new",
        "Fix login",
        "--priority",
        "high",
        "--tag",
        "bug",
    ]);
    alice.ok(&["card", "new", "Write docs"]);
    let list = alice.ok(&["list", "--json"]);
    assert!(
        list.contains("\"title\": \"Fix login\"") && list.contains("\"priority\": \"high\""),
        "{list}"
    );
    let card = alice
        .files()
        .into_iter()
        .find(|(p, _)| p.starts_with("cards/"))
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    for key in [
        "id:",
        "uuid:",
        "title:",
        "status: todo",
        "priority:",
        "assignee:",
        "tags:",
        "refs:",
    ] {
        assert!(card.contains(key), "card lacks {key}: {card}");
    }
    assert!(alice.path("config.toml").is_file());
    let config = alice.read("config.toml");
    assert!(
        config.contains("[sync]")
            && config.contains("max_offline_days = 7")
            && config.contains("[sync.relay]")
    );
}
