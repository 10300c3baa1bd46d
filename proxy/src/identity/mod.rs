//! The workload's identity: an SVID (chain and key; the key never leaves this process)
//! and the trust bundle, from static files (`ward cert issue`) or from the control plane
//! ([`crate::control`]).

use std::time::SystemTime;

use metrics::gauge;
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
    #[error("control plane: {0}")]
    ControlPlane(String),
}

/// Loads and cross-checks static SVID files and the bundle.
pub fn load_static(
    files: &IdentityFiles,
    trust_domain: &TrustDomain,
) -> Result<(MeshIdentity, SpiffeId), IdentityError> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Err(IdentityError::ControlPlane(
            "no static identity configured".into(),
        ));
    };
    let svid = Svid::read(cert, key)?;
    let bundle = TrustBundle::read(trust_domain.clone(), &files.bundle)?;
    report_roots(&bundle);
    let id = verify_svid(
        svid.chain(),
        &bundle,
        unix_time(SystemTime::now()),
        Purpose::Both,
    )
    .map_err(|rule| IdentityError::Invalid {
        path: cert.display().to_string(),
        rule,
    })?;
    Ok((MeshIdentity::new(&svid, bundle)?, id))
}

/// Reports what is wrong (or soon will be) with a bundle's roots: one WARN each, and
/// `ward_bundle_root_warnings` holds how many the bundle in force has.
pub fn report_roots(bundle: &TrustBundle) {
    let warnings = bundle.root_warnings(SystemTime::now());
    for w in &warnings {
        tracing::warn!(target: "ward::bundle", "{w}");
    }
    gauge!("ward_bundle_root_warnings").set(warnings.len() as f64);
}

/// Sets `ward_cert_expiry_timestamp_seconds` from the SVID in use.
pub fn report_expiry(identity: &MeshIdentity) {
    if let Some(info) = identity
        .svid
        .current_chain()
        .first()
        .and_then(|leaf| ward_certs::CertInfo::parse(leaf).ok())
    {
        crate::metrics::cert_expiry(info.not_after);
    }
}
