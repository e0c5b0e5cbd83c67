//! The processes a run is made of: a relay, `cue` commands, and one
//! `cue watch --sync` daemon per peer, each in its own folder under one temp
//! dir. Dropping a [`Cluster`] stops every process it started (daemons
//! first) and removes the temp dir.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::probe::{cpu_seconds, peak_rss_mb};
use crate::tap::Tap;
use crate::{must, notes, Knobs};

pub fn cue() -> &'static str {
    env!("CARGO_BIN_EXE_cue")
}

/// A child process, stopped on drop: `signal` first (a clean stop), then
/// SIGKILL if it is still there after the grace time (5 s by default).
pub struct Proc {
    child: Child,
    signal: i32,
    grace: Duration,
}

impl Proc {
    pub fn new(child: Child, signal: i32) -> Proc {
        Proc {
            child,
            signal,
            grace: Duration::from_secs(5),
        }
    }

    /// How long to wait after the signal before SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Proc {
        self.grace = grace;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, self.signal) };
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `cue` command to completion; panics with its stderr if it fails.
pub fn run(dir: &Path, member: &str, args: &[&str]) -> String {
    let out = must(
        Command::new(cue())
            .args(args)
            .current_dir(dir)
            .env("CUE_MEMBER", member)
            .output(),
        "running cue",
    );
    assert!(
        out.status.success(),
        "cue {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a command cost: wall time, CPU time, peak resident memory.
pub struct Timed {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_mb: f64,
}

/// Runs a `cue` command, feeding it `stdin`, and measures it (`wait4`'s rusage).
// The child is reaped by wait4, which clippy does not know.
#[allow(clippy::zombie_processes)]
pub fn run_timed(dir: &Path, member: &str, args: &[&str], stdin: Option<&str>) -> Timed {
    let start = Instant::now();
    let mut child = must(
        Command::new(cue())
            .args(args)
            .current_dir(dir)
            .env("CUE_MEMBER", member)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
        "starting cue",
    );
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        must(input.write_all(text.as_bytes()), "writing cue's stdin");
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with pointers to live locals.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall_s = start.elapsed().as_secs_f64();
    let _ = out.join();
    let stderr = err.join().unwrap_or_default();
    assert!(
        waited > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "cue {args:?} failed: {stderr}"
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Timed {
        wall_s,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        peak_mb: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// Writes a file the way editors save: a temp file beside it, then a
/// rename, so that no scan ever reads it half-written.
pub fn save(path: &Path, text: &str) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let tmp = path.with_file_name(format!(".{name}.swp"));
    must(std::fs::write(&tmp, text), "writing a note");
    must(std::fs::rename(&tmp, path), "renaming a note into place");
}

/// Appends a line to a note as an editor would: read, add, save.
pub fn append_line(path: &Path, line: &str) {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    save(path, &text);
}

/// The relay, and where it listens (`host:port`).
pub struct Relay {
    proc: Proc,
    pub addr: String,
    pub kind: &'static str,
}

fn start_relay() -> Relay {
    let standalone = Path::new(cue()).with_file_name("cue-relay");
    let (mut cmd, kind) = if standalone.exists() {
        let mut c = Command::new(&standalone);
        c.args(["--listen", "127.0.0.1:0"]);
        (c, "cue-relay")
    } else {
        let mut c = Command::new(cue());
        c.args(["relay", "--listen", "127.0.0.1:0"]);
        (c, "cue relay (embedded)")
    };
    let mut child = must(
        cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn(),
        "starting the relay",
    );
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        must(
            BufReader::new(stdout).read_line(&mut line),
            "reading the relay",
        );
    }
    let addr = line.trim().rsplit("ws://").next().unwrap_or_default();
    Relay {
        addr: addr.to_string(),
        proc: Proc::new(child, libc::SIGTERM),
        kind,
    }
}

/// One run's processes and folders. Peer `i` lives in `roots[i]`, runs as
/// member `p{i}`, and its daemon (once started) is `daemons[i]`.
pub struct Cluster {
    // Fields drop in order: daemons before the tap and relay, the temp dir last.
    pub daemons: Vec<Proc>,
    pub tap: Option<Tap>,
    pub relay: Relay,
    /// What the daemons connect to: the relay, or the tap in front of it.
    pub url: String,
    /// The join code of the workspace.
    pub code: String,
    pub roots: Vec<PathBuf>,
    pub notes: usize,
    /// What the run is for ("2 peers", "join"), in kept log names.
    label: String,
    log_level: String,
    keep_logs: Option<PathBuf>,
    pub tmp: tempfile::TempDir,
}

impl Cluster {
    /// A relay and peer 0 with `notes` notes (and the few the phases edit,
    /// for up to `peers` peers) imported by `cue init`, timed and reported;
    /// no daemon runs yet.
    pub fn init(knobs: &Knobs, notes: usize, peers: usize, label: &str) -> Cluster {
        let tmp = must(
            tempfile::Builder::new().prefix("cue-latency-").tempdir(),
            "making a temp dir",
        );
        let relay = start_relay();
        let tap = knobs.tap.then(|| Tap::start(&relay.addr));
        let url = match &tap {
            Some(t) => t.url(),
            None => format!("ws://{}", relay.addr),
        };
        let root = tmp.path().join("p0");
        for i in 0..notes {
            let path = root.join(".cuedeck").join(notes::rel_path(i));
            if let Some(dir) = path.parent() {
                must(std::fs::create_dir_all(dir), "making a notes folder");
            }
            must(
                std::fs::write(&path, notes::note(knobs.seed, i)),
                "writing a note",
            );
        }
        let edited = [notes::APPEND.to_string(), notes::CONCURRENT.to_string()]
            .into_iter()
            .chain((0..peers).map(notes::after));
        for (k, rel) in edited.enumerate() {
            let path = root.join(".cuedeck").join(rel);
            if let Some(dir) = path.parent() {
                must(std::fs::create_dir_all(dir), "making a notes folder");
            }
            must(
                std::fs::write(&path, notes::note(knobs.seed, 1_000_000 + k)),
                "writing a note",
            );
        }
        let init = run_timed(&root, "p0", &["init", "--name", "bench"], None);
        println!(
            "[{label}] cue init over {notes} notes: {:.2} s wall, {:.2} s CPU, peak {:.1} MB ({} cores, load {})",
            init.wall_s,
            init.cpu_s,
            init.peak_mb,
            crate::probe::cores(),
            crate::probe::load()
        );
        let code = run(&root, "p0", &["sync", "invite", "--relay", &url]);
        let code = code.lines().last().unwrap_or_default().trim().to_string();
        if let Some(t) = &tap {
            let parsed = cue::sync::key::JoinCode::parse(&code);
            t.set_key(must(parsed, "parsing the join code").key);
        }
        Cluster {
            daemons: Vec::new(),
            tap,
            relay,
            url,
            code,
            roots: vec![root],
            notes,
            label: label.replace(' ', "-"),
            log_level: knobs.log.clone(),
            keep_logs: knobs.keep_logs.clone(),
            tmp,
        }
    }

    /// Peers 1..peers as copies of peer 0 made from a bundle (fast, and not
    /// what is measured), each given the join code's key and relay.
    pub fn add_bundle_peers(&mut self, peers: usize) {
        let bundle = self.tmp.path().join("setup.bundle");
        let bundle_s = bundle.to_string_lossy().to_string();
        run(&self.roots[0], "p0", &["export", &bundle_s]);
        for i in self.roots.len()..peers {
            let root = self.tmp.path().join(format!("p{i}"));
            let member = format!("p{i}");
            run(
                self.tmp.path(),
                &member,
                &["clone", &bundle_s, &root.to_string_lossy()],
            );
            run(&root, &member, &["sync", "join", &self.code]);
            self.roots.push(root);
        }
        let _ = std::fs::remove_file(&bundle);
    }

    pub fn peers(&self) -> usize {
        self.roots.len()
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("p{i}.log"))
    }

    /// Starts peer `i`'s daemon (its log goes to `p{i}.log` in the temp dir).
    pub fn start_daemon(&mut self, i: usize) {
        assert_eq!(i, self.daemons.len(), "daemons start in peer order");
        let log = must(std::fs::File::create(self.log_path(i)), "making a log");
        let child = must(
            Command::new(cue())
                .args(["watch", "--sync", "--quiet", "--relay", &self.url])
                .current_dir(&self.roots[i])
                .env("CUE_MEMBER", format!("p{i}"))
                .env("RUST_LOG", &self.log_level)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn(),
            "starting a daemon",
        );
        self.daemons.push(Proc::new(child, libc::SIGTERM));
    }

    /// Waits until the first `n` daemons are connected and each sees the others.
    pub fn wait_online(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let online = self.roots[..n].iter().all(|r| {
                let s = run(r, "x", &["sync", "status", "--json"]);
                s.contains("\"connected\":true") && s.matches("\"peer\":").count() == n - 1
            });
            if online {
                return;
            }
            assert!(Instant::now() < deadline, "peers did not all come online");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until no daemon uses more than 5% of a core over a second;
    /// returns how long they stayed busier than that, or `None` at `limit`.
    pub fn wait_idle(&self, limit: Duration) -> Option<f64> {
        let start = Instant::now();
        let mut last: Vec<f64> = self.daemons.iter().map(|d| cpu_seconds(d.pid())).collect();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now: Vec<f64> = self.daemons.iter().map(|d| cpu_seconds(d.pid())).collect();
            let busiest = now
                .iter()
                .zip(&last)
                .map(|(n, l)| n - l)
                .fold(0.0, f64::max);
            if busiest < 0.05 {
                return Some((start.elapsed().as_secs_f64() - 1.0).max(0.0));
            }
            if start.elapsed() > limit {
                return None;
            }
            last = now;
        }
    }

    /// A path under peer `i`'s `.cuedeck/`.
    pub fn path(&self, i: usize, rel: &str) -> PathBuf {
        self.roots[i].join(".cuedeck").join(rel)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.daemons.iter().map(Proc::pid).collect()
    }

    pub fn peak_rss(&self) -> Vec<f64> {
        self.pids().into_iter().map(peak_rss_mb).collect()
    }

    pub fn relay_pid(&self) -> u32 {
        self.relay.proc.pid()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop the daemons before their logs are copied and the folders go.
        self.daemons.clear();
        if let Some(dir) = &self.keep_logs {
            let _ = std::fs::create_dir_all(dir);
            let tag = format!("{}-{}n-{}p", self.label, self.notes, self.roots.len());
            for i in 0..self.roots.len() {
                let _ = std::fs::copy(self.log_path(i), dir.join(format!("{tag}-p{i}.log")));
            }
        }
    }
}

/// A digest of the names and sizes of every note under a peer's
/// `.cuedeck/docs`, and how many there are. Only stats: the daemons take a
/// read of a note for an edit to scan for, a stat they do not see.
pub fn tree_digest(root: &Path) -> (usize, u64) {
    use std::hash::{Hash, Hasher};
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(meta) = e.metadata() else { continue };
            if name.starts_with('.') {
                continue;
            }
            if meta.is_dir() {
                walk(&e.path(), out);
            } else if name.ends_with(".md") {
                out.push((e.path(), meta.len()));
            }
        }
    }
    let docs = root.join(".cuedeck").join("docs");
    let mut files = Vec::new();
    walk(&docs, &mut files);
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (p, size) in &files {
        p.strip_prefix(&docs).unwrap_or(p).hash(&mut h);
        size.hash(&mut h);
    }
    (files.len(), h.finish())
}
