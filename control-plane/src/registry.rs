//! The proxies the control plane knows: what each last acknowledged (for rotation and
//! `ward ca status`, written to `status.json`), the workload each identity runs, open
//! Watch streams per identity, and Certify rates per address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::attest::tokens::{self};
use crate::metrics as admin;
use crate::rotation;
use crate::state::*;
use tonic::Status;
use ward_certs::SpiffeId;

#[derive(Debug, Clone)]
pub struct ProxyState {
    pub bundle_version: u64,
    pub leaf_not_after_unix: i64,
    pub leaf_issuer: String,
    pub last_seen: SystemTime,
    /// Whether its Bundle.Watch stream is open now.
    pub connected: bool,
}

/// Proxies known from the last run's status.json: a restart must not forget a proxy that
/// has not reconnected yet, or a rotation step could run ahead of it.
pub(crate) fn known_proxies(dir: &Path) -> HashMap<String, ProxyState> {
    let Ok(bytes) = std::fs::read(dir.join(rotation::STATUS_FILE)) else {
        return HashMap::new();
    };
    let Ok(status) = serde_json::from_slice::<rotation::Status>(&bytes) else {
        return HashMap::new();
    };
    status
        .proxies
        .into_iter()
        .map(|(id, p)| {
            let state = ProxyState {
                bundle_version: p.bundle_version,
                leaf_not_after_unix: p.leaf_not_after_unix,
                leaf_issuer: p.leaf_issuer,
                last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(p.last_seen_unix),
                connected: false,
            };
            (id, state)
        })
        .collect()
}

/// How long before the CA expires the control plane starts warning (hourly).
pub(crate) const CA_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Writes what every connected proxy has applied to `status.json`, for `ward ca rotate`
/// and `ward ca status`.
pub(crate) async fn report_status(state: Arc<State>) {
    let mut last_warning: Option<Instant> = None;
    loop {
        state.write_status();
        let trust = state.bundle.borrow().clone();
        let connected = state
            .proxies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| p.connected)
            .count();
        metrics::gauge!(admin::CONNECTED_PROXIES).set(connected as f64);
        metrics::gauge!(admin::BUNDLE_VERSION).set(trust.version as f64);
        let ca_not_after = state.ca.load().not_after();
        metrics::gauge!(admin::CA_EXPIRY).set(
            ca_not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        let left = ca_not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left < CA_EXPIRY_WARNING
            && last_warning.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(3600))
        {
            tracing::warn!(
                days_left = left.as_secs() / 86_400,
                "the CA expires soon; rotate it with `ward ca rotate`"
            );
            last_warning = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl State {
    /// Writes what every known proxy has applied to `status.json` (for `ward ca rotate`
    /// and `ward ca status`, and for the next start to remember who holds leaves).
    pub(crate) fn write_status(&self) {
        let trust = self.bundle.borrow().clone();
        let proxies = self
            .proxies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, p)| {
                let last = if p.connected {
                    SystemTime::now()
                } else {
                    p.last_seen
                };
                let seen = last
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                (
                    id.clone(),
                    rotation::ProxyStatus {
                        bundle_version: p.bundle_version,
                        leaf_not_after_unix: p.leaf_not_after_unix,
                        leaf_issuer: p.leaf_issuer.clone(),
                        last_seen_unix: seen,
                    },
                )
            })
            .collect();
        let status = rotation::Status {
            written_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            bundle_version: trust.version,
            roots: trust
                .bundle
                .roots()
                .filter_map(|r| ward_certs::verify::key_id(r).ok())
                .collect(),
            active_root: trust.active_root.clone(),
            proxies,
        };
        let _serialized = self.status_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = rotation::write_status(&self.settings.data_dir, &status) {
            tracing::warn!(error = %e, "cannot write status.json");
        }
    }

    pub(crate) fn rate_limited(&self, addr: Option<SocketAddr>) -> bool {
        let Some(addr) = addr else { return false };
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = rate.entry(addr.ip()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 > self.settings.certify_rate
    }

    pub(crate) fn registration(&self, id: &SpiffeId) -> Result<tokens::Registration, Status> {
        let key = id.to_string();
        let cached = self
            .registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(r) = cached {
            return Ok(r);
        }
        let found = self
            .tokens
            .registration(&key)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                Status::permission_denied(format!("{id} is not a registered workload"))
            })?;
        self.registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }
}

/// One open Watch stream of one identity, given back when the stream's task ends.
pub(crate) struct WatchSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    id: String,
}

impl State {
    /// A Watch slot for `id`, or RESOURCE_EXHAUSTED once it holds as many as allowed: one
    /// identity (any valid SVID) must not be able to fill the control plane's memory.
    pub(crate) fn watch_slot(&self, id: &SpiffeId) -> Result<WatchSlot, Status> {
        let id = id.to_string();
        let mut open = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(id.clone()).or_insert(0);
        if *count >= self.settings.max_watches_per_identity {
            metrics::counter!("ward_cp_watches_refused_total").increment(1);
            tracing::warn!(%id, open = *count, "Watch stream limit reached for this identity");
            return Err(Status::resource_exhausted(
                "too many open Watch streams for this identity",
            ));
        }
        *count += 1;
        Ok(WatchSlot {
            open: self.watches.clone(),
            id,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.id);
            }
        }
    }
}
