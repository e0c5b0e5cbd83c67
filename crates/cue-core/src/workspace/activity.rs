//! The activity log: who changed what, read from the documents' own history.

use crate::store::Store;

use super::{Workspace, WorkspaceError};

/// A line of the activity log, with the author's name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub time_s: i64,
    pub member: String,
    pub path: String,
    pub action: String,
}

impl<S: Store> Workspace<S> {
    /// The activity log since `since_s` (Unix seconds), oldest first. Rows are
    /// derived from each change as it is stored; a file's rows show its
    /// current path.
    pub fn activity(&mut self, since_s: i64) -> Result<Vec<Activity>, WorkspaceError> {
        let rows = self.store_mut().activity(since_s)?;
        Ok(rows
            .into_iter()
            .map(|r| Activity {
                time_s: r.time_s,
                member: self
                    .index
                    .member_of(&r.actor)
                    .unwrap_or_else(|| format!("peer {}", &r.actor[..r.actor.len().min(8)])),
                path: match r.file.and_then(|id| self.layout.entry(&id)) {
                    Some(e) => e.path.clone(),
                    None => r.path,
                },
                action: r.action.split(' ').next().unwrap_or_default().to_string(),
            })
            .collect())
    }
}
