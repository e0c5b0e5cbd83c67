//! Counters an operator scrapes from `/metrics`, in the Prometheus text format.
//!
//! Plain atomics, no metrics library: the relay has a dozen numbers and the text
//! format is a few lines of `format!`. Counters only go up; the two gauges
//! (connections, rooms) are kept exact by the code that changes them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The live counters, shared by every task of one relay.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) connections_current: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) rooms: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) direct_dropped: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) rate_limit_disconnects: AtomicU64,
    pub(crate) slow_consumer_disconnects: AtomicU64,
    pub(crate) auth_rejected: AtomicU64,
    pub(crate) room_full_rejected: AtomicU64,
    pub(crate) protocol_violations: AtomicU64,
    pub(crate) unadmitted: AtomicU64,
    pub(crate) admitted: AtomicU64,
    pub(crate) admission_refused: AtomicU64,
    pub(crate) admission_not_auth: AtomicU64,
    pub(crate) admission_timeouts: AtomicU64,
    pub(crate) header_timeouts: AtomicU64,
    pub(crate) per_ip_refused: AtomicU64,
    pub(crate) unadmitted_evicted: AtomicU64,
    pub(crate) outdated_clients: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
}

/// Adds one to a counter; relaxed ordering is enough for statistics.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// Subtracts one from a gauge.
pub(crate) fn drop_one(gauge: &AtomicU64) {
    gauge.fetch_sub(1, Ordering::Relaxed);
}

/// A point-in-time copy of the counters, for tests and embedding programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// WebSocket connections open now.
    pub connections_current: u64,
    /// WebSocket connections accepted since start.
    pub connections_total: u64,
    /// Rooms with at least one peer now.
    pub rooms: u64,
    /// Frames accepted from clients.
    pub frames_in: u64,
    /// Bytes of the frames accepted from clients.
    pub bytes_in: u64,
    /// Frames written to clients (relay frames included).
    pub frames_out: u64,
    /// Bytes of the frames written to clients.
    pub bytes_out: u64,
    /// Direct frames whose recipient was not in the room.
    pub direct_dropped: u64,
    /// Times a connection's reads were paused because its token bucket was empty.
    pub rate_limited: u64,
    /// Connections closed with 4029 for flooding past the grace period.
    pub rate_limit_disconnects: u64,
    /// Connections closed with 4008 because their outbound queue overflowed.
    pub slow_consumer_disconnects: u64,
    /// Upgrade requests refused with 401.
    pub auth_rejected: u64,
    /// Connections closed with 4003 because their room was full.
    pub room_full_rejected: u64,
    /// Connections closed for sending something other than a valid client frame.
    pub protocol_violations: u64,
    /// TCP connections open now that have not been admitted (yet): waiting
    /// for their request head, upgrade or Auth, or plain HTTP requests.
    pub unadmitted: u64,
    /// WebSocket connections that proved the room's key and were seated.
    pub admitted: u64,
    /// Connections closed with 4401: their Auth frame proved nothing.
    pub admission_refused: u64,
    /// Connections closed because their first frame was not an Auth (4428,
    /// or 4000/4426/1003 for garbage, an old protocol or text).
    pub admission_not_auth: u64,
    /// Connections closed with 4410: no valid Auth before the deadline.
    pub admission_timeouts: u64,
    /// Connections closed because their HTTP request head did not arrive in time.
    pub header_timeouts: u64,
    /// Connections refused at accept because their address was at its cap.
    pub per_ip_refused: u64,
    /// Unadmitted connections closed to make room under a cap (the oldest first).
    pub unadmitted_evicted: u64,
    /// Connections closed with 4426 for speaking protocol v1.
    pub outdated_clients: u64,
    /// Failed accepts (out of file descriptors, usually).
    pub accept_errors: u64,
}

/// A handle on one relay's counters, usable while it runs and after it stops.
#[derive(Debug, Clone)]
pub struct RelayMetrics(pub(crate) Arc<Metrics>);

impl RelayMetrics {
    /// Reads every counter (each one atomically, not all together).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let m = &self.0;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_current: get(&m.connections_current),
            connections_total: get(&m.connections_total),
            rooms: get(&m.rooms),
            frames_in: get(&m.frames_in),
            bytes_in: get(&m.bytes_in),
            frames_out: get(&m.frames_out),
            bytes_out: get(&m.bytes_out),
            direct_dropped: get(&m.direct_dropped),
            rate_limited: get(&m.rate_limited),
            rate_limit_disconnects: get(&m.rate_limit_disconnects),
            slow_consumer_disconnects: get(&m.slow_consumer_disconnects),
            auth_rejected: get(&m.auth_rejected),
            room_full_rejected: get(&m.room_full_rejected),
            protocol_violations: get(&m.protocol_violations),
            unadmitted: get(&m.unadmitted),
            admitted: get(&m.admitted),
            admission_refused: get(&m.admission_refused),
            admission_not_auth: get(&m.admission_not_auth),
            admission_timeouts: get(&m.admission_timeouts),
            header_timeouts: get(&m.header_timeouts),
            per_ip_refused: get(&m.per_ip_refused),
            unadmitted_evicted: get(&m.unadmitted_evicted),
            outdated_clients: get(&m.outdated_clients),
            accept_errors: get(&m.accept_errors),
        }
    }

    /// The counters in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        self.snapshot().render_prometheus()
    }
}

impl MetricsSnapshot {
    /// The counters in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, u64); 24] = [
            (
                "cue_relay_connections",
                "gauge",
                "WebSocket connections open now.",
                self.connections_current,
            ),
            (
                "cue_relay_connections_total",
                "counter",
                "WebSocket connections accepted since start.",
                self.connections_total,
            ),
            (
                "cue_relay_rooms",
                "gauge",
                "Rooms with at least one peer.",
                self.rooms,
            ),
            (
                "cue_relay_frames_in_total",
                "counter",
                "Frames accepted from clients.",
                self.frames_in,
            ),
            (
                "cue_relay_bytes_in_total",
                "counter",
                "Bytes of frames accepted from clients.",
                self.bytes_in,
            ),
            (
                "cue_relay_frames_out_total",
                "counter",
                "Frames written to clients.",
                self.frames_out,
            ),
            (
                "cue_relay_bytes_out_total",
                "counter",
                "Bytes of frames written to clients.",
                self.bytes_out,
            ),
            (
                "cue_relay_direct_dropped_total",
                "counter",
                "Direct frames whose recipient was not in the room.",
                self.direct_dropped,
            ),
            (
                "cue_relay_rate_limited_total",
                "counter",
                "Times a connection's reads were paused by its rate limit.",
                self.rate_limited,
            ),
            (
                "cue_relay_rate_limit_disconnects_total",
                "counter",
                "Connections closed (4029) for flooding past the grace period.",
                self.rate_limit_disconnects,
            ),
            (
                "cue_relay_slow_consumer_disconnects_total",
                "counter",
                "Connections closed (4008) because their outbound queue overflowed.",
                self.slow_consumer_disconnects,
            ),
            (
                "cue_relay_auth_rejected_total",
                "counter",
                "Upgrade requests refused (401) for a missing or wrong token.",
                self.auth_rejected,
            ),
            (
                "cue_relay_room_full_rejected_total",
                "counter",
                "Connections closed (4003) because their room was full.",
                self.room_full_rejected,
            ),
            (
                "cue_relay_protocol_violations_total",
                "counter",
                "Connections closed for sending an invalid frame.",
                self.protocol_violations,
            ),
            (
                "cue_relay_unadmitted",
                "gauge",
                "TCP connections open that have not proved a room's key (yet).",
                self.unadmitted,
            ),
            (
                "cue_relay_admitted_total",
                "counter",
                "WebSocket connections that proved their room's key and were seated.",
                self.admitted,
            ),
            (
                "cue_relay_admission_refused_total",
                "counter",
                "Connections closed (4401) for an Auth frame that proved nothing.",
                self.admission_refused,
            ),
            (
                "cue_relay_admission_not_auth_total",
                "counter",
                "Connections closed because their first frame was not an Auth frame.",
                self.admission_not_auth,
            ),
            (
                "cue_relay_admission_timeouts_total",
                "counter",
                "Connections closed (4410) with no valid Auth before the deadline.",
                self.admission_timeouts,
            ),
            (
                "cue_relay_header_timeouts_total",
                "counter",
                "Connections closed because their HTTP request head did not arrive in time.",
                self.header_timeouts,
            ),
            (
                "cue_relay_per_ip_refused_total",
                "counter",
                "Connections refused at accept because their address was at its cap.",
                self.per_ip_refused,
            ),
            (
                "cue_relay_unadmitted_evicted_total",
                "counter",
                "Unadmitted connections closed, oldest first, to make room under a cap.",
                self.unadmitted_evicted,
            ),
            (
                "cue_relay_outdated_clients_total",
                "counter",
                "Connections closed (4426) for speaking protocol v1.",
                self.outdated_clients,
            ),
            (
                "cue_relay_accept_errors_total",
                "counter",
                "Failed accepts (usually out of file descriptors).",
                self.accept_errors,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_with_help_and_type() {
        let metrics = RelayMetrics(Arc::default());
        bump(&metrics.0.frames_in);
        add(&metrics.0.bytes_in, 70);
        let text = metrics.render_prometheus();
        assert!(text
            .contains("# TYPE cue_relay_frames_in_total counter\ncue_relay_frames_in_total 1\n"));
        assert!(text.contains("cue_relay_bytes_in_total 70\n"));
        assert!(text.contains("# TYPE cue_relay_rooms gauge\n"));
        assert_eq!(text.lines().filter(|l| l.starts_with("# HELP")).count(), 24);
    }
}
