//! Regressions found by the seeded simulator (`cue-sim`), each reduced to the
//! few steps that show it.

use cue_core::doc::SyncState;
use cue_core::store::{DocKey, MemStore};
use cue_core::workspace::content_hash;
use cue_core::Workspace;
use rand::rngs::StdRng;
use rand::SeedableRng;

mod common;

use common::{checkout, p, stat, Disk};

fn write(ws: &mut Workspace<MemStore>, disk: &mut Disk, path: &str, text: &str, now: i64) {
    // Seeded by the save itself: two saves must never draw the same actor
    // for a fork (a real peer draws from the OS), yet runs must repeat.
    let save = format!("{}/{now}/{path}/{text}", ws.actor_hex());
    let mut rng = StdRng::from_seed(content_hash(save.as_bytes()));
    disk.insert(path.to_string(), text.to_string());
    ws.record_write(&p(path), text, stat(text), now, &mut rng)
        .unwrap_or_else(|e| panic!("record: {e}"));
}

fn exchange(a: &mut Workspace<MemStore>, b: &mut Workspace<MemStore>) {
    let bundle = a.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    b.import_bundle(&bundle).unwrap_or_else(|e| panic!("{e}"));
    let bundle = b.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    a.import_bundle(&bundle).unwrap_or_else(|e| panic!("{e}"));
}

/// ana's workspace with one file, and bo's clone of it, both on disk.
fn ana_and_bo(
    seed: u64,
    path: &str,
    text: &str,
) -> (Workspace<MemStore>, Disk, Workspace<MemStore>, Disk) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut a = Workspace::create(MemStore::default(), "team", "ana", 1_000, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut disk_a = Disk::new();
    write(&mut a, &mut disk_a, path, text, 2_000);
    let bundle = a.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    let mut b = Workspace::clone_from_bundle(MemStore::default(), &bundle, "bo", &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut disk_b = Disk::new();
    assert!(checkout(&mut b, &mut disk_b).is_empty());
    (a, disk_a, b, disk_b)
}

/// Runs automerge's sync protocol on the index alone, both ways, until quiet.
fn sync_index(a: &mut Workspace<MemStore>, b: &mut Workspace<MemStore>) {
    /// One message from `from` (state `sf`) to `to` (state `st`), if any.
    fn one_way(
        from: &mut Workspace<MemStore>,
        sf: &mut SyncState,
        to: &mut Workspace<MemStore>,
        st: &mut SyncState,
    ) -> bool {
        let msg = from
            .sync_message(DocKey::Index, sf)
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(m) = &msg {
            to.receive_sync(DocKey::Index, st, m)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        msg.is_some()
    }
    let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
    for _ in 0..20 {
        let ab = one_way(a, &mut sa, b, &mut sb);
        let ba = one_way(b, &mut sb, a, &mut sa);
        if !ab && !ba {
            break;
        }
    }
}

/// `cue-sim --seed 21 --steps 42`: one save removed a tag from the
/// frontmatter and added a line `<m13-11>` right after the closing fence,
/// while another peer removed the same tag `t<m13-4>`. The diff trimmed the
/// common prefix and suffix in the middle of lines, so the line diff saw no
/// equal line and the char diff built the new line out of the tag's
/// characters (`<m13-` and `>`): merged with the concurrent removal of the
/// tag, the new line read `11`.
#[test]
fn a_new_line_is_not_built_from_the_characters_of_a_line_a_peer_changes() {
    let base = "---\ntitle: c2\ntags: [t<m13-4>]\n---\n# c2\nfiller one\n";
    let (mut a, mut disk_a, mut b, mut disk_b) = ana_and_bo(1, "cards/c2.md", base);

    // Concurrently: bo removes the tag; ana removes it too and adds a line.
    let theirs = "---\ntitle: c2\ntags: []\n---\n# c2\nfiller one\n";
    write(&mut b, &mut disk_b, "cards/c2.md", theirs, 3_000);
    let ours = "---\ntitle: c2\ntags: []\n---\n<m13-11>\n# c2\nfiller one\n";
    write(&mut a, &mut disk_a, "cards/c2.md", ours, 3_000);

    exchange(&mut a, &mut b);
    assert!(checkout(&mut a, &mut disk_a).is_empty());
    assert!(checkout(&mut b, &mut disk_b).is_empty());
    assert_eq!(disk_a, disk_b);
    assert_eq!(disk_a["cards/c2.md"], ours, "the new line was torn apart");
}

/// `cue-sim --seed 16 --peers 3 --steps 100`: two peers created the same
/// path; the older file takes the name, ours moves to a conflict copy. When
/// the index arrived before the older file's document, the plan moved ours
/// to its conflict name but did not remove its bytes from the shared name
/// (assuming the other file's write would replace them, a write that could
/// not happen yet). The bytes stayed there unrecorded, the other file's
/// write was refused when it came, and the next scan recorded them as a
/// third file.
#[test]
fn a_file_moved_off_a_name_leaves_nothing_there_before_the_new_owner_arrives() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut a = Workspace::create(MemStore::default(), "team", "ana", 1_000, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let bundle = a.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    let mut b = Workspace::clone_from_bundle(MemStore::default(), &bundle, "bo", &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut disk_a, mut disk_b) = (Disk::new(), Disk::new());
    write(&mut a, &mut disk_a, "docs/x.md", "ana's x\n", 2_000);
    write(&mut b, &mut disk_b, "docs/x.md", "bo's x\n", 3_000);

    // Only the index travels (live sync sends documents independently).
    sync_index(&mut a, &mut b);
    b.commit().unwrap_or_else(|e| panic!("{e}"));
    assert!(checkout(&mut b, &mut disk_b).is_empty());
    for path in disk_b.keys() {
        assert!(
            b.local_by_path(path).is_some(),
            "{path} is on disk but recorded nowhere: {disk_b:?}"
        );
    }

    // Then the older file's document arrives and takes the name.
    exchange(&mut a, &mut b);
    assert!(
        checkout(&mut b, &mut disk_b).is_empty(),
        "a write was refused"
    );
    assert!(checkout(&mut a, &mut disk_a).is_empty());
    assert_eq!(disk_a, disk_b);
    assert_eq!(disk_b["docs/x.md"], "ana's x\n");
    assert_eq!(disk_b.len(), 2, "{disk_b:?}");
}

/// `cue-sim --seed 8`: recording an edit made on a file whose document had
/// moved on since it was written to disk forks the document at the disk's
/// heads. automerge gives a fork a random actor, so the same edits gave
/// different change hashes on every run and no seed replayed.
#[test]
fn the_same_edits_give_the_same_change_hashes() {
    let run = || {
        let (mut a, mut disk_a, mut b, mut disk_b) = ana_and_bo(3, "docs/a.md", "one\ntwo\n");
        write(&mut b, &mut disk_b, "docs/a.md", "one\ntwo\nbo\n", 3_000);
        let bundle = b.export_bundle().unwrap_or_else(|e| panic!("{e}"));
        a.import_bundle(&bundle).unwrap_or_else(|e| panic!("{e}"));
        // ana saves before her disk shows bo's line: recorded on a fork.
        write(&mut a, &mut disk_a, "docs/a.md", "ana\none\ntwo\n", 4_000);
        a.doc_heads().clone()
    };
    assert_eq!(run(), run());
}

/// `cue-sim --seed 49 --steps 106`: a Change arrived but its Ack was lost,
/// and the peers' digests then agreed, so nothing was ever exchanged again:
/// `cue sync status` counted the edit as unsent for good.
#[test]
fn a_lost_ack_is_forgiven_once_digests_agree() {
    use cue_core::sync::{SyncEngine, WorkspaceKey, HEARTBEAT_MS};
    use cue_wire::{Frame, FrameKind, PeerId};

    let key = WorkspaceKey::from_bytes([7; 32]);
    let room = key.room_id();
    let mut rng = StdRng::seed_from_u64(4);
    let mut a = Workspace::create(MemStore::default(), "team", "ana", 1_000, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b =
        Workspace::join(MemStore::default(), "bo", &mut rng).unwrap_or_else(|e| panic!("{e}"));
    let (ida, idb) = (PeerId([1; 16]), PeerId([2; 16]));
    let day = 86_400_000;
    let mut ea = SyncEngine::new(&mut a, &key, ida, [1; 32], 1_000, 7 * day)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut eb = SyncEngine::new(&mut b, &key, idb, [2; 32], 1_000, 7 * day)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut now = 2_000;

    // Frames travel until quiet; `drop_to_a` loses frames bound for ana.
    let pump = |ea: &mut SyncEngine,
                eb: &mut SyncEngine,
                a: &mut Workspace<MemStore>,
                b: &mut Workspace<MemStore>,
                mut queue: Vec<(bool, Frame)>,
                drop_to_a: bool,
                now: i64| {
        while let Some((to_a, f)) = queue.pop() {
            if to_a && drop_to_a {
                continue;
            }
            let out = if to_a {
                ea.on_frame(a, &f.encode(), now)
            } else {
                eb.on_frame(b, &f.encode(), now)
            }
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(out.problems.is_empty(), "{:?}", out.problems);
            for g in out.frames {
                assert!(
                    g.header.kind == FrameKind::Broadcast || g.header.kind == FrameKind::Direct
                );
                queue.push((!to_a, g));
            }
        }
    };
    let hello = vec![
        (true, Frame::welcome(room, &[])),
        (false, Frame::welcome(room, &[ida])),
        (true, Frame::peer_joined(room, idb)),
    ];
    pump(&mut ea, &mut eb, &mut a, &mut b, hello, false, now);
    assert_eq!(a.doc_heads().len(), b.doc_heads().len(), "bo has the index");

    let mut disk_a = Disk::new();
    write(&mut a, &mut disk_a, "docs/a.md", "hello\n", now);
    let out = ea.local_changes(&mut a).unwrap_or_else(|e| panic!("{e}"));
    let change = out.frames.into_iter().map(|f| (false, f)).collect();
    pump(&mut ea, &mut eb, &mut a, &mut b, change, true, now);
    assert!(ea.status().unsent > 0, "the Acks were lost");

    now += HEARTBEAT_MS + 1;
    let beats: Vec<(bool, Frame)> = eb
        .tick(&mut b, now)
        .frames
        .into_iter()
        .map(|f| (true, f))
        .collect();
    pump(&mut ea, &mut eb, &mut a, &mut b, beats, false, now);
    assert_eq!(
        ea.status().unsent,
        0,
        "bo's digest equals ana's: nothing is unsent"
    );
}

/// `cue-sim --seed 72` and `--seed 76`: two peers exchanged the same pair of
/// sync messages forever, one asking for a change the other was sure it had
/// already sent (automerge's sync state remembers what it sent; the frame
/// that carried it was lost, or a repeated frame ran a second exchange on the
/// same state). Now the same answer to the same message ends the exchange and
/// both ends start over with a sync request.
#[test]
fn sync_conversations_end_despite_lost_reordered_and_repeated_frames() {
    for seed in 0..50 {
        storm_run(seed);
    }
}

fn storm_run(seed: u64) {
    use cue_core::sync::{SyncEngine, WorkspaceKey, HEARTBEAT_MS};
    use cue_wire::{Frame, PeerId};
    use rand::RngExt;

    let key = WorkspaceKey::from_bytes([9; 32]);
    let room = key.room_id();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ws = [
        Workspace::create(MemStore::default(), "team", "ana", 1_000, &mut rng)
            .unwrap_or_else(|e| panic!("{e}")),
        Workspace::join(MemStore::default(), "bo", &mut rng).unwrap_or_else(|e| panic!("{e}")),
    ];
    let ids = [PeerId([1; 16]), PeerId([2; 16])];
    let day = 86_400_000;
    let mut engines = [0, 1].map(|i| {
        SyncEngine::new(&mut ws[i], &key, ids[i], [i as u8 + 1; 32], 1_000, 7 * day)
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let mut disks = [Disk::new(), Disk::new()];
    // In flight: (recipient, frame), delivered in random order, some twice,
    // some never; both peers keep creating and editing files meanwhile.
    let mut flight: Vec<(usize, Vec<u8>)> = vec![
        (0, Frame::welcome(room, &[]).encode()),
        (1, Frame::welcome(room, &[ids[0]]).encode()),
        (0, Frame::peer_joined(room, ids[1]).encode()),
    ];
    let mut delivered = 0;
    let mut now = 2_000;
    for step in 0..400 {
        if step % 50 == 49 {
            now += HEARTBEAT_MS * 3;
            for i in 0..2 {
                let out = engines[i].tick(&mut ws[i], now);
                flight.extend(out.frames.into_iter().map(|f| (1 - i, f.encode())));
            }
        }
        if flight.is_empty() || rng.random_bool(0.1) {
            let i = rng.random_range(0..2);
            if ws[i].workspace_id().is_none() {
                continue;
            }
            let path = format!("docs/{}.md", rng.random_range(0..4));
            let text = format!(
                "{}line {step}\n",
                disks[i].get(&path).cloned().unwrap_or_default()
            );
            write(&mut ws[i], &mut disks[i], &path, &text, now);
            let out = engines[i]
                .local_changes(&mut ws[i])
                .unwrap_or_else(|e| panic!("{e}"));
            flight.extend(out.frames.into_iter().map(|f| (1 - i, f.encode())));
            continue;
        }
        let (to, bytes) = flight.swap_remove(rng.random_range(0..flight.len()));
        if rng.random_bool(0.2) {
            flight.push((to, bytes.clone()));
        }
        if rng.random_bool(0.05) {
            continue;
        }
        delivered += 1;
        now += 1;
        let out = engines[to]
            .on_frame(&mut ws[to], &bytes, now)
            .unwrap_or_else(|e| panic!("{e}"));
        flight.extend(out.frames.into_iter().map(|f| (1 - to, f.encode())));
    }
    // Then everything in flight is delivered (once) until quiet, and
    // heartbeats repair what was lost until both hold the same documents.
    for _ in 0..10 {
        while let Some((to, bytes)) = flight.pop() {
            delivered += 1;
            assert!(
                delivered < 20_000,
                "seed {seed}: a message storm: {delivered} frames and counting"
            );
            now += 1;
            let out = engines[to]
                .on_frame(&mut ws[to], &bytes, now)
                .unwrap_or_else(|e| panic!("{e}"));
            flight.extend(out.frames.into_iter().map(|f| (1 - to, f.encode())));
        }
        let heads = |w: &Workspace<MemStore>| {
            w.doc_heads()
                .iter()
                .map(|(k, i)| (*k, i.heads.clone()))
                .collect::<Vec<_>>()
        };
        if heads(&ws[0]) == heads(&ws[1]) {
            return;
        }
        now += HEARTBEAT_MS * 3;
        for i in 0..2 {
            let out = engines[i].tick(&mut ws[i], now);
            flight.extend(out.frames.into_iter().map(|f| (1 - i, f.encode())));
        }
    }
    panic!(
        "seed {seed}: the peers did not converge after the network healed ({:?} / {:?})",
        engines[0].status(),
        engines[1].status()
    );
}

/// `cue-sim --seed 31 --steps 67`: bo edited a file and deleted it; the
/// tombstone reached ana before bo's edit did. ana saved the file, and the
/// next checkout removed it from her disk: the tombstone named a change she
/// did not hold, so none of her changes counted as beyond it. Now the
/// deletion waits for the missing change, and ana's edit, concurrent with the
/// deletion, keeps the file everywhere.
#[test]
fn a_save_is_not_removed_by_a_tombstone_that_names_changes_still_on_their_way() {
    let (mut a, mut disk_a, mut b, mut disk_b) = ana_and_bo(4, "docs/e.md", "one\n");

    write(&mut b, &mut disk_b, "docs/e.md", "one\nbo\n", 3_000);
    disk_b.remove("docs/e.md");
    b.record_removal("docs/e.md", 3_500)
        .unwrap_or_else(|e| panic!("{e}"));

    sync_index(&mut b, &mut a);
    a.commit().unwrap_or_else(|e| panic!("{e}"));
    write(&mut a, &mut disk_a, "docs/e.md", "one\nana\n", 4_000);
    assert!(checkout(&mut a, &mut disk_a).is_empty());
    assert_eq!(
        disk_a.get("docs/e.md").map(String::as_str),
        Some("one\nana\n"),
        "ana's save was removed from her disk"
    );

    exchange(&mut a, &mut b);
    assert!(checkout(&mut a, &mut disk_a).is_empty());
    assert!(checkout(&mut b, &mut disk_b).is_empty());
    assert_eq!(disk_a, disk_b);
    let merged = &disk_a["docs/e.md"];
    assert!(merged.contains("ana") && merged.contains("bo"), "{merged}");
}

/// `cue-sim --seed 3058`: a file that lost a same-path race is placed at
/// `a.conflict-<6 hex>.md`, or at `a.conflict-<32 hex>.md` when a file has
/// the short name as its own path. A user then saved a file under that long
/// name too (an edit detached from the conflict copy is recorded at the name
/// it had), and the layout gave both files one name: the one it dropped was
/// removed from disk, with a line saved in it. A generated name now never
/// takes a name in use.
#[test]
fn a_conflict_copy_never_takes_the_name_of_a_file_saved_under_it() {
    let (mut a, mut disk_a, mut b, mut disk_b) = ana_and_bo(6, "docs/x.md", "x\n");
    let bundle = a.export_bundle().unwrap_or_else(|e| panic!("{e}"));
    let mut rng = StdRng::seed_from_u64(7);
    let mut c = Workspace::clone_from_bundle(MemStore::default(), &bundle, "cy", &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut disk_c = Disk::new();
    assert!(checkout(&mut c, &mut disk_c).is_empty());

    write(&mut a, &mut disk_a, "docs/a.md", "ana's a\n", 3_000);
    write(&mut b, &mut disk_b, "docs/a.md", "bo's a\n", 3_000);
    exchange(&mut a, &mut b);
    assert!(checkout(&mut a, &mut disk_a).is_empty());
    let copy = disk_a
        .keys()
        .find(|k| k.starts_with("docs/a.conflict-"))
        .cloned()
        .unwrap_or_else(|| panic!("no conflict copy: {disk_a:?}"));
    let (loser, _) = a
        .local_by_path(&copy)
        .unwrap_or_else(|| panic!("{copy} is not recorded"));
    let long = format!("docs/a.conflict-{}.md", loser.to_hex());

    // cy, who has not seen the race, saves files under both names.
    write(&mut c, &mut disk_c, &copy, "cy's short one\n", 4_000);
    write(&mut c, &mut disk_c, &long, "cy's long one\n", 4_000);
    exchange(&mut a, &mut c);
    exchange(&mut a, &mut b);
    for (ws, disk) in [
        (&mut a, &mut disk_a),
        (&mut b, &mut disk_b),
        (&mut c, &mut disk_c),
    ] {
        assert!(checkout(ws, disk).is_empty());
    }
    assert_eq!(disk_a, disk_b);
    assert_eq!(disk_a, disk_c);
    let all: String = disk_a.values().map(String::as_str).collect();
    for text in ["ana's a", "bo's a", "cy's short one", "cy's long one"] {
        assert!(all.contains(text), "{text:?} was lost: {disk_a:?}");
    }
}
