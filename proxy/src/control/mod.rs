//! The control-plane client: a first SVID for a join token, then renewal at half-life over
//! mTLS, plus the policy and trust-bundle streams.
//!
//! Every stream from the control plane follows one pattern ([`follow`]): connect, consume,
//! and on any end or error reconnect with capped exponential backoff, keeping the last good
//! value in force meanwhile (fail static). The private key of each SVID is made in this
//! process and never leaves it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use metrics::gauge;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use ward_api::v1;
use ward_certs::verify::{Purpose, unix_time};
use ward_certs::{
    ExpectedPeer, MeshIdentity, SpiffeId, Svid, TrustBundle, TrustDomain, verify_svid,
};
use ward_runtime::backoff::Backoff;

use crate::config::IdentityFiles;
use crate::identity::{IdentityError, report_roots};

/// Whether the control-plane streams are up and how fresh their state is, for `/ready`.
#[derive(Debug, Default)]
pub struct Health {
    pub policy_connected: std::sync::atomic::AtomicBool,
    pub bundle_connected: std::sync::atomic::AtomicBool,
    /// When the last policy snapshot was put in force (Unix seconds; 0: never).
    pub policy_updated_unix: std::sync::atomic::AtomicU64,
    /// When the last trust bundle was put in force (Unix seconds; 0: never).
    pub bundle_updated_unix: std::sync::atomic::AtomicU64,
}

impl Health {
    /// The `/ready` detail.
    pub fn describe(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let now = unix_secs(SystemTime::now()) as u64;
        let age = |t: u64| (t > 0).then(|| now.saturating_sub(t));
        serde_json::json!({
            "policy_stream_connected": self.policy_connected.load(Relaxed),
            "bundle_stream_connected": self.bundle_connected.load(Relaxed),
            "policy_age_seconds": age(self.policy_updated_unix.load(Relaxed)),
            "bundle_age_seconds": age(self.bundle_updated_unix.load(Relaxed)),
        })
    }
}

#[derive(Clone)]
pub struct ControlPlane {
    /// Stream state for `/ready`.
    pub health: Arc<Health>,
    /// The mTLS channel, made on first use.
    mtls: Arc<std::sync::OnceLock<Channel>>,
    /// Asks the renewer to renew now (a rotation activated a new root).
    renew_now: Arc<tokio::sync::Notify>,
    /// Tells the bundle stream a new leaf is in use, so it reports it.
    renewed: Arc<tokio::sync::Notify>,
    /// `host:port`.
    addr: String,
    pub expected: SpiffeId,
    trust_domain: TrustDomain,
    token_file: PathBuf,
    bootstrap_bundle: TrustBundle,
}

/// What the first Certify returned.
pub struct Bootstrapped {
    pub identity: MeshIdentity,
    pub spiffe_id: SpiffeId,
    pub namespace: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl ControlPlane {
    pub fn new(files: &IdentityFiles, trust_domain: &TrustDomain) -> Result<Self, IdentityError> {
        let url = files.control_plane.as_deref().unwrap_or_default();
        let addr = url.strip_prefix("https://").unwrap_or(url).to_owned();
        let token_file = files
            .token_file
            .clone()
            .ok_or_else(|| IdentityError::ControlPlane("no token_file".into()))?;
        let bootstrap_bundle = TrustBundle::read(trust_domain.clone(), &files.bundle)?;
        let expected = ward_certs::id::workload_id(trust_domain, "ward-system", "control-plane")
            .map_err(|e| IdentityError::ControlPlane(e.to_string()))?;
        Ok(Self {
            health: Arc::new(Health::default()),
            mtls: Arc::new(std::sync::OnceLock::new()),
            renew_now: Arc::new(tokio::sync::Notify::new()),
            renewed: Arc::new(tokio::sync::Notify::new()),
            addr,
            expected,
            trust_domain: trust_domain.clone(),
            token_file,
            bootstrap_bundle,
        })
    }

    /// A gRPC channel over TLS with `tls` (which decides whether we present an SVID).
    fn channel(&self, tls: Arc<ClientConfig>) -> Result<Channel, IdentityError> {
        let addr = self.addr.clone();
        let connector = TlsConnector::from(tls);
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|e| IdentityError::ControlPlane(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        Ok(
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                let (addr, connector) = (addr.clone(), connector.clone());
                async move {
                    let tcp = TcpStream::connect(&addr).await?;
                    let _ = tcp.set_nodelay(true);
                    let tls = connector
                        .connect(ward_certs::tls::mesh_server_name(), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            })),
        )
    }

    /// The long-lived channel for the policy and bundle streams: one per proxy (HTTP/2
    /// multiplexes both), so the control plane holds one watch connection per proxy. It
    /// reconnects by itself, presenting whatever SVID is current.
    pub fn mtls_channel(&self, identity: &MeshIdentity) -> Result<Channel, IdentityError> {
        if let Some(channel) = self.mtls.get() {
            return Ok(channel.clone());
        }
        let channel = self.fresh_mtls_channel(identity)?;
        Ok(self.mtls.get_or_init(|| channel).clone())
    }

    /// A new connection presenting the SVID current now: what a renewal authenticates
    /// with (a long-lived connection would still carry the certificate it started with).
    fn fresh_mtls_channel(&self, identity: &MeshIdentity) -> Result<Channel, IdentityError> {
        let tls = identity
            .client_config(ExpectedPeer::Exact(self.expected.clone()), &[b"h2"])
            .map_err(|e| IdentityError::ControlPlane(e.to_string()))?;
        self.channel(tls)
    }

    /// Gets the first SVID for the join token; retries with backoff until it succeeds.
    pub async fn bootstrap(&self) -> Bootstrapped {
        let mut backoff = Backoff::control_plane();
        loop {
            match self.try_bootstrap().await {
                Ok(b) => return b,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.peek(), "bootstrap from the control plane failed");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn try_bootstrap(&self) -> Result<Bootstrapped, IdentityError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            IdentityError::ControlPlane(format!("{}: {e}", self.token_file.display()))
        })?;
        let tls = ward_certs::tls::bootstrap_client_config(
            self.bootstrap_bundle.clone(),
            ExpectedPeer::Exact(self.expected.clone()),
            &[b"h2"],
        )
        .map_err(|e| IdentityError::ControlPlane(e.to_string()))?;
        let mut client = v1::identity_client::IdentityClient::new(self.channel(tls)?);
        let (key, csr) = ward_certs::svid::new_key_and_csr(None)
            .map_err(|e| IdentityError::ControlPlane(e.to_string()))?;
        let resp = client
            .certify(v1::CertifyRequest {
                csr,
                token: token.trim().to_owned(),
                spiffe_id: String::new(),
            })
            .await
            .map_err(|s| {
                IdentityError::ControlPlane(format!("{}: {}", code_name(s.code()), s.message()))
            })?
            .into_inner();
        let (svid, bundle) = self.accept(resp.chain.clone(), key, &resp.bundle)?;
        let spiffe_id = svid.spiffe_id().clone();
        let workload = resp.workload.unwrap_or_default();
        tracing::info!(%spiffe_id, "first SVID from the control plane");
        Ok(Bootstrapped {
            identity: MeshIdentity::new(&svid, bundle)?,
            spiffe_id,
            namespace: workload.namespace,
            labels: workload.labels.into_iter().collect(),
        })
    }

    /// Checks a returned chain against the returned bundle and our key.
    fn accept(
        &self,
        chain: Vec<Vec<u8>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
        roots: &[Vec<u8>],
    ) -> Result<(Svid, TrustBundle), IdentityError> {
        let chain: Vec<_> = chain
            .into_iter()
            .map(rustls_pki_types::CertificateDer::from)
            .collect();
        let bundle = TrustBundle::new(
            self.trust_domain.clone(),
            roots
                .iter()
                .map(|r| rustls_pki_types::CertificateDer::from(r.clone())),
        )?;
        verify_svid(&chain, &bundle, unix_time(SystemTime::now()), Purpose::Both).map_err(
            |rule| {
                IdentityError::ControlPlane(format!(
                    "the control plane returned an invalid SVID: {rule}"
                ))
            },
        )?;
        let svid = Svid::new(chain, key).map_err(|e| IdentityError::ControlPlane(e.to_string()))?;
        // The key must belong to the certificate.
        svid.certified_key()?;
        Ok((svid, bundle))
    }

    /// Renews at half-life with jitter, over mTLS with the current SVID; on failure retries
    /// with backoff and keeps serving the current certificate.
    pub async fn renew_forever(self, identity: MeshIdentity, id: SpiffeId) {
        let mut backoff = Backoff::control_plane();
        loop {
            let wait = identity
                .svid
                .current_chain()
                .first()
                .and_then(|leaf| ward_certs::CertInfo::parse(leaf).ok())
                .map(|info| {
                    crate::metrics::cert_expiry(info.not_after);
                    ward_certs::rotation::renew_in(
                        SystemTime::now(),
                        info.not_before,
                        info.not_after,
                        ward_runtime::backoff::uniform(),
                    )
                })
                .unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.renew_now.notified() => {
                    tracing::info!("renewing early: the control plane signs with a new root");
                }
            }
            loop {
                match self.renew_once(&identity, &id).await {
                    Ok(serial) => {
                        tracing::info!(spiffe_id = %id, %serial, "renewed SVID");
                        self.renewed.notify_one();
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff.peek(), "SVID renewal failed; serving the current one");
                        backoff.wait().await;
                    }
                }
            }
        }
    }

    async fn renew_once(
        &self,
        identity: &MeshIdentity,
        id: &SpiffeId,
    ) -> Result<String, IdentityError> {
        let mut client =
            v1::identity_client::IdentityClient::new(self.fresh_mtls_channel(identity)?);
        let (key, csr) = ward_certs::svid::new_key_and_csr(Some(id))
            .map_err(|e| IdentityError::ControlPlane(e.to_string()))?;
        let resp = client
            .certify(v1::CertifyRequest {
                csr,
                token: String::new(),
                spiffe_id: id.to_string(),
            })
            .await
            .map_err(|s| {
                IdentityError::ControlPlane(format!("{}: {}", code_name(s.code()), s.message()))
            })?
            .into_inner();
        let (svid, _) = self.accept(resp.chain, key, &resp.bundle)?;
        identity.svid.swap(&svid)?;
        let info = svid
            .leaf_info()
            .map_err(|e| IdentityError::ControlPlane(e.to_string()))?;
        crate::metrics::cert_expiry(info.not_after);
        Ok(info.serial)
    }

    /// Follows the trust bundle: swaps it in and acknowledges each version.
    pub async fn follow_bundle(self, identity: MeshIdentity) {
        let td = self.trust_domain.clone();
        follow(self.health.clone(), "bundle", move || {
            let (this, identity, td) = (self.clone(), identity.clone(), td.clone());
            async move {
                let (acks, rx) = tokio::sync::mpsc::channel(4);
                let mut client = v1::bundle_client::BundleClient::new(this.mtls_channel(&identity).map_err(|e| e.to_string())?);
                let mut stream = client
                    .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .map_err(|s| s.message().to_owned())?
                    .into_inner();
                connected(&this.health, "bundle", true);
                let mut applied = 0;
                loop {
                    let msg = tokio::select! {
                        msg = stream.message() => msg.map_err(|s| s.message().to_owned())?,
                        _ = this.renewed.notified() => {
                            // Report the new leaf (rotation waits for every proxy's).
                            let _ = acks.send(ack(&identity, applied)).await;
                            continue;
                        }
                    };
                    let Some(msg) = msg else { break };
                    let roots = msg.roots.iter().map(|r| rustls_pki_types::CertificateDer::from(r.clone()));
                    match TrustBundle::new(td.clone(), roots) {
                        Ok(bundle) => {
                            report_roots(&bundle);
                            identity.bundle.swap(bundle);
                            this.health.bundle_updated_unix.store(
                                unix_secs(SystemTime::now()) as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            applied = msg.version;
                            gauge!("ward_bundle_version").set(msg.version as f64);
                            if !msg.active_root.is_empty() && leaf_issuer(&identity) != msg.active_root {
                                this.renew_now.notify_one();
                            }
                            let _ = acks.send(ack(&identity, applied)).await;
                        }
                        Err(e) => tracing::error!(error = %e, "refused a trust bundle from the control plane"),
                    }
                }
                Ok(())
            }
        })
        .await
    }

    /// Follows this workload's policy snapshots into the authorizer.
    pub async fn follow_policy(
        self,
        identity: MeshIdentity,
        authz: Arc<crate::authz::Authorizer>,
        mut not_ready: Option<ward_runtime::Pending>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = follow(self.health.clone(), "policy", move || {
            let (this, identity, authz, tx) =
                (self.clone(), identity.clone(), authz.clone(), tx.clone());
            async move {
                let mut client = v1::policy_client::PolicyClient::new(
                    this.mtls_channel(&identity).map_err(|e| e.to_string())?,
                );
                let mut stream = client
                    .watch(v1::PolicyWatchRequest {})
                    .await
                    .map_err(|s| s.message().to_owned())?
                    .into_inner();
                connected(&this.health, "policy", true);
                while let Some(snapshot) =
                    stream.message().await.map_err(|s| s.message().to_owned())?
                {
                    let sources: Vec<(PathBuf, String)> = snapshot
                        .documents
                        .into_iter()
                        .map(|d| (PathBuf::from(d.source), d.yaml))
                        .collect();
                    let loaded =
                        tokio::task::spawn_blocking(move || ward_policy::load_sources(&sources))
                            .await
                            .unwrap_or_else(|e| {
                                Err(crate::authz::load_failed(Path::new("control plane"), &e))
                            });
                    match loaded {
                        Ok(set) => {
                            let applying = authz.install(&set);
                            gauge!("ward_policy_version").set(snapshot.version as f64);
                            this.health.policy_updated_unix.store(
                                unix_secs(SystemTime::now()) as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            gauge!("ward_policy_updated_timestamp_seconds")
                                .set(unix_secs(SystemTime::now()) as f64);
                            tracing::info!(
                                version = snapshot.version,
                                applying,
                                "policy from the control plane in force"
                            );
                            let _ = tx.try_send(());
                        }
                        Err(errors) => {
                            tracing::error!(%errors, "refused a policy snapshot; the last good one stays")
                        }
                    }
                }
                Ok(())
            }
        });
        tokio::pin!(watcher);
        loop {
            tokio::select! {
                _ = &mut watcher => return,
                Some(()) = rx.recv() => { not_ready.take(); }
            }
        }
    }
}

/// Follows one control-plane stream for ever (see [`ward_runtime::follow::reconnect`]),
/// marking it disconnected in `/ready` and the metrics whenever a session ends.
async fn follow<F, Fut>(health: Arc<Health>, name: &'static str, session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    ward_runtime::follow::reconnect(
        name,
        Backoff::control_plane(),
        || connected(&health, name, false),
        session,
    )
    .await
}

/// The key ID of the bundle root our current leaf chains to (see
/// [`ward_certs::verify::key_id`]); empty if it chains to none.
fn leaf_issuer(identity: &MeshIdentity) -> String {
    let chain = identity.svid.current_chain();
    let bundle = identity.bundle.current();
    let now = ward_certs::verify::unix_time(SystemTime::now());
    ward_certs::verify::anchor_key_id(&chain, &bundle, now).unwrap_or_default()
}

fn ack(identity: &MeshIdentity, applied: u64) -> v1::BundleAck {
    let leaf_not_after = identity
        .svid
        .current_chain()
        .first()
        .and_then(|l| ward_certs::CertInfo::parse(l).ok())
        .map(|i| unix_secs(i.not_after))
        .unwrap_or_default();
    v1::BundleAck {
        applied_version: applied,
        leaf_not_after_unix: leaf_not_after,
        leaf_issuer_root: leaf_issuer(identity),
    }
}

fn connected(health: &Health, stream: &'static str, up: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    gauge!("ward_control_plane_connected", "stream" => stream).set(if up { 1.0 } else { 0.0 });
    match stream {
        "policy" => health.policy_connected.store(up, Relaxed),
        _ => health.bundle_connected.store(up, Relaxed),
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    ward_runtime::time::unix_secs(t) as i64
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}
