//! The connection to the control plane, and what the identity source needs of it as a
//! trait ([`CaClient`]), so that renewal and bundle following are tested against a CA in
//! the same process, without sockets.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::Stream;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use ward_api::v1;
use ward_certs::{ExpectedPeer, MeshIdentity, SpiffeId, TrustBundle, TrustDomain};

use crate::identity::IdentityError;

/// The trust-bundle stream.
pub type BundleStream = Pin<Box<dyn Stream<Item = Result<v1::TrustBundle, Status>> + Send>>;

/// What the identity source asks of the control plane.
pub trait CaClient: Send + Sync + 'static {
    /// `Identity.Certify`: with a join token and no client certificate when `presenting`
    /// is `None` (bootstrap), else over mTLS with that identity's current SVID (renewal).
    fn certify(
        &self,
        presenting: Option<&MeshIdentity>,
        req: v1::CertifyRequest,
    ) -> impl Future<Output = Result<v1::CertifyResponse, Status>> + Send;

    /// `Bundle.Watch`, presenting `identity`; what is received on `acks` goes up.
    fn watch_bundle(
        &self,
        identity: &MeshIdentity,
        acks: mpsc::Receiver<v1::BundleAck>,
    ) -> impl Future<Output = Result<BundleStream, Status>> + Send;
}

/// The control plane as this proxy reaches it: over TLS to `addr`, which must present the
/// control plane's SPIFFE ID (`spiffe://TD/ns/ward-system/sa/control-plane`).
#[derive(Clone)]
pub struct ControlPlane {
    /// `host:port`.
    addr: String,
    pub expected: SpiffeId,
    /// The roots a first connection (before any SVID) trusts.
    bootstrap_bundle: TrustBundle,
    /// The long-lived mTLS channel for the streams, made on first use.
    mtls: Arc<OnceLock<Channel>>,
    /// Sent with `Policy.Watch` when set (see `identity.renew_with_token`), re-read each time.
    token_file: Option<std::path::PathBuf>,
}

impl ControlPlane {
    /// `url` is `https://HOST:PORT` (or `HOST:PORT`); `bootstrap_bundle` what the first,
    /// certificate-less connection trusts.
    pub fn new(
        url: &str,
        trust_domain: &TrustDomain,
        bootstrap_bundle: TrustBundle,
    ) -> Result<Self, IdentityError> {
        let addr = url.strip_prefix("https://").unwrap_or(url).to_owned();
        let expected = ward_certs::id::workload_id(trust_domain, "ward-system", "control-plane")
            .map_err(|e| IdentityError::ControlPlane(e.to_string()))?;
        Ok(Self {
            addr,
            expected,
            bootstrap_bundle,
            mtls: Arc::new(OnceLock::new()),
            token_file: None,
        })
    }

    /// Sends the token in `file` with every `Policy.Watch`, so any control-plane replica
    /// can attest this proxy's workload (Kubernetes).
    pub fn with_watch_token(mut self, file: Option<std::path::PathBuf>) -> Self {
        self.token_file = file;
        self
    }

    /// A gRPC channel over TLS with `tls` (which decides whether we present an SVID).
    fn channel(&self, tls: Arc<ClientConfig>) -> Result<Channel, Status> {
        let addr = self.addr.clone();
        let connector = TlsConnector::from(tls);
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|e| Status::invalid_argument(e.to_string()))?
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

    /// A new connection presenting the SVID current now: what a renewal authenticates
    /// with (a long-lived connection would still carry the certificate it started with).
    fn fresh_mtls_channel(&self, identity: &MeshIdentity) -> Result<Channel, Status> {
        let tls = identity
            .client_config(ExpectedPeer::Exact(self.expected.clone()), &[b"h2"])
            .map_err(|e| Status::internal(e.to_string()))?;
        self.channel(tls)
    }

    /// The long-lived channel for the policy and bundle streams: one per proxy (HTTP/2
    /// multiplexes both), so the control plane holds one watch connection per proxy. It
    /// reconnects by itself, presenting whatever SVID is current.
    pub fn mtls_channel(&self, identity: &MeshIdentity) -> Result<Channel, Status> {
        if let Some(channel) = self.mtls.get() {
            return Ok(channel.clone());
        }
        let channel = self.fresh_mtls_channel(identity)?;
        Ok(self.mtls.get_or_init(|| channel).clone())
    }

    /// `Discovery.Watch`: the mesh's endpoints.
    pub async fn watch_discovery(
        &self,
        identity: &MeshIdentity,
    ) -> Result<tonic::Streaming<v1::DiscoverySnapshot>, Status> {
        let mut client = v1::discovery_client::DiscoveryClient::new(self.mtls_channel(identity)?);
        Ok(client
            .watch(v1::DiscoveryWatchRequest {})
            .await?
            .into_inner())
    }

    /// `Policy.Watch` for this proxy's workload.
    pub async fn watch_policy(
        &self,
        identity: &MeshIdentity,
    ) -> Result<tonic::Streaming<v1::PolicySnapshot>, Status> {
        let token = match &self.token_file {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| Status::unavailable(format!("{}: {e}", file.display())))?
                .trim()
                .to_owned(),
            None => String::new(),
        };
        let mut client = v1::policy_client::PolicyClient::new(self.mtls_channel(identity)?);
        Ok(client
            .watch(v1::PolicyWatchRequest { token })
            .await?
            .into_inner())
    }
}

impl CaClient for ControlPlane {
    async fn certify(
        &self,
        presenting: Option<&MeshIdentity>,
        req: v1::CertifyRequest,
    ) -> Result<v1::CertifyResponse, Status> {
        let channel = match presenting {
            Some(identity) => self.fresh_mtls_channel(identity)?,
            None => {
                let tls = ward_certs::tls::bootstrap_client_config(
                    self.bootstrap_bundle.clone(),
                    ExpectedPeer::Exact(self.expected.clone()),
                    &[b"h2"],
                )
                .map_err(|e| Status::internal(e.to_string()))?;
                self.channel(tls)?
            }
        };
        let mut client = v1::identity_client::IdentityClient::new(channel);
        Ok(client.certify(req).await?.into_inner())
    }

    async fn watch_bundle(
        &self,
        identity: &MeshIdentity,
        acks: mpsc::Receiver<v1::BundleAck>,
    ) -> Result<BundleStream, Status> {
        let mut client = v1::bundle_client::BundleClient::new(self.mtls_channel(identity)?);
        let acks = tokio_stream::wrappers::ReceiverStream::new(acks);
        Ok(Box::pin(client.watch(acks).await?.into_inner()))
    }
}
