//! Why the relay closes a connection: the close codes clients can match on.
//!
//! Standard codes where one fits (1001, 1003, 1009); otherwise codes in the
//! 4000–4999 range reserved for applications, numbered after the HTTP status
//! with the closest meaning where there is one (4003 forbidden, 4029 too many
//! requests, 4408 timeout). Each close also carries a human-readable reason.

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
/// The frame names a different sender than the connection's peer id.
pub const SPOOFED_SENDER: u16 = 4002;
/// The room already holds the maximum number of peers.
pub const ROOM_FULL: u16 = 4003;
/// The connection did not read its frames fast enough; its queue overflowed.
pub const SLOW_CONSUMER: u16 = 4008;
/// Another connection with the same peer id joined the room and took over.
pub const REPLACED: u16 = 4009;
/// The client kept sending above its rate for longer than the flood grace.
pub const RATE_LIMITED: u16 = 4029;
/// Nothing (not even a pong) arrived for the idle timeout.
pub const IDLE_TIMEOUT: u16 = 4408;

/// Longest close reason the WebSocket protocol allows (a control frame carries
/// at most 125 bytes, two of which are the code).
const MAX_REASON_BYTES: usize = 123;

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

pub(crate) const SHUTTING_DOWN: Close = Close::new(GOING_AWAY, "relay shutting down");
pub(crate) const TEXT_FRAME: Close = Close::new(UNSUPPORTED_DATA, "binary frames only");
pub(crate) const TOO_LARGE: Close = Close::new(MESSAGE_TOO_BIG, "frame too large");
pub(crate) const FOREIGN_ROOM: Close = Close::new(
    WRONG_ROOM,
    "wrong room: frame room id does not match the room this connection joined",
);
pub(crate) const SPOOFED: Close = Close::new(
    SPOOFED_SENDER,
    "spoofed sender: frame sender does not match this connection's peer id",
);
pub(crate) const SLOW: Close = Close::new(SLOW_CONSUMER, "slow consumer");
pub(crate) const TAKEN_OVER: Close = Close::new(
    REPLACED,
    "replaced by a newer connection with the same peer id",
);
pub(crate) const FLOODING: Close = Close::new(RATE_LIMITED, "rate limit exceeded");
pub(crate) const IDLE: Close = Close::new(IDLE_TIMEOUT, "idle timeout");

/// The close for the peer that would exceed the room's capacity.
pub(crate) fn room_full(max_peers: usize) -> Close {
    Close::with_reason(ROOM_FULL, format!("room full ({max_peers} peers)"))
}

/// The close for a message that is not a frame a client may send.
pub(crate) fn bad_frame(problem: impl std::fmt::Display) -> Close {
    Close::with_reason(BAD_FRAME, format!("bad frame: {problem}"))
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
            TAKEN_OVER,
            FLOODING,
            IDLE,
        ] {
            assert!(close.reason.len() <= MAX_REASON_BYTES, "{close:?}");
        }
    }
}
