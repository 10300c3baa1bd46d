//! Certification path validation for X.509-SVIDs: from a leaf, through the intermediates
//! the peer sent, to a root of the trust bundle (RFC 5280 §6, as SPIFFE uses it).
//!
//! Why our own and not webpki's: webpki takes trust anchors on faith (an expired root, one
//! with an unknown critical extension, a path length or EKU it forbids are all accepted)
//! and fails every URI name constraint, even one that permits the trust domain, so a CA
//! constrained to `spiffe://example.org` (common under an enterprise CA or SPIRE) could not
//! talk to ward at all. Here the root is a certificate like any on the path, URI name
//! constraints are processed for SPIFFE IDs, and every refusal names its rule. Signatures
//! are checked with aws-lc-rs, the provider rustls uses.
//!
//! Only the certificates on the path are judged: anything else a peer sends along (an
//! unrelated expired certificate, say) is ignored, as a careful validator does.

use aws_lc_rs::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::X509Certificate;

use crate::id::parse_spiffe_id;
use crate::rules::{Purpose, SvidError};

/// The longest path looked for: leaf, intermediates and root.
const MAX_PATH: usize = 8;
/// The most certificates a peer may send along with its leaf.
pub(crate) const MAX_INTERMEDIATES: usize = 16;
/// The most signature checks one validation may spend. A peer could otherwise send many
/// CA certificates that all name and sign each other, and make the search try every
/// ordering of them (a CPU denial of service before any authentication).
const MAX_SIGNATURE_CHECKS: usize = 64;

/// One certificate that may sit on a path.
pub(crate) struct Candidate<'a> {
    pub cert: X509Certificate<'a>,
    /// A root of the trust bundle (a path ends here).
    pub root: bool,
}

/// The validity window (Unix seconds) common to every certificate on the path found, and
/// the root it ends at (an index into the candidates).
pub(crate) struct PathWindow {
    pub not_before: u64,
    pub not_after: u64,
    pub root: usize,
}

/// Finds a path from `leaf` to a root among `candidates` on which every rule holds, or the
/// most telling refusal.
pub(crate) fn validate(
    leaf: &X509Certificate<'_>,
    candidates: &[Candidate<'_>],
    trust_domain: &str,
    now: i64,
    purpose: Purpose,
) -> Result<PathWindow, SvidError> {
    let mut path: Vec<usize> = Vec::new();
    let mut best: Option<SvidError> = None;
    let mut budget = MAX_SIGNATURE_CHECKS;
    let mut search = Search {
        leaf,
        candidates,
        best: &mut best,
        budget: &mut budget,
        now,
        purpose,
    };
    if let Some(window) = search.extend(&mut path) {
        return Ok(window);
    }
    Err(best.unwrap_or(SvidError::UnknownIssuer {
        trust_domain: trust_domain.to_owned(),
    }))
}

/// One path search: what it searches and what it has learnt.
struct Search<'s, 'a> {
    leaf: &'s X509Certificate<'a>,
    candidates: &'s [Candidate<'a>],
    best: &'s mut Option<SvidError>,
    /// Signature checks left.
    budget: &'s mut usize,
    now: i64,
    purpose: Purpose,
}

impl Search<'_, '_> {
    /// Depth-first: tries each certificate that names the last one's issuer and signed it.
    fn extend(&mut self, path: &mut Vec<usize>) -> Option<PathWindow> {
        if path.len() + 1 >= MAX_PATH {
            keep(
                self.best,
                SvidError::Chain("no path within 8 certificates".into()),
            );
            return None;
        }
        let candidates = self.candidates;
        let child = path.last().map_or(self.leaf, |&i| &candidates[i].cert);
        for (i, candidate) in candidates.iter().enumerate() {
            if path.contains(&i) || candidate.cert.subject().as_raw() != child.issuer().as_raw() {
                continue;
            }
            if *self.budget == 0 {
                // Why the search stopped, whatever it had found before.
                *self.best = Some(SvidError::Chain(format!(
                    "no path found within {MAX_SIGNATURE_CHECKS} signature checks"
                )));
                return None;
            }
            *self.budget -= 1;
            if let Err(e) = check_signature(child, &candidate.cert) {
                keep(self.best, e);
                continue;
            }
            path.push(i);
            if candidate.root {
                match check_path(self.leaf, candidates, path, self.now, self.purpose) {
                    Ok(window) => return Some(window),
                    Err(e) => keep(self.best, e),
                }
            } else if let Some(window) = self.extend(path) {
                return Some(window);
            }
            path.pop();
        }
        None
    }
}

/// Keeps the most telling error: a rule broken on a complete path beats a signature that
/// did not verify, which beats not finding an issuer at all.
fn keep(best: &mut Option<SvidError>, e: SvidError) {
    let rank = |e: &SvidError| match e {
        SvidError::UnknownIssuer { .. } => 0,
        SvidError::Chain(_) => 1,
        SvidError::BadSignature | SvidError::UnsupportedSignature { .. } => 2,
        _ => 3,
    };
    if best.as_ref().is_none_or(|b| rank(&e) > rank(b)) {
        *best = Some(e);
    }
}

/// Every rule on a complete path (leaf at 0, root last; indexes in errors are positions on
/// the path).
fn check_path(
    leaf: &X509Certificate<'_>,
    candidates: &[Candidate<'_>],
    path: &[usize],
    now: i64,
    purpose: Purpose,
) -> Result<PathWindow, SvidError> {
    let (mut not_before, mut not_after) = window(leaf);
    check_critical_extensions(leaf, 0)?;
    // Non-self-issued CA certificates between a CA and the leaf, for pathLenConstraint.
    let mut below = 0u32;
    for (pos, &i) in path.iter().enumerate() {
        let index = pos + 1;
        let cert = &candidates[i].cert;
        let subject = || cert.subject().to_string();
        check_validity(cert, index, now)?;
        check_critical_extensions(cert, index)?;
        check_key(cert, index)?;
        let bc = cert.basic_constraints().ok().flatten().map(|b| b.value);
        let Some(bc) = bc.filter(|b| b.ca) else {
            return Err(SvidError::SignerNotCa {
                index,
                subject: subject(),
            });
        };
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
        if let Some(limit) = bc.path_len_constraint
            && below > limit
        {
            return Err(SvidError::PathLenExceeded {
                index,
                subject: subject(),
                limit,
                below,
            });
        }
        if let Ok(Some(eku)) = cert.extended_key_usage()
            && let Some(missing) = eku_misses(eku.value, purpose)
        {
            return Err(SvidError::SignerEkuExcludes {
                index,
                subject: subject(),
                purpose: missing,
            });
        }
        check_name_constraints(cert, index, leaf, candidates, &path[..pos])?;
        if cert.subject().as_raw() != cert.issuer().as_raw() {
            below += 1;
        }
        let (nb, na) = window(cert);
        not_before = not_before.max(nb);
        not_after = not_after.min(na);
    }
    Ok(PathWindow {
        not_before,
        not_after,
        root: path.last().copied().unwrap_or_default(),
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

pub(crate) fn check_validity(
    cert: &X509Certificate<'_>,
    index: usize,
    now: i64,
) -> Result<(), SvidError> {
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

/// The extended key usage `purpose` needs that `eku` does not allow, if any. anyEKU does
/// not stand in for serverAuth or clientAuth: the SVID profile names them.
pub(crate) fn eku_misses(
    eku: &x509_parser::extensions::ExtendedKeyUsage<'_>,
    purpose: Purpose,
) -> Option<&'static str> {
    let need_server = matches!(purpose, Purpose::Server | Purpose::Both);
    let need_client = matches!(purpose, Purpose::Client | Purpose::Both);
    if need_server && !eku.server_auth {
        return Some("serverAuth");
    }
    if need_client && !eku.client_auth {
        return Some("clientAuth");
    }
    None
}

/// Extensions whose meaning this validator applies; any other marked critical refuses the
/// certificate (RFC 5280 §4.2).
const KNOWN_CRITICAL: [&str; 5] = [
    "2.5.29.19", // basicConstraints
    "2.5.29.15", // keyUsage
    "2.5.29.37", // extKeyUsage
    "2.5.29.17", // subjectAltName
    "2.5.29.30", // nameConstraints
];

pub(crate) fn check_critical_extensions(
    cert: &X509Certificate<'_>,
    index: usize,
) -> Result<(), SvidError> {
    for ext in cert.extensions() {
        if !ext.critical {
            continue;
        }
        let oid = ext.oid.to_id_string();
        let parsed_ok = !matches!(
            ext.parsed_extension(),
            ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. }
        );
        if !KNOWN_CRITICAL.contains(&oid.as_str()) || !parsed_ok {
            return Err(SvidError::UnknownCriticalExtension {
                index,
                subject: cert.subject().to_string(),
                oid,
            });
        }
    }
    Ok(())
}

/// The keys a mesh certificate may carry: ECDSA P-256 or P-384, RSA of 2048 to 8192
/// bits, Ed25519 — the same rule for `ward cert inspect` and the wire.
pub(crate) fn check_key(cert: &X509Certificate<'_>, index: usize) -> Result<(), SvidError> {
    let spki = cert.public_key();
    let weak = |what: String| SvidError::WeakKey {
        index,
        subject: cert.subject().to_string(),
        what,
    };
    match spki.algorithm.algorithm.to_id_string().as_str() {
        ID_EC_PUBLIC_KEY => match curve_of(cert).as_deref() {
            Some(SECP256R1 | SECP384R1) => Ok(()),
            Some(SECP192R1) => Err(weak("ECDSA on P-192".into())),
            Some(other) => Err(weak(format!("ECDSA on curve {other}"))),
            None => Err(weak("ECDSA without a named curve".into())),
        },
        RSA_ENCRYPTION => {
            let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
            if (2048..=8192).contains(&bits) {
                Ok(())
            } else {
                Err(weak(format!("RSA of {bits} bits")))
            }
        }
        ED25519 => Ok(()),
        ID_DSA => Err(weak("DSA".into())),
        other => Err(weak(format!("key algorithm {other}"))),
    }
}

const ID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const ED25519: &str = "1.3.101.112";
const ID_DSA: &str = "1.2.840.10040.4.1";
const SECP256R1: &str = "1.2.840.10045.3.1.7";
const SECP384R1: &str = "1.3.132.0.34";
const SECP192R1: &str = "1.2.840.10045.3.1.1";

fn curve_of(cert: &X509Certificate<'_>) -> Option<String> {
    let params = cert.public_key().algorithm.parameters.as_ref()?;
    params.as_oid().ok().map(|o| o.to_id_string())
}

/// Whether `issuer`'s key signed `child`, with an algorithm the mesh accepts.
fn check_signature(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), SvidError> {
    let algorithm = child.signature_algorithm.algorithm.to_id_string();
    let key = issuer.public_key();
    let key_algorithm = key.algorithm.algorithm.to_id_string();
    let curve = curve_of(issuer);
    let verifier: &'static dyn VerificationAlgorithm =
        match (algorithm.as_str(), key_algorithm.as_str(), curve.as_deref()) {
            ("1.2.840.10045.4.3.2", ID_EC_PUBLIC_KEY, Some(SECP256R1)) => {
                &sig::ECDSA_P256_SHA256_ASN1
            }
            ("1.2.840.10045.4.3.3", ID_EC_PUBLIC_KEY, Some(SECP256R1)) => {
                &sig::ECDSA_P256_SHA384_ASN1
            }
            ("1.2.840.10045.4.3.3", ID_EC_PUBLIC_KEY, Some(SECP384R1)) => {
                &sig::ECDSA_P384_SHA384_ASN1
            }
            ("1.2.840.10045.4.3.2", ID_EC_PUBLIC_KEY, Some(SECP384R1)) => {
                &sig::ECDSA_P384_SHA256_ASN1
            }
            ("1.2.840.113549.1.1.11", RSA_ENCRYPTION, _) => &sig::RSA_PKCS1_2048_8192_SHA256,
            ("1.2.840.113549.1.1.12", RSA_ENCRYPTION, _) => &sig::RSA_PKCS1_2048_8192_SHA384,
            ("1.2.840.113549.1.1.13", RSA_ENCRYPTION, _) => &sig::RSA_PKCS1_2048_8192_SHA512,
            (ED25519, ED25519, _) => &sig::ED25519,
            _ => {
                return Err(SvidError::UnsupportedSignature {
                    subject: child.subject().to_string(),
                    algorithm,
                });
            }
        };
    UnparsedPublicKey::new(verifier, key.subject_public_key.data.as_ref())
        .verify(
            child.tbs_certificate.as_ref(),
            child.signature_value.data.as_ref(),
        )
        .map_err(|_| SvidError::BadSignature)
}

/// The name constraints of `ca` (at `index`) against every certificate below it: the leaf
/// and the CAs between (`lower`, positions in `candidates`). URI constraints are applied to
/// SPIFFE IDs (see [`uri_in_subtree`]), DNS constraints to DNS names; a constraint on a
/// name form this validator does not process (IP, directory name, …) refuses a
/// certificate that carries such a name.
fn check_name_constraints(
    ca: &X509Certificate<'_>,
    index: usize,
    leaf: &X509Certificate<'_>,
    candidates: &[Candidate<'_>],
    lower: &[usize],
) -> Result<(), SvidError> {
    let nc = match ca.name_constraints() {
        Ok(Some(nc)) => nc.value,
        Ok(None) => return Ok(()),
        Err(e) => {
            return Err(SvidError::Malformed {
                index,
                detail: format!("nameConstraints: {e}"),
            });
        }
    };
    let permitted: Vec<&GeneralName<'_>> = nc
        .permitted_subtrees
        .iter()
        .flatten()
        .map(|s| &s.base)
        .collect();
    let excluded: Vec<&GeneralName<'_>> = nc
        .excluded_subtrees
        .iter()
        .flatten()
        .map(|s| &s.base)
        .collect();
    let below = std::iter::once(leaf).chain(lower.iter().map(|&i| &candidates[i].cert));
    for cert in below {
        for name in names_of(cert) {
            let refused = |why: String| SvidError::NameConstraint {
                index,
                subject: ca.subject().to_string(),
                name: display_name(&name),
                why,
            };
            let of_form: Vec<&&GeneralName<'_>> =
                permitted.iter().filter(|c| same_form(c, &name)).collect();
            if !of_form.is_empty() && !of_form.iter().any(|c| within(c, &name) == Some(true)) {
                return Err(refused("not within any permitted subtree".into()));
            }
            for c in excluded.iter().filter(|c| same_form(c, &name)) {
                if within(c, &name) != Some(false) {
                    return Err(refused(format!(
                        "within excluded subtree {}",
                        display_name(c)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The names a certificate carries that name constraints apply to.
fn names_of<'a>(cert: &'a X509Certificate<'a>) -> Vec<GeneralName<'a>> {
    let mut names: Vec<GeneralName<'a>> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        _ => Vec::new(),
    };
    if cert.subject().iter().next().is_some() {
        names.push(GeneralName::DirectoryName(cert.subject().clone()));
    }
    names
}

fn same_form(a: &GeneralName<'_>, b: &GeneralName<'_>) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Whether `name` is within the subtree `constraint` (same form): `None` when this
/// validator does not process the form, which refuses the name either way.
fn within(constraint: &GeneralName<'_>, name: &GeneralName<'_>) -> Option<bool> {
    match (constraint, name) {
        (GeneralName::URI(c), GeneralName::URI(uri)) => uri_in_subtree(c, uri),
        (GeneralName::DNSName(c), GeneralName::DNSName(host)) => Some(dns_in_subtree(c, host)),
        _ => None,
    }
}

/// A URI name constraint applied to a SPIFFE ID. Two spellings are understood:
/// - RFC 5280's host form, on the trust domain: `example.org` is that trust domain only,
///   `.example.org` any trust domain below it;
/// - a SPIFFE ID prefix, `spiffe://example.org[/path]`: the ID itself or any ID below it
///   (by whole path segments).
///
/// A URI that is not a SPIFFE ID is outside every subtree (`None`: unprocessed).
pub(crate) fn uri_in_subtree(constraint: &str, uri: &str) -> Option<bool> {
    let id = parse_spiffe_id(uri).ok()?;
    // Trust domains are lower case; a constraint written otherwise means the same names.
    let lowered;
    let constraint = match constraint.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((host, path)) => {
                lowered = format!(
                    "{}://{}/{path}",
                    scheme.to_ascii_lowercase(),
                    host.to_ascii_lowercase()
                );
                lowered.as_str()
            }
            None => {
                lowered = format!(
                    "{}://{}",
                    scheme.to_ascii_lowercase(),
                    rest.to_ascii_lowercase()
                );
                lowered.as_str()
            }
        },
        None => {
            lowered = constraint.to_ascii_lowercase();
            lowered.as_str()
        }
    };
    let td = id.trust_domain().to_string();
    let td = td.strip_prefix("spiffe://").unwrap_or(&td);
    if let Some(prefix) = constraint.strip_prefix("spiffe://") {
        let prefix = prefix.trim_end_matches('/');
        let full = uri.strip_prefix("spiffe://").unwrap_or(uri);
        let under = full == prefix
            || full
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        return Some(under);
    }
    Some(match constraint.strip_prefix('.') {
        Some(suffix) => td.len() > suffix.len() && td.ends_with(&format!(".{suffix}")),
        None => td.eq_ignore_ascii_case(constraint),
    })
}

/// RFC 5280 §4.2.1.10 for DNS names: the constraint itself or any name made by adding
/// labels to its left.
fn dns_in_subtree(constraint: &str, host: &str) -> bool {
    let c = constraint.trim_start_matches('.').to_ascii_lowercase();
    let h = host.to_ascii_lowercase();
    c.is_empty() || h == c || h.ends_with(&format!(".{c}"))
}

fn display_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::IPAddress(_) => "an IP address".into(),
        GeneralName::DirectoryName(dn) => format!("DirName:{dn}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        _ => "a name of another form".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_constraints_on_spiffe_ids() {
        let id = "spiffe://example.org/ns/a/sa/b";
        assert_eq!(uri_in_subtree("spiffe://example.org", id), Some(true));
        assert_eq!(uri_in_subtree("spiffe://example.org/", id), Some(true));
        assert_eq!(uri_in_subtree("spiffe://example.org/ns/a", id), Some(true));
        assert_eq!(
            uri_in_subtree("spiffe://example.org/ns/ab", id),
            Some(false)
        );
        assert_eq!(uri_in_subtree("spiffe://example.com", id), Some(false));
        assert_eq!(uri_in_subtree("spiffe://example.org.evil", id), Some(false));
        assert_eq!(uri_in_subtree("example.org", id), Some(true));
        assert_eq!(uri_in_subtree("EXAMPLE.org", id), Some(true));
        assert_eq!(uri_in_subtree(".example.org", id), Some(false));
        assert_eq!(
            uri_in_subtree(".example.org", "spiffe://eu.example.org/x"),
            Some(true)
        );
        assert_eq!(
            uri_in_subtree(".example.org", "spiffe://evilexample.org/x"),
            Some(false)
        );
        assert_eq!(uri_in_subtree("example.org", "https://example.org/x"), None);
        assert_eq!(
            uri_in_subtree(".EXAMPLE.org", "spiffe://eu.example.org/x"),
            Some(true),
            "constraints are read in lower case"
        );
        assert_eq!(uri_in_subtree("SPIFFE://Example.ORG/ns/a", id), Some(true));
    }

    #[test]
    fn dns_constraints_add_labels_on_the_left() {
        assert!(dns_in_subtree("example.org", "example.org"));
        assert!(dns_in_subtree("example.org", "a.b.example.org"));
        assert!(dns_in_subtree(".example.org", "a.example.org"));
        assert!(!dns_in_subtree("example.org", "badexample.org"));
    }
}
