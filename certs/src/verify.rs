//! X.509-SVID verification: is this chain a valid SVID of our trust domain, and whose?
//!
//! The SPIFFE rules for the leaf (one URI SAN, not a CA, key usages, key strength) are
//! checked first, so that a refusal names the rule that was broken. The path to a root of
//! the bundle — signatures, validity of every certificate on it (the root too), CA rules,
//! path length, extended key usage, name constraints, critical extensions — is then found
//! and judged by [`crate::path`]. `ward cert inspect` and the TLS handshake run this same
//! function. A peer is identified by its SPIFFE ID only — never by DNS name or CN.

use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::TrustBundle;
use crate::id::{SpiffeId, parse_spiffe_id};
use crate::path::Candidate;

pub use crate::rules::{Purpose, SvidError};

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
    verify_path(leaf_der, intermediates, bundle, now, purpose).map(|(verified, _)| verified)
}

/// A certificate's key ID: `sha256:` and the first 16 bytes, in hex, of the SHA-256 of its
/// SubjectPublicKeyInfo. Roots are told apart by it, not by their subject names: a leaf
/// under an intermediate never names its root, and two roots may share a name.
pub fn key_id(der: &CertificateDer<'_>) -> Result<String, SvidError> {
    let cert = parse(der, 0)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

/// The key ID of the bundle root that `chain` (leaf first) leads to, judged as an SVID for
/// both roles at `now`.
pub fn anchor_key_id(
    chain: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: UnixTime,
) -> Result<String, SvidError> {
    let (leaf, intermediates) = chain.split_first().ok_or(SvidError::EmptyChain)?;
    let (_, root) = verify_path(leaf, intermediates, bundle, now, Purpose::Both)?;
    key_id(&root)
}

fn verify_path(
    leaf_der: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: UnixTime,
    purpose: Purpose,
) -> Result<(Verified, CertificateDer<'static>), SvidError> {
    let leaf = parse(leaf_der, 0)?;
    let id = check_leaf(&leaf, bundle, purpose)?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    crate::path::check_validity(&leaf, 0, now)?;
    if intermediates.len() > crate::path::MAX_INTERMEDIATES {
        return Err(SvidError::Chain(format!(
            "{} certificates sent along with the leaf; at most {} are read",
            intermediates.len(),
            crate::path::MAX_INTERMEDIATES
        )));
    }
    let roots: Vec<&CertificateDer<'static>> = bundle.roots().collect();
    let mut candidates = Vec::with_capacity(intermediates.len() + roots.len());
    for (i, der) in intermediates.iter().enumerate() {
        // A root the peer sends along is only a root if the bundle has it.
        let root = roots.iter().any(|r| r.as_ref() == der.as_ref());
        candidates.push(Candidate {
            cert: parse(der, i + 1)?,
            root,
        });
    }
    for (i, der) in roots.iter().enumerate() {
        let cert = parse(der, intermediates.len() + 1 + i)?;
        candidates.push(Candidate { cert, root: true });
    }
    let trust_domain = bundle.trust_domain().to_string();
    let window = crate::path::validate(&leaf, &candidates, &trust_domain, now, purpose)?;
    let root = match window.root.checked_sub(intermediates.len()) {
        Some(i) => roots[i].clone(),
        // A root the peer sent along, which the bundle holds.
        None => CertificateDer::from(intermediates[window.root].as_ref().to_vec()),
    };
    let verified = Verified {
        id,
        not_before: window.not_before,
        not_after: window.not_after,
    };
    Ok((verified, root))
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
    if let Ok(Some(eku)) = leaf.extended_key_usage()
        && let Some(missing) = crate::path::eku_misses(eku.value, purpose)
    {
        return Err(SvidError::MissingExtendedKeyUsage(missing));
    }
    crate::path::check_key(leaf, 0)?;
    crate::path::check_critical_extensions(leaf, 0)?;
    Ok(id)
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
