//! The data directory: the CA (`ca.pem`, `ca.key`, `bundle.pem`) that `ward ca rotate`
//! changes under a running control plane, and the control plane's own SVID from it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::server::*;
use crate::state::*;
use anyhow::Context;
use ward_certs::ca::{self, CertificateAuthority};
use ward_certs::{MeshIdentity, SpiffeId, TrustBundle, TrustDomain};

/// Re-issues the control plane's own SVID at half-life.
pub(crate) async fn renew_own_svid(state: Arc<State>, identity: MeshIdentity, id: SpiffeId) {
    loop {
        let chain = identity.svid.current_chain();
        let wait = chain
            .first()
            .and_then(|leaf| ward_certs::CertInfo::parse(leaf).ok())
            .map(|info| {
                ward_certs::rotation::renew_in(
                    SystemTime::now(),
                    info.not_before,
                    info.not_after,
                    0.5,
                )
            })
            .unwrap_or(Duration::from_secs(10));
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
        match state
            .ca
            .load()
            .issue(&id, state.settings.svid_ttl, SystemTime::now())
        {
            Ok(svid) => {
                if let Err(e) = identity.svid.swap(&svid) {
                    tracing::error!(error = %e, "cannot use the renewed control-plane SVID");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot renew the control-plane SVID"),
        }
    }
}

/// Follows `ward ca rotate`'s changes to the data directory: a new `bundle.pem` is pushed
/// to every proxy; a new `ca.pem`/`ca.key` becomes the signer (and our own SVID is
/// re-issued by it so that proxies which already dropped the old root can still reach us).
pub(crate) async fn watch_data_dir(state: Arc<State>, identity: MeshIdentity) {
    let dir = state.settings.data_dir.clone();
    let stamp = |f: &str| {
        std::fs::metadata(dir.join(f))
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut seen = (
        stamp(ca::BUNDLE_FILE),
        stamp(ca::CA_CERT_FILE),
        stamp(ca::CA_KEY_FILE),
    );
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = (
            stamp(ca::BUNDLE_FILE),
            stamp(ca::CA_CERT_FILE),
            stamp(ca::CA_KEY_FILE),
        );
        if now == seen {
            continue;
        }
        let bundle = match TrustBundle::read(
            state.settings.trust_domain.clone(),
            &dir.join(ca::BUNDLE_FILE),
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "bundle.pem unreadable; keeping the current bundle");
                continue;
            }
        };
        let ca = match CertificateAuthority::load(&dir) {
            Ok(ca) => ca,
            Err(e) => {
                // Mid-way through a rotation step; the next poll sees it whole.
                tracing::warn!(error = %e, "CA unreadable; keeping the current signer");
                continue;
            }
        };
        if !bundle.contains(ca.root()) {
            tracing::warn!("bundle.pem lacks the signing root; keeping the current state");
            continue;
        }
        seen = now;
        let active_root = root_subject(&ca);
        let signer_changed = active_root != state.bundle.borrow().active_root;
        state.ca.store(Arc::new(ca));
        if signer_changed {
            let own = control_plane_id(&state.settings.trust_domain);
            match state
                .ca
                .load()
                .issue(&own, state.settings.svid_ttl, SystemTime::now())
            {
                Ok(svid) => {
                    let _ = identity.svid.swap(&svid);
                }
                Err(e) => tracing::error!(error = %e, "cannot re-issue the control-plane SVID"),
            }
        }
        identity.bundle.swap(bundle.clone());
        state.bundle.send_modify(|t| {
            *t = Arc::new(Trust {
                version: bundle_version(&bundle),
                bundle,
                active_root: active_root.clone(),
            });
        });
        tracing::info!(version = state.bundle.borrow().version, %active_root, "trust bundle updated");
    }
}

/// The data directory's CA trust domain, for `ward token create`.
pub fn data_dir_trust_domain(dir: &Path) -> anyhow::Result<TrustDomain> {
    let ca = CertificateAuthority::load(dir).with_context(|| {
        format!(
            "{}: no CA (start the control plane or run `ward ca init`)",
            dir.display()
        )
    })?;
    Ok(ca.trust_domain().clone())
}
