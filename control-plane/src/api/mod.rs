//! The gRPC API (`ward.v1`): Identity.Certify ([`identity`]), Policy.Watch ([`policy`]),
//! Bundle.Watch ([`bundle`]). Every call but a token-attested Certify requires the
//! caller's SVID, checked per call.

use std::sync::Arc;

use crate::api::transport::*;
use crate::attest::tokens::TokenError;
use crate::registry::*;
use crate::state::*;
use tonic::{Request, Status};
use ward_certs::SpiffeId;
use ward_certs::ca::CaError;

pub mod bundle;
pub mod identity;
pub mod policy;
pub mod transport;

#[derive(Clone)]
pub(crate) struct Api(pub(crate) Arc<State>);

/// What the TLS layer learned about the caller (tonic puts it in the request extensions).
pub(crate) fn peer<T>(req: &Request<T>) -> PeerInfo {
    req.extensions()
        .get::<PeerInfo>()
        .cloned()
        .unwrap_or(PeerInfo {
            addr: None,
            spiffe_id: None,
        })
}

pub(crate) fn caller_svid<T>(req: &Request<T>) -> Result<SpiffeId, Status> {
    peer(req)
        .spiffe_id
        .ok_or_else(|| Status::unauthenticated("this call needs the caller's SVID (mTLS)"))
}

pub(crate) fn token_status(e: TokenError) -> Status {
    match e {
        TokenError::Store(msg) => Status::internal(msg),
        other => Status::unauthenticated(other.to_string()),
    }
}

pub(crate) fn ca_status(e: CaError) -> Status {
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
