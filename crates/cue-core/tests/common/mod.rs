//! What the integration tests share: a user's disk in memory, and the file
//! layer's checkout over it with the real one's never-clobber checks.

// Each test crate uses only some of these.
#![allow(dead_code)]

use std::collections::BTreeMap;

use cue_core::store::MemStore;
use cue_core::workspace::{content_hash, DiskOp, Stat};
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

/// Writes `ws`'s plan to `disk` as the real file layer does: a write only
/// over the bytes last recorded there, a removal only of those bytes. Returns
/// the operations it refused. No peer in these tests is hostile, so the plan
/// must place every file.
pub fn checkout(ws: &mut Workspace<MemStore>, disk: &mut Disk) -> Vec<String> {
    let plan = ws.plan().unwrap_or_else(|e| panic!("plan: {e}"));
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    let mut refused = Vec::new();
    for op in &plan.ops {
        match op {
            DiskOp::Write {
                path,
                bytes,
                expect,
                ..
            } => {
                let current = disk.get(path.as_str()).map(|t| content_hash(t.as_bytes()));
                if current != *expect {
                    refused.push(format!("write {path}"));
                    continue;
                }
                disk.insert(path.to_string(), bytes.clone());
                ws.applied(op, stat(bytes))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            DiskOp::Remove { path, expect, .. } => {
                let current = disk.get(path.as_str()).map(|t| content_hash(t.as_bytes()));
                if current != Some(*expect) {
                    refused.push(format!("remove {path}"));
                    continue;
                }
                disk.remove(path.as_str());
                ws.applied(op, Stat::default())
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
    refused
}
