//! Writes the committed seed corpus, `corpus/<target>/seed-*`: real frames,
//! real bundles and documents from the fixture workspace (src/lib.rs), and
//! Markdown with every frontmatter shape the merge rules know.
//!
//! `cargo run --example gen_corpus` (from fuzz/; builds on stable). The output is
//! deterministic, so rerunning it after a format change shows the change in git.

use std::fs;
use std::path::Path;

use cue_core::bundle::Bundle;
use cue_core::store::DocKey;
use cue_core::WorkspaceId;
use cue_fuzz::{fixture, FILES};
use cue_wire::{Frame, PeerId, RoomId};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create corpus folder");
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

/// Deterministic filler bytes for the seeds whose payload decodes to ops.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn with(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(rest);
    out
}

fn wire() {
    let room = RoomId([7; 32]);
    let (alice, bob) = (PeerId([1; 16]), PeerId([2; 16]));
    let frames = [
        (
            "broadcast",
            Frame::broadcast(room, alice, b"sealed payload".to_vec()),
        ),
        ("broadcast-empty", Frame::broadcast(room, alice, Vec::new())),
        ("direct", Frame::direct(room, alice, bob, vec![0xab; 40])),
        ("peer-joined", Frame::peer_joined(room, bob)),
        ("peer-left", Frame::peer_left(room, bob)),
        ("welcome", Frame::welcome(room, &[alice, bob])),
    ];
    for (name, frame) in &frames {
        write("wire_frame", name, &frame.encode());
    }
    let mut ragged = Frame::welcome(room, &[alice]).encode();
    ragged.push(0);
    write("wire_frame", "welcome-ragged", &ragged);
    write("wire_frame", "truncated", &frames[0].1.encode()[..10]);
    write(
        "wire_frame",
        "peer-id-hex",
        b"0123456789abcdefABCDEF0123456789",
    );

    // relay_frame: byte 0 steers (bit 0: force the connection's room and sender).
    let other_room = RoomId([9; 32]);
    let relay = [
        (
            "broadcast",
            0,
            Frame::broadcast(room, alice, b"hello".to_vec()),
        ),
        (
            "direct",
            0,
            Frame::direct(room, alice, bob, b"hi bob".to_vec()),
        ),
        (
            "direct-to-self",
            0,
            Frame::direct(room, alice, alice, vec![]),
        ),
        ("spoofed", 0, Frame::broadcast(room, bob, vec![1])),
        (
            "wrong-room",
            0,
            Frame::broadcast(other_room, alice, vec![1]),
        ),
        ("relay-kind", 1, Frame::peer_left(room, alice)),
        ("welcome", 1, Frame::welcome(room, &[bob])),
    ];
    for (name, steer, frame) in &relay {
        write("relay_frame", name, &with(&[*steer], &frame.encode()));
    }
    write("relay_frame", "truncated", &[0, 1, 1, 0]);
}

/// relay_admission: byte 0 steers (bit 0: an Auth header of the connection,
/// bit 1: the room's public key, bit 2: XOR into the genuine Auth frame).
/// The fixture is the target's own: key seed [7; 32], peer [0x42; 16], nonce [0x5c; 32].
fn admission() {
    use cue_wire::admission::Challenge;
    use cue_wire::AdmissionKey;
    let key = AdmissionKey::from_seed([7; 32]);
    let challenge = Challenge {
        room: key.room_id(),
        peer: PeerId([0x42; 16]),
        nonce: [0x5c; 32],
    };
    let genuine = key.sign(&challenge).to_frame(&challenge).encode();
    let stranger = AdmissionKey::from_seed([8; 32])
        .sign(&challenge)
        .to_frame(&challenge)
        .encode();
    let data = Frame::broadcast(challenge.room, challenge.peer, b"hi".to_vec()).encode();
    let mut v1 = genuine.clone();
    v1[0] = 1;
    let seeds: [(&str, u8, Vec<u8>); 7] = [
        ("genuine", 0, genuine.clone()),
        ("genuine-flip-one", 4, {
            let mut x = vec![0u8; 100];
            x[99] = 1;
            x
        }),
        ("stranger-key", 0, stranger.clone()),
        ("stranger-signature-room-key", 2, stranger),
        ("data-first", 0, data),
        ("v1", 0, v1),
        ("forced-header", 1, vec![0; 66 + 96]),
    ];
    for (name, steer, bytes) in &seeds {
        write("relay_admission", name, &with(&[*steer], bytes));
    }
}

fn frontmatter() {
    for (i, (_, text)) in FILES.iter().enumerate() {
        write("frontmatter", &format!("fixture-{i}"), text.as_bytes());
    }
    // Text A, NUL, text B: A is patched with B's fields.
    let pairs: [(&str, &str, &str); 8] = [
        (
            "edit-scalar",
            FILES[1].1,
            "---\ntitle: Fix login\npriority: low\ntags: [auth, api]\nowner:\n  name: alice\n  team: core\n---\n",
        ),
        (
            "add-fields-to-plain",
            "just a body\n",
            "---\ntitle: \"quoted: yes\"\nn: 3\nf: 1.5\nb: true\nz: ~\n---\n",
        ),
        (
            "crlf-list",
            FILES[2].1,
            "---\r\nstatus: done\r\nlist:\r\n  - a\r\n  - c\r\n---\r\n",
        ),
        (
            "remove-all",
            FILES[1].1,
            "---\n---\n",
        ),
        (
            "nested",
            "---\nmeta:\n  a: 1\n  b: [x, y]\n# trailing comment\n---\nbody\n",
            "---\nmeta:\n  a: 2\n  c:\n    - {k: v}\n---\n",
        ),
        (
            "broken-a",
            FILES[3].1,
            "---\ntitle: fixed\n---\n",
        ),
        (
            "tricky-strings",
            "---\nk: plain\n---\n",
            "---\nk: \"a #b\"\nl: [\"yes\", \"- x\", \"é ✓\", \"line\\nbreak\", \"@me\"]\n\"key with: colon\": 1\n---\n",
        ),
        (
            "unclosed-a",
            "---\nnot: closed\nbody\n",
            "---\nx: 1\n---\n",
        ),
    ];
    for (name, a, b) in pairs {
        write("frontmatter", name, format!("{a}\0{b}").as_bytes());
    }
    for (name, text) in [
        ("alias", "---\na: &x 1\nb: *x\n---\n"),
        ("duplicate-key", "---\na: 1\na: 2\n---\n"),
        ("dots-fence", "---\na: 1\n...\nbody\n"),
        ("not-a-map", "---\n- a\n- b\n---\n"),
        ("multi-doc", "---\na: 1\n---\n---\nb: 2\n---\n"),
        ("complex-key", "---\n? [a, b]\n: 1\n---\n"),
        ("numbers", "---\nhex: 0x1f\noct: 0o17\ninf: .inf\nnan: .nan\nbig: 99999999999999999999\nneg: -0.0\n---\n"),
        ("block-scalars", "---\nlit: |\n  line 1\n  line 2\nfold: >-\n  a\n  b\n---\n"),
    ] {
        write("frontmatter", name, text.as_bytes());
    }
}

fn bundles() {
    let fx = fixture();
    write("bundle_import", "alice", &with(&[0], &fx.alice_bundle));
    write("bundle_import", "bob", &with(&[0], &fx.bob_bundle));
    write(
        "bundle_import",
        "alice-later-after-bob",
        &with(&[2], &fx.alice_later_bundle),
    );
    let mut other = Bundle::decode(&fx.bob_bundle).expect("decodes");
    other.workspace = WorkspaceId([0x55; 16]);
    write(
        "bundle_import",
        "wrong-workspace",
        &with(&[0], &other.encode()),
    );
    let mut index_only = Bundle::decode(&fx.bob_bundle).expect("decodes");
    index_only.docs.retain(|(k, _)| *k == DocKey::Index);
    write(
        "bundle_import",
        "index-only",
        &with(&[0], &index_only.encode()),
    );
    write(
        "bundle_import",
        "truncated",
        &with(&[0], &fx.bob_bundle[..fx.bob_bundle.len() / 2]),
    );
    // Structured: [steer=1, which bundle, which document, actor] + ops.
    for (i, (pick, which)) in [(0u8, 0u8), (1, 0), (1, 2), (2, 0x81)].iter().enumerate() {
        let input = with(&[1, *pick, *which, 7 + i as u8], &noise(i as u64 + 1, 96));
        write("bundle_import", &format!("hostile-ops-{i}"), &input);
    }
}

fn docs() {
    let fx = fixture();
    let bob = Bundle::decode(&fx.bob_bundle).expect("decodes");
    let alice = fx.base_docs();
    // Raw: bob's versions of the fixture's documents, applied to alice's.
    // steer bit 3 = raw; bits 1-2 pick alice's document (file target: the
    // first three files; index target: 0 = alice's index).
    for (i, (key, _)) in alice.iter().enumerate() {
        let Some((_, theirs)) = bob.docs.iter().find(|(k, _)| k == key) else {
            continue;
        };
        let steer = match key {
            DocKey::Index => 8 | 1,
            DocKey::File(_) if i <= 3 => 8 | (((i - 1) as u8) << 1),
            DocKey::File(_) => continue,
        };
        write("doc_apply", &format!("raw-{i}"), &with(&[steer, 0], theirs));
        // The same, then edited locally (bit 5).
        write(
            "doc_apply",
            &format!("raw-{i}-record"),
            &with(&[steer | 32, 0], theirs),
        );
    }
    // Raw into an empty document: a file received before its creator's change.
    if let Some((_, theirs)) = bob.docs.iter().find(|(k, _)| matches!(k, DocKey::File(_))) {
        write(
            "doc_apply",
            "raw-into-empty",
            &with(&[8 | (3 << 1), 0], theirs),
        );
    }
    // Ops: the payload decodes to hostile ops on the peer's copy.
    for (i, steer) in [0u8, 2, 6, 32, 1, 3, 33].iter().enumerate() {
        let input = with(&[*steer, 9 + i as u8], &noise(100 + i as u64, 128));
        write("doc_apply", &format!("ops-{i}"), &input);
    }
}

/// Seeds for `inflate_guard`: every document of the fixture as saved, its
/// changes, a change body for the compressed-change modes, and sync messages.
fn inflate() {
    use automerge::sync::SyncDoc;
    for (i, (key, bytes)) in fixture().base_docs().iter().enumerate() {
        let name = match key {
            DocKey::Index => "index".to_string(),
            DocKey::File(_) => format!("file{i}"),
        };
        write("inflate_guard", &format!("{name}-saved"), &with(&[0], bytes));
        write("inflate_guard", &format!("{name}-saved-index"), &with(&[8], bytes));
        let mut doc = automerge::AutoCommit::load(bytes).expect("fixture loads");
        let changes = doc.save_after(&[]);
        write("inflate_guard", &format!("{name}-changes"), &with(&[0], &changes));
        // The first change's body (after the chunk header) for the compressed modes.
        if let Some(c) = doc.get_changes(&[]).first() {
            let raw = c.raw_bytes();
            let body_at = 9 + raw[9..].iter().position(|b| b & 0x80 == 0).unwrap_or(0) + 1;
            write("inflate_guard", &format!("{name}-compressed"), &with(&[1], &raw[body_at..]));
            write("inflate_guard", &format!("{name}-sync-compressed"), &with(&[3], &raw[body_at..]));
        }
        let mut empty = automerge::AutoCommit::new();
        let (mut a, mut b) = (automerge::sync::State::new(), automerge::sync::State::new());
        for round in 0..3 {
            if let Some(m) = empty.sync().generate_sync_message(&mut a) {
                write("inflate_guard", &format!("{name}-sync{round}-empty"), &with(&[2], &m.clone().encode()));
                doc.sync().receive_sync_message(&mut b, m).expect("sync");
            }
            if let Some(m) = doc.sync().generate_sync_message(&mut b) {
                write("inflate_guard", &format!("{name}-sync{round}-full"), &with(&[2], &m.clone().encode()));
                empty.sync().receive_sync_message(&mut a, m).expect("sync");
            }
        }
    }
}

fn main() {
    wire();
    admission();
    frontmatter();
    bundles();
    docs();
    inflate();
    println!(
        "seed corpus written under {}/corpus",
        env!("CARGO_MANIFEST_DIR")
    );
}
