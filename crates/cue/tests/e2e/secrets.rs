//! Secrets stay out of argv and out of files other local users can read:
//! `.cuedeck/sync/` is 0700 with every file in it 0600, and config.toml
//! (which may hold the relay token) is 0600, whatever the umask; a workspace
//! made under a loose umask is fixed when next opened. Join codes come from
//! standard input, a file or the environment.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::livekit::{invite, wait_until, Daemon, Relay};
use crate::testkit::{run_in, Peer};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file under `.cuedeck/sync/` is 0600 and every folder 0700, and
/// config.toml is 0600. Returns the files checked.
fn assert_private(peer: &Peer) -> Vec<String> {
    let sync = peer.path("sync");
    assert_eq!(mode(&sync), 0o700, "{}", sync.display());
    assert_eq!(mode(&peer.path("config.toml")), 0o600, "config.toml");
    let mut seen = Vec::new();
    let mut dirs = vec![sync];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                dirs.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                seen.push(
                    path.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default(),
                );
            }
        }
    }
    seen
}

#[test]
fn sync_state_key_and_config_are_private_whatever_the_umask() {
    // SAFETY: umask only sets this process's file-creation mask; nextest runs
    // each test in its own process, and the cue processes inherit it.
    unsafe {
        libc::umask(0o022);
    }
    let relay = Relay::start(&[]);
    let a = Peer::init("ana");
    let _ = invite(&a, &relay.url());
    let files = assert_private(&a);
    for f in ["state.db", "key", "write.lock"] {
        assert!(files.iter().any(|s| s == f), "{f} missing from {files:?}");
    }
    // The daemon's files too: its lock, log-free status file, and SQLite's
    // -wal and -shm while it runs.
    let daemon = Daemon::start(&a, &relay.url(), &[]);
    daemon.wait_log("Connected to the relay");
    wait_until("the daemon's status file", || {
        a.path("sync/daemon.json").exists()
    });
    let files = assert_private(&a);
    for f in ["daemon.lock", "daemon.json", "state.db-wal", "state.db-shm"] {
        assert!(files.iter().any(|s| s == f), "{f} missing from {files:?}");
    }
    drop(daemon);

    // A workspace left readable (an older cue, a loose umask) is fixed when opened.
    for rel in ["sync/state.db", "sync/key", "config.toml"] {
        std::fs::set_permissions(a.path(rel), std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::set_permissions(a.path("sync"), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    a.ok(&["status"]);
    assert_private(&a);
}

#[test]
fn join_codes_come_from_a_file_or_the_environment_and_argv_warns() {
    let relay = Relay::start(&[]);
    let a = Peer::init("ana");
    let code = invite(&a, &relay.url());
    let b = Peer::clone_of(&a, "bo");
    std::fs::remove_file(b.path("sync/key")).ok();

    let code_file = b.root.join("code.txt");
    std::fs::write(&code_file, format!("{code}\n")).unwrap_or_else(|e| panic!("{e}"));
    let out = b.run(&[
        "sync",
        "join",
        "--code-file",
        code_file.to_str().unwrap_or_default(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("visible to other local users"));
    assert!(b.path("sync/key").exists());
    assert_private(&b);

    // As an argument it still works, with a warning.
    let out = b.run(&["sync", "join", &code]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("visible to other local users"), "{err}");

    // From the environment, with nothing in argv.
    let out = std::process::Command::new(crate::testkit::cue_bin())
        .args(["sync", "join"])
        .current_dir(&b.root)
        .env("CUE_JOIN_CODE", &code)
        .env("CUE_MEMBER", "bo")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Joined"));

    // Both a code and a code file: a usage error, nothing changed.
    let out = run_in(
        &b.root,
        "bo",
        &[
            "sync",
            "join",
            &code,
            "--code-file",
            code_file.to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}
