//! Offline exchange: bundles out and in.

use crate::bundle::Bundle;
use crate::doc::{DocError, FileDoc};
use crate::store::{DocKey, Store};
use crate::{FileId, WorkspaceId};

use super::{Workspace, WorkspaceError};

/// What an import brought in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub docs_changed: usize,
    pub docs_unchanged: usize,
    /// Files whose names are not safe to write: kept in the documents only.
    pub unplaced: usize,
}

impl<S: Store> Workspace<S> {
    /// Makes a new peer of an existing workspace from a bundle.
    pub fn clone_from_bundle(
        store: S,
        bundle: &[u8],
        member: &str,
        rng: &mut impl rand::Rng,
    ) -> Result<Self, WorkspaceError> {
        let bundle = Bundle::decode(bundle)?;
        let mut ws = Self::join(store, member, rng)?;
        ws.merge_bundle(bundle, None)?;
        Ok(ws)
    }

    /// Every document, each as one standard saved automerge document.
    pub fn export_bundle(&mut self) -> Result<Vec<u8>, WorkspaceError> {
        let meta = self.index.meta()?;
        let mut docs = vec![(DocKey::Index, self.index.save())];
        let keys: Vec<DocKey> = self
            .docs
            .infos()
            .keys()
            .copied()
            .filter(|k| *k != DocKey::Index)
            .collect();
        for key in keys {
            let Some(chunks) = self.docs.chunks(key)? else {
                continue;
            };
            let bytes = if chunks.len() == 1 {
                chunks.into_iter().next().unwrap_or_default()
            } else {
                FileDoc::load(&chunks, self.actor.clone())?.save()
            };
            docs.push((key, bytes));
        }
        Ok(Bundle {
            workspace: meta.workspace_id,
            docs,
        }
        .encode())
    }

    /// Merges a bundle from another peer of this workspace, all or nothing.
    /// Files whose paths are unsafe are kept in the documents and never
    /// written (as when they arrive live); the rest is imported.
    pub fn import_bundle(&mut self, bytes: &[u8]) -> Result<ImportReport, WorkspaceError> {
        let bundle = Bundle::decode(bytes)?;
        let ours = self.index.meta()?.workspace_id;
        self.merge_bundle(bundle, Some(ours))
    }

    fn merge_bundle(
        &mut self,
        bundle: Bundle,
        expect: Option<WorkspaceId>,
    ) -> Result<ImportReport, WorkspaceError> {
        if let Some(ours) = expect {
            if bundle.workspace != ours {
                return Err(WorkspaceError::WrongWorkspace {
                    ours,
                    theirs: bundle.workspace,
                });
            }
        }
        let index_bytes = bundle
            .docs
            .iter()
            .find(|(k, _)| *k == DocKey::Index)
            .map(|(_, b)| b)
            .ok_or(WorkspaceError::NoIndex)?;
        let mut preview = self.index.preview(index_bytes)?;
        let theirs = preview.meta()?.workspace_id;
        if theirs != bundle.workspace {
            return Err(WorkspaceError::WrongWorkspace {
                ours: bundle.workspace,
                theirs,
            });
        }
        // All or nothing: a document refused halfway, or a commit that fails,
        // must not leave the ones before it merged in memory (where the next
        // export or edit would carry them). The preview is the merged index.
        self.commit()?;
        let index_changed = preview.heads() != self.index.heads();
        let checkpoint = self.docs.checkpoint();
        let index_before = std::mem::replace(&mut self.index, preview);
        let merged = self.merge_bundle_docs(&bundle).and_then(|report| {
            self.docs.persist_index(&mut self.index);
            self.commit()?;
            Ok(report)
        });
        let mut report = match merged {
            Ok(report) => report,
            Err(e) => {
                self.docs.rollback(checkpoint);
                self.index = index_before;
                return Err(e);
            }
        };
        if index_changed {
            report.docs_changed += 1;
        } else {
            report.docs_unchanged += 1;
        }
        self.reread_entries()?;
        self.dirty
            .extend(self.layout.entries().map(|e| e.id).collect::<Vec<_>>());
        report.unplaced = self.layout.unplaced().count();
        Ok(report)
    }

    /// Merges a bundle's file documents and stages them. Documents this peer
    /// lacks are validated (on every core) and stored as the bytes that came.
    fn merge_bundle_docs(&mut self, bundle: &Bundle) -> Result<ImportReport, WorkspaceError> {
        let mut report = ImportReport::default();
        let mut fresh: Vec<(FileId, &Vec<u8>)> = Vec::new();
        for (key, bytes) in &bundle.docs {
            let DocKey::File(id) = key else { continue };
            if !self.docs.infos().contains_key(key) {
                fresh.push((*id, bytes));
                continue;
            }
            let before = self.docs.heads(*key);
            let doc = self.docs.file_or_empty(*id)?;
            if let Err(e) = doc.apply(bytes) {
                self.docs.forget(*id);
                return Err(e.into());
            }
            if doc.heads() == before {
                report.docs_unchanged += 1;
                continue;
            }
            report.docs_changed += 1;
            let path = self.index_path(*id);
            self.docs.persist_file(*id, &path)?;
        }
        let actor = self.actor.clone();
        let load = |(_, bytes): &(FileId, &Vec<u8>)| FileDoc::load_untrusted(bytes, actor.clone());
        let panicked = || Err(DocError::Refused("loading a document panicked".into()));
        // In rounds, so that only one round's documents are in memory.
        for round in fresh.chunks(crate::parallel::round()) {
            let loaded = crate::parallel::map(round, load, panicked);
            for ((id, bytes), doc) in round.iter().zip(loaded) {
                let mut doc = doc?;
                let path = self.index_path(*id);
                self.docs
                    .stage_received(*id, &mut doc, (*bytes).clone(), &path);
                report.docs_changed += 1;
            }
        }
        Ok(report)
    }

    /// Where the (merged) index says a file is, for activity rows.
    fn index_path(&self, id: FileId) -> String {
        self.index
            .file(id)
            .ok()
            .flatten()
            .map(|e| e.path)
            .unwrap_or_default()
    }
}
