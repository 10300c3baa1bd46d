//! What the control plane holds while it runs: the signer, the trust bundle and the policy
//! set pushed to proxies (each a `watch` every stream follows), the attestor and the
//! registry of proxies.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use ward_certs::ca::CertificateAuthority;
use ward_policy::PolicySet;

use crate::attest::Attestor;
use crate::discovery::DiscoverySource;
use crate::registry::Registry;
use crate::settings::Settings;
use crate::trust::Trust;

/// A policy set as pushed: its version, and when it changed (for the fan-out metric).
pub struct Policy {
    pub version: u64,
    pub set: PolicySet,
    pub changed: Instant,
}

pub struct State {
    pub settings: Settings,
    /// The signer; swapped when a rotation activates a new root.
    pub ca: ArcSwap<CertificateAuthority>,
    pub attestor: Box<dyn Attestor>,
    pub discovery: Box<dyn DiscoverySource>,
    pub bundle: watch::Sender<Arc<Trust>>,
    pub policy: watch::Sender<Arc<Policy>>,
    pub registry: Registry,
    /// What proxies report, for the dashboard.
    pub dashboard: crate::dashboard::Dashboard,
    /// The JWT-SVID signing keys (derived from the CA).
    pub jwt_keys: crate::jwt_svid::JwtKeys,
}

impl State {
    /// Puts a new policy set in force (the next version).
    pub fn set_policy(&self, set: PolicySet) {
        self.policy.send_modify(|current| {
            *current = Arc::new(Policy {
                version: current.version + 1,
                set,
                changed: Instant::now(),
            });
        });
        tracing::info!(version = self.policy.borrow().version, "policy updated");
    }

    /// Writes `status.json` with the trust in force.
    pub fn write_status(&self) {
        let trust = self.bundle.borrow().clone();
        self.registry.write_status(&trust, self.settings.svid_ttl);
    }
}
