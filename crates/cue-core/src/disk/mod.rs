//! The disk layer, written once.
//!
//! Three things happen between the documents and the user's files, and each is
//! written here only: a **scan** finds what the user did to the synced files
//! (new, edited, deleted, renamed) and records it; a **checkout** writes what
//! the documents say, never over a change the user made since it was read; a
//! **settle** finishes recording a checkout that a crash cut short.
//!
//! They work over the small [`FileSystem`] trait: the `cue` binary implements
//! it on the real disk, [`MemFs`] in memory, with faults and crashes that the
//! simulator injects between a disk operation and its record. So the seeded
//! simulation and the tests run exactly the code users run.

mod checkout;
mod mem;
mod scan;

use std::collections::BTreeMap;
use std::fmt;

pub use checkout::{checkout, settle, Applied, Refusal, Refused};
pub use mem::MemFs;
pub use scan::{scan, Changes, ScanOptions, Scope};

use crate::workspace::WorkspaceError;
use crate::{PathError, SyncPath};

/// Files bigger than this are not synced (reported, never truncated): a file
/// of N characters is N operations of its document, which
/// [`MAX_OPS_PER_DOC`](crate::limits::MAX_OPS_PER_DOC) bounds.
pub const MAX_FILE_BYTES: u64 = crate::limits::MAX_FILE_BYTES;

/// How recent an mtime must be for size and mtime not to be trusted: file
/// system clocks tick coarsely, so a save of the same size right after our
/// own write can carry the same mtime ("racy git"). Such files are hashed.
pub const RACY_NS: i64 = 3_000_000_000;

/// A file's size and modification time, to skip re-reading unchanged files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
}

/// What is at a path on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File(Stat),
    /// Something that is not a file we sync (a folder, a symbolic link, a
    /// device): present, so nothing may be written over it.
    Other,
}

/// Why a path on disk is not synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Symbolic links could lead outside the workspace.
    Symlink,
    /// Over [`MAX_FILE_BYTES`].
    TooLarge(u64),
    /// A name the workspace cannot hold (see [`SyncPath::parse`]).
    BadName(PathError),
    /// Not valid UTF-8 text.
    NotUtf8,
    /// The file could not be read.
    Unreadable(String),
    /// Its document refused the edit (over a limit); the file stays as it is.
    Refused(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("symbolic links are not synced"),
            SkipReason::TooLarge(n) => write!(
                f,
                "{n} bytes is over the {MAX_FILE_BYTES}-byte limit; not synced"
            ),
            SkipReason::BadName(e) => write!(f, "{e}"),
            SkipReason::NotUtf8 => f.write_str("not valid UTF-8 text; not synced"),
            SkipReason::Unreadable(e) => write!(f, "cannot read: {e}"),
            SkipReason::Refused(e) => write!(f, "not recorded: {e}"),
        }
    }
}

/// A path that a scan saw and did not sync, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The path relative to `.cuedeck/` (`project/…` for include files).
    pub path: String,
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// The synced files found under some folder, and what was passed over.
#[derive(Debug, Default)]
pub struct Listing {
    pub files: BTreeMap<SyncPath, Stat>,
    pub skipped: Vec<Skipped>,
}

/// A file-system operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The write would go through a symbolic link or where a folder cannot be.
    #[error("{path}: {why}")]
    Unsafe { path: String, why: String },
    /// The simulated process died here ([`MemFs`] only): the operation reached
    /// the disk, nothing after it happens.
    #[error("the process stopped here (a simulated crash)")]
    Crashed,
}

/// The handful of operations the disk layer needs. Paths are [`SyncPath`]s
/// (relative to `.cuedeck/`, `project/…` for the project's own files), so an
/// implementation only maps them onto its storage.
pub trait FileSystem {
    /// The synced files at or under `under` (a path or folder relative to
    /// `.cuedeck/`, `project/…` for include files; `""` for everything), after
    /// this peer's filters, and the paths passed over with the reason.
    fn list(&mut self, under: &str) -> Result<Listing, FsError>;

    /// What is at `path` (without following a symbolic link), if anything.
    fn stat(&mut self, path: &SyncPath) -> Result<Option<Node>, FsError>;

    /// The bytes of the file at `path`.
    fn read(&mut self, path: &SyncPath) -> Result<Vec<u8>, FsError>;

    /// Replaces (or creates) the file at `path` so that a reader sees the old
    /// bytes or the new, never a mix; makes the folders it needs, and refuses
    /// to write through a symbolic link.
    fn write(&mut self, path: &SyncPath, bytes: &[u8]) -> Result<Stat, FsError>;

    /// Removes the file at `path`; gone already is not an error.
    fn remove(&mut self, path: &SyncPath) -> Result<(), FsError>;

    /// Makes every write so far durable. A checkout calls it before it records
    /// what it wrote: a record must never describe bytes a power cut can undo.
    fn flush(&mut self) -> Result<(), FsError> {
        Ok(())
    }

    /// Whether this peer keeps `path` on its disk at all: `project/…` files
    /// only where this peer's own `sync.include` globs match. Files outside
    /// stay in the documents and are not written here.
    fn keeps(&self, path: &SyncPath) -> bool {
        let _ = path;
        true
    }
}

/// Files the user's editors leave around that must never be synced (see
/// shared/EDITORS.md): swap and lock files, backups, temp files of atomic
/// saves, and anything that is not Markdown.
pub fn is_editor_noise(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name.contains("___jb_")
        || name == "4913"
        || !name.ends_with(".md")
}

/// Why the disk layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl DiskError {
    /// Whether a simulated crash stopped the work (the caller crashes too).
    pub fn is_crash(&self) -> bool {
        matches!(self, DiskError::Fs(FsError::Crashed))
    }
}
