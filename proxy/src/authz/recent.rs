//! The latest denials and anomalies, kept for the control plane's dashboard until the next
//! report takes them (see `control::report`). Bounded: when reports stop, the oldest go.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use ward_api::v1;

/// Kept of each at most (a report carries no more).
pub const KEPT: usize = 50;

#[derive(Debug, Default)]
pub struct Recent {
    held: Mutex<(VecDeque<v1::Denial>, VecDeque<v1::Anomaly>)>,
}

/// Now, in Unix milliseconds (what reports carry).
pub fn now_ms() -> i64 {
    ward_runtime::time::unix_millis(SystemTime::now())
}

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<v1::Denial>, VecDeque<v1::Anomaly>)> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn denied(&self, denial: v1::Denial) {
        let mut held = self.lock();
        if held.0.len() == KEPT {
            held.0.pop_front();
        }
        held.0.push_back(denial);
    }

    pub fn anomaly(&self, anomaly: v1::Anomaly) {
        let mut held = self.lock();
        if held.1.len() == KEPT {
            held.1.pop_front();
        }
        held.1.push_back(anomaly);
    }

    /// Everything held, oldest first; empties the buffer.
    pub fn take(&self) -> (Vec<v1::Denial>, Vec<v1::Anomaly>) {
        let mut held = self.lock();
        (held.0.drain(..).collect(), held.1.drain(..).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_are_kept_and_taken_once() {
        let recent = Recent::default();
        for i in 0..(KEPT + 5) {
            recent.denied(v1::Denial {
                path: format!("/{i}"),
                ..Default::default()
            });
        }
        let (denials, anomalies) = recent.take();
        assert_eq!(denials.len(), KEPT);
        assert_eq!(denials[0].path, "/5");
        assert!(anomalies.is_empty());
        assert!(recent.take().0.is_empty());
    }
}
