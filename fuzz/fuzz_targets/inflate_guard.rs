//! Arbitrary bytes through the inflate guard (`cue_core::guard`), then, if it
//! accepts them, into automerge through the documents' own merge paths. The
//! guard must never panic, never report more than the limits, and never
//! accept anything that makes automerge blow past libFuzzer's memory budget
//! (`-rss_limit_mb`, `-malloc_limit_mb`): a bomb that slips through is a crash.
//!
//! Input: byte 0 steers, the rest is the payload.
//! - bits 0-1: 0 the payload is a stream of chunks; 1 it is the body of a
//!   change, sent DEFLATE-compressed as a chunk of type 2 (with the right
//!   checksum); 2 it is a sync message; 3 a sync message whose one change
//!   entry is the payload as a compressed change;
//! - bit 2: leave automerge's chunk checksums as they are (else fixed up, so
//!   mutations get past automerge's checksum test to its decoders);
//! - bit 3: merge into the index (else a file document).
#![no_main]

use std::io::Write;

use automerge::ActorId;
use cue_core::doc::{Author, FileDoc, IndexDoc, SyncState};
use cue_core::guard::{check_chunks, check_sync_message, Usage};
use cue_core::limits::{
    MAX_CHANGES_PER_DOC, MAX_EXPANDED_STRING_BYTES, MAX_INFLATED_BYTES, MAX_OPS_PER_DOC,
};
use cue_core::FileId;
use cue_fuzz::{fix_checksums, run};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn uleb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// `body` as a compressed change chunk, with the checksum automerge expects
/// (that of the uncompressed change chunk).
fn compressed_change(body: &[u8]) -> Vec<u8> {
    let mut head = vec![1];
    uleb(&mut head, body.len() as u64);
    let hash = Sha256::new().chain_update(&head).chain_update(body).finalize();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).expect("in memory");
    let data = enc.finish().expect("in memory");
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83];
    out.extend_from_slice(&hash[..4]);
    out.push(2);
    uleb(&mut out, data.len() as u64);
    out.extend_from_slice(&data);
    out
}

/// A sync message with one head, no needs or haves, and `entry` as its change.
fn sync_with(entry: &[u8]) -> Vec<u8> {
    let mut out = vec![0x43, 1];
    out.extend_from_slice(&[0xab; 32]);
    out.extend_from_slice(&[0, 0, 1]);
    uleb(&mut out, entry.len() as u64);
    out.extend_from_slice(entry);
    out.extend_from_slice(&[2, 2, 0x84]);
    out
}

fn within_limits(u: &Usage) {
    assert!(u.inflated_bytes <= MAX_INFLATED_BYTES, "{u:?}");
    assert!(u.ops <= MAX_OPS_PER_DOC, "{u:?}");
    assert!(u.changes <= MAX_CHANGES_PER_DOC, "{u:?}");
    assert!(u.expanded_string_bytes <= MAX_EXPANDED_STRING_BYTES, "{u:?}");
}

const AUTHOR: Author<'static> = Author {
    member: "local",
    now_ms: 5_000_000,
};

fn actor() -> ActorId {
    ActorId::from([0x42; 16])
}

fuzz_target!(|data: &[u8]| {
    let Some((&steer, payload)) = data.split_first() else {
        return;
    };
    cue_fuzz::let_guarded_automerge_panics_unwind();
    let sync = steer & 2 != 0;
    let bytes = match steer & 3 {
        0 => {
            let mut raw = payload.to_vec();
            if steer & 4 == 0 {
                fix_checksums(&mut raw);
            }
            raw
        }
        1 => compressed_change(payload),
        2 => payload.to_vec(),
        _ => sync_with(&compressed_change(payload)),
    };
    let index = steer & 8 != 0;
    run(|| {
        if sync {
            let Ok(usage) = check_sync_message(&bytes) else {
                return;
            };
            within_limits(&usage);
            // A document with content, so that a reply consults the bloom filters.
            let mut doc = FileDoc::create(actor(), FileId([1; 16]), "hello\n", &AUTHOR)
                .expect("a new document");
            let mut state = SyncState::new();
            let _ = doc.sync_receive(&mut state, &bytes);
            let _ = doc.sync_generate(&mut state);
            let _ = doc.render();
        } else {
            let Ok(usage) = check_chunks(&bytes) else {
                return;
            };
            within_limits(&usage);
            if index {
                let mut doc = IndexDoc::empty(actor());
                if doc.apply(&bytes).is_ok() {
                    let _ = doc.files();
                    let _ = doc.save();
                }
            } else {
                let mut doc = FileDoc::empty(actor());
                if doc.apply(&bytes).is_ok() {
                    let _ = doc.render();
                    let _ = doc.save();
                }
            }
        }
    });
});
