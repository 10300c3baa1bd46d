//! X.509-SVID verification: is this chain a valid SVID of our trust domain, and whose?
//!
//! The SPIFFE rules (one URI SAN, leaf not a CA, key usages) are checked first, on the
//! parsed certificates, so that a refusal names the rule that was broken rather than a
//! generic path-building failure. The chain itself (signatures, issuer/subject chaining, path
//! length, name constraints, critical extensions) is then left to webpki, the verifier
//! rustls itself uses. A peer is identified by its SPIFFE ID only — never by DNS name or CN.

use std::fmt;
use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::TrustBundle;
use crate::id::{IdError, SpiffeId, parse_spiffe_id};

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
    #[error("chain is invalid: {0}")]
    Chain(String),
    #[error("peer is {found}, expected {expected}")]
    UnexpectedPeer { found: String, expected: String },
}

/// Key facts of a certificate, for display (`ward cert inspect`, `/certs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The single URI SAN if it is a SPIFFE ID; `None` otherwise.
    pub spiffe_id: Option<SpiffeId>,
    /// All URI SANs as written.
    pub uri_sans: Vec<String>,
    /// Serial number, lower-case hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub subject: String,
    pub issuer: String,
    pub is_ca: bool,
}

impl CertInfo {
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, SvidError> {
        let cert = parse(der, 0)?;
        let uri_sans = uri_sans(&cert);
        let spiffe_id = match uri_sans.as_slice() {
            [one] => parse_spiffe_id(one).ok(),
            _ => None,
        };
        Ok(Self {
            spiffe_id,
            uri_sans: uri_sans.into_iter().map(str::to_owned).collect(),
            serial: cert
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            not_before: to_system_time(cert.validity().not_before.timestamp()),
            not_after: to_system_time(cert.validity().not_after.timestamp()),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            is_ca: is_ca(&cert),
        })
    }

    /// Time left until `not_after`, zero once expired.
    pub fn time_left(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// Verifies `chain` (leaf first, then any intermediates the peer sent) as an X.509-SVID of
/// `bundle`'s trust domain at time `now`, returning the peer's SPIFFE ID.
pub fn verify_svid(
    chain: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: UnixTime,
    purpose: Purpose,
) -> Result<SpiffeId, SvidError> {
    let (leaf, intermediates) = chain.split_first().ok_or(SvidError::EmptyChain)?;
    verify_with_window(leaf, intermediates, bundle, now, purpose).map(|v| v.id)
}

/// A verified SVID and the window, in Unix seconds, in which every certificate of its chain
/// is valid.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub id: SpiffeId,
    pub not_before: u64,
    pub not_after: u64,
}

pub(crate) fn verify_with_window(
    leaf_der: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: UnixTime,
    purpose: Purpose,
) -> Result<Verified, SvidError> {
    let leaf = parse(leaf_der, 0)?;
    let id = check_leaf(&leaf, bundle, purpose)?;
    check_validity(&leaf, 0, now)?;
    let (mut not_before, mut not_after) = window(&leaf);
    for (i, der) in intermediates.iter().enumerate() {
        let cert = parse(der, i + 1)?;
        check_signer(&cert, i + 1)?;
        check_validity(&cert, i + 1, now)?;
        let (nb, na) = window(&cert);
        not_before = not_before.max(nb);
        not_after = not_after.min(na);
    }
    verify_chain(leaf_der, intermediates, bundle, now, purpose)?;
    Ok(Verified {
        id,
        not_before,
        not_after,
    })
}

fn window(cert: &X509Certificate<'_>) -> (u64, u64) {
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    let v = cert.validity();
    (
        secs(v.not_before.timestamp()),
        secs(v.not_after.timestamp()),
    )
}

/// Reads the SPIFFE ID from an already verified leaf (e.g. the peer certificate of an
/// established TLS connection).
pub fn spiffe_id_of(leaf: &CertificateDer<'_>) -> Result<SpiffeId, SvidError> {
    let cert = parse(leaf, 0)?;
    single_spiffe_id(&cert)
}

fn parse<'a>(der: &'a CertificateDer<'_>, index: usize) -> Result<X509Certificate<'a>, SvidError> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(SvidError::Malformed {
            index,
            detail: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(SvidError::Malformed {
            index,
            detail: e.to_string(),
        }),
    }
}

fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect()
}

fn single_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    // A malformed or duplicated SAN extension is refused outright rather than read as "none".
    if let Err(e) = cert.subject_alternative_name() {
        return Err(SvidError::Malformed {
            index: 0,
            detail: format!("subjectAltName: {e}"),
        });
    }
    match uri_sans(cert).as_slice() {
        [] => Err(SvidError::NoUriSan),
        [uri] => parse_spiffe_id(uri).map_err(|reason| SvidError::InvalidSpiffeId {
            uri: (*uri).to_owned(),
            reason,
        }),
        more => Err(SvidError::MultipleUriSans { count: more.len() }),
    }
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

fn check_leaf(
    leaf: &X509Certificate<'_>,
    bundle: &TrustBundle,
    purpose: Purpose,
) -> Result<SpiffeId, SvidError> {
    let id = single_spiffe_id(leaf)?;
    if id.path().is_empty() {
        return Err(SvidError::LeafIdWithoutPath { id: id.to_string() });
    }
    if !id.is_member_of(bundle.trust_domain()) {
        return Err(SvidError::WrongTrustDomain {
            id: id.to_string(),
            expected: bundle.trust_domain().to_string(),
        });
    }
    if is_ca(leaf) {
        return Err(SvidError::LeafIsCa);
    }
    let Ok(Some(ku)) = leaf.key_usage() else {
        return Err(SvidError::NoDigitalSignature);
    };
    if ku.value.key_cert_sign() {
        return Err(SvidError::LeafCertSign);
    }
    if ku.value.crl_sign() {
        return Err(SvidError::LeafCrlSign);
    }
    if !ku.value.digital_signature() {
        return Err(SvidError::NoDigitalSignature);
    }
    if let Ok(Some(eku)) = leaf.extended_key_usage() {
        let eku = eku.value;
        let need_server = matches!(purpose, Purpose::Server | Purpose::Both);
        let need_client = matches!(purpose, Purpose::Client | Purpose::Both);
        if !eku.any && need_server && !eku.server_auth {
            return Err(SvidError::MissingExtendedKeyUsage("serverAuth"));
        }
        if !eku.any && need_client && !eku.client_auth {
            return Err(SvidError::MissingExtendedKeyUsage("clientAuth"));
        }
    }
    Ok(id)
}

fn check_signer(cert: &X509Certificate<'_>, index: usize) -> Result<(), SvidError> {
    let subject = || cert.subject().to_string();
    if !is_ca(cert) {
        return Err(SvidError::SignerNotCa {
            index,
            subject: subject(),
        });
    }
    let cert_sign = cert
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|ku| ku.value.key_cert_sign());
    if !cert_sign {
        return Err(SvidError::SignerNoCertSign {
            index,
            subject: subject(),
        });
    }
    Ok(())
}

fn check_validity(
    cert: &X509Certificate<'_>,
    index: usize,
    now: UnixTime,
) -> Result<(), SvidError> {
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(SvidError::NotYetValid {
            index,
            subject: cert.subject().to_string(),
            not_before: validity.not_before.to_string(),
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(SvidError::Expired {
            index,
            subject: cert.subject().to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    Ok(())
}

fn verify_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: UnixTime,
    purpose: Purpose,
) -> Result<(), SvidError> {
    let ee = EndEntityCert::try_from(leaf).map_err(|e| SvidError::Malformed {
        index: 0,
        detail: format!("{e:?}"),
    })?;
    let usage = match purpose {
        Purpose::Client => KeyUsage::client_auth(),
        // `Both` was checked against the parsed extension above; webpki needs one.
        Purpose::Server | Purpose::Both => KeyUsage::server_auth(),
    };
    ee.verify_for_usage(
        crate::tls::signature_algorithms().all,
        bundle.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| map_webpki_error(e, bundle))
}

fn map_webpki_error(e: webpki::Error, bundle: &TrustBundle) -> SvidError {
    use webpki::Error as W;
    match e {
        W::UnknownIssuer => SvidError::UnknownIssuer {
            trust_domain: bundle.trust_domain().to_string(),
        },
        W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | W::UnsupportedSignatureAlgorithmContext(_) => SvidError::BadSignature,
        other => SvidError::Chain(WebpkiReason(other).to_string()),
    }
}

/// webpki errors have only `Debug`; keep the variant name, which is what a reader needs.
struct WebpkiReason(webpki::Error);

impl fmt::Display for WebpkiReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let debug = format!("{:?}", self.0);
        let name = debug.split(['(', ' ', '{']).next().unwrap_or(&debug);
        f.write_str(name)
    }
}

fn to_system_time(unix_secs: i64) -> SystemTime {
    match u64::try_from(unix_secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH - Duration::from_secs(unix_secs.unsigned_abs()),
    }
}

/// `now` as webpki wants it.
pub fn unix_time(now: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}
