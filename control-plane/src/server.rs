//! `ward control-plane`: the process assembled — data directory and CA, state, policy
//! source and attestor, the background tasks, the admin server, and the gRPC API over TLS
//! until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use ward_api::v1;
use ward_certs::MeshIdentity;
use ward_runtime::accept::bind;
use ward_runtime::admin::Admin;
use ward_runtime::telemetry::{UPKEEP_EVERY, upkeep};
use ward_runtime::{Drain, Readiness};

use crate::api::Api;
use crate::api::transport::tls_incoming;
use crate::attest::tokens::TokenStore;
use crate::attest::{Attestor, JoinTokens};
use crate::discovery::{DiscoverySource, Registrations};
use crate::policy_source::{Directory, Empty, PolicySource};
use crate::registry::Registry;
pub use crate::settings::{Settings, control_plane_id};
use crate::state::{Policy, State};
use crate::trust::Trust;

/// How proxies are attested and where the mesh's endpoints come from.
pub struct Sources {
    pub attestor: Box<dyn Attestor>,
    pub discovery: Box<dyn DiscoverySource>,
}

impl Sources {
    /// Join tokens from the data directory's store, and endpoints as proxies report them.
    pub fn local(dir: &std::path::Path) -> Self {
        Self {
            attestor: Box::new(JoinTokens(TokenStore::new(dir))),
            discovery: Box::new(Registrations::open(dir)),
        }
    }
}

/// Runs the control plane until SIGTERM/SIGINT: policy from `--policy-dir` (or none),
/// proxies attested by join tokens.
pub async fn run(settings: Settings, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let sources = Sources::local(&settings.data_dir);
    match settings.policy_dir.clone() {
        Some(dir) => serve(settings, Directory(dir), sources, metrics).await,
        None => serve(settings, Empty, sources, metrics).await,
    }
}

/// Runs the control plane with the given policy source, attestor and discovery until
/// SIGTERM/SIGINT.
pub async fn serve(
    settings: Settings,
    policy: impl PolicySource,
    sources: Sources,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    let (ca, bundle) = crate::datadir::open(dir, &settings.trust_domain)?;
    let own_id = control_plane_id(&settings.trust_domain);
    let own_svid = ca.issue(&own_id, settings.svid_ttl, SystemTime::now())?;
    let identity = MeshIdentity::new(&own_svid, bundle.clone())?;
    let initial = policy.load().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = Arc::new(State {
        attestor: sources.attestor,
        discovery: sources.discovery,
        bundle: watch::Sender::new(Arc::new(Trust::new(bundle, &ca))),
        policy: watch::Sender::new(Arc::new(Policy {
            version: 1,
            set: initial,
            changed: Instant::now(),
        })),
        registry: Registry::open(
            dir,
            settings.certify_rate,
            settings.max_watches_per_identity,
        ),
        ca: ArcSwap::from_pointee(ca),
        settings: settings.clone(),
        dashboard: crate::dashboard::Dashboard::open(dir),
        jwt_keys: Default::default(),
    });

    let drain = Drain::new();
    let (to, stop) = (state.clone(), drain.clone());
    tokio::spawn(policy.follow(move |set| to.set_policy(set), async move {
        stop.signaled().await
    }));
    tokio::spawn(crate::tasks::renew_own_svid(
        state.clone(),
        identity.clone(),
        own_id.clone(),
    ));
    tokio::spawn(crate::tasks::watch_data_dir(
        state.clone(),
        identity.clone(),
    ));
    tokio::spawn(crate::tasks::report_status(state.clone()));

    let tls = identity.server_config_client_optional(&[b"h2"])?;
    let listener = bind("--listen", settings.listen).await?;
    if let Some(handle) = &metrics {
        tokio::spawn(upkeep(handle.clone(), UPKEEP_EVERY));
    }
    let admin = bind("--admin", settings.admin).await?;
    tokio::spawn(Admin::new(Readiness::new(), metrics).serve(admin, drain.clone()));
    if let Some(addr) = settings.dashboard {
        let listener = bind("--dashboard", addr).await?;
        if !addr.ip().is_loopback() {
            tracing::warn!(dashboard = %addr, "the dashboard has no login: serve it on loopback \
                (or behind an authenticating proxy) unless everyone who reaches it may see the mesh");
        }
        tracing::info!(dashboard = %format!("http://{addr}/"), "dashboard");
        tokio::spawn(crate::page::serve(state.clone(), listener, drain.clone()));
    }
    tracing::info!(listen = %settings.listen, admin = %settings.admin, spiffe_id = %own_id, "control plane ready");
    let incoming = tls_incoming(listener, TlsAcceptor::from(tls), drain.clone());
    let stop = async move {
        ward_runtime::signal::shutdown().await;
        drain.start();
    };
    tonic::transport::Server::builder()
        .add_service(v1::identity_server::IdentityServer::new(Api(state.clone())))
        .add_service(v1::policy_server::PolicyServer::new(Api(state.clone())))
        .add_service(v1::bundle_server::BundleServer::new(Api(state.clone())))
        .add_service(v1::jwt_svids_server::JwtSvidsServer::new(
            Api(state.clone()),
        ))
        .add_service(v1::discovery_server::DiscoveryServer::new(Api(
            state.clone()
        )))
        .add_service(
            v1::telemetry_server::TelemetryServer::new(Api(state))
                .max_decoding_message_size(crate::api::telemetry::MAX_REPORT_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .context("serving the control-plane API")?;
    Ok(())
}
