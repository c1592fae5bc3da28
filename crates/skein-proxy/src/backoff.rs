//! Jittered exponential backoff, for reconnects and certificate retries.

use std::time::Duration;

/// Jittered exponential backoff: from `start`, doubling to `cap`, each delay ±20%.
#[derive(Debug)]
pub(crate) struct Backoff {
    pub(crate) next: Duration,
    start: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn between(start: Duration, cap: Duration) -> Self {
        Backoff {
            next: start,
            start,
            cap,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.cap);
        // Jitter keeps a fleet of proxies from reconnecting in lockstep after a restart.
        base.mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter_and_resets() {
        let mut b = Backoff::between(START, CAP);
        let mut base = START;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{d:?} vs {base:?}"
            );
            base = (base * 2).min(CAP);
        }
        assert_eq!(b.next, CAP);
        b.reset();
        assert!(b.next_delay() <= START.mul_f64(1.2));
    }
}
