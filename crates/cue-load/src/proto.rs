//! What the parent and its client processes say to each other, and the shape
//! of the load itself (ids, payload layout) that both must agree on.
//!
//! The parent writes one [`Command`] per line to a child's stdin and reads one
//! [`Reply`] per line from its stdout: strict request/response, so the parent
//! can drive every child through the same steps in lockstep. JSON lines keep
//! the channel debuggable by hand (`cue-load client ...` and type commands).
//! Maps travel as lists of pairs: serde cannot read integer map keys back
//! inside internally tagged enums.

use std::time::{SystemTime, UNIX_EPOCH};

use cue_wire::AdmissionKey;
use serde::{Deserialize, Serialize};

use crate::hist::Histogram;

/// Steps a run can have; each client process keeps one histogram per step, so
/// that late deliveries are still counted in the step that sent them.
pub const MAX_STEPS: usize = 48;

/// Marks payloads written by this tool, so a frame from anything else sharing
/// the relay is not mistaken for a measurement.
const MAGIC: [u8; 4] = *b"CLD1";

/// The measured part of every payload; the rest is padding up to the payload size.
pub const PAYLOAD_HEADER: usize = 4 + 4 + 4 + 8 + 8;

/// A request from the parent to one client process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open every connection of this process that is not open (all of them the
    /// first time; those the relay closed since, afterwards).
    Connect,
    /// Send broadcasts at `rate` messages per second (this process's share)
    /// from `start_unix_ns` for `duration_ms`, stamped with `step`.
    Step {
        /// Step number, below [`MAX_STEPS`].
        step: u32,
        /// Messages per second this process sends, spread over its connections.
        rate: f64,
        /// When to start, CLOCK_REALTIME nanoseconds, so every process starts together.
        start_unix_ns: u64,
        /// How long to send.
        duration_ms: u64,
    },
    /// How many deliveries of `step` arrived so far (to wait for stragglers).
    Count {
        /// The step asked about.
        step: u32,
    },
    /// Everything measured for `step`.
    Report {
        /// The step asked about.
        step: u32,
    },
    /// Close every connection and exit.
    Quit,
}

/// A client process's answer to a [`Command`], in the same order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// After [`Command::Connect`]: what is open now.
    Connected {
        /// Connections open (welcomed by the relay) in this process.
        held: u64,
        /// Connection attempts that failed during this Connect.
        failed: u64,
        /// First few failure messages, to explain them.
        errors: Vec<String>,
        /// Open connections per room index, for the expected delivery counts.
        held_by_room: Vec<(u32, u32)>,
        /// Connections the relay closed since the last report, by close code.
        closes: Vec<(u16, u64)>,
        /// Seconds the connecting took.
        secs: f64,
    },
    /// After [`Command::Step`], once sending has stopped.
    Sent {
        /// Messages handed to the sockets, per room index.
        sent_by_room: Vec<(u32, u64)>,
        /// Messages not sent because a connection's send queue was full (the
        /// client could not write as fast as asked).
        skipped: u64,
        /// How far this process fell behind its schedule at worst, in
        /// milliseconds of sending (messages due but not sent, over the rate).
        max_behind_ms: f64,
        /// Seconds actually spent sending.
        secs: f64,
    },
    /// After [`Command::Count`].
    Counted {
        /// Deliveries of the step received so far.
        received: u64,
    },
    /// After [`Command::Report`].
    Report {
        /// Deliveries of the step received.
        received: u64,
        /// Fan-out latency of those deliveries, microseconds.
        latency_us: Histogram,
        /// Deliveries whose sequence number was not above the previous one from
        /// the same sender (reordered or duplicated), over the whole run.
        out_of_order: u64,
        /// Connections open now.
        held: u64,
        /// Connections the relay closed since the last report, by close code.
        closes: Vec<(u16, u64)>,
    },
    /// After [`Command::Quit`].
    Bye,
    /// The command could not be carried out.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// How the connections of a run are laid out; both sides derive every id from it.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Distinguishes this run's rooms and peers from any other on the same relay.
    pub nonce: u64,
    /// Connections over all processes.
    pub connections: u32,
    /// Peers per room (the last room may have fewer).
    pub room_size: u32,
    /// Client processes; connection `g` belongs to process `g % procs`.
    pub procs: u32,
}

impl Layout {
    /// The room of global connection `g`: consecutive connections fill a room.
    pub fn room_of(&self, g: u32) -> u32 {
        g / self.room_size
    }

    /// The global connection numbers of process `index`, interleaved so that
    /// every room has members in several processes (fan-out crosses processes).
    pub fn connections_of(&self, index: u32) -> impl Iterator<Item = u32> {
        (index..self.connections).step_by(self.procs.max(1) as usize)
    }

    /// The admission key of room `room`, which every process derives alike
    /// (a load test's rooms need no secret, only distinct keys), unique per run.
    /// Peer ids are not derived: the relay assigns them at admission.
    pub fn room_key(&self, room: u32) -> AdmissionKey {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.nonce.to_be_bytes());
        seed[8..16].copy_from_slice(b"cue-load");
        seed[28..].copy_from_slice(&room.to_be_bytes());
        AdmissionKey::from_seed(seed)
    }
}

/// What a receiver learns from a measurement payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Step that sent it.
    pub step: u32,
    /// Global connection number of the sender.
    pub sender: u32,
    /// The sender's sequence number, increasing by one per message it sends.
    pub seq: u64,
    /// CLOCK_REALTIME nanoseconds when it was handed to the socket.
    pub sent_unix_ns: u64,
}

impl Stamp {
    /// The payload: the stamp, then zero padding up to `size` bytes (at least
    /// [`PAYLOAD_HEADER`]).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size.max(PAYLOAD_HEADER));
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.step.to_le_bytes());
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.sent_unix_ns.to_le_bytes());
        out.resize(size.max(PAYLOAD_HEADER), 0);
        out
    }

    /// The stamp of a payload this tool wrote; `None` for anything else.
    pub fn decode(payload: &[u8]) -> Option<Stamp> {
        let header = payload.get(..PAYLOAD_HEADER)?;
        if header[..4] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| header[at..at + 4].try_into().ok().map(u32::from_le_bytes);
        let u64_at = |at: usize| header[at..at + 8].try_into().ok().map(u64::from_le_bytes);
        Some(Stamp {
            step: u32_at(4)?,
            sender: u32_at(8)?,
            seq: u64_at(12)?,
            sent_unix_ns: u64_at(20)?,
        })
    }
}

/// CLOCK_REALTIME in nanoseconds: the one clock every process on the machine
/// shares, so a receiver can subtract a sender's timestamp from another process.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_foreign_payloads_are_ignored() {
        let stamp = Stamp {
            step: 3,
            sender: 9_999,
            seq: 42,
            sent_unix_ns: 1_700_000_000_123_456_789,
        };
        let payload = stamp.encode(128);
        assert_eq!(payload.len(), 128);
        assert_eq!(Stamp::decode(&payload), Some(stamp));
        assert_eq!(stamp.encode(1).len(), PAYLOAD_HEADER);
        assert_eq!(
            Stamp::decode(b"sealed bytes from a real peer, not ours"),
            None
        );
        assert_eq!(Stamp::decode(&payload[..10]), None);
    }

    #[test]
    fn layout_spreads_rooms_over_processes_and_ids_are_unique() {
        let layout = Layout {
            nonce: 7,
            connections: 10,
            room_size: 4,
            procs: 3,
        };
        assert_eq!(layout.room_of(9), 2);
        assert_eq!(layout.connections_of(1).collect::<Vec<_>>(), [1, 4, 7]);
        let all: Vec<u32> = (0..3).flat_map(|p| layout.connections_of(p)).collect();
        assert_eq!(all.len(), 10);
        assert_ne!(layout.room_key(0).room_id(), layout.room_key(1).room_id());
        assert_eq!(
            layout.room_key(2).public_key(),
            layout.room_key(2).public_key()
        );
    }

    #[test]
    fn commands_and_replies_are_one_json_line() {
        let line = serde_json::to_string(&Command::Step {
            step: 1,
            rate: 10.5,
            start_unix_ns: 5,
            duration_ms: 2000,
        })
        .unwrap_or_default();
        assert!(!line.contains('\n'));
        assert!(line.contains("\"cmd\":\"step\""), "{line}");
        let back: Command = serde_json::from_str(&line).unwrap_or(Command::Quit);
        assert!(matches!(back, Command::Step { step: 1, .. }));
        let reply = Reply::Connected {
            held: 2,
            failed: 0,
            errors: vec![],
            held_by_room: vec![(0, 1), (7, 1)],
            closes: vec![(4008, 1)],
            secs: 0.5,
        };
        let line = serde_json::to_string(&reply).unwrap_or_default();
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Connected {
                held_by_room,
                closes,
                ..
            }) => {
                assert_eq!(held_by_room, [(0, 1), (7, 1)]);
                assert_eq!(closes, [(4008, 1)]);
            }
            other => panic!("{line} read back as {other:?}"),
        }
    }
}
