//! Budgets for repeated attempts: a token bucket per key (a participant, an account, a peer's address), so that
//! one client cannot flood a hearing, or the public log that records what it tries, however fast it sends.
//!
//! Hand-written because no rate-limiting crate (governor) is in the project's registry mirror; it is a few lines.
//! Keys are kept only while their bucket is not full again, so memory stays bounded by the clients active within
//! one refill period, and at most `MAX_KEYS` of those.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// More keys than this and the fullest buckets are forgotten first (a forgotten key starts full).
const MAX_KEYS: usize = 100_000;

/// A token bucket per key: `burst` attempts at once, then `per_minute` a minute.
#[derive(Debug)]
pub struct Budget {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Budget {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::default(),
        }
    }

    /// Takes one attempt from `key`'s budget: `Ok` if there was one, else how long until there is.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            self.forget_full(&mut buckets, now);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    /// Drops every bucket that has refilled (it would start full anyway); if none has, the fullest half.
    fn forget_full(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| self.refilled(bucket, now) < self.burst);
        if buckets.len() >= MAX_KEYS {
            let mut levels: Vec<f64> = buckets.values().map(|bucket| self.refilled(bucket, now)).collect();
            levels.sort_by(f64::total_cmp);
            let median = levels[levels.len() / 2];
            buckets.retain(|_, bucket| self.refilled(bucket, now) < median);
        }
    }
}

/// The seconds a client should wait, for a `Retry-After` header or a message: at least one.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_other_keys_are_untouched() {
        let budget = Budget::new(3, 1);
        for _ in 0..3 {
            assert_eq!(budget.take("a"), Ok(()));
        }
        let wait = budget.take("a").unwrap_err();
        // One a minute: most of a minute to wait (the bucket may have refilled a little since).
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        assert_eq!(budget.take("b"), Ok(()));
    }

    #[test]
    fn a_spent_bucket_refills_at_its_rate() {
        let budget = Budget::new(1, 60);
        let mut buckets = HashMap::new();
        let earlier = Instant::now().checked_sub(Duration::from_secs(2)).unwrap();
        buckets.insert("a".to_owned(), Bucket { tokens: 0.0, at: earlier });
        *budget.buckets.lock().unwrap() = buckets;
        assert_eq!(budget.take("a"), Ok(()), "two seconds at one a second refill the one-token bucket");
        assert!(budget.take("a").is_err());
    }

    #[test]
    fn full_buckets_are_forgotten_when_there_are_too_many_keys() {
        let budget = Budget::new(2, 60);
        let now = Instant::now();
        let mut buckets = HashMap::new();
        for i in 0..MAX_KEYS {
            let tokens = if i % 2 == 0 { 2.0 } else { 0.0 };
            buckets.insert(format!("k{i}"), Bucket { tokens, at: now });
        }
        *budget.buckets.lock().unwrap() = buckets;
        assert_eq!(budget.take("new"), Ok(()));
        let buckets = budget.buckets.lock().unwrap();
        assert!(buckets.len() <= MAX_KEYS / 2 + 1, "{}", buckets.len());
        assert!(!buckets.contains_key("k0") && buckets.contains_key("k1"));
    }
}
