//! Bad input, end to end: one table of everything a hostile or broken peer,
//! relay client, disk or editor can do to two live peers (real relay, real
//! daemons). After each case: both daemons still run, nothing was written
//! outside the workspace, and a fresh edit still syncs, so nothing is stuck.
//! (A wrong auth token and a damaged join code are in `live.rs`; a full disk
//! and kill -9 in `chaos.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use cue_core::store::DocKey;
use cue_core::sync::message::Message;
use cue_core::sync::WorkspaceKey;
use cue_core::FileId;
use cue_wire::{Frame, FrameKind, Header, PeerId};

use crate::hostilekit::{deflate_bomb, workspace_key, Hostile};
use crate::livekit::{clone_live, invite, wait_until, Daemon, Relay};
use crate::testkit::Peer;

fn alive(d: &mut Daemon) -> bool {
    d.is_running()
}

fn no_file_outside(root: &Path, names: &[&str]) {
    let top = root.parent().unwrap_or(root);
    for n in names {
        for base in [top.to_path_buf(), root.to_path_buf(), PathBuf::from("/")] {
            let p = base.join(n);
            assert!(
                !p.exists(),
                "{} was written outside the workspace",
                p.display()
            );
        }
    }
}

#[test]
fn every_bad_input_gets_a_clear_error_and_loses_nothing() {
    let relay = Relay::start(&["--max-frame-bytes", "300000"]);
    let a = Peer::init("ana");
    a.write("docs/base.md", "---\ntitle: Base\n---\nbase\n");
    let mut da = Daemon::start(&a, &relay.url(), &[]);
    let b = clone_live(&invite(&a, &relay.url()), "bo", &[]);
    let mut db = Daemon::start(&b, &relay.url(), &[]);
    db.wait_log("1 other peer(s) online");
    let key = workspace_key(&a);
    let pwned = format!("cue-pwned-{}", std::process::id());

    // Each action returns the hostile client, kept connected until the case is
    // judged (a client that hangs up at once may have its last frames dropped).
    type Case<'a> = (
        &'a str,
        Box<dyn Fn() -> Option<Hostile> + 'a>,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "garbage bytes from a client: the relay cuts it off",
            Box::new(|| {
                let mut h = Hostile::join(&relay, key.clone());
                h.send_raw(vec![0xde, 0xad, 0xbe, 0xef]);
                Some(h)
            }),
            None,
        ),
        (
            "an oversized frame: refused by the relay",
            Box::new(|| {
                let mut h = Hostile::join(&relay, key.clone());
                let f = Frame::broadcast(key.room_id(), h.me, vec![0; 400_000]);
                h.send_raw(f.encode());
                Some(h)
            }),
            None,
        ),
        (
            "a frame sealed under another key",
            Box::new(|| {
                let mut h = Hostile::join(&relay, key.clone());
                h.key = WorkspaceKey::from_bytes([1; 32]);
                h.broadcast(&[Message::Heartbeat {
                    digest: [0; 32],
                    catching_up: false,
                }]);
                Some(h)
            }),
            Some("different workspace key"),
        ),
        (
            "a sealed payload that is not a message",
            Box::new(|| {
                let mut h = Hostile::join(&relay, key.clone());
                let header = Header {
                    kind: FrameKind::Broadcast,
                    room: key.room_id(),
                    sender: h.me,
                    recipient: PeerId::ZERO,
                };
                let payload = key
                    .sealer()
                    .seal(&header, b"\x01not a batch at all", [3; 24]);
                h.send_raw(Frame { header, payload }.encode());
                Some(h)
            }),
            Some("malformed message"),
        ),
        (
            "an automerge change that is garbage",
            Box::new(|| {
                let mut h = Hostile::join(&relay, key.clone());
                h.broadcast(&[Message::Change {
                    id: 9,
                    doc: DocKey::File(FileId([5; 16])),
                    deps: Vec::new(),
                    bytes: b"definitely not automerge".to_vec(),
                }]);
                Some(h)
            }),
            Some("could not merge"),
        ),
        (
            "a deflate bomb sent as a change",
            Box::new(|| {
                let mut h = Hostile::join(&relay, key.clone());
                h.broadcast(&[Message::Change {
                    id: 10,
                    doc: DocKey::Index,
                    deps: Vec::new(),
                    bytes: deflate_bomb(),
                }]);
                Some(h)
            }),
            Some("MAX_INFLATED_BYTES"),
        ),
        (
            "a path that climbs out of the workspace",
            Box::new(|| {
                let mut h = Hostile::join(&relay, key.clone());
                h.forge_file(&format!("../../{pwned}"), "pwned\n");
                Some(h)
            }),
            Some("not writing file"),
        ),
        (
            "an absolute path",
            Box::new(|| {
                let mut h = Hostile::join(&relay, key.clone());
                h.forge_file(&format!("/tmp/{pwned}"), "pwned\n");
                Some(h)
            }),
            Some("not writing file"),
        ),
        (
            "a file that is not UTF-8",
            Box::new(|| {
                std::fs::write(a.path("docs/binary.md"), [0xff, 0xfe, 0x00, 0x41])
                    .unwrap_or_else(|e| panic!("{e}"));
                None
            }),
            Some("docs/binary.md"),
        ),
        (
            "a file over the size limit",
            Box::new(|| {
                // Saved the way editors save: written aside, then renamed in.
                let big = vec![b'a'; 17 * 1024 * 1024];
                std::fs::write(a.path("huge.tmp"), big).unwrap_or_else(|e| panic!("{e}"));
                std::fs::rename(a.path("huge.tmp"), a.path("docs/huge.md"))
                    .unwrap_or_else(|e| panic!("{e}"));
                None
            }),
            Some("limit; not synced"),
        ),
        (
            "a symbolic link",
            Box::new(|| {
                std::os::unix::fs::symlink("/etc/passwd", a.path("docs/link.md"))
                    .unwrap_or_else(|e| panic!("{e}"));
                None
            }),
            Some("symbolic links are not synced"),
        ),
    ];

    for (i, (name, act, expect)) in cases.iter().enumerate() {
        eprintln!("case {i}: {name}");
        let _client = act();
        if let Some(needle) = expect {
            wait_until(&format!("case {name:?} to be reported"), || {
                da.log_text().contains(needle) || db.log_text().contains(needle)
            });
        }
        assert!(
            alive(&mut da) && alive(&mut db),
            "case {name:?}: a daemon died"
        );
        no_file_outside(&a.root, &[pwned.as_str()]);
        no_file_outside(&b.root, &[pwned.as_str()]);
        // The peers still sync.
        let canary = format!("canary {i}\n");
        a.write(&format!("docs/canary-{i}.md"), &canary);
        wait_until(&format!("the canary after case {name:?}"), || {
            std::fs::read_to_string(b.path(&format!("docs/canary-{i}.md")))
                .is_ok_and(|t| t == canary)
        });
    }

    // Broken YAML still syncs, as text; an editor's atomic save syncs too.
    let broken = "---\ntitle: [unclosed\n  - : :\n---\nbody survives\n";
    a.write("docs/broken.md", broken);
    wait_until("the broken-YAML file on bo", || {
        std::fs::read_to_string(b.path("docs/broken.md")).is_ok_and(|t| t == broken)
    });
    std::fs::write(
        b.path("docs/.base.md.swp"),
        "---\ntitle: Base\n---\nbase\natomic\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(b.path("docs/.base.md.swp"), b.path("docs/base.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the atomic save on ana", || {
        std::fs::read_to_string(a.path("docs/base.md")).is_ok_and(|t| t.contains("atomic"))
    });
    // Nothing that was refused reached the other peer.
    for f in ["docs/binary.md", "docs/huge.md", "docs/link.md"] {
        assert!(!b.path(f).exists(), "{f} was synced");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(&mut da) && alive(&mut db));
    // The 1 GiB deflate bomb (3 GB inside automerge before the inflate guard)
    // left the daemons' peak memory small.
    for (name, d) in [("ana", &da), ("bo", &db)] {
        let peak_kb = d
            .peak_rss_kb()
            .unwrap_or_else(|| panic!("no VmHWM for {name}"));
        println!("{name}'s daemon peaked at {peak_kb} kB");
        assert!(
            peak_kb < 200 * 1024,
            "{name}'s daemon peaked at {peak_kb} kB"
        );
    }
}
