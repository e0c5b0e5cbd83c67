//! The file-system side: where a workspace lives, scanning it for the user's
//! edits, and writing merged files back atomically without clobbering edits.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cue_core::store::Store;
use cue_core::workspace::{content_hash, DiskOp, Plan, Recorded, Stat};
use cue_core::{SyncPath, Workspace};
use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Files bigger than this are not synced (reported, never truncated): the
/// core's limit, which keeps a file's document within `MAX_OPS_PER_DOC`.
pub const MAX_FILE_BYTES: u64 = cue_core::limits::MAX_FILE_BYTES;

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

    /// The real location of a synced path. `project/…` keys live in the project
    /// root (files added by `sync.include`); everything else under `.cuedeck/`.
    pub fn to_disk(&self, path: &SyncPath) -> PathBuf {
        let (base, rest) = self.base_and_rest(path);
        rest.split('/')
            .fold(base.to_path_buf(), |acc, c| acc.join(c))
    }

    fn base_and_rest<'a>(&self, path: &'a SyncPath) -> (&Path, &'a str) {
        match path.as_str().strip_prefix("project/") {
            Some(rest) => (&self.root, rest),
            None => (&self.cuedeck, path.as_str()),
        }
    }
}

/// Files the user's editors leave around that must never be synced (see
/// shared/EDITORS.md): swap and lock files, backups, temp files of atomic saves.
pub fn is_editor_noise(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name.contains("___jb_")
        || name == "4913"
        || !name.ends_with(".md")
}

/// What the user's disk holds right now (paths that pass the filters).
pub struct DiskView {
    pub files: BTreeMap<SyncPath, Stat>,
    /// Paths not synced, with the reason (symlink, too big, bad name...).
    pub skipped: Vec<String>,
}

/// The filters for one scan: `.cuedeck/.cueignore` and `sync.include`.
pub struct Filters {
    ignore: Gitignore,
    include: Option<GlobSet>,
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
        let include = if include.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for g in include {
                set.add(Glob::new(g).with_context(|| format!("sync.include glob {g:?}"))?);
            }
            Some(set.build()?)
        };
        Ok(Filters { ignore, include })
    }

    fn ignored(&self, key: &str, is_dir: bool) -> bool {
        self.ignore
            .matched_path_or_any_parents(key, is_dir)
            .is_ignore()
    }
}

fn stat_of(meta: &fs::Metadata) -> Stat {
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

/// How recent an mtime must be for size and mtime not to be trusted.
const RACY_NS: i64 = 3_000_000_000;

/// Lists the synced files on disk.
pub fn scan(layout: &Layout, filters: &Filters) -> Result<DiskView> {
    let mut view = DiskView {
        files: BTreeMap::new(),
        skipped: Vec::new(),
    };
    for top in ["cards", "docs"] {
        walk(&layout.cuedeck.join(top), top, filters, &mut view)?;
    }
    if let Some(include) = &filters.include {
        let walker = ignore::WalkBuilder::new(&layout.root)
            .hidden(true)
            .filter_entry(|e| e.file_name() != ".cuedeck" && e.file_name() != ".git")
            .build();
        for entry in walker.flatten() {
            let Ok(rel) = entry.path().strip_prefix(&layout.root) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            if !include.is_match(&rel) || entry.file_type().is_none_or(|t| !t.is_file()) {
                continue;
            }
            consider(entry.path(), &format!("project/{rel}"), filters, &mut view);
        }
    }
    Ok(view)
}

fn walk(dir: &Path, key: &str, filters: &Filters, view: &mut DiskView) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading folder {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading folder {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let child_key = format!("{key}/{name}");
        let meta = match fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(_) => continue, // vanished while we looked: the next scan sees it
        };
        if meta.is_dir() {
            if !name.starts_with('.') && !filters.ignored(&child_key, true) {
                walk(&entry.path(), &child_key, filters, view)?;
            }
        } else {
            consider(&entry.path(), &child_key, filters, view);
        }
    }
    Ok(())
}

/// Removes the temporary file of an atomic write whose process died before
/// renaming it (a `kill -9`, a power cut): `.cue-<pid>.tmp` with no such pid.
fn sweep_stale_temp(path: &Path, name: &str) {
    let Some(pid) = name
        .strip_prefix(".cue-")
        .and_then(|r| r.strip_suffix(".tmp"))
        .and_then(|p| p.parse::<libc::pid_t>().ok())
    else {
        return;
    };
    // SAFETY: signal 0 only checks whether the process exists.
    let gone = unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    if gone {
        let _ = fs::remove_file(path);
    }
}

fn consider(path: &Path, key: &str, filters: &Filters, view: &mut DiskView) {
    let name = key.rsplit('/').next().unwrap_or_default();
    sweep_stale_temp(path, name);
    if is_editor_noise(name) || filters.ignored(key, false) {
        return;
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        view.skipped
            .push(format!("{key}: symbolic links are not synced"));
        return;
    }
    if !meta.is_file() {
        return;
    }
    if meta.len() > MAX_FILE_BYTES {
        view.skipped.push(format!(
            "{key}: {} bytes is over the {MAX_FILE_BYTES}-byte limit; not synced",
            meta.len()
        ));
        return;
    }
    match SyncPath::parse(key) {
        Ok(p) => {
            view.files.insert(p, stat_of(&meta));
        }
        Err(e) => view.skipped.push(format!("{key}: {e}")),
    }
}

/// What a scan found (and, unless it was a dry run, recorded).
#[derive(Debug, Default)]
pub struct Changes {
    pub created: Vec<String>,
    pub edited: Vec<String>,
    pub removed: Vec<String>,
    pub renamed: Vec<(String, String)>,
    pub skipped: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.edited.is_empty()
            && self.removed.is_empty()
            && self.renamed.is_empty()
    }
    pub fn count(&self) -> usize {
        self.created.len() + self.edited.len() + self.removed.len() + self.renamed.len()
    }
}

fn read_text(path: &Path, key: &str) -> std::result::Result<String, String> {
    let bytes = fs::read(path).map_err(|e| format!("{key}: cannot read: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{key}: not valid UTF-8 text; not synced"))
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Finds the user's edits since the last scan and (unless `dry_run`) records
/// them. Unchanged files (same size and mtime) are not even read.
pub fn record_changes<S: Store>(
    ws: &mut Workspace<S>,
    layout: &Layout,
    filters: &Filters,
    dry_run: bool,
    progress: &dyn Fn(u64, u64),
) -> Result<Changes> {
    let view = scan(layout, filters)?;
    let mut changes = Changes {
        skipped: view.skipped,
        ..Changes::default()
    };
    let tracked: HashMap<String, cue_core::store::LocalFile> = ws
        .local_files()
        .values()
        .map(|f| (f.path.clone(), f.clone()))
        .collect();
    let mut missing: Vec<(String, [u8; 32])> = tracked
        .iter()
        // Missing means gone from disk, not merely unseen by this scan (filtered,
        // too big, a symlink, a project file outside this peer's include globs):
        // a delete recorded here is carried out on every peer.
        .filter(|(path, _)| match SyncPath::parse(path) {
            Ok(p) => {
                !view.files.contains_key(&p)
                    && matches!(fs::symlink_metadata(layout.to_disk(&p)), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            }
            Err(_) => false,
        })
        .map(|(path, f)| (path.clone(), f.hash))
        .collect();
    missing.sort();
    let total = view.files.len() as u64;
    let mut rng = rand::rng();
    let now_ns = now_ms().saturating_mul(1_000_000);
    for (i, (path, stat)) in view.files.iter().enumerate() {
        progress(i as u64, total);
        if let Some(f) = tracked.get(path.as_str()) {
            // Size and mtime prove nothing for a file modified in the last
            // seconds: file-system clocks tick coarsely, so a save of the same
            // size right after our own write can carry the same mtime ("racy
            // git"). Such files are read and hashed.
            let settled = now_ns.saturating_sub(stat.mtime_ns) > RACY_NS;
            if settled && f.size == stat.size && f.mtime_ns == stat.mtime_ns {
                continue;
            }
        }
        let text = match read_text(&layout.to_disk(path), path.as_str()) {
            Ok(t) => t,
            Err(why) => {
                changes.skipped.push(why);
                continue;
            }
        };
        let hash = content_hash(text.as_bytes());
        if !tracked.contains_key(path.as_str()) {
            // A new path whose bytes equal a vanished file's: a rename.
            if let Some(pos) = missing.iter().position(|(_, h)| *h == hash) {
                let (from, _) = missing.remove(pos);
                if !dry_run {
                    ws.record_rename(&from, path, now_ms())?;
                    ws.record_write(path, &text, *stat, now_ms(), &mut rng)?;
                }
                changes.renamed.push((from, path.to_string()));
                continue;
            }
        }
        if dry_run {
            match tracked.get(path.as_str()) {
                None => changes.created.push(path.to_string()),
                Some(f) if f.hash != hash => changes.edited.push(path.to_string()),
                Some(_) => {}
            }
            continue;
        }
        match ws.record_write(path, &text, *stat, now_ms(), &mut rng)? {
            Recorded::Created(_) => changes.created.push(path.to_string()),
            Recorded::Edited(_) => changes.edited.push(path.to_string()),
            Recorded::Unchanged => {}
        }
    }
    progress(total, total);
    for (path, _) in missing {
        if !dry_run {
            ws.record_removal(&path, now_ms())?;
        }
        changes.removed.push(path);
    }
    Ok(changes)
}

/// Finishes recording a checkout that a crash (or a commit that failed on a
/// full disk) cut short, before any scan can mistake our own writes for the
/// user's: see [`Workspace::settle_checkout`]. Returns how many were found.
pub fn settle_checkout<S: Store>(ws: &mut Workspace<S>, layout: &Layout) -> Result<usize> {
    // Present but not what any checkout writes (a folder, a symlink, an
    // unreadable file): a hash no content has.
    let foreign = ([0u8; 32], Stat::default());
    let settled = ws.settle_checkout(|path| {
        let target = layout.to_disk(path);
        let meta = fs::symlink_metadata(&target).ok()?;
        if !meta.is_file() {
            return Some(foreign);
        }
        match fs::read(&target) {
            Ok(bytes) => Some((content_hash(&bytes), stat_of(&meta))),
            Err(_) => Some(foreign),
        }
    })?;
    Ok(settled)
}

/// What writing a plan did.
#[derive(Debug, Default)]
pub struct Applied {
    pub written: Vec<String>,
    pub removed: Vec<String>,
    /// Ops not carried out, with why (the user changed the file meanwhile...),
    /// after the files the plan could not place at all.
    pub skipped: Vec<String>,
    /// How many of `skipped` are operations not carried out: a retry may
    /// succeed, unlike for a file that cannot be placed.
    pub unwritten: usize,
}

/// Carries out a plan: atomic writes (temp file, fsync, rename) that never
/// overwrite a file the user changed since it was last read.
///
/// With `durable` false (a fresh clone, where nobody can have edited yet), files
/// are not fsynced one by one; the caller syncs the file system once before
/// committing, which turns a thousand journal commits into one.
pub fn apply_plan<S: Store>(
    ws: &mut Workspace<S>,
    layout: &Layout,
    plan: Plan,
    durable: bool,
    progress: &dyn Fn(u64, u64),
) -> Result<Applied> {
    let unplaced = plan.problems.len();
    let mut done = Applied {
        skipped: plan.problems,
        ..Applied::default()
    };
    let total = plan.ops.len() as u64;
    for (i, op) in plan.ops.iter().enumerate() {
        progress(i as u64, total);
        match op {
            DiskOp::Write {
                path,
                bytes,
                expect,
                ..
            } => {
                let target = layout.to_disk(path);
                if let Err(why) =
                    check_parents(layout, path, true).and_then(|_| check_expected(&target, *expect))
                {
                    done.skipped.push(format!("{path}: {why}"));
                    continue;
                }
                let stat = match write_file(&target, bytes.as_bytes(), durable) {
                    Ok(stat) => stat,
                    Err(e) => {
                        done.skipped.push(format!("{path}: cannot write: {e:#}"));
                        continue;
                    }
                };
                ws.applied(op, stat)?;
                done.written.push(path.to_string());
            }
            DiskOp::Remove { path, expect, .. } => {
                let target = layout.to_disk(path);
                if let Err(why) = check_parents(layout, path, false)
                    .and_then(|_| check_expected(&target, Some(*expect)))
                {
                    done.skipped.push(format!("{path}: {why}"));
                    continue;
                }
                match fs::remove_file(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing {}", target.display()))
                    }
                }
                ws.applied(op, Stat::default())?;
                done.removed.push(path.to_string());
            }
        }
    }
    progress(total, total);
    done.unwritten = done.skipped.len() - unplaced;
    Ok(done)
}

/// Refuses to write through a symlinked folder (which could lead outside the
/// workspace); with `create`, makes the folders a write needs.
fn check_parents(
    layout: &Layout,
    path: &SyncPath,
    create: bool,
) -> std::result::Result<(), String> {
    let (base, rest) = layout.base_and_rest(path);
    let mut dir = base.to_path_buf();
    let parts: Vec<&str> = rest.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link; not writing through it",
                    dir.display()
                ))
            }
            Ok(m) if !m.is_dir() => return Err(format!("{} is not a folder", dir.display())),
            Ok(_) => {}
            Err(_) if create => {
                fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?
            }
            Err(_) => return Ok(()), // nothing below a missing folder to check
        }
    }
    Ok(())
}

fn check_expected(target: &Path, expect: Option<[u8; 32]>) -> std::result::Result<(), String> {
    match (fs::symlink_metadata(target), expect) {
        (Ok(m), _) if m.file_type().is_symlink() => {
            Err("is a symbolic link; not replacing it".into())
        }
        (Err(_), None) => Ok(()),
        (Err(_), Some(_)) => Err(
            "removed since it was last recorded; the removal is recorded on the next run".into(),
        ),
        (Ok(_), None) => Err(
            "a file appeared there that is not recorded yet; it will be merged on the next run"
                .into(),
        ),
        (Ok(_), Some(want)) => {
            let bytes = fs::read(target).map_err(|e| format!("cannot read: {e}"))?;
            if content_hash(&bytes) == want {
                Ok(())
            } else {
                Err("changed on disk since it was last recorded; keeping your version, it will be merged on the next run".into())
            }
        }
    }
}

/// Writes a file so that readers see the old bytes or the new, never a mix:
/// a temp file in the same folder, fsync, rename over, fsync the folder.
pub fn atomic_write(target: &Path, bytes: &[u8]) -> Result<Stat> {
    write_file(target, bytes, true)
}

/// Flushes every written file to disk at once (after a non-durable [`apply_plan`]).
pub fn sync_all_files() {
    #[cfg(unix)]
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe {
        libc::sync();
    }
}

fn write_file(target: &Path, bytes: &[u8], durable: bool) -> Result<Stat> {
    let dir = target.parent().context("target has no parent folder")?;
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
        return Err(e.into());
    }
    Ok(stat_of(&fs::metadata(target)?))
}
