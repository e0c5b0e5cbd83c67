//! Why the relay closes a connection: the WebSocket close codes clients match on.
//!
//! They live here, beside the frames, because both sides need them: the relay
//! sends them and a client decides from them whether reconnecting can help.
//! Standard codes where one fits (1001, 1003, 1009); otherwise codes in the
//! 4000–4999 range reserved for applications, numbered after the HTTP status
//! with the closest meaning where there is one (4003 forbidden, 4029 too many
//! requests, 4401 unauthorized, 4408 timeout, 4426 upgrade required, 4428
//! precondition required). Each close also carries a human-readable reason.

use std::borrow::Cow;

/// The relay is shutting down; reconnect (with backoff) to its successor.
pub const GOING_AWAY: u16 = 1001;
/// The client sent a text message; the protocol is binary frames only.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// The client sent a message larger than the relay's frame cap.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The message is not a valid cue-wire frame, or is a kind only the relay sends.
pub const BAD_FRAME: u16 = 4000;
/// The frame names a different room than the one the connection joined.
pub const WRONG_ROOM: u16 = 4001;
/// The frame names a different sender than the peer id the relay assigned.
pub const SPOOFED_SENDER: u16 = 4002;
/// The room already holds the maximum number of peers.
pub const ROOM_FULL: u16 = 4003;
/// The connection did not read its frames fast enough; its queue overflowed.
pub const SLOW_CONSUMER: u16 = 4008;
/// The client kept sending above its rate for longer than the flood grace.
pub const RATE_LIMITED: u16 = 4029;
/// The Auth frame did not prove knowledge of the room's key: its public key
/// does not derive the room, or its signature does not verify.
pub const ADMISSION_REFUSED: u16 = 4401;
/// Nothing (not even a pong) arrived for the idle timeout.
pub const IDLE_TIMEOUT: u16 = 4408;
/// No valid Auth frame arrived before the admission deadline.
pub const ADMISSION_TIMEOUT: u16 = 4410;
/// The client spoke an older protocol (cue-wire v1, no room admission).
pub const OUTDATED_PROTOCOL: u16 = 4426;
/// The client sent something other than an Auth frame before it was admitted.
pub const ADMISSION_REQUIRED: u16 = 4428;

/// Longest close reason the WebSocket protocol allows (a control frame carries
/// at most 125 bytes, two of which are the code).
pub const MAX_REASON_BYTES: usize = 123;

/// A close code with its reason, as sent in the WebSocket close frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// One of the codes in this module.
    pub code: u16,
    /// What went wrong, for the developer reading the client's log.
    pub reason: Cow<'static, str>,
}

impl Close {
    /// A close with a fixed reason.
    pub const fn new(code: u16, reason: &'static str) -> Close {
        Close {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// A close with a formatted reason, cut to what a close frame can carry.
    pub fn with_reason(code: u16, reason: String) -> Close {
        let mut reason = reason;
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Close {
            code,
            reason: Cow::Owned(reason),
        }
    }
}

/// Graceful shutdown of the relay.
pub const SHUTTING_DOWN: Close = Close::new(GOING_AWAY, "relay shutting down");
/// A text message arrived.
pub const TEXT_FRAME: Close = Close::new(UNSUPPORTED_DATA, "binary frames only");
/// A message over the frame cap arrived.
pub const TOO_LARGE: Close = Close::new(MESSAGE_TOO_BIG, "frame too large");
/// A frame for another room arrived.
pub const FOREIGN_ROOM: Close = Close::new(
    WRONG_ROOM,
    "wrong room: frame room id does not match the room this connection joined",
);
/// A frame with another sender arrived.
pub const SPOOFED: Close = Close::new(
    SPOOFED_SENDER,
    "spoofed sender: frame sender is not the peer id the relay assigned to this connection",
);
/// The connection's outbound queue overflowed.
pub const SLOW: Close = Close::new(SLOW_CONSUMER, "slow consumer");
/// The client flooded past the grace.
pub const FLOODING: Close = Close::new(RATE_LIMITED, "rate limit exceeded");
/// The client went silent.
pub const IDLE: Close = Close::new(IDLE_TIMEOUT, "idle timeout");
/// The client did not answer the challenge in time.
pub const ADMISSION_TIMED_OUT: Close = Close::new(
    ADMISSION_TIMEOUT,
    "admission timeout: no Auth frame answered the relay's challenge in time",
);
/// The client sent another frame before its Auth frame.
pub const NOT_ADMITTED: Close = Close::new(
    ADMISSION_REQUIRED,
    "admission required: the first frame must be an Auth frame answering the challenge",
);
/// The client connected with the v1 protocol (`/v1/rooms/…?peer=…`).
pub const OUTDATED: Close = Close::new(
    OUTDATED_PROTOCOL,
    "protocol v1 is no longer spoken here: this relay requires room admission (v2); upgrade cue",
);

/// The close for the peer that would exceed the room's capacity.
pub fn room_full(max_peers: usize) -> Close {
    Close::with_reason(ROOM_FULL, format!("room full ({max_peers} peers)"))
}

/// The close for a message that is not a frame a client may send.
pub fn bad_frame(problem: impl std::fmt::Display) -> Close {
    Close::with_reason(BAD_FRAME, format!("bad frame: {problem}"))
}

/// The close for an Auth frame that proves nothing.
pub fn admission_refused(problem: impl std::fmt::Display) -> Close {
    Close::with_reason(ADMISSION_REFUSED, format!("admission refused: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let close = Close::with_reason(BAD_FRAME, "é".repeat(100));
        assert!(close.reason.len() <= MAX_REASON_BYTES);
        assert!(close.reason.chars().all(|c| c == 'é'));
        assert_eq!(room_full(50).reason, "room full (50 peers)");
    }

    #[test]
    fn fixed_reasons_fit_a_close_frame() {
        for close in [
            SHUTTING_DOWN,
            TEXT_FRAME,
            TOO_LARGE,
            FOREIGN_ROOM,
            SPOOFED,
            SLOW,
            FLOODING,
            IDLE,
            ADMISSION_TIMED_OUT,
            NOT_ADMITTED,
            OUTDATED,
        ] {
            assert!(close.reason.len() <= MAX_REASON_BYTES, "{close:?}");
        }
    }
}
