//! A member that sends more than a peer accepts: the victim's engine refuses
//! it with one problem line naming the sender, and keeps running.

use cue_core::limits::MAX_UNNAMED_DOCS;
use cue_core::store::{DocKey, MemStore};
use cue_core::sync::message::{pack, Reassembler};
use cue_core::sync::{Message, SyncEngine, SyncProblem, WorkspaceKey};
use cue_core::{FileId, Workspace};
use cue_wire::{Frame, FrameKind, Header, PeerId};
use rand::rngs::StdRng;
use rand::SeedableRng;

const VICTIM: PeerId = PeerId([1; 16]);
const MALLORY: PeerId = PeerId([9; 16]);

struct Victim {
    ws: Workspace<MemStore>,
    engine: SyncEngine,
    key: WorkspaceKey,
}

fn victim() -> Victim {
    let mut rng = StdRng::seed_from_u64(11);
    let key = WorkspaceKey::from_bytes([5; 32]);
    let mut ws = Workspace::create(MemStore::default(), "team", "ana", 1_000, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut engine = SyncEngine::new(&mut ws, &key, VICTIM, [0; 32], 1_000, i64::MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    engine.set_member("ana");
    let welcome = Frame::welcome(key.room_id(), &[VICTIM, MALLORY]).encode();
    let out = engine
        .on_frame(&mut ws, &welcome, 1_000)
        .unwrap_or_else(|e| panic!("{e}"));
    // Mallory holds the key: it answers the victim's challenge and is present.
    let mut back = Reassembler::default();
    let mut challenge = None;
    for f in out.frames {
        let env = key
            .sealer()
            .open(&f.header, &f.payload)
            .unwrap_or_else(|e| panic!("{e:?}"));
        for m in back.push(VICTIM, &env).unwrap_or_else(|e| panic!("{e}")) {
            if let Message::Handshake { nonce, .. } = m {
                challenge = Some(nonce);
            }
        }
    }
    let echo = challenge.unwrap_or_else(|| panic!("no challenge for Mallory"));
    let workspace = ws.workspace_id().map(|w| w.0);
    let mut v = Victim { ws, engine, key };
    v.receive(&[Message::Handshake {
        protocol: cue_core::sync::message::PROTOCOL,
        member: "mallory".into(),
        workspace,
        digest: [0; 32],
        nonce: [7; 16],
        echo,
        proved: true,
    }]);
    assert_eq!(v.engine.status().peers.len(), 1, "Mallory is present");
    v
}

impl Victim {
    /// Delivers `msgs` from Mallory, sealed with the workspace key; returns
    /// the problems and the messages the victim sent back to Mallory.
    fn receive(&mut self, msgs: &[Message]) -> (Vec<SyncProblem>, Vec<Message>) {
        let mut stream = 0;
        let mut problems = Vec::new();
        let mut replies = Vec::new();
        let sealer = self.key.sealer();
        let mut back = Reassembler::default();
        for (i, env) in pack(msgs, &mut stream).into_iter().enumerate() {
            let header = Header {
                kind: FrameKind::Direct,
                room: self.key.room_id(),
                sender: MALLORY,
                recipient: VICTIM,
            };
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let payload = sealer.seal(&header, &env, nonce);
            let frame = Frame { header, payload }.encode();
            let out = self
                .engine
                .on_frame(&mut self.ws, &frame, 2_000)
                .unwrap_or_else(|e| panic!("the engine stopped: {e}"));
            problems.extend(out.problems);
            for f in out.frames {
                if f.header.recipient == MALLORY {
                    let env = sealer
                        .open(&f.header, &f.payload)
                        .unwrap_or_else(|e| panic!("{e:?}"));
                    replies.extend(back.push(VICTIM, &env).unwrap_or_else(|e| panic!("{e}")));
                }
            }
        }
        (problems, replies)
    }
}

#[test]
fn unknown_document_keys_do_not_grow_without_bound() {
    let mut v = victim();
    let over = MAX_UNNAMED_DOCS as usize + 50;
    let entries: Vec<(DocKey, [u8; 8])> = (0..over as u32)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            (DocKey::File(FileId(id)), [0; 8])
        })
        .collect();
    let (problems, replies) = v.receive(&[Message::SyncRequest {
        full: false,
        entries,
    }]);
    let sessions = replies
        .iter()
        .filter(|m| {
            matches!(
                m,
                Message::SyncResponse {
                    doc: DocKey::File(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(sessions, MAX_UNNAMED_DOCS as usize);
    let refused: Vec<_> = problems
        .iter()
        .filter(|p| matches!(p, SyncProblem::Refused { peer, .. } if *peer == MALLORY))
        .collect();
    assert_eq!(refused.len(), 1, "{problems:?}");
    let line = refused[0].to_string();
    assert!(
        line.contains("MAX_UNNAMED_DOCS") && !line.contains('\n'),
        "{line}"
    );
    // A Change for one more unknown document is ignored too, silently now.
    let (problems, replies) = v.receive(&[Message::Change {
        id: 1,
        doc: DocKey::File(FileId([0xee; 16])),
        deps: Vec::new(),
        bytes: Vec::new(),
    }]);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(replies.is_empty(), "{replies:?}");
    // The index itself is always welcome.
    let (problems, _) = v.receive(&[Message::Heartbeat {
        digest: [0; 32],
        catching_up: false,
    }]);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_bomb_sent_as_a_change_is_refused_and_the_engine_keeps_running() {
    let mut v = victim();
    // A compressed change (chunk type 2) inflating to 256 MiB of zeros.
    let zeros = {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; 1 << 20];
        for _ in 0..256 {
            enc.write_all(&block).unwrap_or_else(|e| panic!("{e}"));
        }
        enc.finish().unwrap_or_else(|e| panic!("{e}"))
    };
    let mut bomb = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = zeros.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            bomb.push(b);
            break;
        }
        bomb.push(b | 0x80);
    }
    bomb.extend_from_slice(&zeros);
    let (problems, replies) = v.receive(&[Message::Change {
        id: 7,
        doc: DocKey::Index,
        deps: Vec::new(),
        bytes: bomb,
    }]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        matches!(&problems[0], SyncProblem::Refused { peer, reason }
            if *peer == MALLORY && reason.contains("MAX_INFLATED_BYTES")),
        "{}",
        problems[0]
    );
    assert!(
        !replies.iter().any(|m| matches!(m, Message::Ack { .. })),
        "a refused change was acknowledged"
    );
    // Still a working peer.
    assert!(v.ws.meta().is_ok());
}

#[test]
fn an_index_naming_too_many_files_is_refused() {
    use automerge::transaction::Transactable;
    use cue_core::doc::{DocError, IndexDoc};
    use cue_core::guard::LimitError;
    use cue_core::limits::MAX_FILES_PER_WORKSPACE;
    let mut evil = automerge::AutoCommit::new();
    let files = evil
        .put_object(automerge::ROOT, "files", automerge::ObjType::Map)
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..=MAX_FILES_PER_WORKSPACE {
        evil.put(&files, format!("{i:032x}"), 1)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let bytes = evil.save();
    let mut index = IndexDoc::empty(automerge::ActorId::from([1; 16]));
    match index.apply(&bytes) {
        Err(DocError::Limit(LimitError::Count { items, count, .. })) => {
            assert_eq!(items, "files");
            assert_eq!(count, MAX_FILES_PER_WORKSPACE + 1);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(index.preview(&bytes), Err(DocError::Limit(_))));
}
