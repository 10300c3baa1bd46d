//! The gRPC API (`ward.v1`): Identity.Certify ([`identity`]), Policy.Watch ([`policy`]),
//! Bundle.Watch ([`bundle`]), Discovery.Watch ([`discovery`]), Telemetry.Report
//! ([`telemetry`]). Every call but a token-attested Certify requires the
//! caller's SVID, checked per call.

use std::sync::Arc;

use tonic::{Request, Status};
use ward_certs::SpiffeId;
use ward_certs::ca::CaError;

use self::transport::PeerInfo;
use crate::attest::AttestError;
use crate::state::State;

pub mod bundle;
pub mod discovery;
pub mod identity;
pub mod jwt_svid;
pub mod policy;
pub mod telemetry;
pub mod transport;

/// The three services, over one state.
#[derive(Clone)]
pub struct Api(pub Arc<State>);

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

pub(crate) fn attest_status(e: AttestError) -> Status {
    match e {
        AttestError::Unavailable(msg) => Status::internal(msg),
        AttestError::Refused(msg) => Status::unauthenticated(msg),
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
