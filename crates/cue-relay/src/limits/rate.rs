//! A token bucket that tells the reader how long to pause, instead of dropping.
//!
//! Dropping a peer's messages would silently corrupt its sync session, so the
//! relay never does: when a peer's bucket is empty the connection stops reading
//! from its socket until a token refills. TCP flow control then pushes back on
//! the peer, which is throttled without losing anything. Only a peer that stays
//! over its rate for longer than the flood grace is disconnected (see
//! [`crate::connection`]).
//!
//! The bucket is a pure value: time is passed in, so it is tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// Tokens refill continuously at `per_sec`, up to `capacity`; one message costs one.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket, so a fresh connection can send its catch-up burst at once.
    pub(crate) fn new(per_sec: u32, burst: u32, now: Instant) -> TokenBucket {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            per_sec: f64::from(per_sec.max(1)),
            tokens: capacity,
            updated: now,
        }
    }

    /// `None` if a message may be read now, otherwise how long until it may.
    pub(crate) fn wait_time(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }

    /// Charges one message. Called after a read that [`TokenBucket::wait_time`]
    /// allowed, so the balance never goes below zero in practice.
    pub(crate) fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    fn refill(&mut self, now: Instant) {
        if now > self.updated {
            let elapsed = (now - self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
            self.updated = now;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            assert_eq!(bucket.wait_time(start), None);
            bucket.take(start);
        }
        // Empty: the next token is a tenth of a second away.
        let wait = bucket.wait_time(start).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        let later = start + wait;
        assert_eq!(bucket.wait_time(later), None);
        bucket.take(later);
        assert!(bucket.wait_time(later).is_some());
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, 5, start);
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(bucket.wait_time(much_later), None);
            bucket.take(much_later);
        }
        assert!(bucket.wait_time(much_later).is_some());
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1, 1, start);
        bucket.take(start);
        let earlier = start - Duration::from_secs(5);
        assert!(bucket.wait_time(earlier).is_some());
    }
}
