//! The real disk under the core's disk layer: where a workspace lives, which
//! of its files are synced (`.cueignore`, `sync.include`), and atomic writes.
//!
//! Scanning, rename detection, checkout and settling are `cue_core::disk`;
//! this module only implements its [`FileSystem`] trait on `std::fs`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cue_core::disk::{
    FileSystem, FsError, Listing, Node, SkipReason, Skipped, Stat, MAX_FILE_BYTES,
};
use cue_core::SyncPath;
use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

pub use cue_core::disk::is_editor_noise;

/// A temp file of an atomic write older than this belongs to a process that
/// died before renaming it (a `kill -9`, a power cut): swept by the next scan.
const STALE_TEMP: Duration = Duration::from_secs(600);
/// Up to this many files written since the last flush are fsynced one by one;
/// more are flushed with one `syncfs` of the whole file system.
const FSYNC_EACH_MAX: usize = 16;

/// The folders of one workspace on disk.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The project root: the folder that holds `.cuedeck/`.
    pub root: PathBuf,
    /// `<root>/.cuedeck`
    pub cuedeck: PathBuf,
}

impl Layout {
    /// The layout for a project root (which may not be initialised yet).
    pub fn at(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            cuedeck: root.join(".cuedeck"),
        }
    }

    /// Finds the workspace containing `start`, as git finds its repository.
    pub fn find(start: &Path) -> Option<Layout> {
        start
            .ancestors()
            .find(|d| d.join(".cuedeck").join("sync").join("state.db").is_file())
            .map(Layout::at)
    }

    pub fn config_path(&self) -> PathBuf {
        self.cuedeck.join("config.toml")
    }

    pub fn sync_dir(&self) -> PathBuf {
        self.cuedeck.join("sync")
    }

    pub fn state_db(&self) -> PathBuf {
        self.sync_dir().join("state.db")
    }

    /// The real location of a synced path (or folder key). `project/…` keys
    /// live in the project root (files added by `sync.include`); everything
    /// else under `.cuedeck/`.
    pub fn to_disk(&self, path: &SyncPath) -> PathBuf {
        self.key_to_disk(path.as_str())
    }

    fn key_to_disk(&self, key: &str) -> PathBuf {
        let (base, rest) = self.base_and_rest(key);
        rest.split('/')
            .filter(|c| !c.is_empty())
            .fold(base.to_path_buf(), |acc, c| acc.join(c))
    }

    fn base_and_rest<'a>(&self, key: &'a str) -> (&Path, &'a str) {
        match key.strip_prefix("project/") {
            Some(rest) => (&self.root, rest),
            None if key == "project" => (&self.root, ""),
            None => (&self.cuedeck, key),
        }
    }

    /// The key of a real path under this workspace (`docs/a.md`,
    /// `project/notes/x.md`), or `None` for paths that are never synced
    /// (`.cuedeck/sync/`, `.cuedeck/config.toml`, outside the project).
    pub fn key_of(&self, path: &Path) -> Option<String> {
        if let Ok(rel) = path.strip_prefix(&self.cuedeck) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            let first = rel.split('/').next().unwrap_or_default();
            return match first {
                "" => Some(String::new()),
                "cards" | "docs" => Some(rel),
                _ => None,
            };
        }
        let rel = path.strip_prefix(&self.root).ok()?;
        let rel = rel.to_string_lossy().replace('\\', "/");
        if rel.is_empty() {
            return Some("project".into());
        }
        if rel.split('/').any(|c| c == ".git") {
            return None;
        }
        Some(format!("project/{rel}"))
    }
}

/// The filters for one peer: `.cuedeck/.cueignore` and `sync.include`.
pub struct Filters {
    ignore: Gitignore,
    include: Option<GlobSet>,
    /// The literal folders the include globs start in (`docs/**/*.md` → `docs`):
    /// what the watcher must watch besides `.cuedeck/`.
    include_roots: Vec<String>,
}

impl Filters {
    pub fn new(layout: &Layout, include: &[String]) -> Result<Filters> {
        let mut builder = GitignoreBuilder::new(&layout.cuedeck);
        let file = layout.cuedeck.join(".cueignore");
        if file.is_file() {
            if let Some(e) = builder.add(&file) {
                anyhow::bail!("{}: {e}", file.display());
            }
        }
        let ignore = builder
            .build()
            .with_context(|| format!("reading {}", file.display()))?;
        let mut include_roots = Vec::new();
        let include = if include.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for g in include {
                set.add(Glob::new(g).with_context(|| format!("sync.include glob {g:?}"))?);
                let literal: Vec<&str> = g
                    .split('/')
                    .take_while(|c| !c.contains(['*', '?', '[', '{']))
                    .collect();
                // The last literal component may be the file name itself.
                let n = if literal.len() == g.split('/').count() {
                    literal.len().saturating_sub(1)
                } else {
                    literal.len()
                };
                include_roots.push(literal[..n].join("/"));
            }
            Some(set.build()?)
        };
        Ok(Filters {
            ignore,
            include,
            include_roots,
        })
    }

    fn ignored(&self, key: &str, is_dir: bool) -> bool {
        self.ignore
            .matched_path_or_any_parents(key, is_dir)
            .is_ignore()
    }

    fn includes(&self, rel: &str) -> bool {
        self.include.as_ref().is_some_and(|set| set.is_match(rel))
    }

    /// Folders of the project (relative to its root, `""` for the root itself)
    /// that hold files `sync.include` adds.
    pub fn include_roots(&self) -> &[String] {
        &self.include_roots
    }
}

pub(crate) fn stat_of(meta: &fs::Metadata) -> Stat {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Stat {
        size: meta.len(),
        mtime_ns,
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn io_err(path: &Path, source: std::io::Error) -> FsError {
    FsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The user's real disk, as the core's disk layer sees it.
pub struct RealFs<'a> {
    layout: &'a Layout,
    filters: &'a Filters,
    /// Files written since the last flush, to make durable.
    unflushed: Vec<PathBuf>,
}

impl<'a> RealFs<'a> {
    pub fn new(layout: &'a Layout, filters: &'a Filters) -> Self {
        RealFs {
            layout,
            filters,
            unflushed: Vec::new(),
        }
    }

    fn walk(&self, dir: &Path, key: &str, listing: &mut Listing) -> Result<(), FsError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let child_key = format!("{key}/{name}");
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue; // vanished while we looked: the next scan sees it
            };
            if meta.is_dir() {
                if !name.starts_with('.') && !self.filters.ignored(&child_key, true) {
                    self.walk(&entry.path(), &child_key, listing)?;
                }
            } else {
                self.consider(&entry.path(), &child_key, &meta, listing);
            }
        }
        Ok(())
    }

    fn walk_project(&self, rel: &str, listing: &mut Listing) {
        if self.filters.include.is_none() {
            return;
        }
        let start = self.layout.key_to_disk(&format!("project/{rel}"));
        let walker = ignore::WalkBuilder::new(&start)
            .hidden(true)
            .filter_entry(|e| e.file_name() != ".cuedeck" && e.file_name() != ".git")
            .build();
        for entry in walker.flatten() {
            let Ok(rel) = entry.path().strip_prefix(&self.layout.root) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            if !self.filters.includes(&rel) || entry.file_type().is_none_or(|t| t.is_dir()) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            self.consider(entry.path(), &format!("project/{rel}"), &meta, listing);
        }
    }

    fn consider(&self, path: &Path, key: &str, meta: &fs::Metadata, listing: &mut Listing) {
        let name = key.rsplit('/').next().unwrap_or_default();
        if name.starts_with(".cue-") && name.ends_with(".tmp") {
            sweep_stale_temp(path, meta);
            return;
        }
        if is_editor_noise(name) || self.filters.ignored(key, false) {
            return;
        }
        let skip = |reason| Skipped {
            path: key.to_string(),
            reason,
        };
        if meta.file_type().is_symlink() {
            listing.skipped.push(skip(SkipReason::Symlink));
            return;
        }
        if !meta.is_file() {
            return;
        }
        if meta.len() > MAX_FILE_BYTES {
            listing.skipped.push(skip(SkipReason::TooLarge(meta.len())));
            return;
        }
        match SyncPath::parse(key) {
            Ok(p) => {
                listing.files.insert(p, stat_of(meta));
            }
            Err(e) => listing.skipped.push(skip(SkipReason::BadName(e))),
        }
    }

    /// Refuses to write through a symlinked folder (which could lead outside
    /// the workspace); with `create`, makes the folders a write needs.
    fn check_parents(&self, path: &SyncPath, create: bool) -> Result<(), FsError> {
        let (base, rest) = self.layout.base_and_rest(path.as_str());
        let mut dir = base.to_path_buf();
        let parts: Vec<&str> = rest.split('/').collect();
        let unsafe_because = |why: String| FsError::Unsafe {
            path: path.to_string(),
            why,
        };
        for part in &parts[..parts.len().saturating_sub(1)] {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(unsafe_because(format!(
                        "{} is a symbolic link; not writing through it",
                        dir.display()
                    )))
                }
                Ok(m) if !m.is_dir() => {
                    return Err(unsafe_because(format!("{} is not a folder", dir.display())))
                }
                Ok(_) => {}
                Err(_) if create => fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?,
                Err(_) => return Ok(()), // nothing below a missing folder to check
            }
        }
        Ok(())
    }
}

/// Removes the temporary file of an atomic write whose process died before
/// renaming it: one that has not been touched for [`STALE_TEMP`].
fn sweep_stale_temp(path: &Path, meta: &fs::Metadata) {
    let old = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_TEMP);
    if old {
        let _ = fs::remove_file(path);
    }
}

impl FileSystem for RealFs<'_> {
    fn list(&mut self, under: &str) -> Result<Listing, FsError> {
        let mut listing = Listing::default();
        if under.is_empty() {
            for top in ["cards", "docs"] {
                self.walk(&self.layout.cuedeck.join(top), top, &mut listing)?;
            }
            self.walk_project("", &mut listing);
            return Ok(listing);
        }
        if under == "project" || under.starts_with("project/") {
            let rel = under.strip_prefix("project").unwrap_or_default();
            self.walk_project(rel.trim_start_matches('/'), &mut listing);
            return Ok(listing);
        }
        if !matches!(under.split('/').next(), Some("cards" | "docs")) {
            return Ok(listing);
        }
        let target = self.layout.key_to_disk(under);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {
                let hidden = under.rsplit('/').next().is_some_and(|n| n.starts_with('.'));
                if !hidden && !self.filters.ignored(under, true) {
                    self.walk(&target, under, &mut listing)?;
                }
            }
            Ok(m) => self.consider(&target, under, &m, &mut listing),
            Err(_) => {}
        }
        Ok(listing)
    }

    fn stat(&mut self, path: &SyncPath) -> Result<Option<Node>, FsError> {
        let target = self.layout.to_disk(path);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() => Ok(Some(Node::File(stat_of(&m)))),
            Ok(_) => Ok(Some(Node::Other)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // A parent that is a file: nothing can be at this path.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(e) => Err(io_err(&target, e)),
        }
    }

    fn read(&mut self, path: &SyncPath) -> Result<Vec<u8>, FsError> {
        let target = self.layout.to_disk(path);
        fs::read(&target).map_err(|e| io_err(&target, e))
    }

    fn write(&mut self, path: &SyncPath, bytes: &[u8]) -> Result<Stat, FsError> {
        self.check_parents(path, true)?;
        let target = self.layout.to_disk(path);
        let stat = write_file(&target, bytes, false).map_err(|e| io_err(&target, e))?;
        self.unflushed.push(target);
        Ok(stat)
    }

    fn remove(&mut self, path: &SyncPath) -> Result<(), FsError> {
        self.check_parents(path, false)?;
        let target = self.layout.to_disk(path);
        match fs::remove_file(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&target, e)),
        }
    }

    fn flush(&mut self) -> Result<(), FsError> {
        let written = std::mem::take(&mut self.unflushed);
        if written.len() > FSYNC_EACH_MAX {
            return sync_file_system(&self.layout.cuedeck)
                .map_err(|e| io_err(&self.layout.cuedeck, e));
        }
        let mut dirs: Vec<&Path> = Vec::new();
        for file in &written {
            fs::File::open(file)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err(file, e))?;
            if let Some(dir) = file.parent() {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        // The renames that put the files in place live in their folders.
        for dir in dirs {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(dir, e))?;
        }
        Ok(())
    }

    fn keeps(&self, path: &SyncPath) -> bool {
        match path.as_str().strip_prefix("project/") {
            Some(rel) => self.filters.includes(rel),
            None => true,
        }
    }
}

/// Flushes every written file of the file system holding `dir` at once.
fn sync_file_system(dir: &Path) -> std::io::Result<()> {
    let d = fs::File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs takes an open file descriptor, which `d` owns for
        // the duration of the call.
        if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        d.sync_all()
    }
}

/// Writes a file so that readers see the old bytes or the new, never a mix:
/// a temp file in the same folder, fsync, rename over, fsync the folder.
pub fn atomic_write(target: &Path, bytes: &[u8]) -> Result<Stat> {
    write_file(target, bytes, true).with_context(|| format!("writing {}", target.display()))
}

fn write_file(target: &Path, bytes: &[u8], durable: bool) -> std::io::Result<Stat> {
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("target has no parent folder"))?;
    let tmp = dir.join(format!(".cue-{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, target)?;
        if durable {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(stat_of(&fs::metadata(target)?))
}
