//! Rooms: who is connected where, and the fan-out of frames to them.
//!
//! The registry maps room ids to rooms, and each room has its own lock, so that
//! routing in one room never waits on another. Join and leave take the registry
//! lock and then the room lock (always in that order); routing takes only the
//! room lock. Nothing awaits while holding a lock: delivery `try_send`s into each
//! recipient's bounded queue and hangs up on a recipient whose queue is full (a
//! slow consumer), so one stalled peer can neither block its room nor make the
//! relay buffer without bound.
//!
//! Join, leave and routing of one room are serialized by its lock, which gives
//! every peer a consistent order of events: a Welcome is always the first frame
//! an admitted connection gets after its Challenge, and a PeerJoined always
//! precedes the newcomer's frames.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use cue_wire::{close, Frame, FrameKind, Header, PeerId, RoomId};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::connection::Hangup;
use crate::metrics::{bump, drop_one, Metrics};

/// Where frames for one connection go: its bounded queue, and the way to
/// disconnect it when that queue overflows.
#[derive(Debug)]
pub(crate) struct Outbox {
    pub(crate) queue: mpsc::Sender<Bytes>,
    pub(crate) hangup: Hangup,
}

/// A connection's place in a room.
#[derive(Debug)]
struct Seat {
    outbox: Outbox,
}

#[derive(Debug, Default)]
struct Room {
    seats: HashMap<PeerId, Seat>,
}

/// Proof that a connection joined a room: what it needs to route and to leave.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) room_id: RoomId,
    pub(crate) peer: PeerId,
    room: Arc<Mutex<Room>>,
}

/// Why a connection could not be seated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinError {
    /// The room already holds the maximum number of peers.
    RoomFull,
    /// The relay drew a peer id that is already seated (odds 2^-128 per pair);
    /// refused rather than let one connection take another's seat.
    IdTaken,
}

/// Every room of one relay.
#[derive(Debug)]
pub(crate) struct Rooms {
    rooms: Mutex<HashMap<RoomId, Arc<Mutex<Room>>>>,
    max_peers: usize,
    metrics: Arc<Metrics>,
}

/// Takes a lock even if a panicking thread poisoned it: the maps stay
/// consistent because nothing that can panic runs while they are half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Rooms {
    pub(crate) fn new(max_peers: usize, metrics: Arc<Metrics>) -> Rooms {
        Rooms {
            rooms: Mutex::new(HashMap::new()),
            max_peers,
            metrics,
        }
    }

    /// Seats `peer` (the id the relay assigned to this connection) in
    /// `room_id`, creating the room, sends it a Welcome naming its id and the
    /// peers already there, and tells the others. Peer ids are never taken
    /// over: the relay draws them, so no connection can claim another's.
    pub(crate) fn join(
        &self,
        room_id: RoomId,
        peer: PeerId,
        outbox: Outbox,
    ) -> Result<Member, JoinError> {
        let mut rooms = lock(&self.rooms);
        let room_arc = match rooms.get(&room_id) {
            Some(room) => Arc::clone(room),
            None => {
                let room = Arc::new(Mutex::new(Room::default()));
                rooms.insert(room_id, Arc::clone(&room));
                bump(&self.metrics.rooms);
                room
            }
        };
        let mut room = lock(&room_arc);
        // A room in the map always has a seat (the last leave removes it), so
        // a refusal never leaves an empty room behind.
        if room.seats.contains_key(&peer) {
            return Err(JoinError::IdTaken);
        }
        if room.seats.len() >= self.max_peers {
            return Err(JoinError::RoomFull);
        }

        let mut present: Vec<PeerId> = room.seats.keys().copied().collect();
        present.sort();
        // The queue holds at least one frame and the Challenge has been
        // written (the writer sent it before the Auth could arrive), so this
        // cannot fail: the Welcome is the first frame after the Challenge.
        let _ = outbox.queue.try_send(Bytes::from(
            Frame::welcome_for(room_id, peer, &present).encode(),
        ));

        room.seats.insert(peer, Seat { outbox });
        let joined = Bytes::from(Frame::peer_joined(room_id, peer).encode());
        for (id, seat) in &room.seats {
            if *id != peer {
                self.deliver(&seat.outbox, joined.clone());
            }
        }
        drop(room);
        Ok(Member {
            room_id,
            peer,
            room: room_arc,
        })
    }

    /// Gives up the member's seat, tells the others, and drops the room once it
    /// is empty.
    pub(crate) fn leave(&self, member: Member) {
        let mut rooms = lock(&self.rooms);
        let mut room = lock(&member.room);
        if room.seats.remove(&member.peer).is_none() {
            return;
        }
        if room.seats.is_empty() {
            let current = rooms
                .get(&member.room_id)
                .is_some_and(|r| Arc::ptr_eq(r, &member.room));
            if current {
                rooms.remove(&member.room_id);
                drop_one(&self.metrics.rooms);
            }
            return;
        }
        let left = Bytes::from(Frame::peer_left(member.room_id, member.peer).encode());
        for seat in room.seats.values() {
            self.deliver(&seat.outbox, left.clone());
        }
    }

    /// Forwards a client frame, already checked against the member's room and
    /// peer id: a Broadcast to every other peer, a Direct to its recipient if it
    /// is here (otherwise dropped and counted).
    pub(crate) fn route(&self, member: &Member, header: &Header, frame: Bytes) {
        let room = lock(&member.room);
        match header.kind {
            FrameKind::Direct => match room.seats.get(&header.recipient) {
                Some(seat) => self.deliver(&seat.outbox, frame),
                None => bump(&self.metrics.direct_dropped),
            },
            _ => {
                for (id, seat) in &room.seats {
                    if *id != member.peer {
                        self.deliver(&seat.outbox, frame.clone());
                    }
                }
            }
        }
    }

    /// Queues a frame without waiting; a full queue marks a slow consumer,
    /// which is disconnected (and counted once).
    fn deliver(&self, outbox: &Outbox, frame: Bytes) {
        match outbox.queue.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if outbox.hangup.close(close::SLOW) {
                    bump(&self.metrics.slow_consumer_disconnects);
                }
            }
            // The connection is already ending; its leave will follow.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}
