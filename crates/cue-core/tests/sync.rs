//! The sync engine between in-memory peers and an in-memory relay that routes
//! exactly like `cue-relay` (Welcome, PeerJoined, Broadcast, Direct), so the
//! protocol is checked without sockets: joining from nothing, live edits,
//! concurrent edits, a lost message (gap), a large file, a wrong key, and
//! presence: only a fresh echo of our challenge, never a replay or the
//! relay's word, makes a peer count as online.

use std::collections::VecDeque;

use cue_core::store::MemStore;
use cue_core::sync::{SyncEngine, SyncProblem, WorkspaceKey};
use cue_core::{SyncPath, Workspace};
use cue_wire::{Frame, FrameKind, PeerId};
use rand::rngs::StdRng;
use rand::SeedableRng;

mod common;

use common::{stat, Disk};

const DAY_MS: i64 = 86_400_000;

struct Peer {
    id: PeerId,
    ws: Workspace<MemStore>,
    engine: SyncEngine,
    disk: Disk,
    online: bool,
    problems: Vec<SyncProblem>,
}

struct Net {
    peers: Vec<Peer>,
    queue: VecDeque<(usize, Vec<u8>)>,
    now: i64,
    rng: StdRng,
    /// Drops the next broadcast Change-carrying frame sent by this peer.
    drop_next_from: Option<usize>,
    /// Every frame a peer sent, as an eavesdropper on the relay records them.
    sent: Vec<(usize, Frame)>,
}

impl Peer {
    /// Writes the plan; the users of these peers only save through
    /// [`Net::write`], so every operation must go through.
    fn checkout(&mut self) {
        let refused = common::checkout(&mut self.ws, &mut self.disk);
        assert!(refused.is_empty(), "{refused:?}");
    }
}

impl Net {
    fn new(key: &WorkspaceKey, n: usize) -> Net {
        let mut rng = StdRng::seed_from_u64(7);
        let mut peers = Vec::new();
        for i in 0..n {
            let member = format!("member{i}");
            let mut ws = if i == 0 {
                Workspace::create(MemStore::default(), "team", &member, 1_000, &mut rng)
            } else {
                Workspace::join(MemStore::default(), &member, &mut rng)
            }
            .unwrap_or_else(|e| panic!("{e}"));
            let id = PeerId([i as u8 + 1; 16]);
            let mut engine = SyncEngine::new(&mut ws, key, id, [i as u8; 32], 1_000, 7 * DAY_MS)
                .unwrap_or_else(|e| panic!("{e}"));
            engine.set_member(&member);
            peers.push(Peer {
                id,
                ws,
                engine,
                disk: Disk::new(),
                online: false,
                problems: Vec::new(),
            });
        }
        Net {
            peers,
            queue: VecDeque::new(),
            now: 2_000,
            rng,
            drop_next_from: None,
            sent: Vec::new(),
        }
    }

    fn connect(&mut self, i: usize) {
        let room = self.peers[i].engine.room();
        let others: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|p| p.online)
            .map(|p| p.id)
            .collect();
        self.peers[i].online = true;
        self.queue
            .push_back((i, Frame::welcome(room, &others).encode()));
        for j in 0..self.peers.len() {
            if j != i && self.peers[j].online {
                let joined = Frame::peer_joined(room, self.peers[i].id).encode();
                self.queue.push_back((j, joined));
            }
        }
    }

    fn route(&mut self, from: usize, frames: Vec<Frame>) {
        for f in frames {
            self.sent.push((from, f.clone()));
            if self.drop_next_from == Some(from) && f.header.kind == FrameKind::Broadcast {
                self.drop_next_from = None;
                continue;
            }
            let bytes = f.encode();
            for (j, p) in self.peers.iter().enumerate() {
                if j == from || !p.online {
                    continue;
                }
                let to_it = match f.header.kind {
                    FrameKind::Direct => f.header.recipient == p.id,
                    _ => true,
                };
                if to_it {
                    self.queue.push_back((j, bytes.clone()));
                }
            }
        }
    }

    fn pump(&mut self) {
        let mut steps = 0;
        while let Some((to, bytes)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the protocol does not settle");
            self.now += 1;
            let p = &mut self.peers[to];
            let out = p
                .engine
                .on_frame(&mut p.ws, &bytes, self.now)
                .unwrap_or_else(|e| panic!("{e}"));
            p.problems.extend(out.problems);
            if out.changed {
                p.checkout();
            }
            self.route(to, out.frames);
        }
    }

    fn write(&mut self, i: usize, path: &str, text: &str) {
        let p = &mut self.peers[i];
        p.disk.insert(path.into(), text.into());
        let path = SyncPath::parse(path).unwrap_or_else(|e| panic!("{e}"));
        p.ws.record_write(&path, text, stat(text), self.now, &mut self.rng)
            .unwrap_or_else(|e| panic!("{e}"));
        let out = p
            .engine
            .local_changes(&mut p.ws)
            .unwrap_or_else(|e| panic!("{e}"));
        self.route(i, out.frames);
    }

    fn assert_converged(&self) {
        let first = &self.peers[0].disk;
        for (i, p) in self.peers.iter().enumerate() {
            assert_eq!(&p.disk, first, "peer {i} differs from peer 0");
            assert!(p.problems.is_empty(), "peer {i}: {:?}", p.problems);
        }
    }
}

#[test]
fn empty_peers_join_then_edits_flow_live() {
    let key = WorkspaceKey::from_bytes([1; 32]);
    let mut net = Net::new(&key, 3);
    net.write(0, "docs/a.md", "---\ntitle: A\ntags: [x]\n---\nhello\n");
    net.write(0, "cards/c.md", "---\nstatus: todo\n---\ncard\n");
    for i in 0..3 {
        net.connect(i);
        net.pump();
    }
    net.assert_converged();
    assert_eq!(net.peers[2].disk.len(), 2);
    assert!(net.peers[2].ws.workspace_id().is_some());

    // A live edit is one broadcast Change; everyone merges and acknowledges it.
    net.write(
        1,
        "docs/a.md",
        "---\ntitle: A\ntags: [x]\n---\nhello\nfrom one\n",
    );
    assert!(net.peers[1].engine.status().unsent > 0);
    net.pump();
    net.assert_converged();
    assert_eq!(net.peers[1].engine.status().unsent, 0);
    assert!(net.peers[2].disk["docs/a.md"].contains("from one"));

    // Concurrent edits of the same file on two peers merge with nothing lost.
    net.write(
        1,
        "docs/a.md",
        "---\ntitle: A\ntags: [x, y]\n---\nfirst\nhello\nfrom one\n",
    );
    net.write(
        2,
        "docs/a.md",
        "---\ntitle: A\ntags: [x, z]\n---\nhello\nfrom one\nlast\n",
    );
    net.pump();
    net.assert_converged();
    let a = &net.peers[0].disk["docs/a.md"];
    for want in ["first", "last", "y", "z"] {
        assert!(a.contains(want), "{want} lost: {a}");
    }
}

#[test]
fn a_lost_change_is_repaired_by_the_sync_protocol() {
    let key = WorkspaceKey::from_bytes([2; 32]);
    let mut net = Net::new(&key, 2);
    net.connect(0);
    net.connect(1);
    net.write(0, "docs/a.md", "one\n");
    net.pump();
    net.drop_next_from = Some(0);
    net.write(0, "docs/a.md", "one\ntwo\n");
    net.pump();
    assert_eq!(net.peers[1].disk["docs/a.md"], "one\n");
    // The next change depends on the lost one: a gap, so the peers sync.
    net.write(0, "docs/a.md", "one\ntwo\nthree\n");
    net.pump();
    net.assert_converged();
    assert_eq!(net.peers[1].disk["docs/a.md"], "one\ntwo\nthree\n");
}

#[test]
fn a_file_larger_than_a_frame_travels_in_parts() {
    let key = WorkspaceKey::from_bytes([3; 32]);
    let mut net = Net::new(&key, 2);
    net.connect(0);
    net.connect(1);
    let big: String = (0..80_000).map(|i| format!("line {i}\n")).collect();
    assert!(big.len() > 2 * cue_wire::MAX_FRAME_BYTES);
    net.write(0, "docs/big.md", &big);
    net.pump();
    net.assert_converged();
    assert_eq!(net.peers[1].disk["docs/big.md"], big);
}

#[test]
fn frames_under_another_key_are_refused_and_never_merged() {
    let key = WorkspaceKey::from_bytes([4; 32]);
    let mut net = Net::new(&key, 1);
    let mut rng = StdRng::seed_from_u64(9);
    let mut ws = Workspace::create(MemStore::default(), "evil", "mallory", 1, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let path = SyncPath::parse("docs/x.md").unwrap_or_else(|e| panic!("{e}"));
    ws.record_write(&path, "evil\n", stat("evil\n"), 1, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let wrong = WorkspaceKey::from_bytes([5; 32]);
    let mallory = PeerId([9; 16]);
    let mut engine = SyncEngine::new(&mut ws, &wrong, mallory, [9; 32], 1, DAY_MS)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = engine
        .on_frame(
            &mut ws,
            &Frame::welcome(wrong.room_id(), &[net.peers[0].id]).encode(),
            2,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.frames.is_empty());
    net.connect(0);
    net.pump();
    for mut f in out.frames {
        // Even moved into the right room, a frame sealed under another key does not open.
        f.header.room = key.room_id();
        let p = &mut net.peers[0];
        let got = p
            .engine
            .on_frame(&mut p.ws, &f.encode(), 3)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(got.frames.is_empty() && !got.changed);
        p.problems.extend(got.problems);
    }
    assert_eq!(
        net.peers[0].problems,
        vec![SyncProblem::WrongKey { peer: mallory }]
    );
    assert!(net.peers[0].ws.doc_heads().len() == 1, "only our own index");
}

/// Delivers `bytes` to peer `to` as the relay would, and routes its answers.
fn deliver(net: &mut Net, to: usize, bytes: &[u8]) -> Vec<Frame> {
    net.now += 1;
    let p = &mut net.peers[to];
    let out = p
        .engine
        .on_frame(&mut p.ws, bytes, net.now)
        .unwrap_or_else(|e| panic!("{e}"));
    p.problems.extend(out.problems);
    let frames = out.frames.clone();
    net.route(to, out.frames);
    frames
}

#[test]
fn the_relay_alone_cannot_make_a_peer_present() {
    let key = WorkspaceKey::from_bytes([6; 32]);
    let mut net = Net::new(&key, 1);
    net.connect(0);
    net.pump();
    let room = key.room_id();
    let ghost = PeerId([0x77; 16]);
    // A PeerJoined and a Welcome naming a peer that never answers.
    let sent = deliver(&mut net, 0, &Frame::peer_joined(room, ghost).encode());
    assert_eq!(sent.len(), 1, "one challenge");
    assert_eq!(sent[0].header.kind, FrameKind::Direct);
    assert_eq!(sent[0].header.recipient, ghost);
    deliver(&mut net, 0, &Frame::welcome(room, &[ghost]).encode());
    assert!(net.peers[0].engine.status().peers.is_empty());
    // Challenged again each heartbeat for a while, never counted.
    let mut challenges = 0;
    for _ in 0..40 {
        net.now += cue_core::sync::HEARTBEAT_MS;
        let p = &mut net.peers[0];
        let out = p.engine.tick(&mut p.ws, net.now);
        for f in &out.frames {
            assert_eq!(f.header.kind, FrameKind::Direct, "no heartbeat for nobody");
            challenges += 1;
        }
    }
    assert!((1..=12).contains(&challenges), "{challenges} challenges");
    assert!(net.peers[0].engine.status().peers.is_empty());
}

#[test]
fn a_replayed_handshake_from_an_old_session_makes_no_ghost_and_a_fresh_one_counts() {
    let key = WorkspaceKey::from_bytes([7; 32]);
    let mut net = Net::new(&key, 2);
    net.write(0, "docs/a.md", "hello\n");
    net.connect(0);
    net.pump();
    net.connect(1);
    net.pump();
    net.assert_converged();
    let names = |net: &Net, i: usize| -> Vec<Option<String>> {
        net.peers[i]
            .engine
            .status()
            .peers
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    };
    assert_eq!(names(&net, 0), vec![Some("member1".to_string())]);
    assert_eq!(names(&net, 1), vec![Some("member0".to_string())]);

    // Peer 1's session ends; an eavesdropper kept every frame it sent.
    let captured: Vec<Frame> = net
        .sent
        .iter()
        .filter(|(from, _)| *from == 1)
        .map(|(_, f)| f.clone())
        .collect();
    assert!(captured.len() >= 2);
    let room = key.room_id();
    let old = net.peers[1].id;
    net.peers[1].online = false;
    deliver(&mut net, 0, &Frame::peer_left(room, old).encode());
    assert!(net.peers[0].engine.status().peers.is_empty());

    // Replayed under its old id (a hostile relay, or a stranger given that
    // seat), twice over: no ghost, and only small challenges go to it.
    let mut answers = Vec::new();
    for _ in 0..2 {
        for f in &captured {
            answers.extend(deliver(&mut net, 0, &f.encode()));
        }
    }
    assert!(net.peers[0].engine.status().peers.is_empty(), "a ghost");
    assert!(
        !answers.is_empty() && answers.len() <= 2,
        "{} answers",
        answers.len()
    );
    for f in &answers {
        assert_eq!(f.header.kind, FrameKind::Direct);
        assert!(f.payload.len() < 300, "only a handshake goes to a ghost");
    }
    // Nor a heartbeat: nobody is present.
    net.now += cue_core::sync::HEARTBEAT_MS;
    let p = &mut net.peers[0];
    let out = p.engine.tick(&mut p.ws, net.now);
    assert!(out
        .frames
        .iter()
        .all(|f| f.header.kind == FrameKind::Direct && f.header.recipient == old));

    // The member comes back for real, in a new session: it is present again.
    let p = &mut net.peers[1];
    p.engine = SyncEngine::new(&mut p.ws, &key, old, [42; 32], net.now, 7 * DAY_MS)
        .unwrap_or_else(|e| panic!("{e}"));
    p.engine.set_member("member1");
    net.connect(1);
    net.pump();
    assert_eq!(names(&net, 0), vec![Some("member1".to_string())]);
    net.write(1, "docs/a.md", "hello\nagain\n");
    net.pump();
    net.assert_converged();
}
