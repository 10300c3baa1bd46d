//! `ward control-plane` settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ward_certs::{SpiffeId, TrustDomain};

/// What `ward control-plane` is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub trust_domain: TrustDomain,
    pub listen: SocketAddr,
    pub policy_dir: Option<PathBuf>,
    pub svid_ttl: Duration,
    pub admin: SocketAddr,
    /// Certify calls allowed per peer address per second.
    pub certify_rate: u32,
    /// Open Watch streams (policy and bundle together) allowed per SPIFFE ID.
    pub max_watches_per_identity: usize,
    /// Where the read-only dashboard is served, if anywhere.
    pub dashboard: Option<SocketAddr>,
}

/// The SPIFFE ID the control plane serves with.
pub fn control_plane_id(td: &TrustDomain) -> SpiffeId {
    ward_certs::id::workload_id(td, "ward-system", "control-plane")
        .expect("constant path segments are valid")
}
