//! Errors of this crate, one enum per kind of input, so callers can match on them.

use crate::{FrameKind, HEADER_LEN, PROTOCOL_VERSION};

/// Why a byte string is not a valid frame.
///
/// The relay turns these into close reasons, so each message names the problem
/// in words a developer debugging a peer can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the fixed header: a truncated or foreign message.
    #[error("frame is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Length of the rejected input.
        len: usize,
    },
    /// A version this build does not speak; guessing the layout would misroute.
    #[error("unknown protocol version {0} (this build speaks version {PROTOCOL_VERSION})")]
    UnknownVersion(u8),
    /// A kind byte outside the known set.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A kind that names a peer as its sender, with the all-zero id instead.
    #[error("{kind} frame has no sender (all-zero sender id)")]
    MissingSender {
        /// Kind of the rejected frame.
        kind: FrameKind,
    },
    /// A Welcome or Challenge that names a sender: they come from the relay
    /// itself, whose frames carry the all-zero id, so a sender would give them
    /// a second meaning.
    #[error("{kind} frame carries a sender; the relay sends it with the all-zero id")]
    UnexpectedSender {
        /// Kind of the rejected frame.
        kind: FrameKind,
    },
    /// A Direct or Challenge frame with the all-zero recipient: it could reach
    /// nobody, or assign no peer id.
    #[error("{kind} frame has no recipient (all-zero recipient id)")]
    MissingRecipient {
        /// Kind of the rejected frame.
        kind: FrameKind,
    },
    /// A recipient on a kind that has none; rejected so each frame has one meaning.
    #[error("{kind} frame carries a recipient; only direct, challenge and welcome frames may")]
    UnexpectedRecipient {
        /// Kind of the rejected frame.
        kind: FrameKind,
    },
    /// A Challenge or Auth payload of the wrong size.
    #[error("{kind} payload is {len} bytes, not {expected}")]
    BadPayloadLength {
        /// Kind of the rejected frame.
        kind: FrameKind,
        /// Length of the rejected payload.
        len: usize,
        /// Length the kind requires.
        expected: usize,
    },
    /// A Welcome payload that is not a whole list of 16-byte peer ids.
    #[error("welcome payload is {len} bytes, not a whole number of 16-byte peer ids")]
    BadWelcomePayload {
        /// Length of the rejected payload.
        len: usize,
    },
}

/// Why a string is not a valid hex-encoded [`PeerId`](crate::PeerId) or
/// [`RoomId`](crate::RoomId).
///
/// Ids arrive in URLs and config files typed or pasted by people, so the error
/// says where the input went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// A character that is not a hex digit.
    #[error("invalid hex character {ch:?} at position {index}")]
    InvalidChar {
        /// Byte offset of the character in the input.
        index: usize,
        /// The offending character.
        ch: char,
    },
    /// The right alphabet but the wrong number of digits.
    #[error("expected {expected} hex characters, got {found}")]
    WrongLength {
        /// Digits an id of this type has.
        expected: usize,
        /// Digits in the input.
        found: usize,
    },
}
