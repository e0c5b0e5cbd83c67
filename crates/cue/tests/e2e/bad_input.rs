//! Bad input, end to end: one table of everything a hostile or broken peer,
//! relay client, disk or editor can do to two live peers (real relay, real
//! daemons). After each case: both daemons still run, nothing was written
//! outside the workspace, and a fresh edit still syncs, so nothing is stuck.
//! (A wrong auth token and a damaged join code are in `live.rs`; a full disk
//! and kill -9 in `chaos.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use cue_core::doc::{Author, FileDoc, IndexDoc};
use cue_core::store::{DocKey, MemStore};
use cue_core::sync::message::{pack, Message};
use cue_core::sync::{SyncEngine, WorkspaceKey};
use cue_core::{FileId, Workspace};
use cue_wire::{Frame, FrameKind, Header, PeerId};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::livekit::{clone_live, invite, join_room, wait_until, Daemon, Relay, Ws};
use crate::testkit::Peer;

/// A client in the room that holds the workspace key but not our code: it
/// can seal frames, so the peers have to judge what is inside.
struct Hostile {
    rt: tokio::runtime::Runtime,
    ws: Ws,
    key: WorkspaceKey,
    /// The room joined; stays put when a case swaps `key`.
    room: cue_wire::RoomId,
    me: PeerId,
    replica: Workspace<MemStore>,
    engine: SyncEngine,
    seq: u32,
}

impl Hostile {
    fn join(relay: &Relay, key: WorkspaceKey) -> Hostile {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        // It holds the key, so it passes admission; its peer id is the one
        // the relay assigns.
        let (ws, me, welcome) = rt.block_on(join_room(&relay.url(), &key));
        let mut rng = rand::rng();
        let mut replica = Workspace::join(MemStore::default(), "mallory", &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        let engine = SyncEngine::new(&mut replica, &key, me, [6; 32], 0, i64::MAX)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut h = Hostile {
            rt,
            ws,
            room: key.room_id(),
            key,
            me,
            replica,
            engine,
            seq: 1000,
        };
        // Sync like an honest peer first, to learn the index it will forge.
        let out = h
            .engine
            .on_frame(&mut h.replica, &welcome, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        for f in out.frames {
            h.send_raw(f.encode());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while h.replica.workspace_id().is_none() || h.replica.missing_docs() > 0 {
            assert!(std::time::Instant::now() < deadline, "hostile never synced");
            let Some(bytes) = h.recv(Duration::from_millis(500)) else {
                continue;
            };
            let out = h
                .engine
                .on_frame(&mut h.replica, &bytes, 1)
                .unwrap_or_else(|e| panic!("{e}"));
            for f in out.frames {
                h.send_raw(f.encode());
            }
        }
        h
    }

    fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let ws = &mut self.ws;
        self.rt.block_on(async {
            match tokio::time::timeout(wait, ws.next()).await {
                Ok(Some(Ok(WsMessage::Binary(b)))) => Some(b.to_vec()),
                _ => None,
            }
        })
    }

    fn send_raw(&mut self, bytes: Vec<u8>) {
        let ws = &mut self.ws;
        self.rt
            .block_on(ws.send(WsMessage::binary(bytes)))
            .unwrap_or_else(|e| panic!("hostile send: {e}"));
    }

    /// Seals `msgs` properly and broadcasts them.
    fn broadcast(&mut self, msgs: &[Message]) {
        for env in pack(msgs, &mut self.seq) {
            let header = Header {
                kind: FrameKind::Broadcast,
                room: self.room,
                sender: self.me,
                recipient: PeerId::ZERO,
            };
            let payload = self.key.sealer().seal(&header, &env, [9; 24]);
            self.send_raw(Frame { header, payload }.encode());
        }
    }

    /// Broadcasts an index change that adds a file at `path` (any string),
    /// with a document holding `text`.
    fn forge_file(&mut self, path: &str, text: &str) {
        let bundle = self
            .replica
            .export_bundle()
            .unwrap_or_else(|e| panic!("{e}"));
        let bundle = cue_core::bundle::Bundle::decode(&bundle).unwrap_or_else(|e| panic!("{e}"));
        let index_bytes = bundle
            .docs
            .iter()
            .find(|(k, _)| *k == DocKey::Index)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        let actor = automerge::ActorId::from([0x66u8; 16]);
        let mut index =
            IndexDoc::load(&[index_bytes], actor.clone()).unwrap_or_else(|e| panic!("{e}"));
        let before = index.heads();
        let id = FileId([0x77; 16]);
        let author = Author {
            member: "mallory",
            now_ms: 1,
        };
        index
            .add_file(id, path, &author)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut file = FileDoc::create(actor, id, text, &author).unwrap_or_else(|e| panic!("{e}"));
        let msgs = [
            Message::Change {
                id: 1,
                doc: DocKey::File(id),
                deps: Vec::new(),
                bytes: file.save(),
            },
            Message::Change {
                id: 2,
                doc: DocKey::Index,
                deps: before.clone(),
                bytes: index.save_after(&before),
            },
        ];
        self.broadcast(&msgs);
    }
}

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
    let key_hex = a.read("sync/key");
    let mut key = [0u8; 32];
    hex::decode_to_slice(key_hex.trim(), &mut key).unwrap_or_else(|e| panic!("{e}"));
    let key = WorkspaceKey::from_bytes(key);
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

/// A compressed automerge change (chunk type 2) that inflates to 1 GiB of
/// zeros from about 1 MB.
fn deflate_bomb() -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&block).unwrap_or_else(|e| panic!("{e}"));
    }
    let data = enc.finish().unwrap_or_else(|e| panic!("{e}"));
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = data.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&data);
    out
}
