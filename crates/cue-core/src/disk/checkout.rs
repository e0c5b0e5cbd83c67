//! Writing what the documents say, and finishing what a crash interrupted.
//!
//! A checkout carries out the workspace's [`Plan`](crate::workspace::Plan):
//! each write or removal happens only if the file still holds the bytes this
//! peer last recorded there, so a user's unrecorded edit is never clobbered
//! (it is merged by the next scan instead). The files are written first, made
//! durable with one flush, and only then recorded: a crash in between leaves
//! writes without records, which [`settle`] finds the next time the state is
//! opened, before any scan could mistake them for the user's edits.

use std::fmt;

use crate::store::Store;
use crate::workspace::{content_hash, DiskOp, Workspace};
use crate::SyncPath;

use super::{DiskError, FileSystem, FsError, Node, Stat};

/// Why one operation of a checkout was not carried out. Each is retried by a
/// later checkout, once the next scan has recorded what the user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The user changed the file since it was last recorded.
    ChangedOnDisk,
    /// The user removed the file since it was last recorded.
    RemovedOnDisk,
    /// A file the user made is where this one would go.
    AppearedOnDisk,
    /// A folder or symbolic link is where the file would go.
    NotAFile,
    /// The file system refused (a full disk, a file the editor locked...).
    Failed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::ChangedOnDisk => "changed on disk since it was last recorded; keeping your version, it will be merged on the next run",
            Refusal::RemovedOnDisk => "removed since it was last recorded; the removal is recorded on the next run",
            Refusal::AppearedOnDisk => "a file appeared there that is not recorded yet; it will be merged on the next run",
            Refusal::NotAFile => "is a folder or a symbolic link; not replacing it",
            Refusal::Failed(why) => return write!(f, "cannot write: {why}"),
        })
    }
}

/// An operation a checkout did not carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub path: SyncPath,
    pub why: Refusal,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

/// What a checkout did.
#[derive(Debug, Default)]
pub struct Applied {
    pub written: Vec<SyncPath>,
    pub removed: Vec<SyncPath>,
    /// Operations not carried out; a later checkout tries them again.
    pub refused: Vec<Refused>,
    /// Files the plan could not place at all (an unsafe path from a peer...),
    /// newly found by this plan.
    pub unplaced: Vec<crate::workspace::Unplaced>,
    /// Files placed outside what this peer keeps (its `sync.include`), seen
    /// for the first time since they last changed: kept in the documents only.
    pub not_kept: Vec<SyncPath>,
}

/// Whether the file at `path` still holds what was last recorded there
/// (`expect`: its hash, or `None` for no file at all).
fn check_expected<F: FileSystem>(
    fs: &mut F,
    path: &SyncPath,
    expect: Option<[u8; 32]>,
) -> Result<Result<(), Refusal>, FsError> {
    Ok(match (fs.stat(path)?, expect) {
        (Some(Node::Other), _) => Err(Refusal::NotAFile),
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Refusal::RemovedOnDisk),
        (Some(Node::File(_)), None) => Err(Refusal::AppearedOnDisk),
        (Some(Node::File(_)), Some(want)) => match fs.read(path) {
            Ok(bytes) if content_hash(&bytes) == want => Ok(()),
            Ok(_) => Err(Refusal::ChangedOnDisk),
            Err(FsError::Crashed) => return Err(FsError::Crashed),
            Err(e) => Err(Refusal::Failed(e.to_string())),
        },
    })
}

/// Writes what the documents say that the disk does not show yet, never over
/// a change the user made since it was recorded. The records of what was
/// written are staged in `ws`; the caller commits them.
pub fn checkout<S: Store, F: FileSystem>(
    ws: &mut Workspace<S>,
    fs: &mut F,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Applied, DiskError> {
    let plan = ws.plan(&|p| fs.keeps(p))?;
    let mut applied = Applied {
        unplaced: plan.unplaced,
        not_kept: plan.not_kept,
        ..Applied::default()
    };
    let total = plan.ops.len() as u64;
    let mut done: Vec<(DiskOp, Stat)> = Vec::with_capacity(plan.ops.len());
    for (i, op) in plan.ops.into_iter().enumerate() {
        progress(i as u64, total);
        let (path, expect) = match &op {
            DiskOp::Write { path, expect, .. } => (path, *expect),
            DiskOp::Remove { path, expect, .. } => (path, Some(*expect)),
        };
        if let Err(why) = check_expected(fs, path, expect)? {
            applied.refused.push(Refused {
                path: path.clone(),
                why,
            });
            continue;
        }
        let result = match &op {
            DiskOp::Write { path, bytes, .. } => fs.write(path, bytes.as_bytes()),
            DiskOp::Remove { path, .. } => fs.remove(path).map(|()| Stat::default()),
        };
        match result {
            Ok(stat) => done.push((op, stat)),
            Err(FsError::Crashed) => return Err(FsError::Crashed.into()),
            Err(e) => applied.refused.push(Refused {
                path: path.clone(),
                why: Refusal::Failed(e.to_string()),
            }),
        }
    }
    progress(total, total);
    if done.is_empty() {
        return Ok(applied);
    }
    fs.flush()?;
    for (op, stat) in &done {
        ws.applied(op, *stat)?;
        match op {
            DiskOp::Write { path, .. } => applied.written.push(path.clone()),
            DiskOp::Remove { path, .. } => applied.removed.push(path.clone()),
        }
    }
    Ok(applied)
}

/// Records what an interrupted checkout had already done to the disk.
///
/// A crash between a disk write and its record would make the next scan take
/// our own write for a user's edit (a duplicate file) and our own removal for
/// a user's deletion (a deletion nobody made, carried out on every peer).
/// Call it once when the state is opened, before the first scan. The records
/// are staged in `ws`; returns how many operations were found done.
pub fn settle<S: Store, F: FileSystem>(
    ws: &mut Workspace<S>,
    fs: &mut F,
) -> Result<usize, DiskError> {
    let plan = ws.plan(&|p| fs.keeps(p))?;
    let mut settled = 0;
    for op in &plan.ops {
        let done = match op {
            DiskOp::Write { path, bytes, .. } => match fs.stat(path)? {
                Some(Node::File(stat)) => match fs.read(path) {
                    Ok(on_disk) if on_disk == bytes.as_bytes() => Some(stat),
                    Err(FsError::Crashed) => return Err(FsError::Crashed.into()),
                    _ => None,
                },
                _ => None,
            },
            // A tracked file gone from a path where the documents no longer
            // place it: removed by us, or by a user whose deletion would only
            // repeat what the documents say (or lose to a rename).
            DiskOp::Remove { path, .. } => match fs.stat(path)? {
                None => Some(Stat::default()),
                Some(_) => None,
            },
        };
        if let Some(stat) = done {
            ws.applied(op, stat)?;
            settled += 1;
        }
    }
    Ok(settled)
}
