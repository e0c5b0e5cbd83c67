//! `CUE_BENCH_TAP=1`: a TCP proxy in front of the relay that opens what each
//! peer sends (the bench holds the workspace key from the join code) and
//! counts protocol messages by kind, by sender and recipient, and by
//! document. It forwards bytes before it parses them, but it adds a hop and
//! uses CPU, so figures taken with it are for diagnosis, not for the baseline.
//!
//! It reads the protocol's own types (`cue_wire` frames, `cue_core::sync`
//! envelopes and messages): if those change, this module follows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cue_core::sync::message::Reassembler;
use cue_core::sync::{Message, Sealer, WorkspaceKey};
use cue_wire::{FrameKind, FrameRef, PeerId};

use crate::must;

/// What the peers sent, since the last [`Tap::take`].
#[derive(Default)]
pub struct Counts {
    /// Kind -> (messages, bytes of their bodies).
    pub kinds: BTreeMap<&'static str, (u64, u64)>,
    /// WebSocket frames peers sent, and their bytes.
    pub frames: u64,
    pub frame_bytes: u64,
    /// SyncRequests per (from, to), and the document entries they listed.
    pub requests: BTreeMap<(String, String), u64>,
    pub request_entries: u64,
    /// Distinct (from, to, document) of SyncResponses: sessions that ran.
    pub sessions: HashSet<(String, String, String)>,
    /// Distinct (from, document) of broadcast Changes.
    pub changes: HashSet<(String, String)>,
}

#[derive(Default)]
struct State {
    sealer: Option<Sealer>,
    reassembler: Reassembler,
    names: HashMap<PeerId, String>,
    counts: Counts,
}

pub struct Tap {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tap {
    /// Listens on loopback and forwards every connection to `relay` (`host:port`).
    pub fn start(relay: &str) -> Tap {
        let listener = must(TcpListener::bind("127.0.0.1:0"), "binding the tap");
        let port = must(listener.local_addr(), "the tap's address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, halt, relay) = (Arc::clone(&state), Arc::clone(&stop), relay.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(upstream) = TcpStream::connect(&relay) else {
                    continue;
                };
                proxy(client, upstream, Arc::clone(&st));
            }
        });
        Tap { port, state, stop }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn set_key(&self, key: WorkspaceKey) {
        lock(&self.state).sealer = Some(key.sealer());
    }

    /// The counts since the last call, which start again from zero.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut lock(&self.state).counts)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn proxy(client: TcpStream, upstream: TcpStream, state: Arc<Mutex<State>>) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut u_read, mut c_write) = (upstream, client);
    // Relay -> peer: copied as is.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut u_read, &mut c_write);
        let _ = c_write.shutdown(Shutdown::Both);
        let _ = u_read.shutdown(Shutdown::Both);
    });
    // Peer -> relay: copied, then parsed.
    std::thread::spawn(move || {
        let mut parser = WsParser::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if u_write.write_all(&buf[..n]).is_err() {
                break;
            }
            for msg in parser.push(&buf[..n]) {
                count_frame(&state, &msg);
            }
        }
        let _ = u_write.shutdown(Shutdown::Both);
        let _ = c_read.shutdown(Shutdown::Both);
    });
}

/// Client-to-server WebSocket framing (RFC 6455), after the HTTP upgrade.
#[derive(Default)]
struct WsParser {
    buf: Vec<u8>,
    upgraded: bool,
    message: Vec<u8>,
}

impl WsParser {
    /// Takes bytes as they came; returns the binary messages they completed.
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        if !self.upgraded {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return out;
            };
            self.buf.drain(..end + 4);
            self.upgraded = true;
        }
        let mut at = 0;
        loop {
            let b = &self.buf[at..];
            if b.len() < 2 {
                break;
            }
            let (fin, opcode, masked) = (b[0] & 0x80 != 0, b[0] & 0x0f, b[1] & 0x80 != 0);
            let (len, mut head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            let mask = if masked {
                if b.len() < head + 4 {
                    break;
                }
                head += 4;
                [b[head - 4], b[head - 3], b[head - 2], b[head - 1]]
            } else {
                [0; 4]
            };
            if b.len() < head + len {
                break;
            }
            if opcode == 0 || opcode == 2 {
                let body = &b[head..head + len];
                self.message
                    .extend(body.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]));
                if fin {
                    out.push(std::mem::take(&mut self.message));
                }
            }
            at += head + len;
        }
        self.buf.drain(..at);
        out
    }
}

fn count_frame(state: &Mutex<State>, bytes: &[u8]) {
    let Ok(frame) = FrameRef::decode(bytes) else {
        return;
    };
    let h = frame.header;
    if !matches!(h.kind, FrameKind::Broadcast | FrameKind::Direct) {
        return;
    }
    let mut st = lock(state);
    st.counts.frames += 1;
    st.counts.frame_bytes += bytes.len() as u64;
    let Some(Ok(envelope)) = st.sealer.as_ref().map(|s| s.open(&h, frame.payload)) else {
        return;
    };
    let Ok(msgs) = st.reassembler.push(h.sender, &envelope) else {
        return;
    };
    for m in &msgs {
        if let Message::Handshake { member, .. } = m {
            st.names.insert(h.sender, member.clone());
        }
    }
    let name = |st: &State, p: &PeerId| {
        st.names
            .get(p)
            .cloned()
            .unwrap_or_else(|| p.to_string()[..6].to_string())
    };
    let from = name(&st, &h.sender);
    let to = if h.kind == FrameKind::Direct {
        name(&st, &h.recipient)
    } else {
        "all".to_string()
    };
    let c = &mut st.counts;
    for m in msgs {
        let (kind, size) = match &m {
            Message::Handshake { .. } => ("Handshake", 0),
            Message::SyncRequest { entries, .. } => {
                *c.requests.entry((from.clone(), to.clone())).or_default() += 1;
                c.request_entries += entries.len() as u64;
                ("SyncRequest", entries.len() * 25)
            }
            Message::SyncResponse { doc, sync } => {
                c.sessions
                    .insert((from.clone(), to.clone(), doc.as_string()));
                ("SyncResponse", sync.len())
            }
            Message::Change { doc, bytes, .. } => {
                c.changes.insert((from.clone(), doc.as_string()));
                ("Change", bytes.len())
            }
            Message::Heartbeat { .. } => ("Heartbeat", 0),
            Message::Ack { .. } => ("Ack", 0),
            Message::Snapshot { bytes, .. } => ("Snapshot", bytes.len()),
            Message::Rotation { record } => ("Rotation", record.len()),
        };
        let e = c.kinds.entry(kind).or_default();
        e.0 += 1;
        e.1 += size as u64;
    }
}
