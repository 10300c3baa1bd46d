//! SPIFFE IDs as ward accepts them: the `spiffe` crate's types, held to the strict reading
//! of the SPIFFE ID spec.
//!
//! The `spiffe` crate is lenient in two places that matter for a zero-trust mesh: it accepts
//! an upper-case scheme or trust domain (folding them to lower case) and it does not bound
//! the length of a parsed ID. Two spellings of one identity are a policy-bypass waiting to
//! happen, so every ID that enters ward from a certificate, a flag or a file goes through
//! [`parse_spiffe_id`], which refuses both, and then delegates the grammar to the crate.

use std::fmt;

pub use spiffe::{SpiffeId, TrustDomain};

/// Longest SPIFFE ID accepted, in bytes, including the `spiffe://` prefix (SPIFFE ID spec
/// §2.3: implementations must support 2048 bytes and should not generate longer ones).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Longest trust domain name accepted, in bytes (SPIFFE ID spec §2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";

/// Why a string is not a SPIFFE ID (or trust domain) ward accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IdError {
    #[error("SPIFFE ID must start with \"spiffe://\" in lower case")]
    Scheme,
    #[error("SPIFFE ID is {len} bytes; the limit is {MAX_SPIFFE_ID_LEN}")]
    TooLong { len: usize },
    #[error("trust domain must be lower case (letters a-z, digits, '.', '-', '_')")]
    UpperCaseTrustDomain,
    #[error("{0}")]
    Grammar(#[from] spiffe::SpiffeIdError),
    #[error(
        "SPIFFE ID {id} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    NotWorkload { id: String },
}

/// Parses a SPIFFE ID strictly: lower-case `spiffe://` scheme and trust domain, at most
/// [`MAX_SPIFFE_ID_LEN`] bytes, and the spec's grammar (no empty, `.` or `..` segment, no
/// trailing slash, no query, fragment, port or userinfo, segment characters
/// `[A-Za-z0-9.-_]`).
pub fn parse_spiffe_id(s: &str) -> Result<SpiffeId, IdError> {
    if s.len() > MAX_SPIFFE_ID_LEN {
        return Err(IdError::TooLong { len: s.len() });
    }
    let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(IdError::Scheme)?;
    let trust_domain = rest.split('/').next().unwrap_or_default();
    if trust_domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(IdError::UpperCaseTrustDomain);
    }
    Ok(SpiffeId::new(s)?)
}

/// Parses a trust domain name (`example.org`), strictly lower case. A `spiffe://` prefix is
/// accepted and ignored, as in the spec's trust-domain ID form.
pub fn parse_trust_domain(s: &str) -> Result<TrustDomain, IdError> {
    let name = s.strip_prefix(SCHEME_PREFIX).unwrap_or(s);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(IdError::UpperCaseTrustDomain);
    }
    if name.contains('/') {
        return Err(IdError::Grammar(spiffe::SpiffeIdError::BadTrustDomainChar));
    }
    Ok(TrustDomain::new(name)?)
}

/// The identity of a Kubernetes-style workload: `ns/<namespace>/sa/<service-account>`, the
/// convention Istio and Linkerd share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadIdentity {
    pub namespace: String,
    pub service_account: String,
}

impl WorkloadIdentity {
    /// Reads the namespace and service account out of `spiffe://td/ns/N/sa/S`.
    pub fn from_spiffe_id(id: &SpiffeId) -> Result<Self, IdError> {
        let not_workload = || IdError::NotWorkload { id: id.to_string() };
        let mut segments = id
            .path()
            .strip_prefix('/')
            .ok_or_else(not_workload)?
            .split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Ok(Self {
                namespace: ns.to_owned(),
                service_account: sa.to_owned(),
            }),
            _ => Err(not_workload()),
        }
    }

    /// Builds `spiffe://<td>/ns/<namespace>/sa/<service-account>`, validating both names as
    /// SPIFFE path segments.
    pub fn spiffe_id(&self, trust_domain: &TrustDomain) -> Result<SpiffeId, IdError> {
        Ok(SpiffeId::from_segments(
            trust_domain.clone(),
            &["ns", &self.namespace, "sa", &self.service_account],
        )?)
    }
}

impl fmt::Display for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

/// Shorthand for [`WorkloadIdentity::spiffe_id`].
pub fn workload_id(
    trust_domain: &TrustDomain,
    namespace: &str,
    service_account: &str,
) -> Result<SpiffeId, IdError> {
    WorkloadIdentity {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
    }
    .spiffe_id(trust_domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: input, and whether ward accepts it as a SPIFFE ID. The rules come from the
    /// SPIFFE ID spec (§2 scheme and trust domain, §2.2 path, §2.3 length).
    #[test]
    fn spiffe_id_table() {
        let long_path = format!("spiffe://example.org/{}", "a".repeat(2048 - 21));
        let too_long = format!("{long_path}b");
        let long_td = format!("spiffe://{}/x", "a".repeat(255));
        let too_long_td = format!("spiffe://{}/x", "a".repeat(256));
        let cases: &[(&str, bool)] = &[
            ("spiffe://example.org/ns/default/sa/web", true),
            ("spiffe://example.org", true),
            ("spiffe://example.org/a", true),
            ("spiffe://my-domain_1.example.org/A.b-c_d/0", true),
            ("spiffe://example.org/.well", true),
            ("spiffe://example.org/...", true),
            // scheme
            ("", false),
            ("example.org/ns/default", false),
            ("http://example.org/ns/default", false),
            ("SPIFFE://example.org/ns/default", false),
            ("Spiffe://example.org/ns/default", false),
            ("spiffe:/example.org/ns", false),
            ("spiffe:example.org/ns", false),
            // trust domain
            ("spiffe://", false),
            ("spiffe:///ns/default", false),
            ("spiffe://Example.org/ns/default", false),
            ("spiffe://EXAMPLE.ORG", false),
            ("spiffe://exa mple.org/a", false),
            ("spiffe://exämple.org/a", false),
            ("spiffe://example.org:8443/a", false),
            ("spiffe://user@example.org/a", false),
            ("spiffe://user:pw@example.org/a", false),
            ("spiffe://example.org%2f/a", false),
            // path segments
            ("spiffe://example.org/", false),
            ("spiffe://example.org/a/", false),
            ("spiffe://example.org//a", false),
            ("spiffe://example.org/a//b", false),
            ("spiffe://example.org/.", false),
            ("spiffe://example.org/..", false),
            ("spiffe://example.org/a/./b", false),
            ("spiffe://example.org/a/../b", false),
            ("spiffe://example.org/a b", false),
            ("spiffe://example.org/a%20b", false),
            ("spiffe://example.org/a+b", false),
            ("spiffe://example.org/a:b", false),
            ("spiffe://example.org/ü", false),
            // query, fragment
            ("spiffe://example.org/a?x=1", false),
            ("spiffe://example.org/a#frag", false),
            ("spiffe://example.org?x=1", false),
            ("spiffe://example.org#frag", false),
            // lengths
            (&long_path, true),
            (&too_long, false),
            (&long_td, true),
            (&too_long_td, false),
        ];
        for (input, ok) in cases {
            let got = parse_spiffe_id(input);
            assert_eq!(got.is_ok(), *ok, "{input:?} -> {got:?}");
            if let Ok(id) = got {
                assert_eq!(id.to_string(), *input, "round trip of {input:?}");
            }
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let msg = |s: &str| parse_spiffe_id(s).unwrap_err().to_string();
        assert!(msg("https://x/y").contains("spiffe://"));
        assert!(msg("spiffe://X.org/y").contains("lower case"));
        assert!(msg("spiffe://x.org/a/").contains("trailing slash"));
        assert!(msg("spiffe://x.org/a/../b").contains("dot segments"));
        assert!(msg("spiffe://x.org/a//b").contains("empty segments"));
        assert!(msg(&format!("spiffe://x.org/{}", "a".repeat(3000))).contains("limit is 2048"));
    }

    #[test]
    fn trust_domain_table() {
        let cases: &[(&str, bool)] = &[
            ("example.org", true),
            ("spiffe://example.org", true),
            ("a_b-c.0", true),
            ("", false),
            ("Example.org", false),
            ("example.org/path", false),
            ("example.org:443", false),
            ("exa mple", false),
        ];
        for (input, ok) in cases {
            assert_eq!(parse_trust_domain(input).is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn workload_identity_round_trip() {
        let td = parse_trust_domain("bank.example").unwrap();
        let id = workload_id(&td, "web", "frontend").unwrap();
        assert_eq!(id.to_string(), "spiffe://bank.example/ns/web/sa/frontend");
        let w = WorkloadIdentity::from_spiffe_id(&id).unwrap();
        assert_eq!(w.namespace, "web");
        assert_eq!(w.service_account, "frontend");
        assert_eq!(w.to_string(), "ns/web/sa/frontend");
    }

    #[test]
    fn workload_identity_refuses_other_shapes() {
        for s in [
            "spiffe://td",
            "spiffe://td/ns/web",
            "spiffe://td/ns/web/sa",
            "spiffe://td/ns/web/sa/x/extra",
            "spiffe://td/namespace/web/sa/x",
            "spiffe://td/ns/web/serviceaccount/x",
        ] {
            let id = parse_spiffe_id(s).unwrap();
            assert!(WorkloadIdentity::from_spiffe_id(&id).is_err(), "{s}");
        }
        let td = parse_trust_domain("td").unwrap();
        assert!(workload_id(&td, "a/b", "x").is_err());
        assert!(workload_id(&td, "..", "x").is_err());
        assert!(workload_id(&td, "", "x").is_err());
    }
}
