//! The control plane's metrics. Its admin server (`/live`, `/ready`, `/metrics`) is the
//! shared one, [`ward_runtime::admin`].

use metrics_exporter_prometheus::PrometheusHandle;

pub const CONNECTED_PROXIES: &str = "ward_cp_connected_proxies";
pub const CERTS_ISSUED: &str = "ward_cp_certs_issued_total";
pub const CERTS_REFUSED: &str = "ward_cp_certs_refused_total";
pub const PUSH_FANOUT: &str = "ward_cp_push_fanout_seconds";
pub const BUNDLE_VERSION: &str = "ward_cp_bundle_version";
pub const CA_EXPIRY: &str = "ward_cp_ca_expiry_timestamp_seconds";

/// Installs the Prometheus recorder with the fan-out histogram's buckets.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = ward_runtime::telemetry::install_metrics(&[(
        PUSH_FANOUT,
        &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
    )])?;
    metrics::describe_gauge!(
        CONNECTED_PROXIES,
        "Proxies with an open Bundle.Watch stream"
    );
    metrics::describe_counter!(CERTS_ISSUED, "SVIDs issued, by kind (bootstrap, renewal)");
    metrics::describe_counter!(CERTS_REFUSED, "Certify calls refused, by reason");
    metrics::describe_histogram!(
        PUSH_FANOUT,
        "Time from a policy change to its snapshot being sent to a proxy"
    );
    metrics::describe_gauge!(BUNDLE_VERSION, "Version of the trust bundle pushed");
    metrics::describe_gauge!(CA_EXPIRY, "notAfter of the signing CA, Unix seconds");
    Ok(handle)
}
