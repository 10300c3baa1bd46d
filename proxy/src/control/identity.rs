//! The identity the control plane issues: the first SVID for a join token (retried until
//! it comes), renewal at half-life with jitter over mTLS presenting the current SVID (and
//! at once when the control plane signs with a new root), and the trust-bundle stream,
//! each bundle acknowledged with the leaf in use so that a rotation knows when every proxy
//! has moved. The key of each SVID is made here and never leaves the process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{Notify, mpsc};
use tokio_stream::StreamExt;
use ward_api::v1;
use ward_certs::verify::{Purpose, unix_time};
use ward_certs::{MeshIdentity, SpiffeId, Svid, TrustBundle, TrustDomain, verify_svid};
use ward_runtime::backoff::Backoff;
use ward_runtime::time::unix_secs;

use super::{CaClient, Health, Stream, status_text};
use crate::identity::{IdentityError, Issued, Publisher, Source, Workload};

/// The identity source backed by the control plane.
pub struct ControlPlaneIdentity<C> {
    client: Arc<C>,
    trust_domain: TrustDomain,
    /// The join token (re-read at each attempt: it may be mounted late).
    token_file: PathBuf,
    health: Arc<Health>,
    /// The first wait of every retry and reconnection.
    backoff: Backoff,
    /// Asks the renewer to renew now (a rotation activated a new root).
    renew_now: Notify,
    /// Tells the bundle stream a new leaf is in use, so that it reports it.
    renewed: Notify,
    /// Where the workload serves, reported with every Certify (for discovery).
    serving: Vec<v1::Endpoint>,
    /// Whether renewals carry the token too (Kubernetes service-account tokens).
    token_on_renewal: bool,
}

impl<C: CaClient> ControlPlaneIdentity<C> {
    pub fn new(
        client: Arc<C>,
        trust_domain: TrustDomain,
        token_file: PathBuf,
        health: Arc<Health>,
    ) -> Self {
        Self {
            client,
            trust_domain,
            token_file,
            health,
            backoff: Backoff::control_plane(),
            renew_now: Notify::new(),
            renewed: Notify::new(),
            serving: Vec::new(),
            token_on_renewal: false,
        }
    }

    /// Sends the token with renewals too when `on` (see `renew_with_token`).
    pub fn with_token_on_renewal(mut self, on: bool) -> Self {
        self.token_on_renewal = on;
        self
    }

    /// The token, read now (it may be mounted late, and the kubelet refreshes it).
    fn read_token(&self) -> Result<String, IdentityError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            IdentityError::ControlPlane(format!("{}: {e}", self.token_file.display()))
        })?;
        Ok(token.trim().to_owned())
    }

    /// Reports `serving` with every Certify.
    pub fn with_serving(mut self, serving: Vec<v1::Endpoint>) -> Self {
        self.serving = serving;
        self
    }

    /// Retries and reconnects with `backoff` instead.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    async fn try_bootstrap(&self) -> Result<Issued, IdentityError> {
        let token = self.read_token()?;
        let (key, csr) = new_key_and_csr(None)?;
        let req = v1::CertifyRequest {
            csr,
            token,
            spiffe_id: String::new(),
            serving: self.serving.clone(),
        };
        let resp = self.client.certify(None, req).await.map_err(status_error)?;
        let (svid, bundle) = self.accept(resp.chain, key, &resp.bundle)?;
        let workload = resp.workload.unwrap_or_default();
        tracing::info!(spiffe_id = %svid.spiffe_id(), "first SVID from the control plane");
        Ok(Issued {
            svid,
            bundle,
            federated: Default::default(),
            workload: Some(Workload {
                namespace: workload.namespace,
                labels: workload.labels.into_iter().collect(),
            }),
        })
    }

    /// Checks a returned chain against the returned bundle and our key.
    fn accept(
        &self,
        chain: Vec<Vec<u8>>,
        key: PrivateKeyDer<'static>,
        roots: &[Vec<u8>],
    ) -> Result<(Svid, TrustBundle), IdentityError> {
        let chain: Vec<_> = chain.into_iter().map(CertificateDer::from).collect();
        let roots = roots.iter().map(|r| CertificateDer::from(r.clone()));
        let bundle = TrustBundle::new(self.trust_domain.clone(), roots)?;
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
    async fn renew_forever(&self, publisher: &Publisher) {
        let mut backoff = self.backoff.clone();
        loop {
            let wait = leaf_info(publisher.current())
                .map(|info| {
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
                match self.renew_once(publisher).await {
                    Ok(serial) => {
                        tracing::info!(%serial, "renewed SVID");
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

    async fn renew_once(&self, publisher: &Publisher) -> Result<String, IdentityError> {
        let current = publisher.current();
        let id = current_id(current)?;
        let (key, csr) = new_key_and_csr(Some(&id))?;
        let token = if self.token_on_renewal {
            self.read_token()?
        } else {
            String::new()
        };
        let req = v1::CertifyRequest {
            csr,
            token,
            spiffe_id: id.to_string(),
            serving: self.serving.clone(),
        };
        let resp = self
            .client
            .certify(Some(current), req)
            .await
            .map_err(status_error)?;
        let (svid, _) = self.accept(resp.chain, key, &resp.bundle)?;
        let serial = svid
            .leaf_info()
            .map_err(|e| IdentityError::ControlPlane(e.to_string()))?
            .serial;
        publisher.svid(svid)?;
        Ok(serial)
    }

    /// Follows the trust bundle for ever: puts each one in force and acknowledges it with
    /// the leaf in use (and again after each renewal).
    async fn follow_bundle(&self, publisher: &Publisher) {
        ward_runtime::follow::reconnect(
            Stream::Bundle.label(),
            self.backoff.clone(),
            || self.health.connected(Stream::Bundle, false),
            || self.bundle_session(publisher),
        )
        .await
    }

    async fn bundle_session(&self, publisher: &Publisher) -> Result<(), String> {
        let identity = publisher.current();
        let (acks, rx) = mpsc::channel(4);
        let mut stream = self
            .client
            .watch_bundle(identity, rx)
            .await
            .map_err(|s| status_text(&s))?;
        self.health.connected(Stream::Bundle, true);
        let mut applied = 0;
        loop {
            let msg = tokio::select! {
                msg = stream.next() => msg,
                _ = self.renewed.notified() => {
                    // Report the new leaf (a rotation waits for every proxy's).
                    let _ = acks.send(ack(identity, applied)).await;
                    continue;
                }
            };
            let msg = match msg {
                None => return Ok(()),
                Some(Err(s)) => return Err(status_text(&s)),
                Some(Ok(msg)) => msg,
            };
            let roots = msg.roots.iter().map(|r| CertificateDer::from(r.clone()));
            match TrustBundle::new(self.trust_domain.clone(), roots) {
                Ok(bundle) => {
                    publisher.bundle(bundle);
                    self.health.updated(Stream::Bundle);
                    applied = msg.version;
                    metrics::gauge!("ward_bundle_version").set(msg.version as f64);
                    if !msg.active_root.is_empty() && leaf_issuer(identity) != msg.active_root {
                        self.renew_now.notify_one();
                    }
                    let _ = acks.send(ack(identity, applied)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "refused a trust bundle from the control plane")
                }
            }
        }
    }
}

impl<C: CaClient> Source for ControlPlaneIdentity<C> {
    async fn first(&self) -> Result<Issued, IdentityError> {
        let mut backoff = self.backoff.clone();
        loop {
            match self.try_bootstrap().await {
                Ok(issued) => return Ok(issued),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.peek(), "bootstrap from the control plane failed");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn follow(self: Arc<Self>, publisher: Publisher) {
        tokio::join!(
            self.renew_forever(&publisher),
            self.follow_bundle(&publisher)
        );
    }
}

fn new_key_and_csr(
    id: Option<&SpiffeId>,
) -> Result<(PrivateKeyDer<'static>, Vec<u8>), IdentityError> {
    ward_certs::svid::new_key_and_csr(id).map_err(|e| IdentityError::ControlPlane(e.to_string()))
}

fn status_error(s: tonic::Status) -> IdentityError {
    IdentityError::ControlPlane(status_text(&s))
}

fn leaf_info(identity: &MeshIdentity) -> Option<ward_certs::CertInfo> {
    let chain = identity.svid.current_chain();
    ward_certs::CertInfo::parse(chain.first()?).ok()
}

fn current_id(identity: &MeshIdentity) -> Result<SpiffeId, IdentityError> {
    leaf_info(identity)
        .and_then(|info| info.spiffe_id)
        .ok_or_else(|| IdentityError::ControlPlane("the SVID in force has no SPIFFE ID".into()))
}

/// The key ID of the bundle root our current leaf chains to (see
/// [`ward_certs::verify::key_id`]); empty if it chains to none.
fn leaf_issuer(identity: &MeshIdentity) -> String {
    let chain = identity.svid.current_chain();
    let bundle = identity.bundle.current();
    let now = unix_time(SystemTime::now());
    ward_certs::verify::anchor_key_id(&chain, &bundle, now).unwrap_or_default()
}

fn ack(identity: &MeshIdentity, applied: u64) -> v1::BundleAck {
    let leaf_not_after = leaf_info(identity)
        .map(|i| unix_secs(i.not_after) as i64)
        .unwrap_or_default();
    v1::BundleAck {
        applied_version: applied,
        leaf_not_after_unix: leaf_not_after,
        leaf_issuer_root: leaf_issuer(identity),
    }
}

#[cfg(test)]
mod tests;
