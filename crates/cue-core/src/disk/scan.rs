//! Finding what the user did to the synced files, and recording it.
//!
//! A scan compares what the disk holds with what this peer last recorded
//! there. Files whose size and mtime are unchanged (and not too recent to
//! trust) are not even read; the others are hashed, and a hash that differs
//! is an edit. A tracked file gone from disk is a deletion, unless a new path
//! holds exactly its bytes: then it is a rename, and the file keeps its
//! history. A scan can cover everything or only the paths a watcher named.

use std::collections::BTreeMap;

use crate::doc::DocError;
use crate::store::{LocalFile, Store};
use crate::workspace::{content_hash, NewFile, Recorded, Workspace, WorkspaceError};
use crate::SyncPath;

use super::{DiskError, FileSystem, Listing, SkipReason, Skipped, Stat, RACY_NS};

/// Which part of the disk a scan looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Everything: at start, after the watcher lost events, and now and then.
    All,
    /// Only these paths or folders (relative to `.cuedeck/`, `project/…` for
    /// include files): what a file watcher reported. An edit costs work in
    /// proportion to what it touched, not to the size of the workspace.
    Under(&'a [String]),
}

/// How a scan runs.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Find the changes without recording them (`cue status`).
    pub dry_run: bool,
    /// The wall clock, in ms since the Unix epoch: recorded in each change,
    /// and what tells a file's mtime is too recent to trust.
    pub now_ms: i64,
}

/// What a scan found (and, unless it was a dry run, recorded).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<String>,
    pub edited: Vec<String>,
    pub removed: Vec<String>,
    pub renamed: Vec<(String, String)>,
    /// Paths on disk that are not synced, with the reason.
    pub skipped: Vec<Skipped>,
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

/// Whether `path` is `under`, or inside the folder `under`.
fn is_under(path: &str, under: &str) -> bool {
    under.is_empty()
        || path == under
        || (path.starts_with(under) && path.as_bytes().get(under.len()) == Some(&b'/'))
}

/// Finds the user's edits in `scope` and (unless `dry_run`) records them in
/// `ws`. Recorded changes are staged; the caller commits them
/// ([`Workspace::commit`]) in one transaction before it sends them anywhere.
/// `progress(done, total)` is called as files are looked at.
/// Edits recorded together, their documents loaded on every core first: a
/// branch switch or a find-and-replace changes many files at once.
const EDITS_AT_ONCE: usize = crate::workspace::CACHE_DOCS / 2;

/// A tracked file whose content changed: path, text, stat, content hash.
type Edit = (SyncPath, String, Stat, [u8; 32]);

/// Records the edits collected so far, after loading their documents at once.
fn record_edits<S: Store>(
    ws: &mut Workspace<S>,
    edits: &mut Vec<Edit>,
    changes: &mut Changes,
    now_ms: i64,
    rng: &mut impl rand::Rng,
) -> Result<(), DiskError> {
    if edits.is_empty() {
        return Ok(());
    }
    let wanted: Vec<(&str, [u8; 32])> = edits.iter().map(|(p, _, _, h)| (p.as_str(), *h)).collect();
    ws.prefetch_edits(&wanted)?;
    for (path, text, stat, _) in edits.drain(..) {
        match ws.record_write(&path, &text, stat, now_ms, rng) {
            Ok(recorded) => tally(changes, path.to_string(), Ok(recorded)),
            Err(WorkspaceError::Doc(e)) => tally(changes, path.to_string(), Err(e)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Counts what one file became; a file refused by its document (over a
/// limit) is skipped and the others go on.
fn tally(changes: &mut Changes, path: String, recorded: Result<Recorded, DocError>) {
    match recorded {
        Ok(Recorded::Created(_)) => changes.created.push(path),
        Ok(Recorded::Edited(_)) => changes.edited.push(path),
        Ok(Recorded::Unchanged) => {}
        Err(e) => changes.skipped.push(Skipped {
            path,
            reason: SkipReason::Refused(e.to_string()),
        }),
    }
}

/// New files recorded together (their documents built on every core), few
/// enough that their texts stay small in memory: an import of 10,000 notes
/// held every text at once before.
const FRESH_AT_ONCE: usize = 1024;

/// Records the new files collected so far.
fn record_fresh<S: Store>(
    ws: &mut Workspace<S>,
    fresh: &mut Vec<NewFile>,
    changes: &mut Changes,
    now_ms: i64,
    rng: &mut impl rand::Rng,
) -> Result<(), DiskError> {
    if fresh.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(fresh);
    let paths: Vec<String> = batch.iter().map(|f| f.path.to_string()).collect();
    for (path, recorded) in paths.into_iter().zip(ws.record_new(batch, now_ms, rng)?) {
        tally(changes, path, recorded);
    }
    Ok(())
}

pub fn scan<S: Store, F: FileSystem>(
    ws: &mut Workspace<S>,
    fs: &mut F,
    scope: Scope<'_>,
    opts: ScanOptions,
    rng: &mut impl rand::Rng,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Changes, DiskError> {
    let roots: Vec<&str> = match scope {
        Scope::All => vec![""],
        Scope::Under(paths) => {
            // A folder covers the paths inside it; nothing is looked at twice.
            let mut sorted: Vec<&str> = paths.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            sorted.dedup();
            let mut roots: Vec<&str> = Vec::new();
            for p in sorted {
                if !roots.iter().any(|r| is_under(p, r)) {
                    roots.retain(|r| !is_under(r, p));
                    roots.push(p);
                }
            }
            roots
        }
    };
    let mut view = Listing::default();
    for root in &roots {
        let listing = fs.list(root)?;
        view.files.extend(listing.files);
        view.skipped.extend(listing.skipped);
    }
    let mut changes = Changes {
        skipped: view.skipped,
        ..Changes::default()
    };
    let tracked: BTreeMap<String, LocalFile> = roots
        .iter()
        .flat_map(|root| ws.local_under(root))
        .map(|(path, f)| (path.to_string(), f.clone()))
        .collect();
    // Missing means gone from disk, not merely unseen by this scan (filtered,
    // too big, a symlink, a project file outside this peer's include globs):
    // a delete recorded here is carried out on every peer.
    let mut missing: Vec<(String, [u8; 32])> = Vec::new();
    for (path, f) in &tracked {
        let Ok(p) = SyncPath::parse(path) else {
            continue;
        };
        if !view.files.contains_key(&p) && fs.stat(&p)?.is_none() {
            missing.push((path.clone(), f.hash));
        }
    }
    let total = view.files.len() as u64;
    let mut fresh: Vec<NewFile> = Vec::new();
    let mut edits: Vec<Edit> = Vec::new();
    let now_ns = opts.now_ms.saturating_mul(1_000_000);
    for (i, (path, stat)) in view.files.iter().enumerate() {
        progress(i as u64, total);
        let known = tracked.get(path.as_str());
        if let Some(f) = known {
            let settled = now_ns.saturating_sub(stat.mtime_ns) > RACY_NS;
            if settled && f.size == stat.size && f.mtime_ns == stat.mtime_ns {
                continue;
            }
        }
        let text = match fs.read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    changes.skipped.push(Skipped {
                        path: path.to_string(),
                        reason: SkipReason::NotUtf8,
                    });
                    continue;
                }
            },
            // Vanished or unreadable between the listing and now: the next
            // scan sees what became of it.
            Err(e) => {
                changes.skipped.push(Skipped {
                    path: path.to_string(),
                    reason: SkipReason::Unreadable(e.to_string()),
                });
                continue;
            }
        };
        let hash = content_hash(text.as_bytes());
        if known.is_none() {
            // A new path whose bytes equal a vanished file's: a rename.
            if let Some(pos) = missing.iter().position(|(_, h)| *h == hash) {
                let (from, _) = missing.remove(pos);
                if !opts.dry_run {
                    ws.record_rename(&from, path, opts.now_ms)?;
                    ws.record_write(path, &text, *stat, opts.now_ms, rng)?;
                }
                changes.renamed.push((from, path.to_string()));
                continue;
            }
        }
        if opts.dry_run {
            match known {
                None => changes.created.push(path.to_string()),
                Some(f) if f.hash != hash => changes.edited.push(path.to_string()),
                Some(_) => {}
            }
            continue;
        }
        if known.is_none() {
            // Recorded together below, their documents built on every core.
            fresh.push(NewFile {
                path: path.clone(),
                text,
                stat: *stat,
            });
            if fresh.len() >= FRESH_AT_ONCE {
                record_fresh(ws, &mut fresh, &mut changes, opts.now_ms, rng)?;
            }
            continue;
        }
        edits.push((path.clone(), text, *stat, hash));
        if edits.len() >= EDITS_AT_ONCE {
            record_edits(ws, &mut edits, &mut changes, opts.now_ms, rng)?;
        }
    }
    record_edits(ws, &mut edits, &mut changes, opts.now_ms, rng)?;
    progress(total, total);
    record_fresh(ws, &mut fresh, &mut changes, opts.now_ms, rng)?;
    for (path, _) in missing {
        if !opts.dry_run {
            ws.record_removal(&path, opts.now_ms)?;
        }
        changes.removed.push(path);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::is_under;

    #[test]
    fn under_means_inside_the_folder() {
        assert!(is_under("docs/a.md", ""));
        assert!(is_under("docs/a.md", "docs"));
        assert!(is_under("docs/a.md", "docs/a.md"));
        assert!(!is_under("docs2/a.md", "docs"));
        assert!(!is_under("docs", "docs/a.md"));
    }
}
