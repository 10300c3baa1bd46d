//! Capped exponential backoff, the one kind both binaries use: reconnecting streams,
//! retrying renewals and bootstraps, and waiting out failed accepts.

use std::time::Duration;

/// Delays that double from `first` up to `max`, each drawn with jitter around its nominal
/// value so that many proxies restarted together do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    /// The spread of the jitter: a delay is drawn from `[1 - j/2, 1 + j/2)` × nominal.
    jitter: f64,
}

impl Backoff {
    /// 250 ms doubling to 30 s, ±25 %: for talking to the control plane.
    pub fn control_plane() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30)).with_jitter(0.5)
    }

    /// `first` doubling to `max`, without jitter.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
            jitter: 0.0,
        }
    }

    pub fn with_jitter(mut self, spread: f64) -> Self {
        self.jitter = spread.clamp(0.0, 1.0);
        self
    }

    /// The nominal delay the next [`Backoff::next_delay`] is drawn around.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Whether the nominal delay has reached the cap.
    pub fn at_max(&self) -> bool {
        self.next >= self.max
    }

    /// The delay to wait now; the next one doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next.saturating_mul(2)).min(self.max);
        if self.jitter == 0.0 {
            nominal
        } else {
            nominal.mul_f64(1.0 - self.jitter / 2.0 + self.jitter * uniform())
        }
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// A uniform draw in [0, 1) from the system CSPRNG.
pub fn uniform() -> f64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert!(b.at_max());
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(5));
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let mut b = Backoff::control_plane();
        for _ in 0..200 {
            b.reset();
            let d = b.next_delay();
            assert!(
                d >= Duration::from_micros(187_500) && d < Duration::from_micros(312_500),
                "{d:?}"
            );
        }
        let draws: Vec<f64> = (0..1000).map(|_| uniform()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.iter().any(|u| *u < 0.5) && draws.iter().any(|u| *u >= 0.5));
    }
}
