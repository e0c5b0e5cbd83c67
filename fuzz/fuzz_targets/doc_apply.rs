//! Arbitrary remote changes applied to one document, then everything our code
//! reads from it. A peer (or a relay, or a disk) can hand us any bytes as "the
//! changes to file X" or "the changes to the index"; `apply` may refuse them,
//! but nothing may panic, and whatever is accepted must read back the same way
//! after a save and reload (a restart must not change what gets written).
//!
//! Input: byte 0 steers, byte 1 is the hostile peer's actor, the rest is the payload.
//! - bit 0: the index document (else a file document);
//! - bits 1-2: which document to start from (one of the fixture's, or an
//!   empty one that has not received its creator's change yet);
//! - bit 3: the payload is raw change bytes (automerge chunk checksums fixed
//!   up unless bit 4 is set); otherwise it decodes to hostile ops
//!   (`cue_fuzz::apply_ops`) made on the hostile peer's copy, and their changes
//!   are what gets applied;
//! - bit 5: afterwards, edit the document as the local user would (record a
//!   file's new text; add, rename, delete and restore a file in the index).
#![no_main]

use arbitrary::Unstructured;
use automerge::{ActorId, AutoCommit};
use cue_core::doc::{Author, FileDoc, IndexDoc};
use cue_core::store::DocKey;
use cue_core::FileId;
use cue_fuzz::{apply_ops, attacker, fix_checksums, fixture, run};
use libfuzzer_sys::fuzz_target;

const AUTHOR: Author<'static> = Author {
    member: "local",
    now_ms: 5_000_000,
};

fn local_actor() -> ActorId {
    ActorId::from([0x42; 16])
}

/// The bytes to apply: raw (checksums fixed) or the changes of hostile ops.
fn changes(base: Option<&[u8]>, steer: u8, actor: u8, payload: &[u8]) -> Option<Vec<u8>> {
    if steer & 8 != 0 {
        let mut raw = payload.to_vec();
        if steer & 16 == 0 {
            fix_checksums(&mut raw);
        }
        return Some(raw);
    }
    attacker(|| {
        let mut doc = match base {
            Some(b) => AutoCommit::load(b).expect("fixture document loads"),
            None => AutoCommit::new(),
        }
        .with_actor(ActorId::from([actor | 0x80; 16]));
        let heads = doc.get_heads();
        apply_ops(&mut doc, &mut Unstructured::new(payload));
        doc.save_after(&heads)
    })
}

fn read_file(doc: &mut FileDoc) -> Option<String> {
    let ready = doc.is_ready();
    let content = doc.content();
    let fields = doc.fields();
    let _ = doc.frontmatter_broken();
    let _ = doc.last_modified_by();
    let _ = doc.version();
    let _ = doc.changes_since(&[]);
    let rendered = doc.render();
    if ready {
        assert!(
            content.is_ok() && fields.is_ok(),
            "a ready document failed to read"
        );
    }
    // Rendering is a pure function of the document.
    let again = doc.render();
    assert_eq!(
        rendered.as_ref().ok(),
        again.as_ref().ok(),
        "render is not deterministic"
    );
    rendered.ok()
}

fn file_target(steer: u8, actor: u8, payload: &[u8]) {
    let fx = fixture();
    let files: Vec<Vec<u8>> = fx
        .base_docs()
        .into_iter()
        .filter(|(k, _)| matches!(k, DocKey::File(_)))
        .map(|(_, b)| b)
        .collect();
    let pick = usize::from((steer >> 1) & 3);
    let base = files.get(pick).filter(|_| pick < 3).map(Vec::as_slice);
    let mut doc = match base {
        Some(b) => FileDoc::load(&[b.to_vec()], local_actor()).expect("fixture file loads"),
        None => FileDoc::empty(local_actor()),
    };
    let before = doc.heads();
    let Some(bytes) = changes(base, steer, actor, payload) else {
        return;
    };
    let applied = doc.apply(&bytes);
    let rendered = read_file(&mut doc);
    let _ = doc.has_all(&before);
    let _ = doc.has_changes_beyond(&before);
    if applied.is_ok() {
        // What a restart reads back from storage renders the same bytes.
        let heads = doc.heads();
        let saved = doc.save();
        let mut reloaded = FileDoc::load(&[saved], local_actor()).expect("our own save reloads");
        assert_eq!(reloaded.heads(), heads, "save/load lost changes");
        assert_eq!(
            read_file(&mut reloaded),
            rendered,
            "reloaded document renders differently"
        );
        // A snapshot followed by incremental chunks, as the store keeps it.
        let chunks = match base {
            Some(b) => vec![b.to_vec(), bytes.clone()],
            None => vec![bytes.clone()],
        };
        if let Ok(mut chunked) = FileDoc::load(&chunks, local_actor()) {
            assert_eq!(chunked.heads(), heads, "chunked load differs from apply");
        }
    }
    if steer & 32 != 0 && doc.is_ready() {
        let text = match &rendered {
            Some(r) => format!("{r}\nlocal line\n"),
            None => "---\ntitle: local\ntags: [a, b]\n---\nlocal\n".to_string(),
        };
        if doc.record(&text, &AUTHOR).is_ok() {
            read_file(&mut doc);
        }
    }
}

fn index_target(steer: u8, actor: u8, payload: &[u8]) {
    let fx = fixture();
    let base: Option<Vec<u8>> = match (steer >> 1) & 3 {
        0 | 1 => Some(fx.base_docs().swap_remove(0).1),
        2 => cue_core::bundle::Bundle::decode(&fx.bob_bundle)
            .ok()
            .and_then(|b| b.docs.into_iter().find(|(k, _)| *k == DocKey::Index))
            .map(|(_, b)| b),
        _ => None,
    };
    let mut index = match &base {
        Some(b) => IndexDoc::load(&[b.clone()], local_actor()).expect("fixture index loads"),
        None => IndexDoc::empty(local_actor()),
    };
    let Some(bytes) = changes(base.as_deref(), steer, actor, payload) else {
        return;
    };
    // What an import does first: look at the merged index without keeping it.
    if let Ok(preview) = index.preview(&bytes) {
        let _ = preview.meta();
        let _ = preview.files();
    }
    let applied = index.apply(&bytes);
    let meta = index.meta();
    let files = index.files();
    if let Ok(files) = &files {
        for entry in files {
            assert_eq!(index.file(entry.id).ok().flatten().as_ref(), Some(entry));
            let _ = cue_core::SyncPath::parse(&entry.path);
        }
    }
    let _ = index.member_of(&ActorId::from([actor | 0x80; 16]).to_hex_string());
    let _ = index.changes_since(&[]);
    if applied.is_ok() {
        let heads = index.heads();
        let saved = index.save();
        if let Ok(mut reloaded) = IndexDoc::load(&[saved], local_actor()) {
            assert_eq!(reloaded.heads(), heads, "save/load lost changes");
            assert_eq!(reloaded.files().ok(), files.as_ref().ok().cloned());
            assert_eq!(reloaded.meta().ok(), meta.as_ref().ok().cloned());
        }
    }
    if steer & 32 != 0 {
        let _ = index.ensure_registered(&AUTHOR);
        let id = FileId([actor; 16]);
        let _ = index.add_file(id, "docs/local.md", &AUTHOR);
        if let Ok(files) = index.files() {
            if let Some(first) = files.first() {
                let heads = vec![];
                let _ = index.rename(first.id, "docs/renamed.md", &AUTHOR);
                let _ = index.delete(first.id, &heads, &AUTHOR);
                let _ = index.restore(first.id, Some("docs/back.md"), &AUTHOR);
            }
        }
        let _ = index.files();
        let _ = index.meta();
    }
}

fuzz_target!(init: cue_fuzz::let_guarded_automerge_panics_unwind(), |input: &[u8]| {
    let [steer, actor, payload @ ..] = input else {
        return;
    };
    run(|| {
        if steer & 1 == 0 {
            file_target(*steer, *actor, payload);
        } else {
            index_target(*steer, *actor, payload);
        }
    });
});
