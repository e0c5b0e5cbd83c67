//! Deleted files: listing the trash and bringing files back.

use crate::doc::Author;
use crate::store::Store;
use crate::{FileId, SyncPath};

use super::{Workspace, WorkspaceError};

/// A deleted file that can still be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    pub file: FileId,
    pub path: String,
    pub deleted_at_ms: i64,
    pub deleted_by: String,
    pub expires_at_ms: i64,
}

impl<S: Store> Workspace<S> {
    /// Deleted files still within the retention period, newest first.
    pub fn trash(&mut self, now_ms: i64) -> Result<Vec<TrashEntry>, WorkspaceError> {
        let mut out: Vec<TrashEntry> = self
            .layout
            .entries()
            .filter(|e| !self.layout.is_live(&e.id))
            .filter_map(|e| {
                let t = e.deleted.as_ref()?;
                (now_ms - t.at_ms <= self.tombstone_ms).then(|| TrashEntry {
                    file: e.id,
                    path: e.path.clone(),
                    deleted_at_ms: t.at_ms,
                    deleted_by: t.by.clone(),
                    expires_at_ms: t.at_ms + self.tombstone_ms,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.deleted_at_ms
                .cmp(&a.deleted_at_ms)
                .then(a.file.cmp(&b.file))
        });
        Ok(out)
    }

    /// Brings a deleted file back (committed at once: the user asked for it).
    /// If its path is taken by a live file, it comes back beside it as
    /// `name.restored-<id>.md`. Returns where it will appear.
    pub fn restore(&mut self, path: &str, now_ms: i64) -> Result<SyncPath, WorkspaceError> {
        let entry = self
            .trash(now_ms)?
            .into_iter()
            .find(|t| t.path == path || t.file.to_hex().starts_with(path))
            .ok_or_else(|| WorkspaceError::NotInTrash(path.to_string()))?;
        let unsafe_path = |reason| WorkspaceError::UnsafePath {
            source_name: "the trash".into(),
            file: entry.file,
            reason,
        };
        let original = SyncPath::parse(&entry.path).map_err(unsafe_path)?;
        let target = if self.layout.occupied(&original) {
            let stem = original.as_str().trim_end_matches(".md");
            SyncPath::parse(&format!("{stem}.restored-{}.md", &entry.file.to_hex()[..6]))
                .map_err(unsafe_path)?
        } else {
            original.clone()
        };
        let member = self.member.clone();
        let new_path = (target != original).then_some(target.as_str());
        self.index.restore(
            entry.file,
            new_path,
            &Author {
                member: &member,
                now_ms,
            },
        )?;
        self.docs.persist_index(&mut self.index);
        self.refresh([entry.file])?;
        self.commit()?;
        Ok(target)
    }
}
