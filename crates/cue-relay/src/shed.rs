//! Load shedding, counted and told: every connection the relay refuses or
//! closes to protect itself is counted in a metric and reported in the log,
//! at most one line per reason per interval (with how many there were), so
//! an attack never floods the log. No line names a room, a peer or an address.
//!
//! The first event of a reason after a quiet interval is logged at once; the
//! ones that follow within the interval are summed and logged by the next
//! event after it, or by [`ShedLog::flush`], which the relay calls every
//! interval, so no count is lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::metrics::{bump, Metrics};

/// Why the relay shed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// Refused at accept: its address was at `max_conns_per_ip`, all admitted.
    PerIpCap,
    /// The oldest unadmitted connection of an address at `max_unadmitted_per_ip`.
    EvictedPerIp,
    /// The oldest unadmitted connection of all, at `max_unadmitted`.
    EvictedGlobal,
    /// No complete request head within `header_timeout`.
    HeaderTimeout,
    /// No valid Auth within `admission_timeout` of the accept.
    AdmissionTimeout,
    /// An Auth frame with the wrong key or signature (4401).
    AdmissionRefused,
    /// A first frame that was not an Auth frame.
    AdmissionNotAuth,
    /// A missing or wrong bearer token (401).
    BadToken,
    /// A v1 client (4426).
    Outdated,
    /// `accept` failed, usually for lack of file descriptors.
    AcceptFailed,
}

impl Shed {
    const ALL: [Shed; 10] = [
        Shed::PerIpCap,
        Shed::EvictedPerIp,
        Shed::EvictedGlobal,
        Shed::HeaderTimeout,
        Shed::AdmissionTimeout,
        Shed::AdmissionRefused,
        Shed::AdmissionNotAuth,
        Shed::BadToken,
        Shed::Outdated,
        Shed::AcceptFailed,
    ];

    /// A short stable name, the `reason` field of the log line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shed::PerIpCap => "per_ip_cap",
            Shed::EvictedPerIp => "unadmitted_per_ip_cap",
            Shed::EvictedGlobal => "unadmitted_cap",
            Shed::HeaderTimeout => "header_timeout",
            Shed::AdmissionTimeout => "admission_timeout",
            Shed::AdmissionRefused => "admission_refused",
            Shed::AdmissionNotAuth => "admission_not_auth",
            Shed::BadToken => "bad_token",
            Shed::Outdated => "outdated_client",
            Shed::AcceptFailed => "accept_failed",
        }
    }

    /// What happened, in words an operator can act on.
    fn message(self) -> &'static str {
        match self {
            Shed::PerIpCap => {
                "refused connections at accept: their address already holds --max-conns-per-ip admitted connections"
            }
            Shed::EvictedPerIp => {
                "closed the oldest unadmitted connections of addresses at --max-unadmitted-per-ip"
            }
            Shed::EvictedGlobal => {
                "closed the oldest unadmitted connections: --max-unadmitted reached"
            }
            Shed::HeaderTimeout => {
                "closed connections that sent no complete request head within --header-timeout-secs"
            }
            Shed::AdmissionTimeout => {
                "closed connections that did not prove a room's key within --admission-timeout-secs"
            }
            Shed::AdmissionRefused => {
                "refused admission: the Auth frame's key is not the room's, or its signature is wrong"
            }
            Shed::AdmissionNotAuth => {
                "closed connections whose first frame was not an Auth frame"
            }
            Shed::BadToken => "refused requests with a missing or wrong auth token",
            Shed::Outdated => "closed clients speaking protocol v1 (no room admission)",
            Shed::AcceptFailed => "accept failed (out of file descriptors?)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn counter(self, metrics: &Metrics) -> &AtomicU64 {
        match self {
            Shed::PerIpCap => &metrics.per_ip_refused,
            Shed::EvictedPerIp | Shed::EvictedGlobal => &metrics.unadmitted_evicted,
            Shed::HeaderTimeout => &metrics.header_timeouts,
            Shed::AdmissionTimeout => &metrics.admission_timeouts,
            Shed::AdmissionRefused => &metrics.admission_refused,
            Shed::AdmissionNotAuth => &metrics.admission_not_auth,
            Shed::BadToken => &metrics.auth_rejected,
            Shed::Outdated => &metrics.outdated_clients,
            Shed::AcceptFailed => &metrics.accept_errors,
        }
    }
}

/// One reason's events since its last log line.
#[derive(Debug)]
struct Pending {
    count: AtomicU64,
    /// When the next line may be written; `None` until the first event.
    next_line: Mutex<Option<Instant>>,
}

/// Counts shed events and logs them, rate-limited per reason.
#[derive(Debug)]
pub(crate) struct ShedLog {
    interval: Duration,
    pending: Vec<Pending>,
}

impl ShedLog {
    pub(crate) fn new(interval: Duration) -> ShedLog {
        ShedLog {
            interval,
            pending: Shed::ALL
                .iter()
                .map(|_| Pending {
                    count: AtomicU64::new(0),
                    next_line: Mutex::new(None),
                })
                .collect(),
        }
    }

    /// Counts one event of `reason` in its metric, and logs it if its reason
    /// has not been logged within the interval.
    pub(crate) fn note(&self, metrics: &Metrics, reason: Shed) {
        self.note_at(metrics, reason, Instant::now());
    }

    fn note_at(&self, metrics: &Metrics, reason: Shed, now: Instant) {
        bump(reason.counter(metrics));
        if let Some(pending) = self.pending.get(reason.index()) {
            pending.count.fetch_add(1, Ordering::Relaxed);
            self.maybe_log(reason, pending, now, true);
        }
    }

    /// Logs every reason with events not logged yet whose interval is over.
    pub(crate) fn flush(&self) {
        self.flush_at(Instant::now());
    }

    fn flush_at(&self, now: Instant) {
        for reason in Shed::ALL {
            if let Some(pending) = self.pending.get(reason.index()) {
                self.maybe_log(reason, pending, now, false);
            }
        }
    }

    fn maybe_log(&self, reason: Shed, pending: &Pending, now: Instant, first_ok: bool) {
        let mut next_line = pending
            .next_line
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = match *next_line {
            Some(at) => now >= at,
            None => first_ok,
        };
        if !due {
            return;
        }
        let count = pending.count.swap(0, Ordering::Relaxed);
        if count == 0 {
            return;
        }
        *next_line = Some(now + self.interval);
        drop(next_line);
        warn!(
            reason = reason.name(),
            count,
            "shedding load: {} ({count} in the last {}s)",
            reason.message(),
            self.interval.as_secs().max(1),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_slot_and_name() {
        let names: std::collections::HashSet<_> = Shed::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Shed::ALL.len());
        for (i, reason) in Shed::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }

    #[test]
    fn events_are_counted_and_logged_at_most_once_per_interval() {
        let metrics = Metrics::default();
        let log = ShedLog::new(Duration::from_secs(10));
        let start = Instant::now();
        log.note_at(&metrics, Shed::HeaderTimeout, start);
        let pending = &log.pending[Shed::HeaderTimeout.index()];
        // The first event was logged at once.
        assert_eq!(pending.count.load(Ordering::Relaxed), 0);
        for _ in 0..5 {
            log.note_at(&metrics, Shed::HeaderTimeout, start);
        }
        // Within the interval: counted, not logged.
        assert_eq!(pending.count.load(Ordering::Relaxed), 5);
        log.flush_at(start + Duration::from_secs(9));
        assert_eq!(pending.count.load(Ordering::Relaxed), 5);
        log.flush_at(start + Duration::from_secs(11));
        assert_eq!(pending.count.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.header_timeouts.load(Ordering::Relaxed), 6);
    }
}
