//! Watching the workspace's folders: a burst of events (an editor's atomic
//! save is a write, a rename and a chmod) becomes one [`Event::Disk`] naming
//! the paths that changed, so the daemon looks at those paths only.
//!
//! What changed at those paths is found by the same scan every command runs
//! (sizes and mtimes first, hashes only when they moved), so a coalesced
//! event loses nothing, and the daemon's own writes are recognised by their
//! hashes and never echoed back to peers. When the kernel's event queue
//! overflows, or too many paths pile up, the daemon scans everything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc as tmpsc;

use super::daemon::{DiskChange, Event};
use crate::disk::{Filters, Layout};

/// Quiet time that ends a burst.
const QUIET: Duration = Duration::from_millis(5);
/// A burst that never goes quiet is still reported this often.
const MAX_WAIT: Duration = Duration::from_millis(150);
/// Raw events buffered between the watcher and the debouncer; past this the
/// daemon is told to scan everything instead.
const RAW_QUEUE: usize = 16_384;
/// Paths named in one burst past which one full scan is cheaper.
const MAX_PATHS: usize = 4_096;

/// Keeps the watcher alive; dropping it stops watching.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Whether an event path is worth a scan: not our state, not our temp files.
fn relevant(path: &Path, sync_dir: &Path) -> bool {
    if path.starts_with(sync_dir) {
        return false;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !(name.starts_with(".cue-") && name.ends_with(".tmp"))
}

/// Starts watching `layout`'s synced folders (and the project folders that
/// `sync.include` globs start in); sends one [`Event::Disk`] per burst.
pub fn start(
    layout: &Layout,
    filters: &Filters,
    events: tmpsc::Sender<Event>,
) -> Result<FolderWatch> {
    let (raw_tx, raw_rx) = mpsc::sync_channel::<PathBuf>(RAW_QUEUE);
    let overflow = Arc::new(AtomicBool::new(false));
    let lost = Arc::clone(&overflow);
    let sync_dir = layout.sync_dir();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            // Reads (an editor opening a file, our own hashing) change nothing.
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => {}
            Ok(ev) => {
                for p in ev.paths {
                    if relevant(&p, &sync_dir) && raw_tx.try_send(p).is_err() {
                        lost.store(true, Ordering::Relaxed);
                    }
                }
            }
            // An overflowed inotify queue: scan everything (and wake the
            // debouncer, which may be waiting for an event).
            Err(_) => {
                lost.store(true, Ordering::Relaxed);
                let _ = raw_tx.try_send(PathBuf::new());
            }
        }
    })
    .context("starting the file watcher")?;
    let root = layout.cuedeck.clone();
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", root.display()))?;
    for rel in filters.include_roots() {
        let dir = if rel.is_empty() {
            layout.root.clone()
        } else {
            layout.root.join(rel)
        };
        // Watching the project root itself would also watch .git: only its
        // files, non-recursively; deeper include folders recursively.
        let mode = if rel.is_empty() {
            RecursiveMode::NonRecursive
        } else {
            RecursiveMode::Recursive
        };
        if dir.is_dir() {
            watcher
                .watch(&dir, mode)
                .with_context(|| format!("watching {}", dir.display()))?;
        }
    }
    let layout = layout.clone();
    std::thread::Builder::new()
        .name("cue-watch".into())
        .spawn(move || debounce(raw_rx, &layout, &overflow, events))
        .context("starting the watcher thread")?;
    Ok(FolderWatch { _watcher: watcher })
}

fn debounce(
    raw: mpsc::Receiver<PathBuf>,
    layout: &Layout,
    overflow: &AtomicBool,
    events: tmpsc::Sender<Event>,
) {
    while let Ok(first) = raw.recv() {
        let started = Instant::now();
        let mut keys = BTreeSet::new();
        let mut add = |p: PathBuf| {
            if let Some(key) = layout.key_of(&p) {
                keys.insert(key);
            }
        };
        add(first);
        loop {
            match raw.recv_timeout(QUIET) {
                Ok(p) => {
                    add(p);
                    if started.elapsed() >= MAX_WAIT {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let everything =
            overflow.swap(false, Ordering::Relaxed) || keys.len() > MAX_PATHS || keys.contains("");
        let change = if everything {
            DiskChange::Everything
        } else if keys.is_empty() {
            continue;
        } else {
            DiskChange::Paths(keys.into_iter().collect())
        };
        // Waits while the engine is busy; events arriving meanwhile pile up
        // in the raw queue, and past its size become one full scan.
        if events.blocking_send(Event::Disk(change)).is_err() {
            return;
        }
    }
}
