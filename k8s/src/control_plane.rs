//! `ward control-plane --kubernetes`: the same control plane, with its CA in a Secret,
//! policy from the CRDs, and proxies attested by their pods' service-account tokens. The
//! client comes from the in-cluster config, or KUBECONFIG outside a cluster.

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use ward_control_plane::discovery::Registrations;
use ward_control_plane::server::{Settings, Sources};
use ward_policy::ROOT_NAMESPACE;

use crate::attest::ServiceAccountTokens;
use crate::policy::CrdPolicies;

/// Runs the control plane against the cluster until SIGTERM/SIGINT.
pub async fn run(settings: Settings, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config, or KUBECONFIG)")?;
    // The pod's own namespace when deployed; ward-system otherwise.
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| ROOT_NAMESPACE.to_owned());
    crate::ca::sync(
        &client,
        &namespace,
        &settings.data_dir,
        &settings.trust_domain,
    )
    .await?;
    let sources = Sources {
        attestor: Box::new(ServiceAccountTokens::new(
            client.clone(),
            settings.trust_domain.clone(),
        )),
        discovery: Box::new(Registrations::open(&settings.data_dir)),
    };
    ward_control_plane::server::serve(settings, CrdPolicies::new(client), sources, metrics).await
}
