//! Bundles from a hostile or broken peer. `Bundle::decode` on arbitrary bytes,
//! then `import_bundle` into a real workspace (alice's, from the fixture in
//! src/lib.rs) and `plan()`: nothing panics, a refused import leaves a
//! workspace that still plans, and every planned write or removal is at a
//! valid `SyncPath` (relative, under cards/ docs/ project/, no `..`), at most
//! once per path. Applying the plan and planning again gives nothing to do.
//!
//! Input: byte 0 steers, the rest is the payload.
//! - bit 0 clear: the payload is the bundle. When it decodes, each entry's
//!   automerge chunk checksums are fixed up (unless bit 2 is set) so that
//!   mutations reach automerge's decoders instead of its checksum check.
//! - bit 0 set: a real bundle (byte 1 picks alice's, bob's or alice's later
//!   export) with one document (byte 2 picks which; bit 7 of byte 2 adds it
//!   under a new file id instead) replaced by a copy edited by the hostile
//!   ops the rest of the payload decodes to (`cue_fuzz::apply_ops`): paths
//!   like `../x.md`, fields of the wrong type, deep nesting, odd tombstones.
//! - bit 1 set: bob's bundle is imported first, so the attack lands on a
//!   workspace that already merged concurrent work.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Unstructured;
use cue_core::bundle::Bundle;
use cue_core::store::DocKey;
use cue_core::workspace::{DiskOp, Stat, WorkspaceError};
use cue_core::{FileId, SyncPath};
use cue_fuzz::{apply_ops, attacker, fix_checksums, fixture, peer_copy, run};
use libfuzzer_sys::fuzz_target;

fn hostile_bundle(payload: &[u8]) -> Option<Vec<u8>> {
    let fx = fixture();
    let (&pick, rest) = payload.split_first()?;
    let (&which, rest) = rest.split_first()?;
    let (&actor, rest) = rest.split_first()?;
    let seed = match pick % 3 {
        0 => &fx.alice_bundle,
        1 => &fx.bob_bundle,
        _ => &fx.alice_later_bundle,
    };
    let mut bundle = Bundle::decode(seed).ok()?;
    let at = usize::from(which & 0x7f) % bundle.docs.len();
    let bytes = attacker(|| {
        let mut doc = peer_copy(&bundle.docs[at].1, actor)?;
        apply_ops(&mut doc, &mut Unstructured::new(rest));
        Some(doc.save())
    })??;
    if which & 0x80 != 0 {
        let mut id = [0xee; 16];
        id[0] = actor;
        bundle.docs.push((DocKey::File(FileId(id)), bytes));
    } else {
        bundle.docs[at].1 = bytes;
    }
    Some(bundle.encode())
}

/// Each document of a bundle with its heads: what the bundle holds, whatever
/// the bytes of its encoding.
fn doc_heads(bundle: &[u8]) -> Vec<(DocKey, Vec<automerge::ChangeHash>)> {
    let mut out: Vec<_> = Bundle::decode(bundle)
        .expect("bundle decodes")
        .docs
        .into_iter()
        .map(|(key, bytes)| {
            let mut doc = automerge::AutoCommit::load(&bytes).expect("document loads");
            (key, doc.get_heads())
        })
        .collect();
    out.sort_by_key(|(k, _)| k.as_string());
    out
}

fn check_plan(ws: &mut cue_core::Workspace<cue_core::store::MemStore>, after_import: bool) {
    let plan = match ws.plan() {
        Ok(plan) => plan,
        Err(e) if !after_import => return drop(e),
        Err(e) => panic!("an accepted bundle left a workspace that cannot plan: {e}"),
    };
    let mut paths = BTreeSet::new();
    for op in &plan.ops {
        let path = match op {
            DiskOp::Write { path, .. } | DiskOp::Remove { path, .. } => path,
        };
        let raw = path.as_str();
        assert_eq!(
            SyncPath::parse(raw).as_ref(),
            Ok(path),
            "planned path {raw:?} is not valid"
        );
        assert!(!raw.starts_with('/') && !raw.contains('\\') && !raw.contains('\0'));
        assert!(raw
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."));
        assert!(
            paths.insert(raw.to_string()),
            "two ops for {raw:?} in one plan: {:?}",
            plan.ops
        );
    }
    for op in &plan.ops {
        let st = match op {
            DiskOp::Write { bytes, .. } => Stat {
                size: bytes.len() as u64,
                mtime_ns: 1,
            },
            DiskOp::Remove { .. } => Stat::default(),
        };
        ws.applied(op, st).expect("recording an applied op");
    }
    let again = ws.plan().expect("planning again");
    assert!(
        again.ops.is_empty(),
        "a second plan after applying the first still has work: {:?}\nfirst: {:?}",
        again.ops,
        plan.ops
    );
}

fuzz_target!(init: cue_fuzz::let_guarded_automerge_panics_unwind(), |input: &[u8]| run(|| one(input)));

fn one(input: &[u8]) {
    let Some((&steer, payload)) = input.split_first() else {
        return;
    };
    let fx = fixture();
    let mut ws = fx.open();
    if steer & 2 != 0 {
        ws.import_bundle(&fx.bob_bundle)
            .expect("fixture bundle imports");
    }

    let bytes = if steer & 1 == 0 {
        match Bundle::decode(payload) {
            Ok(bundle) => {
                // Decoding is exact: what decodes re-encodes to the same bundle.
                assert_eq!(Bundle::decode(&bundle.encode()).as_ref(), Ok(&bundle));
                let mut bundle = bundle;
                if steer & 4 == 0 {
                    for (_, doc) in &mut bundle.docs {
                        fix_checksums(doc);
                    }
                }
                bundle.encode()
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                payload.to_vec()
            }
        }
    } else {
        match hostile_bundle(payload) {
            Some(b) => b,
            None => return,
        }
    };

    let imported = ws.import_bundle(&bytes);
    if let Err(e) = &imported {
        assert!(!e.to_string().is_empty());
        if Bundle::decode(&bytes).is_err() {
            assert!(matches!(e, WorkspaceError::Bundle(_)), "{e}");
        }
    }
    if imported.is_err() && steer & 2 == 0 {
        // "Otherwise nothing is imported" (docs/FORMAT.md): a refused bundle
        // leaves every document as it was, including the ones in memory that
        // the next export or edit would save.
        let exported = ws.export_bundle().expect("export after a refused import");
        assert_eq!(
            doc_heads(&exported),
            doc_heads(&fx.alice_bundle),
            "a refused import changed the workspace ({})",
            imported
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        );
    }
    check_plan(&mut ws, imported.is_ok());
    // The rest of what a user can run after an import.
    let _ = ws.files("");
    let _ = ws.trash(i64::MAX / 2);
    let _ = ws.activity(0);
    let _ = ws.missing_docs();
    if let Ok(out) = ws.export_bundle() {
        Bundle::decode(&out).expect("our own export decodes");
    }
}
