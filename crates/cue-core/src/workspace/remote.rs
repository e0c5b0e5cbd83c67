//! What peers send: their changes merged into ours, and automerge's sync
//! protocol, one document at a time. Everything is staged; nothing is durable
//! (and nothing may be acknowledged) before [`Workspace::commit`].

use crate::doc::{ChangeHash, DocError, FileDoc, IndexDoc, SyncState, Touched};
use crate::store::{DocKey, Store};
use crate::FileId;

use super::{Workspace, WorkspaceError};

impl<S: Store> Workspace<S> {
    /// The changes of `key` after `heads`: the body of a broadcast edit.
    pub fn changes_after(
        &mut self,
        key: DocKey,
        heads: &[ChangeHash],
    ) -> Result<Vec<u8>, WorkspaceError> {
        Ok(match key {
            DocKey::Index => self.index.save_after(heads),
            DocKey::File(id) => match self.docs.file(id)? {
                Some(doc) => doc.save_after(heads),
                None => Vec::new(),
            },
        })
    }

    /// Whether `key` holds every change in `heads`; false means a gap that
    /// only the sync protocol can fill.
    pub fn has_heads(&mut self, key: DocKey, heads: &[ChangeHash]) -> Result<bool, WorkspaceError> {
        if heads.is_empty() {
            return Ok(true);
        }
        Ok(match key {
            DocKey::Index => self.index.has_all(heads),
            DocKey::File(id) => match self.docs.file(id)? {
                Some(doc) => doc.has_all(heads),
                None => false,
            },
        })
    }

    /// Merges changes a peer broadcast. Returns whether anything changed.
    pub fn merge_changes(&mut self, key: DocKey, bytes: &[u8]) -> Result<bool, WorkspaceError> {
        match key {
            DocKey::Index => self.merge_index(|index| index.apply_tracked(bytes)),
            DocKey::File(id) => {
                if self.docs.infos().contains_key(&key) {
                    self.merge_file(id, |doc| doc.apply(bytes))
                } else {
                    // A document new to this peer is stored as the bytes that
                    // came, once they merged.
                    let mut doc = FileDoc::empty(self.actor.clone());
                    doc.apply(bytes)?;
                    if doc.heads().is_empty() {
                        return Ok(false);
                    }
                    let path = self.path_of_entry(id);
                    self.docs
                        .stage_received(id, &mut doc, bytes.to_vec(), &path);
                    self.docs.insert(id, doc);
                    self.doc_changed(id)?;
                    Ok(true)
                }
            }
        }
    }

    /// Merges many documents' changes at once (a burst, a newcomer's first
    /// fill): documents this peer lacks are loaded and rendered on every core,
    /// a few dozen at a time, and stored as the bytes that came. Returns, per
    /// document in order, whether it changed or why it was refused.
    pub fn merge_many(
        &mut self,
        docs: Vec<(DocKey, Vec<u8>)>,
    ) -> Vec<Result<bool, WorkspaceError>> {
        let mut results: Vec<Option<Result<bool, WorkspaceError>>> =
            docs.iter().map(|_| None).collect();
        let mut fresh: Vec<(usize, FileId, Vec<u8>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut known: Vec<(usize, DocKey, Vec<u8>)> = Vec::new();
        for (i, (key, bytes)) in docs.into_iter().enumerate() {
            match key {
                DocKey::File(id) if !self.docs.infos().contains_key(&key) && seen.insert(id) => {
                    fresh.push((i, id, bytes))
                }
                _ => known.push((i, key, bytes)),
            }
        }
        // Changes to documents this peer holds: loaded on every core first,
        // as many at a time as the cache keeps, then merged in order.
        for group in known.chunks(super::CACHE_DOCS / 2) {
            let ids: Vec<FileId> = group
                .iter()
                .filter_map(|(_, key, _)| match key {
                    DocKey::File(id) => Some(*id),
                    _ => None,
                })
                .collect();
            // A store error here shows again, for its document, in the merge.
            let _ = self.docs.prefetch(&ids);
            for (i, key, bytes) in group {
                results[*i] = Some(self.merge_changes(*key, bytes));
            }
        }
        let actor = self.actor.clone();
        type Loaded = Result<(FileDoc, Option<String>), DocError>;
        let load = |(_, _, bytes): &(usize, FileId, Vec<u8>)| -> Loaded {
            let doc = FileDoc::load_untrusted(bytes, actor.clone())?;
            let rendered = if doc.is_ready() {
                Some(doc.render()?)
            } else {
                None
            };
            Ok((doc, rendered))
        };
        let panicked = || Err(DocError::Refused("loading a document panicked".into()));
        // In rounds, so that only one round's documents are in memory.
        for group in fresh.chunks(crate::parallel::round()) {
            let loaded = crate::parallel::map(group, load, panicked);
            for ((i, id, bytes), result) in group.iter().zip(loaded) {
                results[*i] = Some(match result {
                    Err(e) => Err(e.into()),
                    Ok((mut doc, rendered)) => {
                        if doc.heads().is_empty() {
                            Ok(false)
                        } else {
                            let path = self.path_of_entry(*id);
                            self.docs
                                .stage_received(*id, &mut doc, bytes.clone(), &path);
                            if let Some(text) = rendered {
                                self.rendered.insert(*id, (doc.heads(), text));
                            }
                            self.doc_changed(*id).map(|()| true)
                        }
                    }
                });
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(WorkspaceError::Internal("a document was not merged"))))
            .collect()
    }

    /// The next automerge sync message for `key`, for the peer whose sync
    /// state this is; `None` when that peer is known to be up to date.
    pub fn sync_message(
        &mut self,
        key: DocKey,
        state: &mut SyncState,
    ) -> Result<Option<Vec<u8>>, WorkspaceError> {
        Ok(match key {
            DocKey::Index => self.index.sync_generate(state),
            DocKey::File(id) => match self.docs.file(id)? {
                Some(doc) => doc.sync_generate(state),
                None => FileDoc::empty(self.actor.clone()).sync_generate(state),
            },
        })
    }

    /// Takes in a sync message for `key`. Returns whether anything changed.
    pub fn receive_sync(
        &mut self,
        key: DocKey,
        state: &mut SyncState,
        message: &[u8],
    ) -> Result<bool, WorkspaceError> {
        match key {
            DocKey::Index => self.merge_index(|index| index.sync_receive_tracked(state, message)),
            DocKey::File(id) => self.merge_file(id, |doc| doc.sync_receive(state, message)),
        }
    }

    /// Merges into the index in place, and places the entries it touched. A
    /// refused merge reloads the index from what was stored and staged.
    fn merge_index(
        &mut self,
        merge: impl FnOnce(&mut IndexDoc) -> Result<Touched, DocError>,
    ) -> Result<bool, WorkspaceError> {
        let before = self.index.heads();
        let touched = match merge(&mut self.index) {
            Ok(t) => t,
            Err(e) => {
                self.index = match self.docs.chunks(DocKey::Index)? {
                    Some(chunks) => IndexDoc::load(&chunks, self.actor.clone())?,
                    None => IndexDoc::empty(self.actor.clone()),
                };
                return Err(e.into());
            }
        };
        if self.index.heads() == before {
            return Ok(false);
        }
        self.docs.persist_index(&mut self.index);
        match touched {
            Touched::All => self.reread_entries()?,
            Touched::Entries(ids) => self.refresh(ids)?,
        }
        Ok(true)
    }

    /// Merges into a file's document (created empty if this peer has never
    /// seen it) and stages what changed.
    fn merge_file(
        &mut self,
        id: FileId,
        merge: impl FnOnce(&mut FileDoc) -> Result<(), DocError>,
    ) -> Result<bool, WorkspaceError> {
        let before = self.docs.heads(DocKey::File(id));
        let doc = self.docs.file_or_empty(id)?;
        if let Err(e) = merge(doc) {
            self.docs.forget(id);
            return Err(e.into());
        }
        if doc.heads() == before {
            return Ok(false);
        }
        let path = self.path_of_entry(id);
        self.docs.persist_file(id, &path)?;
        self.doc_changed(id)?;
        Ok(true)
    }

    /// Where the index places a file now (for activity rows), or `""`.
    pub(super) fn path_of_entry(&self, id: FileId) -> String {
        self.layout
            .entry(&id)
            .map(|e| e.path.clone())
            .unwrap_or_default()
    }
}
