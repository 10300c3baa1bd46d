//! `ward control-plane`: the process assembled — data directory and CA, state, the
//! background tasks, the admin server, and the gRPC API over TLS until SIGTERM/SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::api::transport::*;
use crate::api::*;
use crate::attest::tokens::TokenStore;
use crate::datadir::*;
use crate::policy_source::*;
use crate::registry::*;
use crate::state::*;
use anyhow::Context;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use ward_api::v1::{self};
use ward_certs::ca::{self, CaOptions, CertificateAuthority};
use ward_certs::{MeshIdentity, SpiffeId, TrustBundle, TrustDomain};
use ward_policy::PolicySet;
use ward_runtime::accept::bind;
use ward_runtime::admin::Admin;
use ward_runtime::telemetry::{UPKEEP_EVERY, upkeep};
use ward_runtime::{Drain, Readiness};

/// `ward control-plane` settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub trust_domain: TrustDomain,
    pub listen: SocketAddr,
    pub policy_dir: Option<PathBuf>,
    pub svid_ttl: Duration,
    pub admin: SocketAddr,
    /// Certify calls allowed per peer address per second.
    pub certify_rate: u32,
    /// Open Watch streams (policy and bundle together) allowed per SPIFFE ID.
    pub max_watches_per_identity: usize,
}

/// The SPIFFE ID the control plane serves with.
pub fn control_plane_id(td: &TrustDomain) -> SpiffeId {
    ward_certs::id::workload_id(td, "ward-system", "control-plane")
        .expect("constant path segments are valid")
}

/// Runs the control plane until SIGTERM/SIGINT.
pub async fn run(
    settings: Settings,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    {
        use std::os::unix::fs::DirBuilderExt;
        // The data directory holds the CA key and the token store: owner only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let ca = if dir.join(ca::CA_CERT_FILE).exists() {
        CertificateAuthority::load(dir).context("loading the CA")?
    } else {
        let ca = CertificateAuthority::create(
            settings.trust_domain.clone(),
            &CaOptions::default(),
            SystemTime::now(),
        )?;
        ca.save(dir, false)?;
        tracing::info!(dir = %dir.display(), "created a new CA");
        ca
    };
    if ca.trust_domain() != &settings.trust_domain {
        anyhow::bail!(
            "{}: the CA is for trust domain {}, not {}",
            dir.display(),
            ca.trust_domain(),
            settings.trust_domain
        );
    }
    let bundle = TrustBundle::read(settings.trust_domain.clone(), &dir.join(ca::BUNDLE_FILE))
        .context("reading bundle.pem")?;
    for w in bundle.root_warnings(SystemTime::now()) {
        tracing::warn!(target: "ward::bundle", "{w}");
    }
    if !bundle.contains(ca.root()) {
        anyhow::bail!("{}: bundle.pem does not hold the CA's root", dir.display());
    }

    let own_id = control_plane_id(&settings.trust_domain);
    let own_svid = ca.issue(&own_id, settings.svid_ttl, SystemTime::now())?;
    let identity = MeshIdentity::new(&own_svid, bundle.clone())?;
    let initial_policy = match &settings.policy_dir {
        Some(p) => ward_policy::load_dir(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => PolicySet::default(),
    };
    let state = Arc::new(State {
        tokens: TokenStore::new(dir),
        bundle: watch::Sender::new(Arc::new(Trust {
            version: bundle_version(&bundle),
            bundle,
            active_root: root_subject(&ca),
        })),
        policy: watch::Sender::new(Arc::new((1, initial_policy, Instant::now()))),
        proxies: Mutex::new(known_proxies(dir)),
        rate: Mutex::new(HashMap::new()),
        registrations: Mutex::new(HashMap::new()),
        watches: Arc::new(Mutex::new(HashMap::new())),
        status_lock: Mutex::new(()),
        ca: arc_swap::ArcSwap::from_pointee(ca),
        settings: settings.clone(),
    });

    let drain = Drain::new();
    if let Some(policy_dir) = settings.policy_dir.clone() {
        tokio::spawn(watch_policy(policy_dir, state.clone(), drain.clone()));
    }
    tokio::spawn(renew_own_svid(
        state.clone(),
        identity.clone(),
        own_id.clone(),
    ));
    tokio::spawn(watch_data_dir(state.clone(), identity.clone()));
    tokio::spawn(report_status(state.clone()));

    let tls = identity.server_config_client_optional(&[b"h2"])?;
    let listener = bind("--listen", settings.listen).await?;
    if let Some(handle) = &metrics {
        tokio::spawn(upkeep(handle.clone(), UPKEEP_EVERY));
    }
    let admin = bind("--admin", settings.admin).await?;
    tokio::spawn(Admin::new(Readiness::new(), metrics).serve(admin, drain.clone()));
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
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .context("serving the control-plane API")?;
    Ok(())
}
