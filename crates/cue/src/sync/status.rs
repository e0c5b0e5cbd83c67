//! What a running daemon tells other processes: a lock that proves it runs,
//! and a status file it rewrites as things change.
//!
//! `.cuedeck/sync/daemon.lock` is held with `flock` for the daemon's lifetime
//! and holds its pid, so a second daemon on the same workspace is refused and
//! `cue sync stop` knows whom to signal. `.cuedeck/sync/daemon.json` is the
//! daemon's own view (relay, peers, last sync, unsent edits), replaced
//! atomically; it is believed only while the lock is held.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

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
pub struct DaemonLock {
    _file: File,
}

fn lock_path(layout: &Layout) -> PathBuf {
    layout.sync_dir().join("daemon.lock")
}

fn status_path(layout: &Layout) -> PathBuf {
    layout.sync_dir().join("daemon.json")
}

fn try_flock(file: &File) -> bool {
    // SAFETY: flock on a file descriptor this File owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl DaemonLock {
    /// Takes the lock or says which daemon holds it.
    pub fn acquire(layout: &Layout) -> Result<DaemonLock> {
        let path = lock_path(layout);
        let mut file = crate::store::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if !try_flock(&file) {
            let pid = running_pid(layout)
                .map(|p| p.to_string())
                .unwrap_or_default();
            anyhow::bail!(
                "another cue daemon (pid {pid}) is already syncing this workspace; `cue sync stop` stops it"
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(DaemonLock { _file: file })
    }
}

/// The pid of the running daemon, if one holds the lock.
pub fn running_pid(layout: &Layout) -> Option<u32> {
    let mut file = File::open(lock_path(layout)).ok()?;
    if try_flock(&file) {
        // Nobody holds it: no daemon. (Our lock goes away with the File.)
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
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
    running_pid(layout)?;
    let bytes = std::fs::read(status_path(layout)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
