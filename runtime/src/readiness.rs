//! Readiness as a set of named conditions still pending; each is cleared by dropping its
//! guard. `/ready` answers 200 only when none is left, and names the ones that are.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pending: Arc<Mutex<BTreeSet<String>>>,
}

/// Holds one condition pending until dropped.
#[derive(Debug)]
#[must_use = "the condition clears when the guard is dropped"]
pub struct Pending {
    name: String,
    pending: Arc<Mutex<BTreeSet<String>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a condition that keeps the proxy unready until its guard is dropped.
    pub fn register(&self, name: impl Into<String>) -> Pending {
        let name = name.into();
        self.lock().insert(name.clone());
        Pending {
            name,
            pending: self.pending.clone(),
        }
    }

    /// The conditions still pending, sorted.
    pub fn pending(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    pub fn is_ready(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_guard_is_dropped() {
        let r = Readiness::new();
        assert!(r.is_ready());
        let a = r.register("identity");
        let b = r.register("inbound 127.0.0.1:1");
        assert_eq!(r.pending(), vec!["identity", "inbound 127.0.0.1:1"]);
        drop(a);
        assert!(!r.is_ready());
        drop(b);
        assert!(r.is_ready());
    }
}
