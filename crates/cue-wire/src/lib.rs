//! The routing envelope that CueDeck peers and the relay agree on.
//!
//! Every message on the wire is one [`Frame`]: a fixed 66-byte [`Header`] the relay
//! reads to route the frame, then a payload that is sealed end to end by the peers
//! and that the relay never reads. Keeping the header fixed-size and free of
//! variable-length fields makes it trivial to parse and to fuzz, and keeps
//! everything a peer wants to hide (document ids, change contents, even the
//! workspace id) inside the sealed payload.
//!
//! Layout (all offsets in bytes):
//!
//! | bytes    | field                                                    |
//! |----------|----------------------------------------------------------|
//! | 0        | protocol version, [`PROTOCOL_VERSION`]                   |
//! | 1        | [`FrameKind`]                                            |
//! | 2..34    | [`RoomId`], opaque to the relay                          |
//! | 34..50   | sender [`PeerId`]                                        |
//! | 50..66   | recipient [`PeerId`], all zero unless the kind is Direct |
//! | 66..     | payload                                                  |
//!
//! This crate does no I/O: it turns bytes into frames and back, so the relay, the
//! peers and the simulator share one parser. It also holds what both ends of a
//! relay connection must agree on besides frames: the room [`admission`]
//! exchange (Challenge and Auth frames, the signed message) and the [`close`]
//! codes a relay ends connections with.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod admission;
pub mod close;
mod error;
mod frame;
mod id;

pub use admission::{AdmissionError, AdmissionKey};
pub use error::{ParseIdError, WireError};
pub use frame::{Frame, FrameKind, FrameRef, Header};
pub use id::{PeerId, RoomId};

/// The only envelope version this build speaks; a frame with another version is
/// rejected so that a future layout change can never be misread as this one.
///
/// Version 2 added room admission (Challenge and Auth frames, peer ids
/// assigned by the relay, room ids derived from the admission public key).
pub const PROTOCOL_VERSION: u8 = 2;

/// Size of the fixed header; the payload starts right after it.
pub const HEADER_LEN: usize = 66;

/// Largest payload a peer puts in one frame (256 KiB).
///
/// Peers chunk anything larger, so that the relay can cap its memory per frame and
/// one huge document cannot stall a room. The largest encoded frame is therefore
/// [`MAX_ENCODED_FRAME_BYTES`].
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Largest encoded frame, header included: the default frame cap of the relay.
pub const MAX_ENCODED_FRAME_BYTES: usize = HEADER_LEN + MAX_FRAME_BYTES;
