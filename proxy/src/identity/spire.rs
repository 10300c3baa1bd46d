//! The identity from a SPIRE agent: this proxy is a client of the agent's Workload API
//! (`identity.spire.socket`), which attests the proxy's process and streams its X.509-SVID,
//! its trust domain's bundle and the federated bundles. Each message is put in force as
//! it comes (bundles first, so a new SVID can chain to a new root); federated bundles let
//! peers of those trust domains in by their own roots (policy still decides what they may
//! do). If the stream breaks, the identity in force stays and the stream is reopened with
//! backoff. JWT-SVIDs for the app are fetched from the agent on demand; its JWT bundles
//! are followed in a stream of their own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use ward_api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use ward_api::workload::{
    JwtBundlesRequest, JwtsvidRequest, SECURITY_HEADER, X509svidRequest, X509svidResponse,
};
use ward_certs::{Svid, TrustBundle, TrustDomain};
use ward_runtime::backoff::Backoff;
use ward_runtime::follow::{reconnect, stream_to_watch};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::jwt::{Fetched, Issue, JwtBundles, JwtSource};
use super::{Federated, IdentityError, Issued, Publisher, Source};
use crate::config::SpireSource;

/// Backoff between attempts to reach the agent.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// A SPIRE agent as the identity source.
pub struct Spire {
    socket: PathBuf,
    trust_domain: TrustDomain,
    /// Which SVID of those the agent gives to use: the configured one, else the first one
    /// seen, kept from then on (the agent's order or entries changing never switches this
    /// proxy to another identity).
    spiffe_id: std::sync::Mutex<Option<String>>,
    client: SpiffeWorkloadApiClient<Channel>,
}

impl Spire {
    pub fn new(config: &SpireSource, trust_domain: TrustDomain) -> Self {
        let socket = config.path();
        Self {
            client: SpiffeWorkloadApiClient::new(unix_channel(socket.clone())),
            socket,
            trust_domain,
            spiffe_id: std::sync::Mutex::new(config.spiffe_id.clone()),
        }
    }

    /// The JWT side: fetches go to the agent; its JWT bundles are followed from now on
    /// (the stream reopened when it breaks, the last bundles kept meanwhile).
    pub fn jwt(&self) -> JwtSource {
        let client = self.client.clone();
        let (bundles, follow) = stream_to_watch(
            "spire JWT bundles",
            Arc::new(JwtBundles::new()),
            backoff(),
            |_| {},
            move || {
                let mut client = client.clone();
                async move {
                    let stream = client
                        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
                        .await?
                        .into_inner();
                    Ok::<_, Status>(stream.map(|message| {
                        message.map(|m| Arc::new(m.bundles.into_iter().collect::<JwtBundles>()))
                    }))
                }
            },
        );
        tokio::spawn(follow);
        JwtSource {
            issuer: Arc::new(AgentJwt {
                client: self.client.clone(),
            }),
            bundles,
        }
    }

    /// The agent's next X.509 message on a fresh stream, and the stream.
    async fn open(&self) -> Result<(X509svidResponse, tonic::Streaming<X509svidResponse>), Status> {
        let mut stream = self
            .client
            .clone()
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await?
            .into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("the agent ended the stream"))?;
        Ok((first, stream))
    }

    /// The SVID this proxy uses, its bundle and the federated bundles, from one message.
    fn decode(&self, response: &X509svidResponse) -> Result<Issued, IdentityError> {
        let bad = |why: String| IdentityError::Spire(why);
        let mut pinned = self.spiffe_id.lock().unwrap_or_else(|p| p.into_inner());
        let svid = match pinned.as_deref() {
            Some(id) => response
                .svids
                .iter()
                .find(|s| s.spiffe_id == id)
                .ok_or_else(|| bad(format!("the agent gave this process no SVID for {id}")))?,
            None => response
                .svids
                .first()
                .ok_or_else(|| bad("the agent gave no SVID".into()))?,
        };
        pinned.get_or_insert_with(|| svid.spiffe_id.clone());
        drop(pinned);
        let chain = split_der(&svid.x509_svid).map_err(|e| bad(format!("x509_svid: {e}")))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.x509_svid_key.clone()));
        let issued = Svid::new(chain, key).map_err(|e| bad(format!("x509_svid: {e}")))?;
        if !issued.spiffe_id().is_member_of(&self.trust_domain) {
            return Err(bad(format!(
                "the agent's SVID {} is not in trust domain {} (trust_domain)",
                issued.spiffe_id(),
                self.trust_domain
            )));
        }
        let bundle = bundle_of(&self.trust_domain, &svid.bundle)?;
        let mut federated = Federated::new();
        for (key, roots) in &response.federated_bundles {
            let name = key.strip_prefix("spiffe://").unwrap_or(key);
            let td = ward_certs::parse_trust_domain(name)
                .map_err(|e| bad(format!("federated bundle {key:?}: {e}")))?;
            if td == self.trust_domain {
                continue;
            }
            federated.insert(td.to_string(), bundle_of(&td, roots)?);
        }
        Ok(Issued {
            svid: issued,
            bundle,
            federated,
            workload: None,
        })
    }

    /// Puts one message's identity in force.
    fn apply(&self, response: &X509svidResponse, publisher: &Publisher) {
        let issued = match self.decode(response) {
            Ok(issued) => issued,
            Err(e) => {
                tracing::error!(target: "ward::spire", error = %e,
                    "SPIRE agent's update refused; the identity in force stays");
                return;
            }
        };
        publisher.bundle(issued.bundle);
        publisher.federated(issued.federated);
        let leaf = issued.svid.leaf().clone();
        if publisher.current().svid.current_chain().first() == Some(&leaf) {
            return;
        }
        let id = issued.svid.spiffe_id().clone();
        match publisher.svid(issued.svid) {
            Ok(()) => {
                tracing::info!(target: "ward::spire", spiffe_id = %id, "SVID from the SPIRE agent")
            }
            Err(e) => tracing::error!(target: "ward::spire", error = %e,
                "SPIRE agent's SVID refused; the SVID in force stays"),
        }
    }
}

impl Source for Spire {
    async fn first(&self) -> Result<Issued, IdentityError> {
        let mut backoff = backoff();
        loop {
            match self.open().await {
                Ok((first, _)) => return self.decode(&first),
                Err(status) => {
                    tracing::warn!(target: "ward::spire", socket = %self.socket.display(),
                        code = ?status.code(), message = status.message(),
                        "no SVID from the SPIRE agent yet; retrying");
                }
            }
            backoff.wait().await;
        }
    }

    async fn follow(self: Arc<Self>, publisher: Publisher) {
        // The identity in force stays while the stream is down (fail static).
        reconnect(
            "spire X.509-SVID",
            backoff(),
            || {},
            || async {
                let (first, mut stream) = self.open().await?;
                self.apply(&first, &publisher);
                while let Some(next) = stream.message().await? {
                    self.apply(&next, &publisher);
                }
                Ok::<(), Status>(())
            },
        )
        .await;
    }
}

/// JWT-SVIDs from the agent, for exactly the identity this proxy holds.
struct AgentJwt {
    client: SpiffeWorkloadApiClient<Channel>,
}

impl Issue for AgentJwt {
    fn fetch(&self, own: &ward_certs::SpiffeId, audience: Vec<String>) -> Fetched {
        let mut client = self.client.clone();
        let spiffe_id = own.to_string();
        Box::pin(async move {
            let request = with_header(JwtsvidRequest {
                audience,
                spiffe_id: spiffe_id.clone(),
            });
            let response = client.fetch_jwtsvid(request).await?.into_inner();
            response
                .svids
                .into_iter()
                .find(|s| s.spiffe_id == spiffe_id)
                .map(|s| s.svid)
                .ok_or_else(|| {
                    Status::unavailable(format!("the SPIRE agent gave no JWT-SVID for {spiffe_id}"))
                })
        })
    }
}

/// A request with the Workload API's security header.
fn with_header<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// A channel to a gRPC server on a Unix socket, connecting (again) when used.
pub fn unix_channel(socket: PathBuf) -> Channel {
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        },
    ))
}

/// Concatenated DER certificates, one by one.
fn split_der(mut der: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let (rest, _) = X509Certificate::from_der(der)
            .map_err(|e| format!("certificate #{}: {e}", certs.len()))?;
        let used = der.len() - rest.len();
        certs.push(CertificateDer::from(der[..used].to_vec()));
        der = rest;
    }
    if certs.is_empty() {
        return Err("no certificate".into());
    }
    Ok(certs)
}

fn bundle_of(td: &TrustDomain, roots: &[u8]) -> Result<TrustBundle, IdentityError> {
    let certs =
        split_der(roots).map_err(|e| IdentityError::Spire(format!("bundle of {td}: {e}")))?;
    TrustBundle::new(td.clone(), certs)
        .map_err(|e| IdentityError::Spire(format!("bundle of {td}: {e}")))
}
