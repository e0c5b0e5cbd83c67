//! Real processes for live-sync tests: a `cue-relay` on a free loopback port
//! and `cue watch --sync` daemons, each killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cue_core::sync::WorkspaceKey;
use cue_wire::{FrameKind, FrameRef, PeerId};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::testkit::{cue_bin, Peer};

/// A WebSocket to the relay, as the test clients hold it.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Joins the workspace's room on the relay at `relay_url` the way a member
/// does: answers the relay's challenge with the key's admission proof and
/// reads the Welcome. Returns the socket, the peer id the relay assigned and
/// the Welcome's bytes (for an engine to read).
pub async fn join_room(relay_url: &str, key: &WorkspaceKey) -> (Ws, PeerId, Vec<u8>) {
    let admission = key.admission_key();
    let url = format!("{relay_url}/v2/rooms/{}", admission.room_id());
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the relay: {e}"));
    let challenge = next_binary(&mut ws).await;
    let (me, auth) = admission
        .answer(&challenge)
        .unwrap_or_else(|e| panic!("the relay's challenge: {e}"));
    ws.send(Message::binary(auth.encode()))
        .await
        .unwrap_or_else(|e| panic!("sending the auth frame: {e}"));
    let welcome = next_binary(&mut ws).await;
    let frame = FrameRef::decode(&welcome).unwrap_or_else(|e| panic!("welcome: {e}"));
    assert_eq!(frame.header.kind, FrameKind::Welcome);
    assert_eq!(frame.header.recipient, me);
    (ws, me, welcome)
}

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return b.to_vec(),
            Some(Ok(Message::Close(c))) => panic!("the relay closed the connection: {c:?}"),
            Some(Ok(_)) => {}
            other => panic!("the relay connection ended: {other:?}"),
        }
    }
}

/// How long a test waits for peers to converge before it fails. Generous: it
/// is a deadline for liveness on a loaded CI machine, not a latency check.
pub const CONVERGE: Duration = Duration::from_secs(40);

/// The `cue-relay` binary, built with the workspace beside `cue`.
pub fn relay_bin() -> PathBuf {
    let p = Path::new(cue_bin()).with_file_name("cue-relay");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo nextest run --workspace` (or `cargo build -p cue-relay` first)",
        p.display()
    );
    p
}

pub struct Relay {
    child: Child,
    pub addr: String,
    args: Vec<String>,
    /// The relay's own log (its stderr, INFO and up), kept if a test fails.
    pub log: PathBuf,
}

impl Relay {
    pub fn start(args: &[&str]) -> Relay {
        Relay::start_on("127.0.0.1:0", args)
    }

    fn start_on(listen: &str, args: &[&str]) -> Relay {
        let log = log_path("relay");
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(relay_bin())
            .args(["--listen", listen])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting cue-relay: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading cue-relay's address: {e}"));
        let addr = line
            .trim()
            .rsplit("ws://")
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(addr.contains(':'), "unexpected cue-relay output {line:?}");
        Relay {
            child,
            addr,
            args: args.iter().map(|s| s.to_string()).collect(),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// SIGKILL: the relay vanishes mid-stream, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new relay process on the same address.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port is free again once the old process is gone; retry briefly.
            let attempt = std::panic::catch_unwind(|| Relay::start_on(&self.addr, &args));
            match attempt {
                Ok(r) => {
                    *self = r;
                    return;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log_text());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A fresh log file for `name`, outside every peer's folder (which may be a
/// tiny full disk).
fn log_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("cue-e2e-logs");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir.join(format!(
        "{name}-{}-{}.log",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ))
}

/// A running `cue watch --sync`.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(peer: &Peer, relay: &str, extra: &[&str]) -> Daemon {
        // Removed unless the test fails.
        let log = log_path(&peer.member);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(cue_bin());
        cmd.args(["watch", "--sync"]);
        // An empty relay means: the one recorded in config.toml.
        if !relay.is_empty() {
            cmd.args(["--relay", relay]);
        }
        let child = cmd
            .args(extra)
            .current_dir(&peer.root)
            .env("CUE_MEMBER", &peer.member)
            .env("RUST_LOG", "cue=info")
            .stdout(file.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting cue watch: {e}"));
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// The daemon's peak resident memory so far (Linux `VmHWM`), in kB.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon's log shows `needle`.
    pub fn wait_log(&self, needle: &str) {
        wait_until(&format!("{needle:?} in {}", self.log.display()), || {
            self.log_text().contains(needle)
        });
    }

    /// SIGTERM and wait: the clean stop of Ctrl-C or `cue sync stop`.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("already stopped"));
        let pid = child.id() as i32;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            assert!(Instant::now() < deadline, "cue watch ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the daemon to exit by itself and returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("already stopped"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("cue watch did not exit; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log_text());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Polls `cond` until it holds, or fails after [`CONVERGE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until every peer holds the same files, and returns them.
pub fn wait_converged(peers: &[&Peer]) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let all: Vec<_> = peers.iter().map(|p| p.files()).collect();
        if all.windows(2).all(|w| w[0] == w[1]) {
            return all.into_iter().next().unwrap_or_default();
        }
        if Instant::now() > deadline {
            let sizes: Vec<Vec<(String, usize)>> = all
                .iter()
                .map(|f| f.iter().map(|(k, v)| (k.clone(), v.len())).collect())
                .collect();
            panic!("peers did not converge: {sizes:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A join code from `peer`, for `relay`.
pub fn invite(peer: &Peer, relay: &str) -> String {
    let out = peer.ok(&["sync", "invite", "--relay", relay]);
    out.lines().last().unwrap_or_default().trim().to_string()
}

/// A new peer made by `cue clone - DIR` with the code on standard input, as
/// the README says (a peer holding the workspace must be online).
pub fn clone_live(code: &str, member: &str, extra: &[&str]) -> Peer {
    use std::io::Write;
    let p = Peer::new(member);
    std::fs::remove_dir(&p.root).unwrap_or_else(|e| panic!("{e}"));
    let parent = p.root.parent().unwrap_or(&p.root).to_path_buf();
    let mut args = vec!["clone", "-", member];
    args.extend_from_slice(extra);
    let mut child = Command::new(cue_bin())
        .args(&args)
        .current_dir(&parent)
        .env("CUE_MEMBER", member)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running cue clone: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{code}").unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("visible to other local users"),
        "a code on stdin was taken for one in argv: {stderr}"
    );
    assert!(
        out.status.success(),
        "clone failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// One counter from the relay's Prometheus `/metrics`.
pub fn relay_metric(relay: &Relay, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&relay.addr).unwrap_or_else(|e| panic!("{e}"));
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", relay.addr)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}
