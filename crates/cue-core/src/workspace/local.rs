//! What this peer last put on, or read from, the user's disk.

use std::collections::BTreeMap;

use crate::store::LocalFile;
use crate::FileId;

/// The on-disk record, by file and by path: every recorded save looks its
/// file up by path, and a scan of one folder looks at the records inside it,
/// so neither may scan every file.
#[derive(Default)]
pub(super) struct DiskState {
    files: BTreeMap<FileId, LocalFile>,
    by_path: BTreeMap<String, FileId>,
}

impl DiskState {
    pub fn new(files: BTreeMap<FileId, LocalFile>) -> Self {
        let by_path = files.iter().map(|(id, f)| (f.path.clone(), *id)).collect();
        DiskState { files, by_path }
    }

    pub fn files(&self) -> &BTreeMap<FileId, LocalFile> {
        &self.files
    }

    pub fn ids(&self) -> impl Iterator<Item = FileId> + '_ {
        self.files.keys().copied()
    }

    pub fn get(&self, id: &FileId) -> Option<&LocalFile> {
        self.files.get(id)
    }

    pub fn at_path(&self, path: &str) -> Option<(FileId, &LocalFile)> {
        let id = self.by_path.get(path)?;
        self.files.get(id).map(|f| (*id, f))
    }

    /// The records at `under` or inside the folder `under` (`""`: all).
    pub fn under<'a>(&'a self, under: &'a str) -> impl Iterator<Item = (&'a str, &'a LocalFile)> {
        self.by_path
            .range::<str, _>((std::ops::Bound::Included(under), std::ops::Bound::Unbounded))
            .take_while(move |(p, _)| p.starts_with(under))
            .filter(move |(p, _)| {
                under.is_empty()
                    || p.len() == under.len()
                    || p.as_bytes().get(under.len()) == Some(&b'/')
            })
            .filter_map(|(p, id)| self.files.get(id).map(|f| (p.as_str(), f)))
    }

    pub fn insert(&mut self, id: FileId, file: LocalFile) {
        self.by_path.insert(file.path.clone(), id);
        if let Some(old) = self.files.insert(id, file) {
            self.unlink_path(&old.path, id);
        }
    }

    pub fn remove(&mut self, id: &FileId) {
        if let Some(old) = self.files.remove(id) {
            self.unlink_path(&old.path, *id);
        }
    }

    /// Forgets `path -> id` unless the path now belongs to another file.
    fn unlink_path(&mut self, path: &str, id: FileId) {
        if self.by_path.get(path) == Some(&id) && self.files.get(&id).is_none_or(|f| f.path != path)
        {
            self.by_path.remove(path);
        }
    }
}
