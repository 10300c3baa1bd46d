//! `ward control-plane`: issues SVIDs to proxies that prove who they are and streams each
//! proxy the policy for its own workload and the trust bundle.
//!
//! The gRPC API is served over TLS 1.3 with the control plane's own SVID
//! (`spiffe://TD/ns/ward-system/sa/control-plane`). A client certificate is optional at the
//! TLS layer because a proxy's first `Certify` attests with a join token; every other call
//! requires the caller's SVID, checked per call.

pub mod admin;
pub mod rotation;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use ward_api::v1::{
    self, BundleAck, CertifyRequest, CertifyResponse, PolicyDocument, PolicySnapshot,
    PolicyWatchRequest, TrustBundle as BundleMsg,
};
use ward_certs::ca::{self, CaError, CaOptions, CertificateAuthority};
use ward_certs::{MeshIdentity, SpiffeId, TrustBundle, TrustDomain};
use ward_policy::PolicySet;
use ward_runtime::accept::{Accept, bind};
use ward_runtime::admin::Admin;
use ward_runtime::telemetry::{UPKEEP_EVERY, upkeep};
use ward_runtime::{Drain, Readiness};

use self::tokens::{TokenError, TokenStore};

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

struct State {
    settings: Settings,
    /// The signer; swapped when a rotation activates a new root.
    ca: arc_swap::ArcSwap<CertificateAuthority>,
    tokens: TokenStore,
    bundle: watch::Sender<Arc<Trust>>,
    /// The policy set, its version, and when it changed (for the fan-out metric).
    policy: watch::Sender<Arc<(u64, PolicySet, Instant)>>,
    /// What each connected proxy last acknowledged (for rotation and `ward ca status`).
    proxies: Mutex<HashMap<String, ProxyState>>,
    /// Certify calls per peer address in the current second.
    rate: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
    /// Registrations already read from the token store (they never change once made; new
    /// ones are added by this server when it redeems a token).
    registrations: Mutex<HashMap<String, tokens::Registration>>,
    /// Open Watch streams per caller SPIFFE ID.
    watches: Arc<Mutex<HashMap<String, usize>>>,
    /// Serializes writes of status.json.
    status_lock: Mutex<()>,
}

#[derive(Debug, Clone)]
pub struct ProxyState {
    pub bundle_version: u64,
    pub leaf_not_after_unix: i64,
    pub leaf_issuer: String,
    pub last_seen: SystemTime,
    /// Whether its Bundle.Watch stream is open now.
    pub connected: bool,
}

/// A bundle's version: derived from its roots, so it means the same across restarts.
fn bundle_version(bundle: &TrustBundle) -> u64 {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for root in bundle.roots() {
        ctx.update(&(root.len() as u64).to_be_bytes());
        ctx.update(root.as_ref());
    }
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // Keep it within what a JSON number holds exactly.
    u64::from_be_bytes(first) >> 12
}

/// Proxies known from the last run's status.json: a restart must not forget a proxy that
/// has not reconnected yet, or a rotation step could run ahead of it.
fn known_proxies(dir: &Path) -> HashMap<String, ProxyState> {
    let Ok(bytes) = std::fs::read(dir.join(rotation::STATUS_FILE)) else {
        return HashMap::new();
    };
    let Ok(status) = serde_json::from_slice::<rotation::Status>(&bytes) else {
        return HashMap::new();
    };
    status
        .proxies
        .into_iter()
        .map(|(id, p)| {
            let state = ProxyState {
                bundle_version: p.bundle_version,
                leaf_not_after_unix: p.leaf_not_after_unix,
                leaf_issuer: p.leaf_issuer,
                last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(p.last_seen_unix),
                connected: false,
            };
            (id, state)
        })
        .collect()
}

/// The trust bundle pushed to proxies, its version, and which root signs new leaves.
#[derive(Debug)]
pub struct Trust {
    pub version: u64,
    pub bundle: TrustBundle,
    pub active_root: String,
}

/// The signing root's key ID, which proxies compare with the root their leaf chains to
/// (by key, not by name: with an intermediate the leaf never names its root).
fn root_subject(ca: &CertificateAuthority) -> String {
    ward_certs::verify::key_id(ca.root()).unwrap_or_default()
}

/// How long before the CA expires the control plane starts warning (hourly).
const CA_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

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

/// Re-issues the control plane's own SVID at half-life.
async fn renew_own_svid(state: Arc<State>, identity: MeshIdentity, id: SpiffeId) {
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
async fn watch_data_dir(state: Arc<State>, identity: MeshIdentity) {
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

/// Writes what every connected proxy has applied to `status.json`, for `ward ca rotate`
/// and `ward ca status`.
async fn report_status(state: Arc<State>) {
    let mut last_warning: Option<Instant> = None;
    loop {
        state.write_status();
        let trust = state.bundle.borrow().clone();
        let connected = state
            .proxies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| p.connected)
            .count();
        metrics::gauge!(admin::CONNECTED_PROXIES).set(connected as f64);
        metrics::gauge!(admin::BUNDLE_VERSION).set(trust.version as f64);
        let ca_not_after = state.ca.load().not_after();
        metrics::gauge!(admin::CA_EXPIRY).set(
            ca_not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
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

/// Polls the policy directory; a valid change is pushed to every watcher, a broken one is
/// refused with every error logged and the last good set stays.
async fn watch_policy(dir: PathBuf, state: Arc<State>, drain: Drain) {
    let seen = ward_policy::load::fingerprint(&dir);
    let (fp, load) = (dir.clone(), dir);
    let apply = move |loaded: Result<PolicySet, ward_policy::PolicyErrors>| match loaded {
        Ok(set) => {
            state.policy.send_modify(|current| {
                *current = Arc::new((current.0 + 1, set, Instant::now()));
            });
            tracing::info!(version = state.policy.borrow().0, "policy updated");
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(target: "ward::policy", "{e}");
            }
            tracing::warn!("policy refused; the last good policy stays in force");
        }
    };
    ward_runtime::poll::poll_changes(
        ward_runtime::poll::POLL_EVERY,
        Some(seen),
        move || ward_policy::load::fingerprint(&fp),
        move || ward_policy::load_dir(&load),
        apply,
        async move { drain.signaled().await },
    )
    .await
}

/// A TLS connection with what the handlers need to know about the peer.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    info: PeerInfo,
    /// For a peer without an SVID (a proxy attesting with a token): when the connection
    /// ends, whatever it is doing. One `Certify` needs a fraction of this.
    unauthenticated_until: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a connection that presented no certificate may stay open.
pub const UNAUTHENTICATED_LIFETIME: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// Set when the peer presented a (verified) SVID.
    pub spiffe_id: Option<SpiffeId>,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(until) = self.unauthenticated_until.as_mut()
            && until.as_mut().poll(cx).is_ready()
        {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection without a certificate open too long",
            )));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and completes their TLS handshakes off the accept loop.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    drain: Drain,
) -> impl Stream<Item = Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let handshake = move |tcp: tokio::net::TcpStream, _| {
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        async move {
            let Ok(addr) = tcp.peer_addr() else { return };
            let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            let stream = match accepted {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "control-plane TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let spiffe_id = ward_certs::tls::peer_spiffe_id(stream.get_ref().1.peer_certificates());
            let unauthenticated_until = spiffe_id
                .is_none()
                .then(|| Box::pin(tokio::time::sleep(UNAUTHENTICATED_LIFETIME)));
            let info = PeerInfo {
                addr: Some(addr),
                spiffe_id,
            };
            let conn = TlsConn {
                stream,
                info,
                unauthenticated_until,
            };
            let _ = tx.send(Ok(conn)).await;
        }
    };
    // The handshakes are not waited for at shutdown: tonic's own shutdown ends the
    // connections that made it.
    tokio::spawn(
        Accept::new("grpc")
            .untracked()
            .serve(listener, drain, handshake),
    );
    ReceiverStream::new(rx)
}

#[derive(Clone)]
struct Api(Arc<State>);

/// What the TLS layer learned about the caller (tonic puts it in the request extensions).
fn peer<T>(req: &Request<T>) -> PeerInfo {
    req.extensions()
        .get::<PeerInfo>()
        .cloned()
        .unwrap_or(PeerInfo {
            addr: None,
            spiffe_id: None,
        })
}

fn caller_svid<T>(req: &Request<T>) -> Result<SpiffeId, Status> {
    peer(req)
        .spiffe_id
        .ok_or_else(|| Status::unauthenticated("this call needs the caller's SVID (mTLS)"))
}

impl State {
    /// Writes what every known proxy has applied to `status.json` (for `ward ca rotate`
    /// and `ward ca status`, and for the next start to remember who holds leaves).
    fn write_status(&self) {
        let trust = self.bundle.borrow().clone();
        let proxies = self
            .proxies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, p)| {
                let last = if p.connected {
                    SystemTime::now()
                } else {
                    p.last_seen
                };
                let seen = last
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                (
                    id.clone(),
                    rotation::ProxyStatus {
                        bundle_version: p.bundle_version,
                        leaf_not_after_unix: p.leaf_not_after_unix,
                        leaf_issuer: p.leaf_issuer.clone(),
                        last_seen_unix: seen,
                    },
                )
            })
            .collect();
        let status = rotation::Status {
            written_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            bundle_version: trust.version,
            roots: trust
                .bundle
                .roots()
                .filter_map(|r| ward_certs::verify::key_id(r).ok())
                .collect(),
            active_root: trust.active_root.clone(),
            proxies,
        };
        let _serialized = self.status_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = rotation::write_status(&self.settings.data_dir, &status) {
            tracing::warn!(error = %e, "cannot write status.json");
        }
    }

    fn rate_limited(&self, addr: Option<SocketAddr>) -> bool {
        let Some(addr) = addr else { return false };
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = rate.entry(addr.ip()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 > self.settings.certify_rate
    }

    fn registration(&self, id: &SpiffeId) -> Result<tokens::Registration, Status> {
        let key = id.to_string();
        let cached = self
            .registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(r) = cached {
            return Ok(r);
        }
        let found = self
            .tokens
            .registration(&key)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                Status::permission_denied(format!("{id} is not a registered workload"))
            })?;
        self.registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }
}

#[tonic::async_trait]
impl v1::identity_server::Identity for Api {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let renewal = req.get_ref().token.is_empty();
        let result = self.certify_inner(req);
        match &result {
            Ok(_) => {
                let kind = if renewal { "renewal" } else { "bootstrap" };
                metrics::counter!(admin::CERTS_ISSUED, "kind" => kind).increment(1);
            }
            Err(status) => {
                let reason = format!("{:?}", status.code());
                metrics::counter!(admin::CERTS_REFUSED, "reason" => reason).increment(1);
                tracing::info!(code = ?status.code(), message = status.message(), "Certify refused");
            }
        }
        result
    }
}

impl Api {
    fn certify_inner(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let state = &self.0;
        let peer = peer(&req);
        if state.rate_limited(peer.addr) {
            return Err(Status::resource_exhausted(
                "too many Certify calls; retry later",
            ));
        }
        let msg = req.into_inner();
        let now = SystemTime::now();
        // Who is asking: a join token on first issuance, the current SVID on renewal.
        let (id, registration, token) = if !msg.token.is_empty() {
            let grant = state.tokens.peek(&msg.token, now).map_err(token_status)?;
            let id = ward_certs::parse_spiffe_id(&grant.spiffe_id)
                .map_err(|e| Status::internal(format!("stored token identity: {e}")))?;
            if !id.is_member_of(&state.settings.trust_domain) {
                return Err(Status::permission_denied(format!(
                    "join token is for trust domain {}, not {}",
                    id.trust_domain(),
                    state.settings.trust_domain
                )));
            }
            let registration = tokens::Registration {
                namespace: grant.namespace.clone(),
                labels: grant.labels.clone(),
            };
            (id, registration, Some(msg.token.clone()))
        } else {
            let id = peer.spiffe_id.clone().ok_or_else(|| {
                Status::unauthenticated(
                    "no attestation: send a join token, or renew with your SVID",
                )
            })?;
            let registration = state.registration(&id)?;
            (id, registration, None)
        };
        if !msg.spiffe_id.is_empty() && msg.spiffe_id != id.to_string() {
            return Err(Status::permission_denied(format!(
                "the caller is attested as {id}, not {}",
                msg.spiffe_id
            )));
        }
        let requested = ca::csr_requested_uris(&msg.csr).map_err(ca_status)?;
        if let Some(other) = requested.iter().find(|u| **u != id.to_string()) {
            return Err(Status::permission_denied(format!(
                "CSR asks for {other}; the caller is attested as {id}"
            )));
        }
        // Check the CSR before spending a token use on it.
        let signer = state.ca.load();
        let chain = signer
            .sign_csr(&msg.csr, &id, state.settings.svid_ttl, now)
            .map_err(ca_status)?;
        let signing_root = root_subject(&signer);
        if let Some(token) = token {
            state.tokens.redeem(&token, now).map_err(token_status)?;
            state
                .registrations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_string(), registration.clone());
        }
        let info =
            ward_certs::CertInfo::parse(&chain[0]).map_err(|e| Status::internal(e.to_string()))?;
        let not_after_unix = info
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let first_leaf = {
            // Whoever holds a valid leaf is a proxy a rotation must wait for.
            let mut proxies = state.proxies.lock().unwrap_or_else(|p| p.into_inner());
            let known = proxies.contains_key(&id.to_string());
            let entry = proxies.entry(id.to_string()).or_insert(ProxyState {
                bundle_version: 0,
                leaf_not_after_unix: 0,
                leaf_issuer: String::new(),
                last_seen: now,
                connected: false,
            });
            entry.leaf_not_after_unix = not_after_unix;
            entry.leaf_issuer = signing_root.clone();
            entry.last_seen = now;
            !known
        };
        if first_leaf {
            // Record a new leaf holder durably before handing it the leaf: a restart must
            // not forget it (renewals of known proxies are recorded with the next report).
            state.write_status();
        }
        let bundle = state.bundle.borrow().clone();
        tracing::debug!(spiffe_id = %id, serial = %info.serial, renewal = msg.token.is_empty(), "issued SVID");
        Ok(Response::new(CertifyResponse {
            chain: chain.iter().map(|c| c.to_vec()).collect(),
            bundle: bundle.bundle.roots().map(|r| r.to_vec()).collect(),
            spiffe_id: id.to_string(),
            not_after_unix,
            workload: Some(v1::Workload {
                namespace: registration.namespace,
                labels: registration.labels.into_iter().collect(),
            }),
            bundle_version: bundle.version,
        }))
    }
}

fn token_status(e: TokenError) -> Status {
    match e {
        TokenError::Store(msg) => Status::internal(msg),
        other => Status::unauthenticated(other.to_string()),
    }
}

fn ca_status(e: CaError) -> Status {
    match e {
        CaError::CsrMalformed(_)
        | CaError::CsrSignature
        | CaError::CsrWeakSignature
        | CaError::WeakKey { .. }
        | CaError::UnsupportedCurve(_)
        | CaError::UnsupportedKey(_) => Status::invalid_argument(e.to_string()),
        CaError::ForeignIdentity { .. } | CaError::IdWithoutPath { .. } => {
            Status::permission_denied(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

/// One open Watch stream of one identity, given back when the stream's task ends.
struct WatchSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    id: String,
}

impl State {
    /// A Watch slot for `id`, or RESOURCE_EXHAUSTED once it holds as many as allowed: one
    /// identity (any valid SVID) must not be able to fill the control plane's memory.
    fn watch_slot(&self, id: &SpiffeId) -> Result<WatchSlot, Status> {
        let id = id.to_string();
        let mut open = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(id.clone()).or_insert(0);
        if *count >= self.settings.max_watches_per_identity {
            metrics::counter!("ward_cp_watches_refused_total").increment(1);
            tracing::warn!(%id, open = *count, "Watch stream limit reached for this identity");
            return Err(Status::resource_exhausted(
                "too many open Watch streams for this identity",
            ));
        }
        *count += 1;
        Ok(WatchSlot {
            open: self.watches.clone(),
            id,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.id);
            }
        }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PolicySnapshot, Status>> + Send>>;
type BundleStream = Pin<Box<dyn Stream<Item = Result<BundleMsg, Status>> + Send>>;

fn snapshot(version: u64, set: &PolicySet, reg: &tokens::Registration) -> PolicySnapshot {
    let labels: BTreeMap<String, String> = reg.labels.clone();
    PolicySnapshot {
        version,
        documents: set
            .documents_for(&reg.namespace, &labels)
            .into_iter()
            .map(|(source, yaml)| PolicyDocument { source, yaml })
            .collect(),
    }
}

#[tonic::async_trait]
impl v1::policy_server::Policy for Api {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        req: Request<PolicyWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = caller_svid(&req)?;
        let registration = self.0.registration(&id)?;
        let slot = self.0.watch_slot(&id)?;
        let mut updates = self.0.policy.subscribe();
        // Capacity 1: a slow watcher only ever waits for its own previous snapshot, and
        // skips straight to the newest one when it catches up.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _slot = slot;
            let mut first = true;
            loop {
                let current = updates.borrow_and_update().clone();
                if tx
                    .send(Ok(snapshot(current.0, &current.1, &registration)))
                    .await
                    .is_err()
                {
                    return;
                }
                if !first {
                    metrics::histogram!(admin::PUSH_FANOUT)
                        .record(current.2.elapsed().as_secs_f64());
                }
                first = false;
                // A watcher that went away gives its slot back now, not at the next change.
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl v1::bundle_server::Bundle for Api {
    type WatchStream = BundleStream;

    async fn watch(
        &self,
        req: Request<tonic::Streaming<BundleAck>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let spiffe_id = caller_svid(&req)?;
        let slot = self.0.watch_slot(&spiffe_id)?;
        let id = spiffe_id.to_string();
        let mut acks = req.into_inner();
        let mut updates = self.0.bundle.subscribe();
        let state = self.0.clone();
        let (tx, rx) = mpsc::channel(1);
        // The watch ends when the proxy stops acknowledging (its side of the stream ended).
        let acks_done = Arc::new(tokio::sync::Notify::new());
        let done = acks_done.clone();
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let current = updates.borrow_and_update().clone();
                let msg = BundleMsg {
                    version: current.version,
                    roots: current.bundle.roots().map(|r| r.to_vec()).collect(),
                    active_root: current.active_root.clone(),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = done.notified() => return,
                }
            }
        });
        tokio::spawn(async move {
            while let Ok(Some(ack)) = acks.message().await {
                let mut proxies = state.proxies.lock().unwrap_or_else(|p| p.into_inner());
                proxies.insert(
                    id.clone(),
                    ProxyState {
                        bundle_version: ack.applied_version,
                        leaf_not_after_unix: ack.leaf_not_after_unix,
                        leaf_issuer: ack.leaf_issuer_root,
                        last_seen: SystemTime::now(),
                        connected: true,
                    },
                );
                drop(proxies);
            }
            if let Some(p) = state
                .proxies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&id)
            {
                p.connected = false;
                p.last_seen = SystemTime::now();
            }
            acks_done.notify_one();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
