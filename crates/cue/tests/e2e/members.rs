//! Removing a member: `cue member remove` rotates the workspace key with
//! real `cue watch --sync` daemons and a real `cue-relay`. The remaining
//! members move to the new room by themselves (one live, one after being
//! offline during the rotation), and the removed member is left behind.

use std::time::Duration;

use crate::livekit::{clone_live, invite, wait_until, Daemon, Relay};
use crate::testkit::Peer;

fn has(peer: &Peer, rel: &str, needle: &str) -> bool {
    std::fs::read_to_string(peer.path(rel)).is_ok_and(|t| t.contains(needle))
}

fn key_of(peer: &Peer) -> String {
    std::fs::read_to_string(peer.root.join(".cuedeck/sync/key")).unwrap_or_else(|e| panic!("{e}"))
}

/// Member name → key fingerprint, from `cue member list --json`.
fn fingerprints(peer: &Peer) -> Vec<(String, Option<String>)> {
    let out = peer.ok(&["member", "list", "--json"]);
    let rows: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    rows.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["key_fingerprint"].as_str().map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_removed_member_is_left_behind_and_the_others_follow_the_new_key() {
    let relay = Relay::start(&[]);
    let alice = Peer::init("alice");
    alice.write("docs/plan.md", "# Plan\n");
    let da = Daemon::start(&alice, &relay.url(), &[]);
    let code = invite(&alice, &relay.url());
    let bob = clone_live(&code, "bob", &[]);
    let carol = clone_live(&code, "carol", &[]);
    let dave = clone_live(&code, "dave", &[]);
    let mut db = Daemon::start(&bob, &relay.url(), &[]);
    let dc = Daemon::start(&carol, &relay.url(), &[]);
    let dd = Daemon::start(&dave, &relay.url(), &[]);
    da.wait_log("3 other peer(s) online");

    // Every member's public key reaches the others through the index.
    wait_until("every member's key on alice", || {
        let fps = fingerprints(&alice);
        ["alice", "bob", "carol", "dave"]
            .iter()
            .all(|n| fps.iter().any(|(m, fp)| m == n && fp.is_some()))
    });
    wait_until("every member's key on bob", || {
        fingerprints(&bob)
            .iter()
            .filter(|(_, fp)| fp.is_some())
            .count()
            == 4
    });

    // Bob goes offline; alice removes carol meanwhile.
    db.stop();
    let old_key = key_of(&alice);
    let out = alice.ok(&["member", "remove", "carol"]);
    assert!(
        out.contains("Removed carol") && out.contains("bob"),
        "{out}"
    );
    assert!(!out.contains("carol,") && !out.contains(", carol"), "{out}");
    da.wait_log("moved to the workspace's new key (epoch 1)");
    assert_ne!(key_of(&alice), old_key);
    // Dave, online, follows live (the record reaches him in the index).
    dd.wait_log("moved to the workspace's new key (epoch 1)");
    assert_eq!(key_of(&dave), key_of(&alice));
    // Carol got the record live, and has no copy of the new key.
    dc.wait_log("was removed from the workspace by alice");
    assert_eq!(key_of(&carol), old_key);
    let removed = alice.ok(&["member", "list"]);
    assert!(removed.contains("carol (removed)"), "{removed}");

    // Bob edited while offline; on return the beacon alice keeps in the old
    // room hands him the record, he opens his copy and follows.
    bob.write("docs/bob.md", "written offline by bob\n");
    let _db = Daemon::start(&bob, &relay.url(), &[]);
    _db.wait_log("moved to the workspace's new key (epoch 1)");
    assert_eq!(key_of(&bob), key_of(&alice));
    wait_until("bob's offline edit on alice", || {
        has(&alice, "docs/bob.md", "written offline by bob")
    });

    // The two remaining members keep syncing on the new room; carol's edits
    // no longer arrive, and she reads nothing written after her removal.
    carol.write("docs/carol.md", "carol after her removal\n");
    alice.write("docs/plan.md", "# Plan\nafter carol left\n");
    wait_until("alice's edit on bob", || {
        has(&bob, "docs/plan.md", "after carol left")
    });
    bob.write("docs/plan2.md", "bob, on the new key\n");
    wait_until("bob's edit on alice", || {
        has(&alice, "docs/plan2.md", "bob, on the new key")
    });
    wait_until("both edits on dave", || {
        has(&dave, "docs/plan2.md", "bob, on the new key")
            && has(&dave, "docs/plan.md", "after carol left")
            && has(&dave, "docs/bob.md", "written offline by bob")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!alice.path("docs/carol.md").exists());
    assert!(!bob.path("docs/carol.md").exists());
    assert!(!dave.path("docs/carol.md").exists());
    assert!(!has(&carol, "docs/plan.md", "after carol left"));
    assert!(!carol.path("docs/plan2.md").exists());
    // Nor can she read the new key anywhere she has access to.
    let new_key = key_of(&alice);
    for f in ["key", "previous-key", "member-key"] {
        let text =
            std::fs::read_to_string(carol.root.join(".cuedeck/sync").join(f)).unwrap_or_default();
        assert!(
            !text.contains(new_key.trim()),
            "carol's {f} holds the new key"
        );
    }
}

#[test]
fn removing_yourself_or_a_stranger_is_refused() {
    let alice = Peer::init("alice");
    let me = alice.run(&["member", "remove", "alice"]);
    assert_eq!(me.status.code(), Some(2), "{me:?}");
    let nobody = alice.run(&["member", "remove", "zed"]);
    assert_eq!(nobody.status.code(), Some(2), "{nobody:?}");
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no member named"));
}
