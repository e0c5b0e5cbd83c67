//! What a running daemon tells other processes: a lock that proves it runs,
//! and a status file it rewrites as things change.
//!
//! `.cuedeck/sync/daemon.lock` is locked (`File::lock`) for the daemon's
//! lifetime and holds its pid. The lock, not the pid, says whether a daemon
//! runs: the OS drops it when the process dies, however it dies, whereas a pid
//! may have been reused by an unrelated process since. A second daemon on the
//! same workspace is refused; `cue sync stop` reads whom to signal.
//! `.cuedeck/sync/daemon.json` is the daemon's own view (relay, peers, last
//! sync, unsent edits), replaced atomically; it is believed only while the
//! lock is held.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::Layout;

/// The daemon's report of itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DaemonStatus {
    pub pid: u32,
    pub started_ms: i64,
    pub updated_ms: i64,
    pub relay: String,
    pub connected: bool,
    pub peers: Vec<PeerStatus>,
    pub last_sync_ms: Option<i64>,
    pub unsent_changes: usize,
    pub full_resync: bool,
    pub last_problem: Option<String>,
}

/// One other peer in the room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub peer: String,
    pub member: Option<String>,
}

/// Proof that this process is the workspace's daemon; released on drop.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

/// Whether a daemon runs on a workspace, as its lock says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running {
    No,
    /// The lock is held. `pid` is `None` for the instant between a new
    /// daemon taking the lock and writing its pid.
    Yes {
        pid: Option<u32>,
    },
}

/// How long a starting daemon keeps trying a lock that is held. Other
/// commands look at the lock by taking it for an instant (`cue sync start`
/// does so every 50 ms while it waits for the new daemon): a daemon that met
/// one of those looks would otherwise take it for a running daemon and quit.
/// A daemon that really runs holds the lock for much longer than this.
const LOCK_PATIENCE: Duration = Duration::from_secs(1);

fn lock_path(layout: &Layout) -> PathBuf {
    layout.sync_dir().join("daemon.lock")
}

fn status_path(layout: &Layout) -> PathBuf {
    layout.sync_dir().join("daemon.json")
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl DaemonLock {
    /// Takes the lock, or says which daemon holds it. A lock file left by a
    /// daemon that died is not held by anyone and is simply taken over.
    pub fn acquire(layout: &Layout) -> Result<DaemonLock> {
        let path = lock_path(layout);
        let mut file = crate::store::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let give_up = Instant::now() + LOCK_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    let pid = read_pid(&mut file)
                        .map(|p| format!(" (pid {p})"))
                        .unwrap_or_default();
                    anyhow::bail!(
                        "another cue daemon{pid} is already syncing this workspace; `cue sync status` shows it, `cue sync stop` stops it"
                    );
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(DaemonLock { _file: file })
    }
}

/// Whether a daemon holds the workspace's lock, and its pid.
pub fn running(layout: &Layout) -> Running {
    let Ok(mut file) = File::open(lock_path(layout)) else {
        return Running::No;
    };
    // Shared: several commands may look at once without refusing each other.
    match file.try_lock_shared() {
        // Nobody holds it: no daemon. (Our lock goes away with the File.)
        Ok(()) => Running::No,
        Err(TryLockError::WouldBlock) => Running::Yes {
            pid: read_pid(&mut file),
        },
        // A lock that cannot even be tried (a file system without locks):
        // no daemon could have taken it either.
        Err(TryLockError::Error(_)) => Running::No,
    }
}

/// The pid of the running daemon, if one holds the lock and has written it.
pub fn running_pid(layout: &Layout) -> Option<u32> {
    match running(layout) {
        Running::Yes { pid } => pid,
        Running::No => None,
    }
}

/// Replaces the status file atomically.
pub fn write_status(layout: &Layout, status: &DaemonStatus) -> Result<()> {
    let path = status_path(layout);
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let mut f = crate::store::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(status)?)?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The running daemon's status, or `None` if no daemon runs.
pub fn read_status(layout: &Layout) -> Option<DaemonStatus> {
    if running(layout) == Running::No {
        return None;
    }
    let bytes = std::fs::read(status_path(layout)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout::at(dir.path());
        std::fs::create_dir_all(layout.sync_dir()).expect("sync dir");
        (dir, layout)
    }

    #[test]
    fn a_second_daemon_is_refused_with_the_first_ones_pid() {
        let (_dir, layout) = workspace();
        let _first = DaemonLock::acquire(&layout).expect("first daemon");
        let err = DaemonLock::acquire(&layout).expect_err("second daemon");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("already syncing this workspace")
                && msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains("cue sync stop"),
            "{msg}"
        );
        assert_eq!(
            running(&layout),
            Running::Yes {
                pid: Some(std::process::id())
            }
        );
    }

    #[test]
    fn a_lock_file_left_by_a_dead_daemon_does_not_block() {
        let (_dir, layout) = workspace();
        // What a killed daemon leaves: its pid in a file nobody locks.
        std::fs::write(lock_path(&layout), "4194303").expect("stale lock file");
        assert_eq!(running(&layout), Running::No);
        assert_eq!(running_pid(&layout), None);
        let _lock = DaemonLock::acquire(&layout).expect("taken over");
        assert_eq!(running_pid(&layout), Some(std::process::id()));
    }

    #[test]
    fn the_lock_is_free_again_once_the_daemon_ends() {
        let (_dir, layout) = workspace();
        drop(DaemonLock::acquire(&layout).expect("first daemon"));
        assert_eq!(running(&layout), Running::No);
        DaemonLock::acquire(&layout).expect("second daemon, after the first ended");
    }

    #[test]
    fn a_look_at_the_lock_does_not_make_a_starting_daemon_quit() {
        let (_dir, layout) = workspace();
        // Someone looking at the lock holds it for a moment, as a waiting
        // `cue sync start` does.
        std::fs::write(lock_path(&layout), "").expect("lock file");
        let looker = File::open(lock_path(&layout)).expect("lock file");
        looker.try_lock_shared().expect("look");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(looker);
        });
        DaemonLock::acquire(&layout).expect("the daemon waits out the look");
        release.join().expect("looker");
    }

    #[test]
    fn the_status_is_believed_only_while_the_lock_is_held() {
        let (_dir, layout) = workspace();
        let status = DaemonStatus {
            pid: std::process::id(),
            ..DaemonStatus::default()
        };
        let lock = DaemonLock::acquire(&layout).expect("lock");
        write_status(&layout, &status).expect("status");
        assert_eq!(read_status(&layout), Some(status));
        drop(lock);
        assert_eq!(read_status(&layout), None);
    }
}
