//! A peer is a temporary project folder plus the real `cue` binary run in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Peer {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub member: String,
}

pub fn cue_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cue")
}

/// Runs `cue` with arguments in `dir`, as `member`.
pub fn run_in(dir: &Path, member: &str, args: &[&str]) -> Output {
    Command::new(cue_bin())
        .args(args)
        .current_dir(dir)
        .env("CUE_MEMBER", member)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("running cue {args:?}: {e}"))
}

impl Peer {
    /// A fresh folder, not yet a workspace.
    pub fn new(member: &str) -> Peer {
        let tmp = tempfile::Builder::new()
            .prefix("cue-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"));
        let root = tmp.path().join(member);
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
        Peer {
            _tmp: tmp,
            root,
            member: member.to_string(),
        }
    }

    /// A peer whose folder already exists at `root` (made by the caller).
    pub fn at(root: PathBuf, member: &str) -> Peer {
        Peer {
            _tmp: tempfile::Builder::new()
                .prefix("cue-e2e-")
                .tempdir()
                .unwrap_or_else(|e| panic!("{e}")),
            root,
            member: member.to_string(),
        }
    }

    /// `cue init` in a fresh folder.
    pub fn init(member: &str) -> Peer {
        let p = Peer::new(member);
        p.ok(&["init", "--name", "team"]);
        p
    }

    /// A new peer cloned from `from` through an exported bundle.
    pub fn clone_of(from: &Peer, member: &str) -> Peer {
        let bundle = from.export();
        let p = Peer::new(member);
        std::fs::remove_dir(&p.root).unwrap_or_else(|e| panic!("{e}"));
        let out = run_in(
            p.root.parent().unwrap_or(&p.root),
            member,
            &["clone", bundle.to_str().unwrap_or_default(), member],
        );
        assert!(
            out.status.success(),
            "clone failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_in(&self.root, &self.member, args)
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cue {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(".cuedeck").join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    /// Exports a bundle to a file beside the project and returns its path.
    pub fn export(&self) -> PathBuf {
        let file = self.root.parent().unwrap_or(&self.root).join(format!(
            "{}-{}.cue",
            self.member,
            nanos()
        ));
        self.ok(&["export", file.to_str().unwrap_or_default()]);
        file
    }

    /// Brings `other`'s changes here.
    pub fn pull(&self, other: &Peer) {
        let bundle = other.export();
        self.ok(&["import", bundle.to_str().unwrap_or_default()]);
    }

    /// Every synced file, relative to .cuedeck/, with its bytes.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for top in ["cards", "docs"] {
            collect(&self.path(top), top, &mut out);
        }
        out.sort();
        out
    }
}

fn collect(dir: &Path, key: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let k = format!("{key}/{name}");
        if e.path().is_dir() {
            collect(&e.path(), &k, out);
        } else {
            out.push((k, std::fs::read(e.path()).unwrap_or_default()));
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
