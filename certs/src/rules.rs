//! What an SVID chain is checked for, and the error that names the first rule it breaks.

use crate::id::IdError;

/// Which side of a TLS handshake the SVID is presented for; selects the extended key usage
/// the leaf must allow (if it has the extension at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The peer is a TLS client (we are the server): requires clientAuth.
    Client,
    /// The peer is a TLS server (we are the client): requires serverAuth.
    Server,
    /// Either role, as an SVID in the mesh must serve: requires both.
    Both,
}

/// The first SVID rule a certificate chain breaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SvidError {
    #[error("no certificate was presented")]
    EmptyChain,
    #[error("certificate #{index} is not a valid X.509 certificate: {detail}")]
    Malformed { index: usize, detail: String },
    #[error("leaf has no URI SAN; an X.509-SVID carries its SPIFFE ID as exactly one URI SAN")]
    NoUriSan,
    #[error("leaf has {count} URI SANs; an X.509-SVID has exactly one")]
    MultipleUriSans { count: usize },
    #[error("leaf URI SAN {uri:?} is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId { uri: String, reason: IdError },
    #[error("leaf SPIFFE ID {id} has no path; a workload SVID names more than its trust domain")]
    LeafIdWithoutPath { id: String },
    #[error("leaf SPIFFE ID {id} is not in trust domain {expected}")]
    WrongTrustDomain { id: String, expected: String },
    #[error("leaf is a CA certificate (basicConstraints CA=true); an SVID leaf must not be")]
    LeafIsCa,
    #[error("leaf keyUsage includes keyCertSign; an SVID leaf may not sign certificates")]
    LeafCertSign,
    #[error("leaf keyUsage includes cRLSign; an SVID leaf may not sign CRLs")]
    LeafCrlSign,
    #[error("leaf keyUsage lacks digitalSignature (or the extension is missing)")]
    NoDigitalSignature,
    #[error("leaf extendedKeyUsage lacks {0}")]
    MissingExtendedKeyUsage(&'static str),
    #[error("certificate #{index} ({subject}) expired at {not_after}")]
    Expired {
        index: usize,
        subject: String,
        not_after: String,
    },
    #[error("certificate #{index} ({subject}) is not valid before {not_before}")]
    NotYetValid {
        index: usize,
        subject: String,
        not_before: String,
    },
    #[error("signing certificate #{index} ({subject}) is not a CA (basicConstraints CA=true)")]
    SignerNotCa { index: usize, subject: String },
    #[error("signing certificate #{index} ({subject}) keyUsage lacks keyCertSign")]
    SignerNoCertSign { index: usize, subject: String },
    #[error("chain does not lead to a root in the trust bundle of {trust_domain}")]
    UnknownIssuer { trust_domain: String },
    #[error("a signature in the chain does not verify")]
    BadSignature,
    #[error("certificate ({subject}) is signed with {algorithm}, which the mesh does not accept")]
    UnsupportedSignature { subject: String, algorithm: String },
    #[error(
        "signing certificate #{index} ({subject}) allows {limit} CA certificate(s) below it (pathLenConstraint); the path has {below}"
    )]
    PathLenExceeded {
        index: usize,
        subject: String,
        limit: u32,
        below: u32,
    },
    #[error("signing certificate #{index} ({subject}) extendedKeyUsage excludes {purpose}")]
    SignerEkuExcludes {
        index: usize,
        subject: String,
        purpose: &'static str,
    },
    #[error("certificate #{index} ({subject}) has an unknown critical extension {oid}")]
    UnknownCriticalExtension {
        index: usize,
        subject: String,
        oid: String,
    },
    #[error("certificate #{index} ({subject}) has a key the mesh does not accept: {what}")]
    WeakKey {
        index: usize,
        subject: String,
        what: String,
    },
    #[error("name constraints of certificate #{index} ({subject}): {name} is {why}")]
    NameConstraint {
        index: usize,
        subject: String,
        name: String,
        why: String,
    },
    #[error("chain is invalid: {0}")]
    Chain(String),
    #[error("peer is {found}, expected {expected}")]
    UnexpectedPeer { found: String, expected: String },
}
