//! The SPIFFE Workload API, served to the app on a Unix socket, so that it can use its
//! workload's identity for what the proxy cannot carry for it: a database client
//! certificate, a JWT for a third party, a trust bundle to verify a peer with.
//!
//! Every call must carry the `workload.spiffe.io: true` metadata (else InvalidArgument),
//! and its caller must pass the [`attest::Attestor`] (else PermissionDenied, with no reason:
//! the reason goes to this proxy's log). What callers get is the identity in force: the
//! X.509 streams send it at once and again on every rotation of the SVID or the bundles.

pub mod attest;
pub mod authority;
pub mod jwt;
pub mod sds;
pub mod x509;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use metrics::counter;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use ward_api::sds::secret_discovery_service_server::SecretDiscoveryServiceServer;
use ward_api::workload::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use ward_api::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, SECURITY_HEADER,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svidRequest, X509svidResponse,
};
use ward_certs::{Svid, TrustBundle};
use ward_runtime::Drain;

use self::attest::{Attestor, Caller};
use self::jwt::JwtSvids;
use crate::config::WorkloadApi;
use crate::identity::{Federated, Identity};

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API of one sidecar.
#[derive(Clone)]
pub struct Service {
    identity: Identity,
    attestor: Arc<Attestor>,
    jwt: Arc<JwtSvids>,
    drain: Drain,
}

impl Service {
    pub fn new(identity: Identity, attestor: Attestor, jwt: Arc<JwtSvids>, drain: Drain) -> Self {
        Self {
            identity,
            attestor: Arc::new(attestor),
            jwt,
            drain,
        }
    }

    /// Checks the security header and the caller; counts and logs every refusal.
    fn admit<T>(&self, method: &'static str, request: &Request<T>) -> Result<Caller, Status> {
        let header = request.metadata().get(SECURITY_HEADER);
        if header.and_then(|v| v.to_str().ok()) != Some("true") {
            counter!("ward_workload_api_calls_total", "method" => method, "outcome" => "invalid")
                .increment(1);
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        self.attest(method, request)
    }

    /// Checks the caller's credentials against the rules.
    fn attest<T>(&self, method: &'static str, request: &Request<T>) -> Result<Caller, Status> {
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        match self.attestor.check(cred) {
            Ok(caller) => {
                counter!("ward_workload_api_calls_total", "method" => method, "outcome" => "ok")
                    .increment(1);
                tracing::debug!(target: "ward::workload_api", %caller, method, "identity given");
                Ok(caller)
            }
            Err(refusal) => {
                counter!("ward_workload_api_calls_total", "method" => method, "outcome" => "denied")
                    .increment(1);
                tracing::warn!(target: "ward::workload_api", method, reason = %refusal,
                    "caller refused");
                Err(Status::permission_denied("no identity issued"))
            }
        }
    }

    /// A stream that sends `make(identity in force)` now and after every change of the SVID,
    /// the bundle or the federated bundles, until the caller goes or the proxy drains.
    fn follow<T, F>(&self, make: F) -> Streamed<T>
    where
        T: Send + 'static,
        F: Fn(&Svid, &TrustBundle, &Federated) -> T + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1);
        let mut identity = self.identity.follow();
        let drain = self.drain.clone();
        tokio::spawn(async move {
            loop {
                let now = identity.current();
                if tx
                    .send(Ok(make(&now.svid, &now.bundle, &now.federated)))
                    .await
                    .is_err()
                {
                    return;
                }
                let changed = tokio::select! {
                    changed = identity.changed() => changed,
                    () = tx.closed() => false,
                    () = drain.signaled() => false,
                };
                if !changed {
                    return;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.admit("FetchX509SVID", &request)?;
        Ok(Response::new(self.follow(x509::svid_response)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.admit("FetchX509Bundles", &request)?;
        Ok(Response::new(self.follow(|_, bundle, federated| {
            x509::bundles_response(bundle, federated)
        })))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        self.admit("FetchJWTSVID", &request)?;
        let request = request.into_inner();
        let svid = self
            .jwt
            .fetch(&self.identity.id, &request.audience, &request.spiffe_id)
            .await?;
        Ok(Response::new(JwtsvidResponse { svids: vec![svid] }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.admit("FetchJWTBundles", &request)?;
        Ok(Response::new(self.jwt.follow_bundles(self.drain.clone())?))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.admit("ValidateJWTSVID", &request)?;
        let request = request.into_inner();
        Ok(Response::new(
            self.jwt.validate(&request.svid, &request.audience)?,
        ))
    }
}

/// Serves the Workload API on `config.socket` until the proxy drains, then removes the
/// socket. A file left there by an earlier run is replaced if it is a socket; anything
/// else there is an error (never deleted).
pub async fn serve(config: &WorkloadApi, service: Service) -> anyhow::Result<()> {
    let path = config.socket.clone();
    let listener = bind(&path)?;
    let drain = service.drain.clone();
    let sds = config
        .sds
        .then(|| SecretDiscoveryServiceServer::new(service.clone()));
    let server = tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(service))
        .add_optional_service(sds)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            drain.signaled().await;
        });
    tracing::info!(target: "ward::workload_api", socket = %path.display(), "serving the Workload API");
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(target: "ward::workload_api", error = %e, "Workload API server failed");
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

/// Accepted connections, each read through [`authority::Rewriting`].
fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = std::io::Result<authority::Rewriting>> + Send + 'static {
    use tokio_stream::StreamExt;
    UnixListenerStream::new(listener).map(|accepted| accepted.map(authority::Rewriting::new))
}

fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = || format!("workload_api.socket: {}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).with_context(|| format!("{}: cannot replace", shown()))?;
        }
        Ok(_) => anyhow::bail!("{}: exists and is not a socket", shown()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(shown),
    }
    let listener = UnixListener::bind(path).with_context(shown)?;
    // Anyone may connect: who gets an identity is decided by the caller's credentials.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).with_context(shown)?;
    Ok(listener)
}
