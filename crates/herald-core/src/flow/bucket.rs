//! A token bucket: a steady rate with a small burst.

use crate::time::Timestamp;

/// The default burst, in seconds of the rate: a target's bucket holds at most a tenth
/// of a second's allowance (and at least one token), so a limit of 20/s never sends
/// 40 in a second.
const BURST_SECONDS: f64 = 0.1;

/// Tokens refilled at `rate` per second up to a burst; one token per request.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst_seconds: f64,
    tokens: f64,
    updated: Timestamp,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` per second (which must be positive).
    pub fn new(rate: f64, now: Timestamp) -> Self {
        Self::with_burst(rate, BURST_SECONDS, now)
    }

    /// A full bucket whose burst is `burst_seconds` of the rate (at least one token).
    pub fn with_burst(rate: f64, burst_seconds: f64, now: Timestamp) -> Self {
        let mut bucket = Self {
            rate,
            burst_seconds,
            tokens: 0.0,
            updated: now,
        };
        bucket.tokens = bucket.burst();
        bucket
    }

    /// A bucket as saved at `updated` with `tokens` in it (a debt if negative), now
    /// refilling at `rate` per second.
    pub fn restore(rate: f64, tokens: f64, updated: Timestamp) -> Self {
        let mut bucket = Self::new(rate, updated);
        bucket.tokens = tokens.min(bucket.burst());
        bucket
    }

    /// The tokens in the bucket at `now`, to save it (see [`Self::restore`]).
    pub fn tokens(&mut self, now: Timestamp) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// The rate per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Most tokens the bucket holds.
    pub fn burst(&self) -> f64 {
        (self.rate * self.burst_seconds).max(1.0)
    }

    /// Changes the rate, keeping the tokens earned so far.
    pub fn set_rate(&mut self, rate: f64, now: Timestamp) {
        self.refill(now);
        self.rate = rate;
        self.tokens = self.tokens.min(self.burst());
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Timestamp) -> u32 {
        self.refill(now);
        // Truncation is the point: only whole tokens can be spent.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = self.tokens.floor().max(0.0) as u32;
        whole
    }

    /// Spends `count` tokens. Spending more than are available leaves a debt that
    /// later refills repay first, so the long-run rate holds even for large batches.
    pub fn take(&mut self, count: u32, now: Timestamp) {
        self.refill(now);
        self.tokens -= f64::from(count);
    }

    /// When the next whole token will be there (`now` if one is).
    pub fn next_token_at(&mut self, now: Timestamp) -> Timestamp {
        self.refill(now);
        if self.tokens >= 1.0 {
            return now;
        }
        let missing_ms = (1.0 - self.tokens) * 1000.0 / self.rate;
        #[allow(clippy::cast_possible_truncation)]
        let wait = missing_ms.ceil().min(1e12) as i64;
        Timestamp::from_millis(now.as_millis().saturating_add(wait.max(1)))
    }

    /// Seconds until `count` tokens are available (0 if they are).
    pub fn seconds_until(&mut self, count: f64, now: Timestamp) -> f64 {
        self.refill(now);
        ((count - self.tokens) / self.rate).max(0.0)
    }

    /// How long until the bucket is full again, in seconds (for `RateLimit-Reset`).
    pub fn seconds_to_full(&mut self, now: Timestamp) -> f64 {
        self.refill(now);
        ((self.burst() - self.tokens) / self.rate).max(0.0)
    }

    fn refill(&mut self, now: Timestamp) {
        let elapsed_ms = now.as_millis().saturating_sub(self.updated.as_millis());
        if elapsed_ms > 0 {
            #[allow(clippy::cast_precision_loss)]
            let earned = elapsed_ms as f64 * self.rate / 1000.0;
            self.tokens = (self.tokens + earned).min(self.burst());
            self.updated = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + millis)
    }

    #[test]
    fn starts_with_a_small_burst_and_refills_at_the_rate() {
        let mut bucket = TokenBucket::new(20.0, ms(0));
        assert_eq!(bucket.available(ms(0)), 2);
        bucket.take(2, ms(0));
        assert_eq!(bucket.available(ms(0)), 0);
        assert_eq!(bucket.next_token_at(ms(0)), ms(50));
        assert_eq!(bucket.available(ms(49)), 0);
        assert_eq!(bucket.available(ms(50)), 1);
        assert_eq!(bucket.available(ms(10_000)), 2, "never above the burst");
    }

    #[test]
    fn a_second_of_traffic_never_exceeds_rate_plus_burst() {
        let mut bucket = TokenBucket::new(20.0, ms(0));
        let mut sent = 0;
        for t in 0..1000 {
            let available = bucket.available(ms(t));
            bucket.take(available, ms(t));
            sent += available;
        }
        assert!(sent <= 22, "sent {sent}");
        assert!(sent >= 20, "sent {sent}");
    }

    #[test]
    fn slow_rates_keep_one_token_of_burst() {
        let mut bucket = TokenBucket::new(0.5, ms(0));
        assert_eq!(bucket.available(ms(0)), 1);
        bucket.take(1, ms(0));
        assert_eq!(bucket.next_token_at(ms(0)), ms(2000));
    }

    #[test]
    fn changing_the_rate_keeps_earned_tokens_within_the_new_burst() {
        let mut bucket = TokenBucket::new(100.0, ms(0));
        bucket.set_rate(1.0, ms(0));
        assert_eq!(bucket.available(ms(0)), 1);
    }
}
