//! ward-certs: who a peer is and whether to believe it.
//!
//! SPIFFE IDs ([`id`]), trust bundles ([`bundle`]), the certificate authority ([`ca`]),
//! X.509-SVID verification ([`verify`]), rustls configurations that authenticate SPIFFE peers
//! with hot-swappable certificates and bundles ([`tls`]), and the renewal schedule
//! ([`rotation`]). No networking lives here.

pub mod api_key;
pub mod bundle;
pub mod ca;
mod crypto;
pub mod id;
mod path;
pub mod pem;
pub mod rotation;
mod rules;
pub mod svid;
pub mod tls;
pub mod verified;
pub mod verify;

pub use bundle::TrustBundle;
pub use ca::{CaOptions, CertificateAuthority};
pub use id::{SpiffeId, TrustDomain, WorkloadIdentity, parse_spiffe_id, parse_trust_domain};
pub use svid::Svid;
pub use tls::{ExpectedPeer, MeshIdentity};
pub use verify::{CertInfo, Purpose, SvidError, verify_svid};
