//! Denial spikes, judged where calls are judged: per caller (source identity), the denials
//! of the current minute against that caller's own recent baseline (an exponentially
//! weighted mean of its denials per minute). A minute with at least [`MIN_DENIALS`] denials
//! and [`FACTOR`] times the baseline is a spike, reported once for that minute.
//!
//! Only denials reach this (allowed calls take no lock here). The table of callers is
//! bounded: when it is full, callers idle for [`FORGET_AFTER`] minutes are forgotten, and
//! if none is, a new caller goes untracked (counted) rather than growing it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::metrics::Label;

/// Denials in one minute below which nothing is a spike, whatever the baseline.
pub const MIN_DENIALS: u32 = 20;
/// How far above its baseline a caller's minute must be.
pub const FACTOR: f64 = 5.0;
/// Weight of the latest minute in the baseline.
const ALPHA: f64 = 0.25;
/// Callers tracked at most.
const MAX_CALLERS: usize = 10_000;
/// Minutes without a denial after which a caller may be forgotten when the table is full.
const FORGET_AFTER: u64 = 10;

/// A caller's minute that was a spike.
#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    pub denials: u32,
    /// The caller's usual denials per minute before this one.
    pub baseline: f64,
}

#[derive(Debug, Default)]
struct Caller {
    /// The minute `denials` counts.
    minute: u64,
    denials: u32,
    baseline: f64,
    /// This minute was already reported.
    reported: bool,
}

impl Caller {
    /// Moves to `minute`, folding the minutes since into the baseline (a minute without
    /// denials counts as zero).
    fn advance(&mut self, minute: u64) {
        if minute <= self.minute {
            return;
        }
        self.baseline = self.baseline * (1.0 - ALPHA) + f64::from(self.denials) * ALPHA;
        // Each empty minute since decays it further; after enough of them it is ~0.
        let empty = (minute - self.minute - 1).min(64);
        self.baseline *= (1.0 - ALPHA).powi(empty as i32);
        self.minute = minute;
        self.denials = 0;
        self.reported = false;
    }
}

/// The per-caller denial counts of one sidecar (or gateway).
#[derive(Debug)]
pub struct Spikes {
    started: Instant,
    callers: Mutex<HashMap<Label, Caller>>,
}

impl Default for Spikes {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            callers: Mutex::default(),
        }
    }
}

impl Spikes {
    /// A denial of a call from `source` now: the spike it completes, if it does.
    pub fn denied(&self, source: &Label) -> Option<Spike> {
        let minute = self.started.elapsed().as_secs() / 60;
        self.denied_in(source, minute)
    }

    /// A denial from `source` in `minute` (minutes since this table started).
    pub fn denied_in(&self, source: &Label, minute: u64) -> Option<Spike> {
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        if !callers.contains_key(source) && callers.len() >= MAX_CALLERS {
            callers.retain(|_, c| c.minute + FORGET_AFTER > minute);
            if callers.len() >= MAX_CALLERS {
                metrics::counter!("ward_anomaly_callers_untracked_total").increment(1);
                return None;
            }
        }
        let caller = callers.entry(source.clone()).or_insert_with(|| Caller {
            minute,
            ..Caller::default()
        });
        caller.advance(minute);
        caller.denials = caller.denials.saturating_add(1);
        let spike = !caller.reported
            && caller.denials >= MIN_DENIALS
            && f64::from(caller.denials) >= FACTOR * caller.baseline.max(1.0);
        if spike {
            caller.reported = true;
            return Some(Spike {
                denials: caller.denials,
                baseline: caller.baseline,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> Label {
        crate::metrics::identity(s)
    }

    /// Denies `n` calls from `who` in `minute`; the spikes they complete.
    fn deny(spikes: &Spikes, who: &Label, minute: u64, n: u32) -> Vec<Spike> {
        (0..n)
            .filter_map(|_| spikes.denied_in(who, minute))
            .collect()
    }

    #[test]
    fn a_new_caller_spikes_at_the_floor_once_a_minute() {
        let (spikes, a) = (Spikes::default(), label("spiffe://t/a"));
        assert!(deny(&spikes, &a, 0, MIN_DENIALS - 1).is_empty());
        assert_eq!(
            deny(&spikes, &a, 0, 1),
            vec![Spike {
                denials: MIN_DENIALS,
                baseline: 0.0
            }]
        );
        assert!(deny(&spikes, &a, 0, 100).is_empty(), "once per minute");
    }

    #[test]
    fn a_caller_denied_steadily_is_not_a_spike_until_it_multiplies() {
        let (spikes, a) = (Spikes::default(), label("spiffe://t/a"));
        // 30 a minute for half an hour: the first minute spikes (nothing before it), then
        // the baseline catches up and 30 a minute is normal for this caller.
        let early: usize = (0..30).map(|m| deny(&spikes, &a, m, 30).len()).sum();
        assert_eq!(early, 1);
        assert!(deny(&spikes, &a, 30, 100).is_empty(), "100 < 5 × ~30");
        let spike = deny(&spikes, &a, 31, 300);
        assert_eq!(spike.len(), 1, "{spike:?}");
        assert!(
            spike[0].baseline > 30.0 && spike[0].baseline < 60.0,
            "{spike:?}"
        );
    }

    #[test]
    fn callers_are_judged_against_their_own_baseline() {
        let spikes = Spikes::default();
        let (noisy, quiet) = (label("spiffe://t/noisy"), label("spiffe://t/quiet"));
        for m in 0..20 {
            deny(&spikes, &noisy, m, 50);
        }
        assert!(deny(&spikes, &noisy, 20, 60).is_empty());
        assert_eq!(deny(&spikes, &quiet, 20, 60).len(), 1);
    }

    #[test]
    fn a_baseline_decays_over_quiet_minutes() {
        let (spikes, a) = (Spikes::default(), label("spiffe://t/a"));
        for m in 0..20 {
            deny(&spikes, &a, m, 40);
        }
        // An hour without denials: 40 a minute is a spike again.
        assert_eq!(deny(&spikes, &a, 80, 40).len(), 1);
    }
}
