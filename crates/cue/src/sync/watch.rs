//! Watching the workspace's folders: a burst of events (an editor's atomic
//! save is a write, a rename and a chmod) becomes one "something changed".
//!
//! What changed is then found by the same scan every command runs (sizes and
//! mtimes first, hashes only for files that moved), so a missed or coalesced
//! event loses nothing, and the daemon's own writes are recognised by their
//! hashes and never echoed back to peers.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};

use super::daemon::Event;
use crate::disk::{is_editor_noise, Layout};

/// Quiet time that ends a burst.
const QUIET: Duration = Duration::from_millis(5);
/// A burst that never goes quiet is still reported this often.
const MAX_WAIT: Duration = Duration::from_millis(150);

/// Keeps the watcher alive; dropping it stops watching.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Whether an event path is worth a scan: not our state, not editor noise.
fn relevant(path: &Path, sync_dir: &Path) -> bool {
    if path.starts_with(sync_dir) {
        return false;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !(is_editor_noise(name) || name.starts_with(".cue-"))
}

/// Starts watching `layout`'s synced folders; sends [`Event::Disk`] per burst.
pub fn start(layout: &Layout, events: mpsc::Sender<Event>) -> Result<FolderWatch> {
    let (raw_tx, raw_rx) = mpsc::channel::<PathBuf>();
    let sync_dir = layout.sync_dir();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) => {
                for p in ev.paths {
                    if relevant(&p, &sync_dir) {
                        let _ = raw_tx.send(p);
                    }
                }
            }
            // An overflowed inotify queue: scan anyway, the scan finds everything.
            Err(_) => {
                let _ = raw_tx.send(PathBuf::new());
            }
        }
    })
    .context("starting the file watcher")?;
    let root = layout.cuedeck.clone();
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", root.display()))?;
    std::thread::Builder::new()
        .name("cue-watch".into())
        .spawn(move || debounce(raw_rx, events))
        .context("starting the watcher thread")?;
    Ok(FolderWatch { _watcher: watcher })
}

fn debounce(raw: mpsc::Receiver<PathBuf>, events: mpsc::Sender<Event>) {
    while raw.recv().is_ok() {
        let started = Instant::now();
        loop {
            match raw.recv_timeout(QUIET) {
                Ok(_) if started.elapsed() < MAX_WAIT => continue,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if events.send(Event::Disk).is_err() {
            return;
        }
    }
}
