//! Disk to documents: recording what the user did to their files.

use crate::doc::{Author, DocError, FileDoc};
use crate::store::{LocalFile, Store};
use crate::{FileId, SyncPath};

use super::{content_hash, new_actor, on_disk, Recorded, Stat, Workspace, WorkspaceError};

/// A file found on disk that no record knows: what [`Workspace::record_new`]
/// takes.
pub struct NewFile {
    pub path: SyncPath,
    pub text: String,
    pub stat: Stat,
}

impl<S: Store> Workspace<S> {
    /// Records that the user's file at `path` now holds `text`: a new file, an
    /// edit of a tracked one, or (same hash) nothing at all.
    pub fn record_write(
        &mut self,
        path: &SyncPath,
        text: &str,
        stat: Stat,
        now_ms: i64,
        rng: &mut impl rand::Rng,
    ) -> Result<Recorded, WorkspaceError> {
        let hash = content_hash(text.as_bytes());
        let tracked = self
            .local_by_path(path.as_str())
            .map(|(id, f)| (id, f.clone()));
        let (id, base_heads) = match tracked {
            Some((id, lf)) if lf.hash == hash => {
                if lf.size != stat.size || lf.mtime_ns != stat.mtime_ns {
                    let file = LocalFile {
                        size: stat.size,
                        mtime_ns: stat.mtime_ns,
                        ..lf
                    };
                    self.put_local(id, file);
                }
                return Ok(Recorded::Unchanged);
            }
            Some((id, lf)) => (id, Some(lf.heads)),
            None => match self.adoptable(path, hash)? {
                Some(id) => (id, None),
                None => return self.create_file(path, text, hash, stat, now_ms, rng),
            },
        };
        let member = self.member.clone();
        let author = Author {
            member: &member,
            now_ms,
        };
        let Some(doc) = self.docs.file(id)? else {
            return self.create_file(path, text, hash, stat, now_ms, rng);
        };
        // The disk already shows the documents' current state: our own write
        // that a crash kept us from recording, or the user typed the same
        // change. Either way it is not a new edit (recording it would duplicate
        // the text that was merged in).
        if doc.is_ready() && content_hash(doc.render()?.as_bytes()) == hash {
            let file = on_disk(path, hash, stat, doc.heads());
            self.put_local(id, file);
            self.dirty.insert(id);
            return Ok(Recorded::Unchanged);
        }
        let recorded = match base_heads {
            Some(base) if doc.heads() != base && doc.has_all(&base) => {
                doc.fork_at(&base, new_actor(rng)).and_then(|mut fork| {
                    fork.record(text, &author)?;
                    let heads = fork.heads();
                    doc.merge(&mut fork)?;
                    Ok(heads)
                })
            }
            _ => doc.record(text, &author).map(|_| doc.heads()),
        };
        let disk_heads = match recorded {
            Ok(heads) => heads,
            Err(e) => {
                // Whatever the failed edit left in memory is dropped: the
                // document reloads as stored.
                self.docs.forget(id);
                return Err(e.into());
            }
        };
        self.docs.persist_file(id, path.as_str())?;
        if self.index.ensure_registered(&author)? {
            self.docs.persist_index(&mut self.index);
        }
        let file = on_disk(path, hash, stat, disk_heads);
        self.put_local(id, file);
        // After a merge with a fork the document holds more than the disk,
        // and an edit brings a file deleted elsewhere back.
        self.doc_changed(id)?;
        Ok(Recorded::Edited(id))
    }

    /// Loads, on every core, the documents of the tracked files among `edits`
    /// (path, content hash) whose content changed: call it before recording a
    /// batch of edits with [`Self::record_write`], which then finds them in
    /// memory.
    pub fn prefetch_edits(&mut self, edits: &[(&str, [u8; 32])]) -> Result<(), WorkspaceError> {
        let ids: Vec<FileId> = edits
            .iter()
            .filter_map(|(path, hash)| {
                self.local_by_path(path)
                    .filter(|(_, f)| f.hash != *hash)
                    .map(|(id, _)| id)
            })
            .collect();
        self.docs.prefetch(&ids)
    }

    /// Records many files no record knows (an import, a burst of new notes):
    /// the same as [`Self::record_write`] for each, with their documents built
    /// on every core. Returns what each became, in order, or why the document
    /// refused it (over a limit): one such file does not stop the others.
    pub fn record_new(
        &mut self,
        files: Vec<NewFile>,
        now_ms: i64,
        rng: &mut impl rand::Rng,
    ) -> Result<Vec<Result<Recorded, DocError>>, WorkspaceError> {
        let mut out: Vec<Result<Recorded, DocError>> =
            files.iter().map(|_| Ok(Recorded::Unchanged)).collect();
        let mut fresh = Vec::new();
        for (i, f) in files.into_iter().enumerate() {
            let hash = content_hash(f.text.as_bytes());
            if self.local_by_path(f.path.as_str()).is_some()
                || self.adoptable(&f.path, hash)?.is_some()
            {
                out[i] = match self.record_write(&f.path, &f.text, f.stat, now_ms, rng) {
                    Err(WorkspaceError::Doc(e)) => Err(e),
                    other => Ok(other?),
                };
            } else {
                fresh.push((i, FileId::random(rng), hash, f));
            }
        }
        let member = self.member.clone();
        let author = Author {
            member: &member,
            now_ms,
        };
        let actor = self.actor.clone();
        let build = |(_, id, _, f): &(usize, FileId, [u8; 32], NewFile)| {
            FileDoc::create(actor.clone(), *id, &f.text, &author)
        };
        let panicked = || Err(DocError::Refused("building a document panicked".into()));
        // In rounds, so that only one round's documents are in memory.
        for round in fresh.chunks(crate::parallel::round()) {
            let built = crate::parallel::map(round, build, panicked);
            for ((i, id, hash, f), doc) in round.iter().zip(built) {
                out[*i] = match doc {
                    Ok(doc) => match self.add_file(*id, doc, &f.path, *hash, f.stat, now_ms) {
                        Ok(()) => Ok(Recorded::Created(*id)),
                        Err(WorkspaceError::Doc(e)) => Err(e),
                        Err(e) => return Err(e),
                    },
                    Err(e) => Err(e),
                };
            }
        }
        Ok(out)
    }

    /// A file the index places at `path` that this peer has not put on disk (an
    /// interrupted clone, say): a file found there is that file, not a new one.
    /// Only when the bytes are exactly what we would write: anything else is
    /// the user's own file, kept side by side by the same-path rule.
    fn adoptable(
        &mut self,
        path: &SyncPath,
        hash: [u8; 32],
    ) -> Result<Option<FileId>, WorkspaceError> {
        let Some(id) = self
            .layout
            .at(path)
            .filter(|id| self.local.get(id).is_none())
        else {
            return Ok(None);
        };
        match self.docs.file(id)? {
            Some(doc) if doc.is_ready() && content_hash(doc.render()?.as_bytes()) == hash => {
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }

    fn create_file(
        &mut self,
        path: &SyncPath,
        text: &str,
        hash: [u8; 32],
        stat: Stat,
        now_ms: i64,
        rng: &mut impl rand::Rng,
    ) -> Result<Recorded, WorkspaceError> {
        let id = FileId::random(rng);
        let doc = FileDoc::create(self.actor.clone(), id, text, &self.author(now_ms))?;
        self.add_file(id, doc, path, hash, stat, now_ms)?;
        Ok(Recorded::Created(id))
    }

    /// Adds a new file's document and its index entry.
    fn add_file(
        &mut self,
        id: FileId,
        mut doc: FileDoc,
        path: &SyncPath,
        hash: [u8; 32],
        stat: Stat,
        now_ms: i64,
    ) -> Result<(), WorkspaceError> {
        let heads = doc.heads();
        self.docs.insert(id, doc);
        self.docs.persist_file(id, path.as_str())?;
        let member = self.member.clone();
        let author = Author {
            member: &member,
            now_ms,
        };
        self.index.add_file(id, path.as_str(), &author)?;
        self.docs.persist_index(&mut self.index);
        self.put_local(id, on_disk(path, hash, stat, heads));
        self.refresh([id])
    }

    /// Records that the user deleted the file at `path`: it becomes a tombstone.
    pub fn record_removal(&mut self, path: &str, now_ms: i64) -> Result<FileId, WorkspaceError> {
        let (id, lf) = self
            .local_by_path(path)
            .map(|(id, f)| (id, f.clone()))
            .ok_or_else(|| WorkspaceError::NotTracked(path.to_string()))?;
        let member = self.member.clone();
        self.index.delete(
            id,
            &lf.heads,
            &Author {
                member: &member,
                now_ms,
            },
        )?;
        self.docs.persist_index(&mut self.index);
        self.drop_local(id);
        self.refresh([id])?;
        Ok(id)
    }

    /// Records that the user moved a file; its document and history move with it.
    pub fn record_rename(
        &mut self,
        from: &str,
        to: &SyncPath,
        now_ms: i64,
    ) -> Result<FileId, WorkspaceError> {
        let (id, lf) = self
            .local_by_path(from)
            .map(|(id, f)| (id, f.clone()))
            .ok_or_else(|| WorkspaceError::NotTracked(from.to_string()))?;
        let member = self.member.clone();
        self.index.rename(
            id,
            to.as_str(),
            &Author {
                member: &member,
                now_ms,
            },
        )?;
        self.docs.persist_index(&mut self.index);
        let file = LocalFile {
            path: to.to_string(),
            ..lf
        };
        self.put_local(id, file);
        self.refresh([id])?;
        Ok(id)
    }
}
