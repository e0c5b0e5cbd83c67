//! The inflate guard (`cue_core::guard`): everything automerge itself writes
//! passes it, and hand-made bombs do not.
//!
//! Random documents are generated from fixed seeds; a failure names its seed,
//! and `GUARD_SEEDS=n` runs more of them.

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ROOT};
use cue_core::doc::{DocError, FileDoc, IndexDoc, SyncState};
use cue_core::guard::{check_chunks, check_sync_message, LimitError};
use cue_core::limits::{MAX_INFLATED_BYTES, MAX_OPS_PER_DOC};
use cue_core::FileId;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn seeds() -> u64 {
    std::env::var("GUARD_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

fn word(rng: &mut StdRng) -> String {
    let n = rng.random_range(1..12);
    (0..n)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// A few random edits of every kind automerge has, committed in several changes.
fn edit(doc: &mut AutoCommit, rng: &mut StdRng, steps: usize) {
    let text = match doc.get(ROOT, "text").ok().flatten() {
        Some((_, id)) => id,
        None => doc.put_object(ROOT, "text", ObjType::Text).expect("text"),
    };
    let list = match doc.get(ROOT, "list").ok().flatten() {
        Some((_, id)) => id,
        None => doc.put_object(ROOT, "list", ObjType::List).expect("list"),
    };
    for _ in 0..steps {
        match rng.random_range(0..7) {
            0 | 1 => {
                let len = doc.length(&text);
                let pos = rng.random_range(0..=len);
                let del = if len > pos && rng.random_bool(0.3) {
                    rng.random_range(0..(len - pos).min(20)) as isize
                } else {
                    0
                };
                let insert: String = (0..rng.random_range(0..200))
                    .map(|_| if rng.random_bool(0.1) { 'é' } else { 'x' })
                    .collect();
                doc.splice_text(&text, pos, del, &insert).expect("splice");
            }
            2 => {
                let k = word(rng);
                let v = rng.random::<i64>();
                doc.put(ROOT, k.as_str(), v).expect("put");
            }
            3 => {
                let len = doc.length(&list);
                let at = rng.random_range(0..=len);
                doc.insert(&list, at, word(rng)).expect("insert");
            }
            4 => {
                let len = doc.length(&list);
                if len > 0 {
                    doc.delete(&list, rng.random_range(0..len)).expect("delete");
                }
            }
            5 => {
                let m = doc
                    .put_object(ROOT, word(rng).as_str(), ObjType::Map)
                    .expect("map");
                for _ in 0..rng.random_range(0..5) {
                    doc.put(&m, word(rng).as_str(), rng.random::<f64>())
                        .expect("put f64");
                }
            }
            _ => {
                doc.commit();
            }
        }
    }
    doc.commit();
}

/// Two replicas that edited concurrently, from one seed.
fn pair(seed: u64) -> (AutoCommit, AutoCommit) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut a = AutoCommit::new().with_actor(ActorId::from(rng.random::<[u8; 16]>()));
    edit(&mut a, &mut rng, 40);
    let mut b = a.fork().with_actor(ActorId::from(rng.random::<[u8; 16]>()));
    let (na, nb) = (rng.random_range(0..80), rng.random_range(0..80));
    edit(&mut a, &mut rng, na);
    edit(&mut b, &mut rng, nb);
    (a, b)
}

fn pass(seed: u64, what: &str, bytes: &[u8]) {
    if let Err(e) = check_chunks(bytes) {
        panic!("seed {seed}: the guard refused automerge's own {what}: {e}");
    }
}

#[test]
fn automerge_output_always_passes() {
    for seed in 0..seeds() {
        let (mut a, mut b) = pair(seed);
        pass(seed, "save", &a.save());
        pass(seed, "save_nocompress", &a.save_nocompress());
        pass(seed, "save_after", &a.save_after(&[]));
        let heads = b.get_heads();
        edit(&mut b, &mut StdRng::seed_from_u64(seed ^ 0xff), 30);
        pass(seed, "save_after(heads)", &b.save_after(&heads));
        pass(seed, "save_incremental", &b.save_incremental());
        for c in a.get_changes(&[]) {
            pass(seed, "change bytes", &c.clone().bytes());
            pass(seed, "raw change bytes", c.raw_bytes());
        }
        // Two documents syncing: every message passes, and they converge.
        let (mut sa, mut sb) = (automerge::sync::State::new(), automerge::sync::State::new());
        for round in 0..20 {
            let ma = a.sync().generate_sync_message(&mut sa);
            let mb = b.sync().generate_sync_message(&mut sb);
            if ma.is_none() && mb.is_none() {
                break;
            }
            if let Some(m) = ma {
                let bytes = m.encode();
                if let Err(e) = check_sync_message(&bytes) {
                    panic!("seed {seed} round {round}: a sync message was refused: {e}");
                }
                let m = automerge::sync::Message::decode(&bytes).expect("decodes");
                b.sync()
                    .receive_sync_message(&mut sb, m)
                    .expect("b receives");
            }
            if let Some(m) = mb {
                let bytes = m.encode();
                if let Err(e) = check_sync_message(&bytes) {
                    panic!("seed {seed} round {round}: a sync message was refused: {e}");
                }
                let m = automerge::sync::Message::decode(&bytes).expect("decodes");
                a.sync()
                    .receive_sync_message(&mut sa, m)
                    .expect("a receives");
            }
        }
        assert_eq!(
            a.get_heads(),
            b.get_heads(),
            "seed {seed}: did not converge"
        );
        pass(seed, "merged save", &a.save());
    }
}

#[test]
fn usage_counts_what_automerge_holds() {
    let (mut a, _) = pair(7);
    let usage = check_chunks(&a.save()).expect("passes");
    assert_eq!(usage.ops, a.stats().num_ops, "op count");
    assert_eq!(usage.changes, a.stats().num_changes, "change count");
    let usage = check_chunks(&a.save_after(&[])).expect("passes");
    assert_eq!(usage.changes, a.stats().num_changes);
    // A change's deletions are operations there, successors in the document.
    assert!(usage.ops >= a.stats().num_ops);
}

// ---- hand-made bombs -------------------------------------------------------------------

mod bombs;
use bombs::{deflate_bombs, run_bombs, uleb};

#[test]
fn deflate_bombs_are_refused() {
    for (name, bomb) in deflate_bombs() {
        assert!(bomb.len() < 1 << 20, "{name}: {} bytes", bomb.len());
        match check_chunks(&bomb) {
            Err(LimitError::Inflated { limit, .. }) => assert_eq!(limit, MAX_INFLATED_BYTES),
            other => panic!("{name}: expected an inflate refusal, got {other:?}"),
        }
    }
}

#[test]
fn run_length_bombs_are_refused() {
    for (name, bomb) in run_bombs() {
        match check_chunks(&bomb) {
            Err(LimitError::Ops { limit, .. }) => assert_eq!(limit, MAX_OPS_PER_DOC, "{name}"),
            Err(LimitError::Strings { .. }) => assert_eq!(name, "document strings"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn refusals_say_what_and_why_in_one_line() {
    for (name, bomb) in deflate_bombs().into_iter().chain(run_bombs()) {
        let e = match check_chunks(&bomb) {
            Err(e) => e.to_string(),
            Ok(u) => panic!("{name} passed: {u:?}"),
        };
        assert!(e.starts_with("refused "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("MAX_"), "{name}: names no limit: {e}");
    }
}

#[test]
fn documents_refuse_bombs_and_stay_as_they_were() {
    let author = cue_core::doc::Author {
        member: "ana",
        now_ms: 1_700_000_000_000,
    };
    let mut file =
        FileDoc::create(ActorId::from([1; 16]), FileId([1; 16]), "hello\n", &author).expect("file");
    let heads = file.heads();
    for (name, bomb) in deflate_bombs().into_iter().chain(run_bombs()) {
        assert!(
            matches!(file.apply(&bomb), Err(DocError::Limit(_))),
            "{name}"
        );
        assert_eq!(file.heads(), heads, "{name}");
        assert!(matches!(
            FileDoc::load(&[file.save(), bomb.clone()], ActorId::from([2; 16])),
            Err(DocError::Limit(_))
        ));
    }
    let mut index = IndexDoc::create(
        ActorId::from([1; 16]),
        cue_core::WorkspaceId([2; 16]),
        "team",
        &author,
    )
    .expect("index");
    for (name, bomb) in deflate_bombs() {
        assert!(
            matches!(index.preview(&bomb), Err(DocError::Limit(_))),
            "{name}"
        );
        assert!(
            matches!(index.apply(&bomb), Err(DocError::Limit(_))),
            "{name}"
        );
    }
    assert_eq!(file.render().expect("renders"), "hello\n");
}

/// A sync message by hand: no heads or needs, the given haves (last-sync
/// hashes none, bloom bytes), the given change entries, flags.
fn sync_message(blooms: &[Vec<u8>], changes: &[Vec<u8>]) -> Vec<u8> {
    // One head this peer does not have (with none, automerge sends a whole
    // document instead of consulting the bloom filter), no needs.
    let mut out = vec![0x43, 1];
    out.extend_from_slice(&[0xab; 32]);
    out.push(0);
    uleb(&mut out, blooms.len() as u64);
    for b in blooms {
        out.push(0);
        uleb(&mut out, b.len() as u64);
        out.extend_from_slice(b);
    }
    uleb(&mut out, changes.len() as u64);
    for c in changes {
        uleb(&mut out, c.len() as u64);
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&[2, 2, 0x84]);
    out
}

#[test]
fn hostile_sync_messages_are_refused() {
    let zero_bits = vec![1, 0, 1]; // one entry, no bits per entry, one probe
    let many_probes = {
        let mut b = vec![1, 10];
        uleb(&mut b, u64::from(u32::MAX));
        b.extend_from_slice(&[0xff; 2]);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bloom without bits", sync_message(&[zero_bits], &[])),
        ("bloom with 2^32 probes", sync_message(&[many_probes], &[])),
        ("many haves", sync_message(&vec![Vec::new(); 1000], &[])),
        (
            "empty change entries",
            sync_message(&[], &vec![Vec::new(); 10]),
        ),
        (
            "deflate bomb inside",
            sync_message(&[], &[deflate_bombs().remove(0).1]),
        ),
        (
            "run bomb inside",
            sync_message(&[], &[run_bombs().remove(0).1]),
        ),
        ("not a sync message", vec![0x41, 0, 0]),
    ];
    for (name, m) in &cases {
        assert!(check_sync_message(m).is_err(), "{name} passed");
    }
    // A count of a hundred million entries is refused before anything is read.
    let mut huge = vec![0x42, 0, 0, 0];
    uleb(&mut huge, 100_000_000);
    assert!(matches!(
        check_sync_message(&huge),
        Err(LimitError::Count { .. })
    ));
}

/// automerge 0.12 divides by the bloom filter's size when it next replies: a
/// filter with entries and no bits crashed the receiver's next sync message.
#[test]
fn a_bloom_filter_without_bits_no_longer_crashes_the_reply() {
    let author = cue_core::doc::Author {
        member: "ana",
        now_ms: 1_700_000_000_000,
    };
    let mut file =
        FileDoc::create(ActorId::from([1; 16]), FileId([1; 16]), "hello\n", &author).expect("file");
    let evil = sync_message(&[vec![1, 0, 1]], &[]);
    // Without the guard: automerge takes the message, then panics replying.
    let mut raw = AutoCommit::new();
    raw.put(ROOT, "a", 1).expect("put");
    raw.commit();
    let mut raw_state = automerge::sync::State::new();
    let m = automerge::sync::Message::decode(&evil).expect("automerge decodes it");
    raw.sync()
        .receive_sync_message(&mut raw_state, m)
        .expect("automerge accepts it");
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        raw.sync().generate_sync_message(&mut raw_state)
    }));
    assert!(reply.is_err(), "automerge 0.12 no longer panics here");
    let mut state = SyncState::new();
    assert!(matches!(
        file.sync_receive(&mut state, &evil),
        Err(DocError::Limit(LimitError::Bloom { .. }))
    ));
    assert!(file.sync_generate(&mut state).is_some());
}
