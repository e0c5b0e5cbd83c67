//! The beacon a peer keeps in the room of a workspace key it rotated away
//! from: members who were offline during the rotation come back to the old
//! room, and the beacon hands each of them the rotation record, from which
//! they open their copy of the new key and follow. It reads nothing, merges
//! nothing and answers nothing else (the removed member may be in that room
//! too), and sends nothing but the record, which holds no secret for anyone
//! it was not sealed to. No I/O, like the engine.

use cue_wire::{Frame, FrameKind, FrameRef, Header, PeerId, RoomId};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::message::{pack, Message};
use super::seal::{Sealer, WorkspaceKey};

/// One old room's beacon.
pub struct Beacon {
    room: RoomId,
    me: PeerId,
    sealer: Sealer,
    rng: StdRng,
    stream: u32,
    record: Vec<u8>,
}

impl Beacon {
    /// A beacon for the room of `old`, handing out `record`.
    pub fn new(old: &WorkspaceKey, record: Vec<u8>, seed: [u8; 32]) -> Beacon {
        Beacon {
            room: old.room_id(),
            me: PeerId::ZERO,
            sealer: old.sealer(),
            rng: StdRng::from_seed(seed),
            stream: 0,
            record,
        }
    }

    /// The old room.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// Frames to send for one frame from the relay: the record, to everyone
    /// there when we arrive and to each peer that arrives later.
    pub fn on_frame(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let Ok(frame) = FrameRef::decode(bytes) else {
            return Vec::new();
        };
        if frame.header.room != self.room {
            return Vec::new();
        }
        match frame.header.kind {
            FrameKind::Welcome => {
                if !frame.header.recipient.is_zero() {
                    self.me = frame.header.recipient;
                }
                let others = frame.welcome_peers().any(|p| p != self.me);
                if others {
                    self.frames(FrameKind::Broadcast, PeerId::ZERO)
                } else {
                    Vec::new()
                }
            }
            FrameKind::PeerJoined if frame.header.sender != self.me => {
                self.frames(FrameKind::Direct, frame.header.sender)
            }
            _ => Vec::new(),
        }
    }

    fn frames(&mut self, kind: FrameKind, recipient: PeerId) -> Vec<Frame> {
        let msg = Message::Rotation {
            record: self.record.clone(),
        };
        let header = Header {
            kind,
            room: self.room,
            sender: self.me,
            recipient,
        };
        let envelopes = pack(std::slice::from_ref(&msg), &mut self.stream);
        self.sealer.seal_frames(header, envelopes, &mut self.rng)
    }
}
