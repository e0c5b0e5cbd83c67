//! The end-of-scenario checker, run once everything healed and went quiet.
//!
//! 1. Every peer is up and holds byte-identical files.
//! 2. Every tombstoned file is restorable: peer 0 restores the whole trash
//!    (with retention stretched, since long outages let tombstones expire;
//!    expiry only hides a file from the trash, the document is still there),
//!    the restores sync to everyone, and the disks are identical again.
//! 3. Every marker a user saved is then in some file, and the tags are
//!    exactly those added minus those removed.
//! 4. Every peer's engine counts every local edit as delivered.
//!
//! Paths are checked as they are planned ([`crate::peer::Peer::checkout`]):
//! every DiskOp path must be a valid workspace path.

use std::collections::BTreeSet;

use cue_core::workspace::{content_hash, DiskOp};

use crate::edits::tags_of;
use crate::peer::core_err;
use crate::sim::Sim;

/// Retention for the restore-everything pass (100 years).
const KEEP_DAYS: u32 = 36_500;

pub(crate) fn check(sim: &mut Sim) -> Result<(), String> {
    same_disks(sim, "after healing")?;
    for p in &sim.peers {
        if !p.pending.is_empty() {
            return Err(format!(
                "p{}: user changes never recorded: {:?}",
                p.index, p.pending
            ));
        }
    }
    restore_everything(sim)?;
    sim.quiesce()?;
    same_disks(sim, "after restoring the trash")?;

    let texts = sim.peers[0].disk.texts();
    let all: String = texts.values().map(String::as_str).collect();
    let lost: Vec<&String> = sim
        .oracle
        .markers
        .iter()
        .filter(|m| !all.contains(m.as_str()))
        .collect();
    if !lost.is_empty() {
        return Err(format!(
            "{} of {} saved edits are lost (markers <m{{peer}}-{{n}}> not in any file): {:?}",
            lost.len(),
            sim.oracle.markers.len(),
            lost.iter().take(8).collect::<Vec<_>>()
        ));
    }
    let tags: BTreeSet<String> = texts.values().flat_map(|t| tags_of(t)).collect();
    let want = sim.oracle.expected_tags();
    let missing: Vec<&String> = want.difference(&tags).take(8).collect();
    let extra: Vec<&String> = tags
        .difference(&want)
        .filter(|t| !sim.oracle.detached_tags.contains(*t))
        .take(8)
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(format!(
            "tags differ from adds minus removes: missing {missing:?}, present though removed {extra:?}"
        ));
    }
    for p in &sim.peers {
        if let Some(node) = &p.node {
            let unsent = node.engine.status().unsent;
            if unsent != 0 {
                return Err(format!(
                    "p{}: the engine still counts {unsent} documents with undelivered edits after everyone converged",
                    p.index
                ));
            }
        }
    }
    Ok(())
}

/// All peers up, with the same files byte for byte.
fn same_disks(sim: &mut Sim, when: &str) -> Result<(), String> {
    if let Some(p) = sim.peers.iter().find(|p| p.node.is_none()) {
        return Err(format!("p{} is still down {when}", p.index));
    }
    let Some((i, path)) = first_difference(sim) else {
        return Ok(());
    };
    let mut msg = format!(
        "p{i} differs from p0 {when} at {path}: p0 {}, p{i} {}",
        describe(sim.peers[0].disk.text(&path).as_ref()),
        describe(sim.peers[i].disk.text(&path).as_ref())
    );
    for k in [0, i] {
        msg.push_str(&format!("; p{k}: {}", explain(sim, k, &path)));
    }
    Err(msg)
}

/// The first peer whose disk differs from peer 0's, and the first path where.
fn first_difference(sim: &Sim) -> Option<(usize, String)> {
    let first = sim.peers[0].disk.texts();
    for p in &sim.peers {
        let disk = p.disk.texts();
        if disk == first {
            continue;
        }
        let paths: BTreeSet<&String> = disk.keys().chain(first.keys()).collect();
        for path in paths {
            if first.get(path) != disk.get(path) {
                return Some((p.index, path.clone()));
            }
        }
    }
    None
}

/// What a peer's workspace says about `path`: the local record there, whether
/// it matches the disk, and what the next plan would do.
fn explain(sim: &mut Sim, k: usize, path: &str) -> String {
    let disk = sim.peers[k]
        .disk
        .text(path)
        .map(|t| content_hash(t.as_bytes()));
    let Some(node) = sim.peers[k].node.as_mut() else {
        return "down".into();
    };
    let records: Vec<String> = node
        .ws
        .local_files()
        .iter()
        .filter(|(_, f)| f.path == path)
        .map(|(id, f)| {
            format!(
                "record {} (hash {})",
                &id.to_hex()[..6],
                if Some(f.hash) == disk {
                    "= disk"
                } else {
                    "!= disk"
                }
            )
        })
        .collect();
    let placed: Vec<String> = node
        .ws
        .entries()
        .unwrap_or_default()
        .iter()
        .filter(|e| e.path == path)
        .map(|e| {
            format!(
                "index {} created {} {}",
                &e.id.to_hex()[..6],
                e.created_at_ms,
                if e.deleted.is_some() {
                    "deleted"
                } else {
                    "live"
                }
            )
        })
        .collect();
    let plan: Vec<String> = match node.ws.plan(&|_| true) {
        Ok(plan) => plan
            .ops
            .iter()
            .map(|op| match op {
                DiskOp::Write { file, path, .. } => format!("write {} {path}", &file.to_hex()[..6]),
                DiskOp::Remove { file, path, .. } => {
                    format!("remove {} {path}", &file.to_hex()[..6])
                }
            })
            .collect(),
        Err(e) => vec![format!("plan fails: {e}")],
    };
    format!("{records:?}, {placed:?}, plan {plan:?}")
}

fn describe(text: Option<&String>) -> String {
    match text {
        None => "has no such file".into(),
        Some(t) => format!("{:?}", t.chars().take(400).collect::<String>()),
    }
}

/// Peer 0 restores every deleted file; each restore must succeed.
fn restore_everything(sim: &mut Sim) -> Result<(), String> {
    let now = sim.now;
    {
        let Some(node) = sim.peers[0].node.as_mut() else {
            return Err("p0 is down".into());
        };
        node.ws.set_tombstone_days(KEEP_DAYS);
        let first = node.ws.trash(now).map_err(|e| core_err("trash", e))?;
        for t in &first {
            node.ws.restore(&t.file.to_hex(), now).map_err(|e| {
                format!("tombstoned {} ({}) is not restorable: {e}", t.path, t.file)
            })?;
            sim.stats.restores += 1;
        }
        let left = node.ws.trash(now).map_err(|e| core_err("trash", e))?;
        if !left.is_empty() {
            return Err(format!(
                "still in the trash after restoring everything: {:?}",
                left.iter().map(|t| &t.path).collect::<Vec<_>>()
            ));
        }
    }
    sim.restore_published()?;
    // A tombstone may remain only on a file that is live anyway (an edit
    // the deleting peer had not seen brings it back): it must be on disk.
    let Some(node) = sim.peers[0].node.as_mut() else {
        return Err("p0 crashed while restoring".into());
    };
    let entries = node.ws.entries().map_err(|e| core_err("entries", e))?;
    for e in entries {
        if e.deleted.is_some() && !node.ws.local_files().contains_key(&e.id) {
            return Err(format!(
                "{} ({}) is deleted, not in the trash and not on disk: unrestorable",
                e.path, e.id
            ));
        }
    }
    Ok(())
}
