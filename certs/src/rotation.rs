//! When to renew a certificate: at half its lifetime, with jitter.
//!
//! Renewing at half-life leaves the other half to retry through a control-plane outage
//! before the certificate expires. Jitter spreads the renewals of proxies that started
//! together so they do not reach the CA in one burst. The rule is a pure function of the
//! validity window and a jitter draw, so it is tested without clocks; the caller supplies
//! `now` and a uniformly random `jitter` in `[0, 1)`.

use std::time::{Duration, SystemTime};

/// Fraction of the lifetime at which renewal is due, before jitter.
pub const RENEW_AT: f64 = 0.5;
/// Jitter spread, as a fraction of the lifetime, centred on [`RENEW_AT`]: renewal falls in
/// `[45%, 55%)` of the lifetime.
pub const JITTER_SPREAD: f64 = 0.1;

/// The instant at which a certificate valid over `[not_before, not_after]` should be
/// renewed, for a jitter draw in `[0, 1)` (values outside are clamped).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        // An inverted window is not a certificate to keep: renew as if it had expired.
        return not_after;
    };
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let fraction = RENEW_AT - JITTER_SPREAD / 2.0 + JITTER_SPREAD * jitter;
    not_before + lifetime.mul_f64(fraction)
}

/// How long to wait from `now` before renewing; zero when renewal is already due (including
/// for an expired certificate).
pub fn renew_in(
    now: SystemTime,
    not_before: SystemTime,
    not_after: SystemTime,
    jitter: f64,
) -> Duration {
    renew_at(not_before, not_after, jitter)
        .duration_since(now)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn renews_at_half_life_without_jitter_offset() {
        // jitter 0.5 is the centre of the window: exactly half-life.
        assert_eq!(renew_at(t(0), t(24 * H), 0.5), t(12 * H));
        assert_eq!(
            renew_in(t(0), t(0), t(24 * H), 0.5),
            Duration::from_secs(12 * H)
        );
    }

    #[test]
    fn jitter_stays_within_the_window() {
        let lo = renew_at(t(0), t(24 * H), 0.0);
        let hi = renew_at(t(0), t(24 * H), 0.999_999);
        assert_eq!(lo, t(24 * H * 45 / 100));
        assert!(hi < t(24 * H * 55 / 100) && hi > t(24 * H * 54 / 100));
        for j in [-1.0, 2.0, f64::NAN, f64::INFINITY] {
            let at = renew_at(t(0), t(24 * H), j);
            assert!(at >= lo && at <= t(24 * H * 55 / 100), "{j}");
        }
    }

    #[test]
    fn short_lifetimes_scale() {
        // A 2-minute SVID renews after about a minute.
        assert_eq!(renew_in(t(0), t(0), t(120), 0.5), Duration::from_secs(60));
    }

    #[test]
    fn renewal_already_due_is_immediate() {
        assert_eq!(renew_in(t(13 * H), t(0), t(24 * H), 0.5), Duration::ZERO);
        assert_eq!(renew_in(t(30 * H), t(0), t(24 * H), 0.5), Duration::ZERO);
    }

    #[test]
    fn progress_into_the_lifetime_counts() {
        // Checked 6h after issuance: 6h left until half-life.
        assert_eq!(
            renew_in(t(6 * H), t(0), t(24 * H), 0.5),
            Duration::from_secs(6 * H)
        );
    }

    #[test]
    fn inverted_window_renews_now() {
        assert_eq!(renew_in(t(0), t(10), t(0), 0.5), Duration::ZERO);
    }
}
