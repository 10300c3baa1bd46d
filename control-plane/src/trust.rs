//! The trust bundle as the control plane pushes it.

use ward_certs::TrustBundle;
use ward_certs::ca::CertificateAuthority;

/// The trust bundle pushed to proxies, its version, and which root signs new leaves.
#[derive(Debug)]
pub struct Trust {
    pub version: u64,
    pub bundle: TrustBundle,
    pub active_root: String,
}

impl Trust {
    pub fn new(bundle: TrustBundle, signer: &CertificateAuthority) -> Self {
        Self {
            version: bundle_version(&bundle),
            bundle,
            active_root: signing_root(signer),
        }
    }
}

/// A bundle's version: derived from its roots, so it means the same across restarts.
pub fn bundle_version(bundle: &TrustBundle) -> u64 {
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

/// The signing root's key ID, which proxies compare with the root their leaf chains to
/// (by key, not by name: with an intermediate the leaf never names its root).
pub fn signing_root(ca: &CertificateAuthority) -> String {
    ward_certs::verify::key_id(ca.root()).unwrap_or_default()
}
