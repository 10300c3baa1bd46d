//! Where the mesh's endpoints come from: which address belongs to which workload identity,
//! and how its sidecar is reached. A [`DiscoverySource`] keeps them in a `watch` that every
//! `Discovery.Watch` stream follows. Today's source is what proxies say when they attest
//! ([`Registrations`]); Kubernetes Pods next.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use ward_api::v1;
use ward_certs::SpiffeId;

/// Most addresses one identity may register: a proxy must not fill the map.
pub const MAX_SERVING_PER_IDENTITY: usize = 64;

/// The endpoints of the mesh, by address, and a version that grows with every change.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Endpoints {
    pub version: u64,
    pub by_address: BTreeMap<SocketAddr, v1::Endpoint>,
}

/// A source of the mesh's endpoints.
pub trait DiscoverySource: Send + Sync + 'static {
    /// The endpoints now, and each change.
    fn watch(&self) -> watch::Receiver<Arc<Endpoints>>;

    /// A proxy attested as `id` and said where its workload serves. A source that learns
    /// from proxies records it; others ignore it.
    fn attested(&self, id: &SpiffeId, serving: &[v1::Endpoint]);
}

/// One identity's endpoints, and the order of its first registration.
type Registered = (u64, Vec<(SocketAddr, v1::Endpoint)>);

/// Where registrations are kept across restarts, in the data directory: without it a
/// restarted control plane would hand every proxy an empty map until each renewed.
pub const REGISTRATIONS_FILE: &str = "discovery.json";

/// Endpoints as proxies report them when they attest: each identity's latest list
/// replaces its earlier one; the SPIFFE ID is the attested one, whatever the proxy sent.
pub struct Registrations {
    /// The file they are kept in (none: memory only).
    file: Option<std::path::PathBuf>,
    tx: watch::Sender<Arc<Endpoints>>,
    /// Each identity's endpoints, with when it first registered (an address two identities
    /// claim stays with the first: a workload cannot take over another's address).
    by_id: Mutex<HashMap<String, Registered>>,
    next: std::sync::atomic::AtomicU64,
}

impl Default for Registrations {
    fn default() -> Self {
        Self {
            file: None,
            tx: watch::Sender::new(Arc::new(Endpoints::default())),
            by_id: Mutex::default(),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// One identity's endpoints as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    spiffe_id: String,
    addresses: Vec<(String, u32, String)>,
}

impl Registrations {
    /// The registrations kept in `dir` (none yet is fine; an unreadable file is logged and
    /// starts empty).
    pub fn open(dir: &std::path::Path) -> Self {
        let file = dir.join(REGISTRATIONS_FILE);
        let this = Self {
            file: Some(file.clone()),
            ..Self::default()
        };
        let stored: Vec<Stored> = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "discovery registrations unreadable; starting empty");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        for s in stored {
            let Ok(id) = ward_certs::parse_spiffe_id(&s.spiffe_id) else {
                continue;
            };
            let serving: Vec<v1::Endpoint> = s
                .addresses
                .into_iter()
                .map(|(address, inbound_port, protocol)| v1::Endpoint {
                    address,
                    spiffe_id: String::new(),
                    inbound_port,
                    protocol,
                })
                .collect();
            this.record(&id, &serving);
        }
        this
    }

    fn save(&self, by_id: &HashMap<String, Registered>) {
        let Some(file) = &self.file else { return };
        let mut ids: Vec<_> = by_id.iter().collect();
        ids.sort_by_key(|(_, (first, _))| *first);
        let stored: Vec<Stored> = ids
            .into_iter()
            .map(|(id, (_, endpoints))| Stored {
                spiffe_id: id.clone(),
                addresses: endpoints
                    .iter()
                    .map(|(a, e)| (a.to_string(), e.inbound_port, e.protocol.clone()))
                    .collect(),
            })
            .collect();
        let written = serde_json::to_vec_pretty(&stored)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                ward_certs::pem::write_atomic(file, &json, ward_certs::pem::FileMode::Secret)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot save discovery registrations");
        }
    }
}

impl DiscoverySource for Registrations {
    fn watch(&self) -> watch::Receiver<Arc<Endpoints>> {
        self.tx.subscribe()
    }

    fn attested(&self, id: &SpiffeId, serving: &[v1::Endpoint]) {
        self.record(id, serving);
    }
}

impl Registrations {
    /// Records `id`'s endpoints, and keeps them (under the lock: saves never interleave).
    fn record(&self, id: &SpiffeId, serving: &[v1::Endpoint]) {
        let checked: Vec<(SocketAddr, v1::Endpoint)> = serving
            .iter()
            .take(MAX_SERVING_PER_IDENTITY)
            .filter_map(|e| {
                let addr: SocketAddr = e.address.parse().ok()?;
                let port = u16::try_from(e.inbound_port).ok()?;
                let endpoint = v1::Endpoint {
                    address: addr.to_string(),
                    spiffe_id: id.to_string(),
                    inbound_port: u32::from(port),
                    protocol: e.protocol.clone(),
                };
                Some((addr, endpoint))
            })
            .collect();
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let first = match by_id.get(&id.to_string()) {
            Some((_, known)) if *known == checked => return,
            Some((first, _)) => *first,
            None => self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        by_id.insert(id.to_string(), (first, checked));
        let mut ids: Vec<_> = by_id.values().collect();
        ids.sort_by_key(|(first, _)| *first);
        let mut by_address: BTreeMap<SocketAddr, v1::Endpoint> = BTreeMap::new();
        for (_, endpoints) in ids {
            for (addr, e) in endpoints {
                match by_address.get(addr) {
                    Some(held) if held.spiffe_id != e.spiffe_id => {
                        tracing::warn!(%addr, holder = %held.spiffe_id, claimant = %e.spiffe_id,
                            "an address already registered by another identity; ignored");
                    }
                    _ => {
                        by_address.insert(*addr, e.clone());
                    }
                }
            }
        }
        self.tx.send_modify(|current| {
            *current = Arc::new(Endpoints {
                version: current.version + 1,
                by_address,
            });
        });
        self.save(&by_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(address: &str, claimed: &str) -> v1::Endpoint {
        v1::Endpoint {
            address: address.into(),
            spiffe_id: claimed.into(),
            inbound_port: 0,
            protocol: String::new(),
        }
    }

    #[test]
    fn registrations_carry_the_attested_identity_and_replace_earlier_ones() {
        let source = Registrations::default();
        let rx = source.watch();
        let web = SpiffeId::new("spiffe://example.org/ns/a/sa/web").unwrap();
        source.attested(
            &web,
            &[
                endpoint("10.0.0.1:8080", "spiffe://example.org/ns/a/sa/admin"),
                endpoint("not an address", ""),
            ],
        );
        let now = rx.borrow().clone();
        assert_eq!(now.version, 1);
        assert_eq!(now.by_address.len(), 1, "the bad address is dropped");
        let e = &now.by_address[&"10.0.0.1:8080".parse().unwrap()];
        assert_eq!(e.spiffe_id, web.to_string(), "never what the proxy claims");
        // The same list again changes nothing; a new one replaces it.
        source.attested(&web, &[endpoint("10.0.0.1:8080", "")]);
        assert_eq!(rx.borrow().version, 1);
        source.attested(&web, &[endpoint("10.0.0.9:8080", "")]);
        let now = rx.borrow().clone();
        assert_eq!(now.version, 2);
        assert!(
            now.by_address
                .contains_key(&"10.0.0.9:8080".parse().unwrap())
        );
        assert!(
            !now.by_address
                .contains_key(&"10.0.0.1:8080".parse().unwrap())
        );
        let many: Vec<_> = (0..100)
            .map(|i| endpoint(&format!("10.1.0.{}:80", i % 250), ""))
            .collect();
        source.attested(&web, &many);
        assert_eq!(rx.borrow().by_address.len(), MAX_SERVING_PER_IDENTITY);
        // Another identity cannot take over an address.
        let thief = SpiffeId::new("spiffe://example.org/ns/b/sa/thief").unwrap();
        source.attested(
            &thief,
            &[endpoint("10.1.0.1:80", ""), endpoint("10.9.9.9:80", "")],
        );
        let now = rx.borrow().clone();
        assert_eq!(
            now.by_address[&"10.1.0.1:80".parse().unwrap()].spiffe_id,
            web.to_string()
        );
        assert_eq!(
            now.by_address[&"10.9.9.9:80".parse().unwrap()].spiffe_id,
            thief.to_string()
        );
    }

    #[test]
    fn registrations_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let web = SpiffeId::new("spiffe://example.org/ns/a/sa/web").unwrap();
        let orders = SpiffeId::new("spiffe://example.org/ns/a/sa/orders").unwrap();
        {
            let source = Registrations::open(dir.path());
            source.attested(&web, &[endpoint("10.0.0.1:8080", "")]);
            source.attested(&orders, &[endpoint("10.0.0.2:9090", "")]);
        }
        let reopened = Registrations::open(dir.path());
        let now = reopened.watch().borrow().clone();
        assert_eq!(now.by_address.len(), 2);
        let e = &now.by_address[&"10.0.0.2:9090".parse().unwrap()];
        assert_eq!(e.spiffe_id, orders.to_string());
        let meta = std::fs::metadata(dir.path().join(REGISTRATIONS_FILE)).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        assert_eq!(mode & 0o777, 0o600);
    }
}
