//! `ward control-plane --kubernetes`: the same control plane, with its CA in a Secret,
//! policy from the CRDs, proxies attested by their pods' service-account tokens, the trust
//! bundle published to meshed namespaces and, with `--webhook`, the sidecar injector. The
//! client comes from the in-cluster config, or KUBECONFIG outside a cluster.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use ward_control_plane::server::{Settings, Sources};
use ward_policy::ROOT_NAMESPACE;
use ward_runtime::Drain;

use crate::attest::ServiceAccountTokens;
use crate::discovery::PodEndpoints;
use crate::inject::Injector;
use crate::policy::CrdPolicies;
use crate::webhook::WebhookTls;

/// What only the Kubernetes control plane is started with.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Where the injector webhook listens (none: no injector).
    pub webhook: Option<SocketAddr>,
    /// Names the webhook certificate carries besides the Service's (for a webhook
    /// configured by URL).
    pub webhook_names: Vec<String>,
    /// The image injected pods run `ward-proxy` from.
    pub proxy_image: String,
    /// How long the leader's Lease lasts unrenewed before another replica takes over.
    pub lease: std::time::Duration,
    /// The leader rotates the root once the CA has less than this left.
    pub rotate_root_before: std::time::Duration,
}

/// Runs the control plane against the cluster until SIGTERM/SIGINT.
pub async fn run(
    settings: Settings,
    kube: KubeSettings,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
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
    let drain = Drain::new();
    let candidate = crate::leader::Candidate {
        namespace: namespace.clone(),
        identity: replica_name(),
        lease: kube.lease,
    };
    let leader = crate::leader::start(client.clone(), candidate, drain.clone());
    tokio::spawn(crate::ca::follow(
        client.clone(),
        namespace.clone(),
        settings.data_dir.clone(),
        drain.clone(),
    ));
    tokio::spawn(crate::status::publish(
        client.clone(),
        namespace.clone(),
        replica_name(),
        settings.data_dir.clone(),
        drain.clone(),
    ));
    tokio::spawn(crate::policy_status::write(
        client.clone(),
        leader.clone(),
        drain.clone(),
    ));
    tokio::spawn(crate::rotation::drive(
        client.clone(),
        namespace.clone(),
        settings.data_dir.join("rotation-work"),
        kube.rotate_root_before,
        leader.clone(),
        drain.clone(),
    ));
    let bundle_file = settings.data_dir.join(ward_certs::ca::BUNDLE_FILE);
    tokio::spawn(crate::bundle::publish(
        client.clone(),
        bundle_file,
        leader,
        drain.clone(),
    ));
    if let Some(addr) = kube.webhook {
        let listener = ward_runtime::accept::bind("--webhook", addr).await?;
        let tls = WebhookTls::new(settings.data_dir.clone(), &namespace, &kube.webhook_names);
        let injector = Injector::new(
            kube.proxy_image,
            settings.trust_domain.to_string(),
            &namespace,
        );
        let (client, drain) = (client.clone(), drain.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::webhook::serve(listener, tls, injector, client, drain).await {
                tracing::error!(error = %format!("{e:#}"), "the injector webhook stopped");
            }
        });
        tracing::info!(%addr, "injector webhook listening");
    }
    let sources = Sources {
        attestor: Box::new(ServiceAccountTokens::new(
            client.clone(),
            settings.trust_domain.clone(),
        )),
        discovery: Box::new(PodEndpoints::start(
            client.clone(),
            settings.trust_domain.clone(),
            drain.clone(),
        )),
    };
    let served =
        ward_control_plane::server::serve(settings, CrdPolicies::new(client), sources, metrics)
            .await;
    drain.start();
    // The leader gives the Lease up before the process exits, so another leads at once.
    drain.finish(std::time::Duration::from_secs(5)).await;
    served
}

/// This replica's name for the Lease: the pod's name (`POD_NAME`), else host and process.
fn replica_name() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}
