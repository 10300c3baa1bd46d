//! How many connections each peer identity holds open.

use std::collections::HashMap;
use std::sync::Mutex;

/// Open connections per peer identity, capped at `limits.max_connections_per_peer`.
#[derive(Default)]
pub(super) struct PeerSlots(Mutex<HashMap<String, usize>>);

/// One peer's connection slot, given back on drop.
pub(super) struct PeerSlot<'a> {
    slots: &'a PeerSlots,
    peer: String,
}

impl PeerSlots {
    pub(super) fn take(&self, peer: &str, max: usize) -> Option<PeerSlot<'_>> {
        let mut open = self.0.lock().ok()?;
        let count = open.entry(peer.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            slots: self,
            peer: peer.to_owned(),
        })
    }
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.0.lock()
            && let Some(count) = open.get_mut(&self.peer)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}
