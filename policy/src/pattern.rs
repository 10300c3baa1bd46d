//! String patterns in policies: exact, `prefix*`, `*suffix`, or `*` alone.
//!
//! A `*` anywhere else is refused when the policy is loaded rather than read literally,
//! because `/api/*/admin` looks like a glob and would silently match nothing.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::{PathTemplate, RequestAuth};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty pattern".into());
        }
        if s == "*" {
            return Ok(Pattern::Any);
        }
        let (body, make): (&str, fn(String) -> Pattern) = if let Some(rest) = s.strip_prefix('*') {
            (rest, Pattern::Suffix)
        } else if let Some(rest) = s.strip_suffix('*') {
            (rest, Pattern::Prefix)
        } else {
            (s, Pattern::Exact)
        };
        if body.contains('*') {
            return Err(format!(
                "pattern {s:?}: '*' may only stand alone, first or last"
            ));
        }
        Ok(make(body.to_owned()))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => value == e,
            Pattern::Prefix(p) => value.starts_with(p.as_str()),
            Pattern::Suffix(s) => value.ends_with(s.as_str()),
        }
    }

    /// Matches raw bytes (header values, which need not be UTF-8): the same rules,
    /// byte for byte.
    pub fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => value == e.as_bytes(),
            Pattern::Prefix(p) => value.starts_with(p.as_bytes()),
            Pattern::Suffix(s) => value.ends_with(s.as_bytes()),
        }
    }

    /// Case-insensitive match.
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        let fold = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => fold(value, e),
            Pattern::Prefix(p) => {
                value.len() >= p.len()
                    && fold(&value[..p.len()], p)
                    && value.is_char_boundary(p.len())
            }
            Pattern::Suffix(s) => {
                let at = value.len().wrapping_sub(s.len());
                value.len() >= s.len() && value.is_char_boundary(at) && fold(&value[at..], s)
            }
        }
    }

    /// The literal part of the pattern.
    pub fn text(&self) -> &str {
        match self {
            Pattern::Any => "",
            Pattern::Exact(s) | Pattern::Prefix(s) | Pattern::Suffix(s) => s,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(s) => f.write_str(s),
            Pattern::Prefix(s) => write!(f, "{s}*"),
            Pattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// Each pattern is written back as it is read (`prefix*`, `*suffix`, `*`, exact).
macro_rules! serialize_as_written {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_written!(
    Pattern,
    PrincipalPattern,
    PathPattern,
    HostPattern,
    RequestPrincipal
);

impl fmt::Display for RequestPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Plain(p) => p.fmt(f),
            PathPattern::Template(t) => t.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A principal pattern: an exact SPIFFE ID (checked), a `spiffe://…` prefix, a suffix, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalPattern(pub Pattern);

impl<'de> Deserialize<'de> for PrincipalPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        let pattern = Pattern::parse(&s).map_err(D::Error::custom)?;
        match &pattern {
            Pattern::Exact(id) => {
                ward_certs::parse_spiffe_id(id)
                    .map_err(|e| D::Error::custom(format!("bad SPIFFE ID {id:?}: {e}")))?;
            }
            Pattern::Prefix(p) if !p.starts_with("spiffe://") => {
                return Err(D::Error::custom(format!(
                    "principal prefix {s:?} must start with spiffe://"
                )));
            }
            _ => {}
        }
        Ok(PrincipalPattern(pattern))
    }
}

/// A request principal pattern (`ISSUER/SUBJECT`): exact, `prefix*`, `*suffix` or `*` (any
/// verified end user, with or without `sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPrincipal(pub Pattern);

impl<'de> Deserialize<'de> for RequestPrincipal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        let pattern = Pattern::parse(&s).map_err(D::Error::custom)?;
        if let Pattern::Exact(p) = &pattern
            && !p.contains('/')
        {
            return Err(D::Error::custom(format!(
                "request principal {s:?} must be ISSUER/SUBJECT (or a pattern of it)"
            )));
        }
        Ok(Self(pattern))
    }
}

/// A path pattern: like [`Pattern`], and an exact or prefix path must start with `/`; or a
/// claim-bound template (see [`PathTemplate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Plain(Pattern),
    Template(PathTemplate),
}

impl PathPattern {
    /// The plain pattern, if this is not a template.
    pub fn plain(&self) -> Option<&Pattern> {
        match self {
            PathPattern::Plain(p) => Some(p),
            PathPattern::Template(_) => None,
        }
    }

    /// Whether a normalized path matches; `None` when a template needs an end user (or one
    /// of their claims) that the request does not have.
    pub fn matches(&self, path: &str, auth: Option<&RequestAuth<'_>>) -> Option<bool> {
        match self {
            PathPattern::Plain(p) => Some(p.matches(path)),
            PathPattern::Template(t) => t.matches(path, auth),
        }
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        if let Some(t) = PathTemplate::parse(&s).map_err(D::Error::custom)? {
            return Ok(PathPattern::Template(t));
        }
        let pattern = Pattern::parse(&s).map_err(D::Error::custom)?;
        if let Pattern::Exact(p) | Pattern::Prefix(p) = &pattern
            && !p.starts_with('/')
        {
            return Err(D::Error::custom(format!("path {s:?} must start with '/'")));
        }
        Ok(PathPattern::Plain(pattern))
    }
}

/// A host pattern: a [`Pattern`] on the canonical host (lower case, no trailing dot; see
/// [`crate::request::Authority`]) and, if written as `host:port`, the port. Without a port
/// it matches the host on any port, so `:80`, `:443` or no port at all are judged alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: Pattern,
    pub port: Option<u16>,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let (host, port) = match lower.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("host {s:?}: port {p:?} is not 1-65535"))?;
                (h, Some(port))
            }
            _ => (lower.as_str(), None),
        };
        if host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || matches!(b, b'@' | b'/' | b'%' | b',' | b';'))
        {
            return Err(format!("host {s:?} is not a host name pattern"));
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        Ok(Self {
            host: Pattern::parse(host).map_err(|e| format!("host {s:?}: {e}"))?,
            port,
        })
    }

    pub fn matches(&self, authority: &crate::request::Authority) -> bool {
        self.host.matches(&authority.host) && self.port.is_none_or(|p| p == authority.port)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let cases = [
            ("*", "anything", true),
            ("/a", "/a", true),
            ("/a", "/ab", false),
            ("/a/*", "/a/b/c", true),
            ("/a/*", "/a", false),
            ("*.json", "/x/y.json", true),
            ("*.json", "/x/y.jsonp", false),
        ];
        for (p, v, want) in cases {
            assert_eq!(Pattern::parse(p).unwrap().matches(v), want, "{p} ~ {v}");
        }
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("/a/*/b").is_err());
        assert!(Pattern::parse("**").is_err());
        assert_eq!(Pattern::parse("/a*").unwrap().to_string(), "/a*");
    }

    #[test]
    fn host_patterns_match_the_canonical_host_on_any_or_one_port() {
        use crate::request::Authority;
        let a = |raw: &str| Authority::parse(raw, 80).unwrap();
        let p = HostPattern::parse("Internal.Example.org.").unwrap();
        for raw in [
            "internal.example.org",
            "INTERNAL.example.org.:80",
            "internal.example.org:443",
        ] {
            assert!(p.matches(&a(raw)), "{raw}");
        }
        assert!(!p.matches(&a("internal.example.org.evil")));
        let p = HostPattern::parse("*.example.org:8080").unwrap();
        assert!(p.matches(&a("api.EXAMPLE.org:8080")));
        assert!(!p.matches(&a("api.example.org")));
        let p = HostPattern::parse("api.example.org:80").unwrap();
        assert!(
            p.matches(&a("api.example.org")),
            "no port is the default port"
        );
        assert!(HostPattern::parse("a@b").is_err());
        assert!(HostPattern::parse("a:0").is_err());
        assert!(HostPattern::parse("a:70000").is_err());
        assert_eq!(HostPattern::parse("[::1]").unwrap().port, None);
        assert_eq!(
            HostPattern::parse("[::1]:9").unwrap().to_string(),
            "[::1]:9"
        );
    }

    #[test]
    fn byte_matching_never_drops_non_utf8_values() {
        let p = Pattern::parse("adm*").unwrap();
        assert!(p.matches_bytes(b"adm\xe9n"));
        assert!(!p.matches_bytes(b"\xe9adm"));
        assert!(Pattern::Any.matches_bytes(b"\xff"));
    }

    #[test]
    fn case_insensitive_matching_respects_char_boundaries() {
        let p = Pattern::parse("EU-*").unwrap();
        assert!(p.matches_ignore_case("eu-west"));
        assert!(!p.matches_ignore_case("us-west"));
        assert!(!p.matches_ignore_case("é"));
        let s = Pattern::parse("*.Example.org").unwrap();
        assert!(s.matches_ignore_case("api.example.ORG"));
        assert!(!s.matches_ignore_case("ü"));
    }
}
