//! Per-connection limits that need more than a constant: the rate limiter.
//!
//! The other limits are simpler and live where they are enforced: the frame cap
//! in the WebSocket codec, the room size in [`crate::room`], the bounded
//! outbound queue in [`crate::connection`].

pub(crate) mod rate;
