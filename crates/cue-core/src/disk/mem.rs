//! A disk in memory, for the simulator and the tests.

use std::collections::BTreeMap;

use super::{is_editor_noise, FileSystem, FsError, Listing, Node, SkipReason, Skipped, Stat};
use crate::SyncPath;

#[derive(Debug, Clone, PartialEq, Eq)]
struct MemFile {
    bytes: Vec<u8>,
    mtime_ns: i64,
}

/// A user's synced files in memory: paths relative to `.cuedeck/` (as
/// [`SyncPath`]s are), bytes, and an mtime taken from a clock the caller sets.
///
/// Faults, for the simulator: [`MemFs::tear_after`] lets a number of disk-layer
/// operations through, then lets one more reach the disk and makes it fail
/// with [`FsError::Crashed`] (the process died before recording it);
/// [`MemFs::set_full`] makes every write fail as on a full disk.
///
/// The user's own actions ([`MemFs::put`], [`MemFs::delete`], [`MemFs::rename`])
/// never fail and are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemFs {
    files: BTreeMap<String, MemFile>,
    now_ns: i64,
    tear_after: Option<usize>,
    full: bool,
    /// Folders under `project/` this peer syncs (its `sync.include`); `None`: all.
    include: Option<Vec<String>>,
}

impl MemFs {
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// The clock that stamps writes (ms since the Unix epoch).
    pub fn set_now_ms(&mut self, now_ms: i64) {
        self.now_ns = now_ms.saturating_mul(1_000_000);
    }

    /// The user saves `path` (any editor).
    pub fn put(&mut self, path: &str, text: &str) {
        self.files.insert(
            path.to_string(),
            MemFile {
                bytes: text.as_bytes().to_vec(),
                mtime_ns: self.now_ns,
            },
        );
    }

    /// The user deletes `path`.
    pub fn delete(&mut self, path: &str) {
        self.files.remove(path);
    }

    /// The user moves `from` to `to` (bytes and mtime unchanged).
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(f) = self.files.remove(from) {
            self.files.insert(to.to_string(), f);
        }
    }

    /// The text of the file at `path` (lossy for non-UTF-8 bytes).
    pub fn text(&self, path: &str) -> Option<String> {
        self.files
            .get(path)
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
    }

    /// Every file and its text, in path order.
    pub fn texts(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(p, f)| (p.clone(), String::from_utf8_lossy(&f.bytes).into_owned()))
            .collect()
    }

    /// Makes the disk hold exactly `texts`; files whose bytes do not change
    /// keep their mtime.
    pub fn set_texts(&mut self, texts: &BTreeMap<String, String>) {
        self.files.retain(|p, _| texts.contains_key(p));
        for (p, t) in texts {
            if self.files.get(p).is_none_or(|f| f.bytes != t.as_bytes()) {
                self.put(p, t);
            }
        }
    }

    /// Lets `n` disk-layer writes and removals through; the next one reaches
    /// the disk and then fails with [`FsError::Crashed`]. `None` disarms it.
    pub fn tear_after(&mut self, n: Option<usize>) {
        self.tear_after = n;
    }

    /// Whether every disk-layer write fails, as on a full disk.
    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    /// The folders under `project/` this peer keeps (`sync.include`), e.g.
    /// `["project/docs"]`; `None` keeps everything.
    pub fn set_include(&mut self, folders: Option<Vec<String>>) {
        self.include = folders;
    }

    fn is_folder(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.files
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Counts one disk-layer change; `true` when it must crash after it.
    fn tears(&mut self) -> bool {
        match self.tear_after {
            Some(0) => {
                self.tear_after = None;
                true
            }
            Some(n) => {
                self.tear_after = Some(n - 1);
                false
            }
            None => false,
        }
    }
}

impl FileSystem for MemFs {
    fn list(&mut self, under: &str) -> Result<Listing, FsError> {
        let mut listing = Listing::default();
        for (path, f) in &self.files {
            let inside = under.is_empty()
                || path == under
                || (path.starts_with(under) && path.as_bytes().get(under.len()) == Some(&b'/'));
            let name = path.rsplit('/').next().unwrap_or_default();
            if !inside || is_editor_noise(name) {
                continue;
            }
            match SyncPath::parse(path) {
                Ok(p) if !self.keeps(&p) => {}
                Ok(_) if f.bytes.len() as u64 > super::MAX_FILE_BYTES => {
                    listing.skipped.push(Skipped {
                        path: path.clone(),
                        reason: SkipReason::TooLarge(f.bytes.len() as u64),
                    })
                }
                Ok(p) => {
                    listing.files.insert(
                        p,
                        Stat {
                            size: f.bytes.len() as u64,
                            mtime_ns: f.mtime_ns,
                        },
                    );
                }
                Err(e) => listing.skipped.push(Skipped {
                    path: path.clone(),
                    reason: SkipReason::BadName(e),
                }),
            }
        }
        Ok(listing)
    }

    fn stat(&mut self, path: &SyncPath) -> Result<Option<Node>, FsError> {
        Ok(match self.files.get(path.as_str()) {
            Some(f) => Some(Node::File(Stat {
                size: f.bytes.len() as u64,
                mtime_ns: f.mtime_ns,
            })),
            None if self.is_folder(path.as_str()) => Some(Node::Other),
            None => None,
        })
    }

    fn read(&mut self, path: &SyncPath) -> Result<Vec<u8>, FsError> {
        self.files
            .get(path.as_str())
            .map(|f| f.bytes.clone())
            .ok_or_else(|| FsError::Io {
                path: path.to_string(),
                source: std::io::ErrorKind::NotFound.into(),
            })
    }

    fn write(&mut self, path: &SyncPath, bytes: &[u8]) -> Result<Stat, FsError> {
        if self.full {
            return Err(FsError::Io {
                path: path.to_string(),
                source: std::io::Error::other("no space left on device"),
            });
        }
        // A file where a folder of this path must be.
        let mut folder = String::new();
        let parts: Vec<&str> = path.components().collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !folder.is_empty() {
                folder.push('/');
            }
            folder.push_str(part);
            if self.files.contains_key(&folder) {
                return Err(FsError::Unsafe {
                    path: path.to_string(),
                    why: format!("{folder} is not a folder"),
                });
            }
        }
        let stat = Stat {
            size: bytes.len() as u64,
            mtime_ns: self.now_ns,
        };
        self.files.insert(
            path.to_string(),
            MemFile {
                bytes: bytes.to_vec(),
                mtime_ns: self.now_ns,
            },
        );
        if self.tears() {
            return Err(FsError::Crashed);
        }
        Ok(stat)
    }

    fn remove(&mut self, path: &SyncPath) -> Result<(), FsError> {
        self.files.remove(path.as_str());
        if self.tears() {
            return Err(FsError::Crashed);
        }
        Ok(())
    }

    fn keeps(&self, path: &SyncPath) -> bool {
        match (&self.include, path.as_str().starts_with("project/")) {
            (Some(folders), true) => folders
                .iter()
                .any(|f| path.as_str().starts_with(&format!("{f}/"))),
            _ => true,
        }
    }
}
