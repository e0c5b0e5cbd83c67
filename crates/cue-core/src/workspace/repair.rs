//! Poisoned index entries: finding them and dropping them (`cue repair`).
//!
//! A member can name a file with a path no peer may write (`../x`, `CON.md`,
//! `docs/.git/x.md`), or name a file whose document never arrives (it was
//! refused as a bomb, or never sent). Such an entry is skipped everywhere,
//! but it stays in the index for good, and every command would mention it.
//! Repair turns it into an ordinary edit of the index, so the fix syncs to
//! every peer like any other:
//!
//! - an entry a peer moved to an unsafe name while this peer holds the file
//!   is moved back to the name it has on this disk (nothing is lost);
//! - any other entry is tombstoned, as a deletion by this member. A tombstone
//!   only hides the changes it names, so where the document does exist (on a
//!   peer that received it, or here if it arrives late), the file stays or
//!   comes back: dropping an entry whose document is missing loses nothing.

use crate::doc::{Author, ChangeHash};
use crate::store::{DocKey, Store};
use crate::{FileId, PathError, SyncPath};

use super::{Workspace, WorkspaceError};

/// Why an index entry is poisoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoisonReason {
    /// Its path is unsafe or not portable: no peer writes it.
    UnsafePath(PathError),
    /// The index names it, but its document is not here, or holds no file
    /// (its creator's first change never arrived, or was refused).
    NoDocument,
}

impl std::fmt::Display for PoisonReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoisonReason::UnsafePath(e) => write!(f, "{e}"),
            PoisonReason::NoDocument => {
                f.write_str("its document never arrived here (missing or refused)")
            }
        }
    }
}

/// What repair does (or would do) with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairAction {
    /// Tombstoned, like a deletion: it leaves the index's live files.
    Drop,
    /// Moved back to the name the file has on this disk.
    MoveBack(SyncPath),
}

/// A poisoned index entry and what repair does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poisoned {
    pub file: FileId,
    pub path: String,
    pub reason: PoisonReason,
    pub action: RepairAction,
}

impl<S: Store> Workspace<S> {
    /// The live index entries no peer can write, in path order. Loads only
    /// the documents of files that are not on this disk.
    pub fn poisoned(&mut self) -> Result<Vec<Poisoned>, WorkspaceError> {
        let mut out = Vec::new();
        for u in self.layout.unplaced() {
            // Moved to an unsafe name by a peer, still here under a good one.
            let back = self
                .local
                .get(&u.file)
                .and_then(|lf| SyncPath::parse(&lf.path).ok())
                .filter(|p| !self.layout.occupied(p));
            out.push(Poisoned {
                file: u.file,
                path: u.path.clone(),
                reason: PoisonReason::UnsafePath(u.reason.clone()),
                action: back.map_or(RepairAction::Drop, RepairAction::MoveBack),
            });
        }
        // A file on this disk had a document when it was written.
        let absent: Vec<(SyncPath, FileId)> = self
            .layout
            .placed()
            .iter()
            .filter(|(_, id)| self.local.get(id).is_none())
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        for (path, id) in absent {
            let held = match self.docs.file(id)? {
                Some(doc) => doc.is_ready(),
                None => false,
            };
            if !held {
                out.push(Poisoned {
                    file: id,
                    path: path.to_string(),
                    reason: PoisonReason::NoDocument,
                    action: RepairAction::Drop,
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path).then(a.file.cmp(&b.file)));
        Ok(out)
    }

    /// Drops every poisoned entry (see the module's doc) as one edit of the
    /// index, committed at once, and returns what it did.
    pub fn repair(&mut self, now_ms: i64) -> Result<Vec<Poisoned>, WorkspaceError> {
        let found = self.poisoned()?;
        if found.is_empty() {
            return Ok(found);
        }
        let member = self.member.clone();
        let author = Author {
            member: &member,
            now_ms,
        };
        for p in &found {
            match &p.action {
                RepairAction::MoveBack(to) => self.index.rename(p.file, to.as_str(), &author)?,
                RepairAction::Drop => {
                    // The changes this peer holds; none when the document
                    // never came, so the file returns if it ever does.
                    let heads: Vec<ChangeHash> = self
                        .docs
                        .infos()
                        .get(&DocKey::File(p.file))
                        .map(|i| i.heads.clone())
                        .unwrap_or_default();
                    self.index.delete(p.file, &heads, &author)?;
                }
            }
        }
        self.docs.persist_index(&mut self.index);
        self.refresh(found.iter().map(|p| p.file))?;
        self.commit()?;
        Ok(found)
    }
}
