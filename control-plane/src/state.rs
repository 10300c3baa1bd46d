//! What the control plane holds while it runs: the signer, the trust bundle pushed to
//! proxies, the policy set, and the registry of proxies and workloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::attest::tokens::{self, TokenStore};
use crate::registry::*;
use crate::server::*;
use tokio::sync::watch;
use ward_certs::TrustBundle;
use ward_certs::ca::CertificateAuthority;
use ward_policy::PolicySet;

pub(crate) struct State {
    pub(crate) settings: Settings,
    /// The signer; swapped when a rotation activates a new root.
    pub(crate) ca: arc_swap::ArcSwap<CertificateAuthority>,
    pub(crate) tokens: TokenStore,
    pub(crate) bundle: watch::Sender<Arc<Trust>>,
    /// The policy set, its version, and when it changed (for the fan-out metric).
    pub(crate) policy: watch::Sender<Arc<(u64, PolicySet, Instant)>>,
    /// What each connected proxy last acknowledged (for rotation and `ward ca status`).
    pub(crate) proxies: Mutex<HashMap<String, ProxyState>>,
    /// Certify calls per peer address in the current second.
    pub(crate) rate: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
    /// Registrations already read from the token store (they never change once made; new
    /// ones are added by this server when it redeems a token).
    pub(crate) registrations: Mutex<HashMap<String, tokens::Registration>>,
    /// Open Watch streams per caller SPIFFE ID.
    pub(crate) watches: Arc<Mutex<HashMap<String, usize>>>,
    /// Serializes writes of status.json.
    pub(crate) status_lock: Mutex<()>,
}

/// A bundle's version: derived from its roots, so it means the same across restarts.
pub(crate) fn bundle_version(bundle: &TrustBundle) -> u64 {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for root in bundle.roots() {
        ctx.update(&(root.len() as u64).to_be_bytes());
        ctx.update(root.as_ref());
    }
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // Keep it within what a JSON number holds exactly.
    u64::from_be_bytes(first) >> 12
}

/// The trust bundle pushed to proxies, its version, and which root signs new leaves.
#[derive(Debug)]
pub struct Trust {
    pub version: u64,
    pub bundle: TrustBundle,
    pub active_root: String,
}

/// The signing root's key ID, which proxies compare with the root their leaf chains to
/// (by key, not by name: with an intermediate the leaf never names its root).
pub(crate) fn root_subject(ca: &CertificateAuthority) -> String {
    ward_certs::verify::key_id(ca.root()).unwrap_or_default()
}
