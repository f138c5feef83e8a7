//! Retry delays of the watcher: capped exponential with equal jitter.
use std::time::Duration;

pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        // Capped at an hour so that the arithmetic below cannot overflow.
        let max = max.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        let initial = initial.clamp(Duration::from_millis(1), max);
        Backoff { initial, max, current: initial, seed: seed | 1 }
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Next delay: "equal jitter" (between half and all of the current step),
    /// so that many agents restarted together do not retry in lockstep.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        // xorshift64
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = step / 2;
        let frac = (self.seed % 1000) as u32;
        half + half * frac / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_durations_do_not_panic() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX, 7);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(3600));
        }
    }

    #[test]
    fn backoff_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 42);
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
