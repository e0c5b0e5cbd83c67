//! Limits that need more than a constant: the per-connection rate limiter,
//! and the caps on connections per address and on unadmitted connections.
//!
//! The other limits are simpler and live where they are enforced: the frame cap
//! in the WebSocket codec, the header and admission deadlines in
//! [`crate::server`] and [`crate::connection`], the room size in
//! [`crate::room`], the bounded outbound queue in [`crate::connection`].

pub(crate) mod conns;
pub(crate) mod rate;
