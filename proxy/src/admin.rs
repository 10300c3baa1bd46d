//! The sidecar's admin routes beside the shared ones (`/live /ready /metrics`, see
//! [`ward_runtime::admin`]): `/config` (the effective configuration) and `/certs` (the
//! certificates in use), and the control-plane streams' health in `/ready`.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use ward_certs::{CertInfo, MeshIdentity};
use ward_runtime::Readiness;
use ward_runtime::admin::{self, Admin};
use ward_runtime::time::rfc3339;

/// What the sidecar's own admin routes report on, filled in as start-up proceeds.
#[derive(Default)]
pub struct Reports {
    /// Set once the identity is loaded (with a control plane, after the first Certify).
    pub identity: OnceLock<MeshIdentity>,
    /// Control-plane stream health, when the identity comes from one.
    pub control_plane: OnceLock<Arc<crate::control::Health>>,
}

/// The admin server of a sidecar: `config_json` is the effective configuration rendered
/// once (it holds paths, never key material).
pub fn server(
    readiness: Readiness,
    metrics: Option<PrometheusHandle>,
    config_json: String,
    reports: Arc<Reports>,
) -> Admin {
    let (certs_from, health_from) = (reports.clone(), reports);
    Admin::new(readiness, metrics)
        .route(
            "/config",
            Arc::new(move || admin::json_text(StatusCode::OK, config_json.clone())),
        )
        .route(
            "/certs",
            Arc::new(move || match certs_from.identity.get() {
                Some(identity) => admin::json(StatusCode::OK, &certs(identity)),
                None => admin::text(StatusCode::SERVICE_UNAVAILABLE, "no identity yet\n"),
            }),
        )
        .ready_detail(Arc::new(move |detail| {
            if let Some(cp) = health_from.control_plane.get() {
                detail["control_plane"] = cp.describe();
            }
        }))
}

/// The served SVID and the trust bundle's roots.
pub fn certs(identity: &MeshIdentity) -> serde_json::Value {
    let now = SystemTime::now();
    let describe = |info: &CertInfo| {
        json!({
            "spiffe_id": info.spiffe_id.as_ref().map(ToString::to_string),
            "subject": info.subject,
            "issuer": info.issuer,
            "serial": info.serial,
            "not_before": rfc3339(info.not_before),
            "not_after": rfc3339(info.not_after),
            "seconds_left": info.time_left(now).as_secs(),
        })
    };
    let chain = identity.svid.current_chain();
    let svid = chain.first().and_then(|leaf| CertInfo::parse(leaf).ok());
    let bundle = identity.bundle.current();
    let roots: Vec<_> = bundle
        .roots()
        .filter_map(|r| {
            let mut root = describe(&CertInfo::parse(r).ok()?);
            root["key_id"] = json!(ward_certs::verify::key_id(r).ok());
            Some(root)
        })
        .collect();
    let mut out = svid.as_ref().map(describe).unwrap_or_else(|| json!({}));
    out["chain_length"] = json!(chain.len());
    // The root the SVID chains to, by key (its issuer may be an intermediate).
    out["root_key_id"] = json!(
        ward_certs::verify::anchor_key_id(&chain, &bundle, ward_certs::verify::unix_time(now)).ok()
    );
    out["bundle"] = json!({ "trust_domain": bundle.trust_domain().to_string(), "roots": roots });
    let federated: serde_json::Map<String, serde_json::Value> = identity
        .bundle
        .federated()
        .iter()
        .map(|(td, b)| {
            let roots: Vec<_> = b
                .roots()
                .filter_map(|r| CertInfo::parse(r).ok().map(|info| describe(&info)))
                .collect();
            (td.clone(), json!({ "roots": roots }))
        })
        .collect();
    out["federated"] = json!(federated);
    out
}
