//! A hostile client for live-sync tests: it speaks the real protocol
//! (admission, sealing, batches, the sync engine) over a real relay, with
//! the code of `cue-core`, then sends what an honest peer never would.

use std::time::{Duration, Instant};

use cue_core::doc::{Author, FileDoc, IndexDoc};
use cue_core::store::{DocKey, MemStore};
use cue_core::sync::message::{pack, Message};
use cue_core::sync::{SyncEngine, WorkspaceKey};
use cue_core::{FileId, Workspace};
use cue_wire::{Frame, FrameKind, Header, PeerId};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::livekit::{join_room, Relay, Ws};
use crate::testkit::Peer;

/// The workspace key of `peer` (what a member holds after `cue clone`).
pub fn workspace_key(peer: &Peer) -> WorkspaceKey {
    let key_hex = peer.read("sync/key");
    let mut key = [0u8; 32];
    hex::decode_to_slice(key_hex.trim(), &mut key).unwrap_or_else(|e| panic!("{e}"));
    WorkspaceKey::from_bytes(key)
}

/// A client in the room that holds the workspace key but not our code: it
/// can seal frames, so the peers have to judge what is inside.
pub struct Hostile {
    pub rt: tokio::runtime::Runtime,
    pub ws: Ws,
    pub key: WorkspaceKey,
    /// The room joined; stays put when a case swaps `key`.
    pub room: cue_wire::RoomId,
    pub me: PeerId,
    pub replica: Workspace<MemStore>,
    pub engine: SyncEngine,
    pub seq: u32,
    /// Index changes forged so far (each under its own actor).
    forged: u32,
}

impl Hostile {
    pub fn join(relay: &Relay, key: WorkspaceKey) -> Hostile {
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
            forged: 0,
        };
        // Sync like an honest peer first, to learn the index it will forge.
        let out = h
            .engine
            .on_frame(&mut h.replica, &welcome, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        for f in out.frames {
            h.send_raw(f.encode());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.replica.workspace_id().is_none() || h.replica.missing_docs() > 0 {
            assert!(Instant::now() < deadline, "hostile never synced");
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

    pub fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let ws = &mut self.ws;
        self.rt.block_on(async {
            match tokio::time::timeout(wait, ws.next()).await {
                Ok(Some(Ok(WsMessage::Binary(b)))) => Some(b.to_vec()),
                _ => None,
            }
        })
    }

    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        let ws = &mut self.ws;
        self.rt
            .block_on(ws.send(WsMessage::binary(bytes)))
            .unwrap_or_else(|e| panic!("hostile send: {e}"));
    }

    /// Seals `msgs` properly and broadcasts them.
    pub fn broadcast(&mut self, msgs: &[Message]) {
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
    pub fn forge_file(&mut self, path: &str, text: &str) -> FileId {
        self.forge_files(&[(path, Some(text))])[0]
    }

    /// Broadcasts one index change that adds a file at each path (any
    /// string), each with a document holding its text, or none (an entry
    /// whose document never comes). Each call writes as a new automerge
    /// actor, so calls never clash with each other.
    pub fn forge_files(&mut self, files: &[(&str, Option<&str>)]) -> Vec<FileId> {
        self.forged += 1;
        let n = self.forged;
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
        let mut actor_bytes = [0x66u8; 16];
        actor_bytes[..4].copy_from_slice(&n.to_be_bytes());
        let actor = automerge::ActorId::from(actor_bytes);
        let mut index =
            IndexDoc::load(&[index_bytes], actor.clone()).unwrap_or_else(|e| panic!("{e}"));
        let before = index.heads();
        let author = Author {
            member: "mallory",
            now_ms: 1,
        };
        let mut msgs = Vec::new();
        let mut ids = Vec::new();
        for (i, (path, text)) in files.iter().enumerate() {
            let mut id = [0x77u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            id[4..8].copy_from_slice(&(i as u32).to_be_bytes());
            let id = FileId(id);
            index
                .add_file(id, path, &author)
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(text) = text {
                let mut file = FileDoc::create(actor.clone(), id, text, &author)
                    .unwrap_or_else(|e| panic!("{e}"));
                msgs.push(Message::Change {
                    id: msgs.len() as u64 + 1,
                    doc: DocKey::File(id),
                    deps: Vec::new(),
                    bytes: file.save(),
                });
            }
            ids.push(id);
        }
        msgs.push(Message::Change {
            id: msgs.len() as u64 + 1,
            doc: DocKey::Index,
            deps: before.clone(),
            bytes: index.save_after(&before),
        });
        self.broadcast(&msgs);
        ids
    }
}

/// A compressed automerge change (chunk type 2) that inflates to 1 GiB of
/// zeros from about 1 MB.
pub fn deflate_bomb() -> Vec<u8> {
    deflate_bomb_of(1024)
}

/// A compressed automerge change (chunk type 2) that inflates to `mib` MiB
/// of zeros (about 1 KB on the wire per MiB).
pub fn deflate_bomb_of(mib: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..mib {
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
