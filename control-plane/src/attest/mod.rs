//! How a proxy proves who it is when it has no SVID yet. An [`Attestor`] checks the
//! evidence a first Certify carries and names the identity and workload it proves; the
//! identity is never what the proxy asks for. Join tokens here ([`tokens`]); a Kubernetes
//! service-account token reviewed by the API server in `ward-k8s`.

pub mod tokens;

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use ward_certs::SpiffeId;

pub use tokens::Registration;

/// What evidence proved.
#[derive(Debug, Clone)]
pub struct Attested {
    pub id: SpiffeId,
    pub workload: Registration,
}

/// Why evidence was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttestError {
    /// The evidence proves nothing (unknown, expired, used up, malformed): the caller's
    /// fault, said to it.
    #[error("{0}")]
    Refused(String),
    /// The attestor could not do its work (its store is unreadable): ours.
    #[error("{0}")]
    Unavailable(String),
}

/// What [`Attestor::attest`] returns: checking evidence may ask another service.
pub type AttestFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AttestError>> + Send + 'a>>;

/// A way of attesting proxies.
pub trait Attestor: Send + Sync + 'static {
    /// Checks `evidence` without using it up.
    fn attest<'a>(&'a self, evidence: &'a str, now: SystemTime) -> AttestFuture<'a, Attested>;

    /// Uses `evidence` up, once the SVID it pays for has been signed.
    fn redeem(&self, evidence: &str, now: SystemTime) -> Result<(), AttestError>;

    /// The workload of an identity this attestor attested before (for renewals and
    /// policy selection); `None` if it never did.
    fn workload(&self, id: &SpiffeId) -> Result<Option<Registration>, AttestError>;
}

/// Join tokens from the data directory's token store.
pub struct JoinTokens(pub tokens::TokenStore);

impl JoinTokens {
    fn check(&self, evidence: &str, now: SystemTime) -> Result<Attested, AttestError> {
        let grant = self.0.peek(evidence, now).map_err(token_error)?;
        let id = ward_certs::parse_spiffe_id(&grant.spiffe_id)
            .map_err(|e| AttestError::Unavailable(format!("stored token identity: {e}")))?;
        Ok(Attested {
            id,
            workload: Registration {
                namespace: grant.namespace,
                labels: grant.labels,
            },
        })
    }
}

impl Attestor for JoinTokens {
    fn attest<'a>(&'a self, evidence: &'a str, now: SystemTime) -> AttestFuture<'a, Attested> {
        let checked = self.check(evidence, now);
        Box::pin(std::future::ready(checked))
    }

    fn redeem(&self, evidence: &str, now: SystemTime) -> Result<(), AttestError> {
        self.0.redeem(evidence, now).map(drop).map_err(token_error)
    }

    fn workload(&self, id: &SpiffeId) -> Result<Option<Registration>, AttestError> {
        self.0.registration(&id.to_string()).map_err(token_error)
    }
}

fn token_error(e: tokens::TokenError) -> AttestError {
    match e {
        tokens::TokenError::Store(msg) => AttestError::Unavailable(msg),
        other => AttestError::Refused(other.to_string()),
    }
}
