//! A log-linear latency histogram: fixed memory, lock-free recording, and
//! exact merging across processes.
//!
//! Thousands of receiver tasks record into one histogram per step, so recording
//! must be a couple of atomic adds, not a lock or a growing `Vec`. Values are
//! microseconds; every power of two is split into [`SUB_BUCKETS`] linear
//! buckets, so a percentile read from bucket bounds is within about 3% of the
//! true value at any scale, from 1 µs to hours. Children send the non-empty
//! buckets to the parent, which adds them up: percentiles over all processes
//! are then exact at that resolution, which averaging per-process percentiles
//! would not be.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Linear buckets per power of two, as a number of bits.
const SUB_BITS: u32 = 5;
/// Linear buckets per power of two: the resolution (1/32, about 3%).
pub const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64`.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB_BUCKETS as usize;

/// The bucket that holds `value`.
fn index(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (value >> shift) & (SUB_BUCKETS - 1);
    ((u64::from(shift) + 1) * SUB_BUCKETS + sub) as usize
}

/// The largest value that falls in bucket `i`: what a percentile reports, so
/// that it never understates a latency.
fn upper_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB_BUCKETS {
        return i;
    }
    let shift = i / SUB_BUCKETS - 1;
    let sub = i % SUB_BUCKETS;
    let low = (SUB_BUCKETS + sub) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

/// The shared, concurrently written form: one per step in each client process.
#[derive(Debug)]
pub struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records one value; safe from any number of tasks at once.
    pub fn record(&self, value: u64) {
        self.counts[index(value)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// The current contents, non-empty buckets only, for the report to the parent.
    pub fn snapshot(&self) -> Histogram {
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, count)| {
                let count = count.load(Ordering::Relaxed);
                (count > 0).then_some((i as u32, count))
            })
            .collect();
        Histogram {
            buckets,
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// A sparse, serialisable histogram: what children report and the parent merges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// `(bucket index, count)` for every non-empty bucket, in index order.
    pub buckets: Vec<(u32, u64)>,
    /// The largest value recorded, exactly.
    pub max: u64,
}

impl Histogram {
    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Adds another histogram's values to this one.
    pub fn merge(&mut self, other: &Histogram) {
        let mut merged: Vec<(u32, u64)> =
            Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(ia, na)), Some(&&(ib, nb))) => {
                    if ia == ib {
                        a.next();
                        b.next();
                        (ia, na + nb)
                    } else if ia < ib {
                        a.next();
                        (ia, na)
                    } else {
                        b.next();
                        (ib, nb)
                    }
                }
                (Some(&&entry), None) => {
                    a.next();
                    entry
                }
                (None, Some(&&entry)) => {
                    b.next();
                    entry
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        self.buckets = merged;
        self.max = self.max.max(other.max);
    }

    /// The value below which a fraction `q` (0..=1) of the values fall, as the
    /// upper bound of its bucket (never above the exact maximum); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(i as usize).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut previous = 0;
        for value in 0..100_000u64 {
            let i = index(value);
            assert!(i >= previous, "bucket order broken at {value}");
            assert!(i <= previous + 1, "bucket skipped at {value}");
            previous = i;
        }
        for value in (0..100_000u64).chain([1 << 40, u64::MAX / 2, u64::MAX - 1, u64::MAX]) {
            let i = index(value);
            assert!(i < BUCKETS, "{value} -> {i}");
            assert!(upper_bound(i) >= value, "{value} above its bucket {i}");
            if i > 0 {
                assert!(upper_bound(i - 1) < value, "{value} fits an earlier bucket");
            }
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn resolution_is_within_three_percent() {
        for value in [33u64, 100, 999, 12_345, 1_000_000, 987_654_321] {
            let bound = upper_bound(index(value));
            assert!(
                (bound - value) as f64 <= value as f64 / 32.0,
                "{value}: {bound}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = AtomicHistogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let snap = h.snapshot();
        assert_eq!(snap.count(), 1000);
        assert_eq!(snap.max, 1000);
        let p50 = snap.quantile(0.5).unwrap_or_default();
        assert!((500..=516).contains(&p50), "{p50}");
        let p99 = snap.quantile(0.99).unwrap_or_default();
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(snap.quantile(1.0), Some(1000));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (a, b, all) = (
            AtomicHistogram::default(),
            AtomicHistogram::default(),
            AtomicHistogram::default(),
        );
        for v in 0..5000u64 {
            let v = v * v % 77_777;
            if v % 3 == 0 { &a } else { &b }.record(v);
            all.record(v);
        }
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged, all.snapshot());
    }
}
