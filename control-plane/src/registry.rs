//! The proxies the control plane knows: what each last acknowledged (for rotation and
//! `ward ca status`, written to `status.json` and read back at start, so that a restart
//! never forgets a leaf holder), the workload each identity runs, open Watch streams per
//! identity, and Certify calls per address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tonic::Status;
use ward_certs::SpiffeId;
use ward_runtime::time::unix_secs;

use crate::attest::{Attestor, Registration};
use crate::rotation;
use crate::trust::Trust;

/// What one proxy last reported.
#[derive(Debug, Clone)]
pub struct ProxyState {
    pub bundle_version: u64,
    pub leaf_not_after_unix: i64,
    pub leaf_issuer: String,
    pub last_seen: SystemTime,
    /// Whether its Bundle.Watch stream is open now.
    pub connected: bool,
}

/// The registry.
pub struct Registry {
    data_dir: PathBuf,
    certify_rate: u32,
    max_watches: usize,
    proxies: Mutex<HashMap<String, ProxyState>>,
    /// Workloads already looked up (they never change once attested).
    workloads: Mutex<HashMap<String, Registration>>,
    /// Open Watch streams per caller SPIFFE ID.
    watches: Arc<Mutex<HashMap<String, usize>>>,
    /// Certify calls per peer address in the current second.
    rate: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Serializes writes of status.json.
    status_lock: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// The registry of the control plane on `data_dir`, with the proxies its last run knew.
    pub fn open(data_dir: &Path, certify_rate: u32, max_watches: usize) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            certify_rate,
            max_watches,
            proxies: Mutex::new(known_proxies(data_dir)),
            workloads: Mutex::default(),
            watches: Arc::default(),
            rate: Mutex::default(),
            status_lock: Mutex::new(()),
        }
    }

    /// Counts a Certify call from `addr`; true past `certify_rate` in the current second.
    pub fn rate_limited(&self, addr: Option<SocketAddr>) -> bool {
        let Some(addr) = addr else { return false };
        let mut rate = lock(&self.rate);
        let now = Instant::now();
        let entry = rate.entry(addr.ip()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 > self.certify_rate
    }

    /// The workload `id` runs, as attested when it got its first SVID.
    pub fn workload(&self, id: &SpiffeId, attestor: &dyn Attestor) -> Result<Registration, Status> {
        let key = id.to_string();
        if let Some(known) = lock(&self.workloads).get(&key) {
            return Ok(known.clone());
        }
        let found = attestor
            .workload(id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                Status::permission_denied(format!("{id} is not a registered workload"))
            })?;
        lock(&self.workloads).insert(key, found.clone());
        Ok(found)
    }

    /// Remembers a workload just attested.
    pub fn attested(&self, id: &SpiffeId, workload: Registration) {
        lock(&self.workloads).insert(id.to_string(), workload);
    }

    /// Records a leaf issued to `id`; true if `id` held none before (then the caller must
    /// write the status before handing the leaf over).
    pub fn issued(
        &self,
        id: &SpiffeId,
        not_after_unix: i64,
        issuer: &str,
        now: SystemTime,
    ) -> bool {
        let mut proxies = lock(&self.proxies);
        let known = proxies.contains_key(&id.to_string());
        let entry = proxies.entry(id.to_string()).or_insert(ProxyState {
            bundle_version: 0,
            leaf_not_after_unix: 0,
            leaf_issuer: String::new(),
            last_seen: now,
            connected: false,
        });
        entry.leaf_not_after_unix = not_after_unix;
        entry.leaf_issuer = issuer.to_owned();
        entry.last_seen = now;
        !known
    }

    /// What a proxy acknowledged on its bundle stream (which is open).
    pub fn acknowledged(&self, id: &str, ack: &ward_api::v1::BundleAck) {
        lock(&self.proxies).insert(
            id.to_owned(),
            ProxyState {
                bundle_version: ack.applied_version,
                leaf_not_after_unix: ack.leaf_not_after_unix,
                leaf_issuer: ack.leaf_issuer_root.clone(),
                last_seen: SystemTime::now(),
                connected: true,
            },
        );
    }

    /// A proxy's bundle stream closed.
    pub fn disconnected(&self, id: &str) {
        if let Some(p) = lock(&self.proxies).get_mut(id) {
            p.connected = false;
            p.last_seen = SystemTime::now();
        }
    }

    /// How many proxies have their bundle stream open.
    pub fn connected(&self) -> usize {
        lock(&self.proxies).values().filter(|p| p.connected).count()
    }

    /// A Watch slot for `id`, or RESOURCE_EXHAUSTED once it holds as many as allowed: one
    /// identity (any valid SVID) must not be able to fill the control plane's memory.
    pub fn watch_slot(&self, id: &SpiffeId) -> Result<WatchSlot, Status> {
        let id = id.to_string();
        let mut open = lock(&self.watches);
        let count = open.entry(id.clone()).or_insert(0);
        if *count >= self.max_watches {
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

    /// Writes what every known proxy has applied to `status.json` (for `ward ca rotate`
    /// and `ward ca status`, and for the next start to remember who holds leaves).
    pub fn write_status(&self, trust: &Trust, svid_ttl: Duration) {
        let now = SystemTime::now();
        let proxies = lock(&self.proxies)
            .iter()
            .map(|(id, p)| {
                let last = if p.connected { now } else { p.last_seen };
                let status = rotation::ProxyStatus {
                    bundle_version: p.bundle_version,
                    leaf_not_after_unix: p.leaf_not_after_unix,
                    leaf_issuer: p.leaf_issuer.clone(),
                    last_seen_unix: unix_secs(last),
                };
                (id.clone(), status)
            })
            .collect();
        let status = rotation::Status {
            written_unix: unix_secs(now),
            bundle_version: trust.version,
            roots: trust
                .bundle
                .roots()
                .filter_map(|r| ward_certs::verify::key_id(r).ok())
                .collect(),
            active_root: trust.active_root.clone(),
            svid_ttl_secs: svid_ttl.as_secs(),
            proxies,
        };
        let _serialized = lock(&self.status_lock);
        if let Err(e) = rotation::write_status(&self.data_dir, &status) {
            tracing::warn!(error = %e, "cannot write status.json");
        }
    }
}

/// Proxies known from the last run's status.json: a restart must not forget a proxy that
/// has not reconnected yet, or a rotation step could run ahead of it.
fn known_proxies(dir: &Path) -> HashMap<String, ProxyState> {
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

/// One open Watch stream of one identity, given back when the stream's task ends.
pub struct WatchSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    id: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_slots_are_counted_per_identity_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path(), 2, 2);
        let a = SpiffeId::new("spiffe://example.org/ns/a/sa/a").unwrap();
        let b = SpiffeId::new("spiffe://example.org/ns/b/sa/b").unwrap();
        let first = registry.watch_slot(&a).unwrap();
        let _second = registry.watch_slot(&a).unwrap();
        let refused = registry.watch_slot(&a).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            registry.watch_slot(&b).is_ok(),
            "another identity has its own"
        );
        drop(first);
        assert!(
            registry.watch_slot(&a).is_ok(),
            "a closed stream gives its slot back"
        );
    }

    #[test]
    fn certify_rate_is_per_address_per_second() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path(), 2, 1);
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert!(!registry.rate_limited(Some(a)));
        assert!(!registry.rate_limited(Some(a)));
        assert!(registry.rate_limited(Some(a)));
        assert!(!registry.rate_limited(Some(b)));
        assert!(!registry.rate_limited(None), "no address, no count");
    }

    #[test]
    fn leaf_holders_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let td = ward_certs::TrustDomain::new("example.org").unwrap();
        let ca = ward_certs::ca::CertificateAuthority::create(
            td,
            &Default::default(),
            SystemTime::now(),
        )
        .unwrap();
        let trust = Trust::new(ca.bundle().unwrap(), &ca);
        let id = SpiffeId::new("spiffe://example.org/ns/a/sa/a").unwrap();
        let registry = Registry::open(dir.path(), 1, 1);
        assert!(registry.issued(&id, 1_900_000_000, "root-1", SystemTime::now()));
        assert!(!registry.issued(&id, 1_900_000_100, "root-1", SystemTime::now()));
        registry.write_status(&trust, Duration::from_secs(60));
        let reopened = Registry::open(dir.path(), 1, 1);
        assert!(!reopened.issued(&id, 1_900_000_200, "root-1", SystemTime::now()));
        assert_eq!(reopened.connected(), 0);
    }
}
