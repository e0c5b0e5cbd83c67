//! What the integration tests share: a user's disk in memory, and the core's
//! checkout over it.

// Each test crate uses only some of these.
#![allow(dead_code)]

use std::collections::BTreeMap;

use cue_core::disk::{MemFs, Stat};
use cue_core::store::MemStore;
use cue_core::{SyncPath, Workspace};

/// A peer's files: path to text.
pub type Disk = BTreeMap<String, String>;

/// What the real file layer records for a file of this text.
pub fn stat(text: &str) -> Stat {
    Stat {
        size: text.len() as u64,
        mtime_ns: 0,
    }
}

pub fn p(s: &str) -> SyncPath {
    SyncPath::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes `ws`'s plan to `disk` with the core's own checkout (over a
/// [`MemFs`] holding the same files), and commits. Returns the operations it
/// refused. No peer in these tests is hostile, so the plan must place every
/// file.
pub fn checkout(ws: &mut Workspace<MemStore>, disk: &mut Disk) -> Vec<String> {
    let mut fs = MemFs::new();
    fs.set_texts(disk);
    let applied = cue_core::disk::checkout(ws, &mut fs, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("checkout: {e}"));
    ws.commit().unwrap_or_else(|e| panic!("commit: {e}"));
    assert!(applied.unplaced.is_empty(), "{:?}", applied.unplaced);
    *disk = fs.texts();
    applied.refused.iter().map(|r| r.to_string()).collect()
}
