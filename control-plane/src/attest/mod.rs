//! How a proxy proves who it is when it has no SVID yet. An [`Attestor`] checks the
//! evidence a first Certify carries and names the identity and workload it proves; the
//! identity is never what the proxy asks for. Join tokens today ([`tokens`]); a
//! Kubernetes service-account token reviewed by the API server next.

pub mod tokens;

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

/// A way of attesting proxies.
pub trait Attestor: Send + Sync + 'static {
    /// Checks `evidence` without using it up.
    fn attest(&self, evidence: &str, now: SystemTime) -> Result<Attested, AttestError>;

    /// Uses `evidence` up, once the SVID it pays for has been signed.
    fn redeem(&self, evidence: &str, now: SystemTime) -> Result<(), AttestError>;

    /// The workload of an identity this attestor attested before (for renewals and
    /// policy selection); `None` if it never did.
    fn workload(&self, id: &SpiffeId) -> Result<Option<Registration>, AttestError>;
}

/// Join tokens from the data directory's token store.
pub struct JoinTokens(pub tokens::TokenStore);

impl Attestor for JoinTokens {
    fn attest(&self, evidence: &str, now: SystemTime) -> Result<Attested, AttestError> {
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
