//! The control plane's background work: its own SVID renewed at half-life, the data
//! directory followed through a CA rotation, and `status.json` and the gauges refreshed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ward_certs::ca::CertificateAuthority;
use ward_certs::{MeshIdentity, SpiffeId};

use crate::datadir;
use crate::metrics as m;
use crate::settings::control_plane_id;
use crate::state::State;
use crate::trust::{Trust, signing_root};

/// How long before the CA expires the control plane starts warning (hourly).
const CA_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Re-issues the control plane's own SVID at half-life.
pub async fn renew_own_svid(state: Arc<State>, identity: MeshIdentity, id: SpiffeId) {
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
pub async fn watch_data_dir(state: Arc<State>, identity: MeshIdentity) {
    let dir = state.settings.data_dir.clone();
    let mut seen = datadir::ca_fingerprint(&dir);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = datadir::ca_fingerprint(&dir);
        if now == seen {
            continue;
        }
        let bundle = match datadir::read_bundle(&dir, &state.settings.trust_domain) {
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
        let signer_changed = signing_root(&ca) != state.bundle.borrow().active_root;
        let trust = Trust::new(bundle.clone(), &ca);
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
        identity.bundle.swap(bundle);
        let (version, active_root) = (trust.version, trust.active_root.clone());
        state.bundle.send_replace(Arc::new(trust));
        tracing::info!(version, %active_root, "trust bundle updated");
    }
}

/// Writes what every connected proxy has applied to `status.json`, for `ward ca rotate`
/// and `ward ca status`, refreshes the gauges, and warns (hourly) of a CA near expiry.
pub async fn report_status(state: Arc<State>) {
    let mut last_warning: Option<Instant> = None;
    loop {
        state.write_status();
        let trust = state.bundle.borrow().clone();
        metrics::gauge!(m::CONNECTED_PROXIES).set(state.registry.connected() as f64);
        metrics::gauge!(m::BUNDLE_VERSION).set(trust.version as f64);
        let ca_not_after = state.ca.load().not_after();
        metrics::gauge!(m::CA_EXPIRY).set(ward_runtime::time::unix_secs(ca_not_after) as f64);
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
