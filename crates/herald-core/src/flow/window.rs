//! Adaptive concurrency: additive increase, multiplicative decrease (AIMD), as TCP
//! does for congestion, within a target's `maxInFlight`.

use crate::time::Timestamp;

/// How many requests a target gets at once, adapted to the pressure it signals.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyWindow {
    limit: f64,
    max: u32,
    last_decrease: Option<Timestamp>,
}

impl ConcurrencyWindow {
    /// A window starting wide open at `max` (at least 1).
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        Self {
            limit: f64::from(max),
            max,
            last_decrease: None,
        }
    }

    /// Requests allowed at once now: at least 1, at most the maximum.
    pub fn current(&self) -> u32 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = self.limit.floor() as u32;
        whole.clamp(1, self.max)
    }

    /// Changes the maximum (the target's `maxInFlight` was edited).
    pub fn set_max(&mut self, max: u32) {
        self.max = max.max(1);
        self.limit = self.limit.min(f64::from(self.max));
    }

    /// A success widens the window by one request per window's worth of successes.
    pub fn record_success(&mut self) {
        self.limit = (self.limit + 1.0 / self.limit.max(1.0)).min(f64::from(self.max));
    }

    /// An overload signal halves the window, once per round: signals from requests
    /// sent before the last decrease are the same overload, already answered.
    pub fn record_congestion(&mut self, sent_at: Timestamp, now: Timestamp) {
        if self.last_decrease.is_some_and(|last| sent_at < last) {
            return;
        }
        self.limit = (self.limit / 2.0).max(1.0);
        self.last_decrease = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + millis)
    }

    #[test]
    fn congestion_halves_once_per_round_and_successes_win_it_back() {
        let mut window = ConcurrencyWindow::new(32);
        assert_eq!(window.current(), 32);
        window.record_congestion(ms(0), ms(10));
        assert_eq!(window.current(), 16);
        // Sent before the decrease: the same overload.
        window.record_congestion(ms(5), ms(12));
        assert_eq!(window.current(), 16);
        window.record_congestion(ms(11), ms(20));
        assert_eq!(window.current(), 8);
        for _ in 0..9 {
            window.record_success();
        }
        assert_eq!(window.current(), 9);
        for _ in 0..10_000 {
            window.record_success();
        }
        assert_eq!(window.current(), 32, "never above maxInFlight");
    }

    #[test]
    fn never_below_one() {
        let mut window = ConcurrencyWindow::new(4);
        for t in 0..10 {
            window.record_congestion(ms(t * 10), ms(t * 10 + 1));
        }
        assert_eq!(window.current(), 1);
    }

    #[test]
    fn lowering_the_maximum_shrinks_the_window() {
        let mut window = ConcurrencyWindow::new(32);
        window.set_max(4);
        assert_eq!(window.current(), 4);
        window.set_max(64);
        assert_eq!(
            window.current(),
            4,
            "raising the maximum is earned by successes"
        );
    }
}
