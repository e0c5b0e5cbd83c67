//! Seeing files arrive: one inotify watcher over every peer's
//! `.cuedeck/docs`, reporting (peer, path, when) as the kernel tells it.
//!
//! Reads are not arrivals: notify also reports opens and read-only closes,
//! and reacting to those would make the bench read in a loop (its own read
//! is an event). The daemons watch opens too (every read the bench makes is
//! a scan for them), so the bench reads a file only when its stat changed:
//! see [`Contents`].

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use notify::{RecursiveMode, Watcher};

use crate::must;

pub struct Arrivals {
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::Receiver<(usize, PathBuf, Instant)>,
    /// Times the kernel's event queue overflowed (events were lost).
    overflows: Arc<AtomicUsize>,
}

impl Arrivals {
    pub fn watch(roots: &[PathBuf]) -> Arrivals {
        let (tx, rx) = mpsc::channel();
        let overflows = Arc::new(AtomicUsize::new(0));
        let lost = Arc::clone(&overflows);
        let docs: Vec<PathBuf> = roots.iter().map(|r| r.join(".cuedeck/docs")).collect();
        let bases = docs.clone();
        let mut watcher = must(
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let at = Instant::now();
                match res {
                    Ok(ev) => {
                        if ev.need_rescan() {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                        use notify::event::{AccessKind, AccessMode, EventKind};
                        let write = match ev.kind {
                            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                            EventKind::Access(_) => false,
                            _ => true,
                        };
                        if !write {
                            return;
                        }
                        for p in ev.paths {
                            if let Some(i) = bases.iter().position(|b| p.starts_with(b)) {
                                let _ = tx.send((i, p, at));
                            }
                        }
                    }
                    Err(_) => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }),
            "starting the watcher",
        );
        for d in &docs {
            must(
                watcher.watch(d, RecursiveMode::Recursive),
                "watching a peer",
            );
        }
        Arrivals {
            _watcher: watcher,
            rx,
            overflows,
        }
    }

    /// The next event, or `None` once `deadline` passes.
    pub fn next_until(&self, deadline: Instant) -> Option<(usize, PathBuf, Instant)> {
        self.rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }

    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    pub fn overflows(&self) -> usize {
        self.overflows.load(Ordering::Relaxed)
    }
}

/// File contents as last read, read again only when the file's stat
/// (inode, size, mtime) changed: a stat is invisible to inotify, a read is not.
#[derive(Default)]
pub struct Contents {
    seen: HashMap<PathBuf, (Stat, String)>,
}

/// Inode, size, mtime seconds and nanoseconds.
type Stat = (u64, u64, i64, i64);

impl Contents {
    pub fn get(&mut self, path: &Path) -> &str {
        let stat = std::fs::metadata(path)
            .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
            .unwrap_or_default();
        let fresh = self.seen.get(path).is_some_and(|(s, _)| *s == stat);
        if !fresh {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            self.seen.insert(path.to_path_buf(), (stat, text));
        }
        self.seen.get(path).map_or("", |(_, t)| t.as_str())
    }
}
