//! The workload's identity from static files (`ward cert issue`): its SVID and the trust
//! bundle, checked against each other before anything listens.

use std::time::SystemTime;

use ward_certs::verify::{Purpose, unix_time};
use ward_certs::{MeshIdentity, SpiffeId, Svid, TrustBundle, TrustDomain, verify_svid};

use crate::config::IdentityFiles;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity.cert: {0}")]
    Svid(#[from] ward_certs::svid::SvidFileError),
    #[error("identity.bundle: {0}")]
    Bundle(#[from] ward_certs::bundle::BundleError),
    #[error("identity.cert: {path}: not a valid SVID for identity.bundle: {rule}")]
    Invalid {
        path: String,
        rule: ward_certs::SvidError,
    },
}

/// Loads and cross-checks the SVID and bundle; returns the TLS identity and our SPIFFE ID.
pub fn load(
    files: &IdentityFiles,
    trust_domain: &TrustDomain,
) -> Result<(MeshIdentity, SpiffeId), IdentityError> {
    let svid = Svid::read(&files.cert, &files.key)?;
    let bundle = TrustBundle::read(trust_domain.clone(), &files.bundle)?;
    let id = verify_svid(
        svid.chain(),
        &bundle,
        unix_time(SystemTime::now()),
        Purpose::Both,
    )
    .map_err(|rule| IdentityError::Invalid {
        path: files.cert.display().to_string(),
        rule,
    })?;
    Ok((MeshIdentity::new(&svid, bundle)?, id))
}
