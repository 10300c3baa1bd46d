//! The canonical facts of an HTTP request, as the sidecar judges them and forwards them, and
//! as `ward policy check` describes them — one place, so the two never disagree.
//!
//! A rule is only as good as the value it is matched against: if the app reads a request
//! differently from the matcher (another case, another spelling of the host, a second
//! header line), a DENY is sidestepped. So what has more than one spelling is either
//! brought to one canonical form before matching (and the app is sent that form), or
//! refused with 400:
//! - methods: any lower-case letter is refused. RFC 9110 methods are case-sensitive, but
//!   frameworks upper-case them, so `delete` would reach a `DELETE` handler unjudged.
//! - authorities: lower case, no trailing dot, the port split off; userinfo, percent
//!   signs and characters outside a host name are refused.
//! - header names with `_` are refused unless allowed (CGI-style apps read `x_role` as
//!   `x-role`).
//!
//! [`Incoming::admit`] applies all of it, with path normalization, in one order: the
//! sidecar admits every request through it and `ward policy check`/`test` describe theirs
//! through it, so the CLI refuses and decides exactly as the sidecar does.

use std::fmt;

/// Why a request is refused before authorization (the caller gets 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// A method spelled with lower-case letters (`delete`, `Get`).
    MethodNotUpperCase(String),
    /// An authority with `user@` in it.
    Userinfo,
    /// An authority that is not `host[:port]` with a valid host name or IP literal.
    BadAuthority(String),
    /// More than one `Host` header, or a `Host` that names another host than `:authority`.
    ConflictingHost,
    /// A header name with `_`.
    HeaderUnderscore(String),
    /// CONNECT: a tunnel, which no policy could judge.
    Connect,
    /// A path that does not normalize.
    Path(crate::path::PathError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::MethodNotUpperCase(m) => {
                write!(
                    f,
                    "method {m:?} is not upper case (methods are judged as sent)"
                )
            }
            RequestError::Userinfo => f.write_str("authority carries userinfo (user@host)"),
            RequestError::BadAuthority(a) => write!(f, "authority {a:?} is not host[:port]"),
            RequestError::ConflictingHost => {
                f.write_str("more than one Host, or Host differs from the request's authority")
            }
            RequestError::HeaderUnderscore(n) => write!(f, "header name {n:?} contains '_'"),
            RequestError::Connect => f.write_str("CONNECT is not carried"),
            RequestError::Path(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Refuses a method with any lower-case letter; policies name methods in upper case, and
/// what is judged is what the app is sent.
pub fn check_method(method: &str) -> Result<(), RequestError> {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(RequestError::MethodNotUpperCase(method.to_owned()));
    }
    Ok(())
}

/// Refuses a header name with `_` (unless `allow` is set).
pub fn check_header_name(name: &str, allow_underscores: bool) -> Result<(), RequestError> {
    if !allow_underscores && name.contains('_') {
        return Err(RequestError::HeaderUnderscore(name.to_owned()));
    }
    Ok(())
}

/// A request's authority in canonical form: the host in lower case without a trailing dot
/// (IPv6 literals keep their brackets), and the port it names or the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: u16,
    /// The scheme's default port, which the canonical text leaves out.
    pub default_port: u16,
}

impl Authority {
    /// Parses `host[:port]`; `default_port` is the scheme's (80 for `http`).
    pub fn parse(raw: &str, default_port: u16) -> Result<Self, RequestError> {
        let bad = || RequestError::BadAuthority(raw.to_owned());
        if raw.contains('@') {
            return Err(RequestError::Userinfo);
        }
        let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
            let (literal, after) = rest.split_once(']').ok_or_else(bad)?;
            let valid = !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !valid {
                return Err(bad());
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (format!("[{}]", literal.to_ascii_lowercase()), port)
        } else {
            let (host, port) = match raw.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (raw, None),
            };
            let host = host.strip_suffix('.').unwrap_or(host);
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~'))
            };
            if host.is_empty() || !host.split('.').all(label_ok) {
                return Err(bad());
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            // `host:` names the default port (RFC 3986 §3.2.3).
            None | Some("") => default_port,
            Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host,
            port,
            default_port,
        })
    }

    /// What the app is sent: `host`, or `host:port` when the port is not the default.
    pub fn canonical(&self) -> String {
        if self.port == self.default_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// A request as it arrived, before anything about it is judged.
pub struct Incoming<'a, H, N> {
    pub method: &'a str,
    /// The path of the request target, without the query.
    pub path: &'a str,
    /// The authority of the request target (absolute form, or HTTP/2 `:authority`).
    pub target_authority: Option<&'a [u8]>,
    /// Every `Host` header line.
    pub hosts: H,
    /// The scheme's default port: 443 for an `https` target, else 80.
    pub default_port: u16,
    /// Every header name.
    pub header_names: N,
    pub allow_header_underscores: bool,
}

/// What admission found: the facts a decision is made on and the request is forwarded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The normalized path.
    pub path: String,
    /// The canonical authority, from the target or else `Host`.
    pub authority: Option<Authority>,
}

impl<'a, H, N> Incoming<'a, H, N>
where
    H: Iterator<Item = &'a [u8]>,
    N: Iterator<Item = &'a str>,
{
    /// Request hygiene, in the order the sidecar applies it: the method's spelling,
    /// CONNECT, header names, the path, then the authority (one `Host` at most, agreeing
    /// with the target's).
    pub fn admit(self) -> Result<Admitted, RequestError> {
        check_method(self.method)?;
        if self.method == "CONNECT" {
            return Err(RequestError::Connect);
        }
        for name in self.header_names {
            check_header_name(name, self.allow_header_underscores)?;
        }
        let path = crate::path::normalize_path(self.path).map_err(RequestError::Path)?;
        let mut hosts = self.hosts;
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(RequestError::ConflictingHost);
        }
        let parse = |raw: &[u8]| {
            let text = std::str::from_utf8(raw)
                .map_err(|_| RequestError::BadAuthority(String::from_utf8_lossy(raw).into()))?;
            Authority::parse(text, self.default_port)
        };
        let from_target = self.target_authority.map(parse).transpose()?;
        let from_host = host.map(parse).transpose()?;
        let authority = match (from_target, from_host) {
            (Some(a), Some(h)) if a != h => return Err(RequestError::ConflictingHost),
            (a, h) => a.or(h),
        };
        Ok(Admitted { path, authority })
    }
}

/// The elements of a header value read as a comma-separated list (RFC 9110 §5.6.1), each
/// without the optional whitespace around it.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_judged_only_in_upper_case() {
        assert!(check_method("DELETE").is_ok());
        assert!(check_method("PURGE").is_ok());
        assert!(check_method("M-SEARCH").is_ok());
        for m in ["delete", "Delete", "dELETE", "get", "purge"] {
            assert_eq!(
                check_method(m),
                Err(RequestError::MethodNotUpperCase(m.into()))
            );
        }
    }

    #[test]
    fn every_spelling_of_a_host_is_one_authority() {
        let canonical = |raw: &str| Authority::parse(raw, 80).map(|a| (a.host.clone(), a.port));
        let internal = Ok(("internal.example.org".to_owned(), 80));
        for raw in [
            "internal.example.org",
            "internal.example.org:80",
            "internal.example.org.",
            "internal.example.org.:80",
            "INTERNAL.Example.ORG",
            "internal.example.org:",
            "internal.example.org:00080",
        ] {
            assert_eq!(canonical(raw), internal, "{raw}");
        }
        assert_eq!(
            canonical("internal.example.org:443"),
            Ok(("internal.example.org".into(), 443))
        );
        assert_eq!(canonical("[::1]:8080"), Ok(("[::1]".into(), 8080)));
        assert_eq!(canonical("[FE80::1]"), Ok(("[fe80::1]".into(), 80)));
        assert_eq!(canonical("10.0.0.1:9"), Ok(("10.0.0.1".into(), 9)));
    }

    #[test]
    fn what_is_not_a_host_is_refused() {
        assert_eq!(
            Authority::parse("user:pw@internal.example.org", 80),
            Err(RequestError::Userinfo)
        );
        assert_eq!(
            Authority::parse("@internal.example.org", 80),
            Err(RequestError::Userinfo)
        );
        for raw in [
            "",
            ":80",
            "intern%61l.example.org",
            "internal..example.org",
            "internal.example.org..",
            "a b",
            "a,b",
            "a/b",
            "internal.example.org:http",
            "internal.example.org:65536",
            "internal.example.org:0",
            "internal.example.org:123456",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "bücher.example",
            "a;b",
        ] {
            assert!(
                matches!(
                    Authority::parse(raw, 80),
                    Err(RequestError::BadAuthority(_))
                ),
                "{raw:?} must be refused"
            );
        }
    }

    #[test]
    fn the_canonical_form_drops_only_the_default_port() {
        let a = Authority::parse("API.example.org.:80", 80).unwrap();
        assert_eq!(a.canonical(), "api.example.org");
        let a = Authority::parse("api.example.org:8443", 80).unwrap();
        assert_eq!(a.canonical(), "api.example.org:8443");
        let a = Authority::parse("api.example.org:443", 443).unwrap();
        assert_eq!(a.to_string(), "api.example.org");
    }

    #[test]
    fn list_elements_are_trimmed() {
        let e: Vec<_> = list_elements(b"eu-1, us-1 ,\tx").collect();
        assert_eq!(e, vec![&b"eu-1"[..], b"us-1", b"x"]);
    }

    fn admit<'a>(
        method: &'a str,
        path: &'a str,
        target: Option<&'a str>,
        hosts: &'a [&'a str],
        names: &'a [&'a str],
    ) -> Result<Admitted, RequestError> {
        Incoming {
            method,
            path,
            target_authority: target.map(str::as_bytes),
            hosts: hosts.iter().map(|h| h.as_bytes()),
            default_port: 80,
            header_names: names.iter().copied(),
            allow_header_underscores: false,
        }
        .admit()
    }

    #[test]
    fn admission_refuses_in_one_order_and_gives_the_facts_judged() {
        let ok = admit(
            "GET",
            "/a/./b/../c",
            None,
            &["API.example.org:80"],
            &["x-a"],
        )
        .unwrap();
        assert_eq!(ok.path, "/a/c");
        assert_eq!(ok.authority.unwrap().canonical(), "api.example.org");
        let target = admit("GET", "/", Some("a.example"), &["A.EXAMPLE."], &[]).unwrap();
        assert_eq!(target.authority.unwrap().host, "a.example");
        assert_eq!(admit("GET", "/", None, &[], &[]).unwrap().authority, None);
        // The first rule broken is the one reported.
        assert!(matches!(
            admit("get", "/%2e%2e/x", None, &["a", "b"], &["x_y"]),
            Err(RequestError::MethodNotUpperCase(_))
        ));
        assert_eq!(
            admit("CONNECT", "/", None, &[], &[]),
            Err(RequestError::Connect)
        );
        assert!(matches!(
            admit("GET", "/", None, &[], &["x_role"]),
            Err(RequestError::HeaderUnderscore(_))
        ));
        assert!(matches!(
            admit("GET", "/a/%2F", None, &[], &[]),
            Err(RequestError::Path(_))
        ));
        assert_eq!(
            admit("GET", "/", None, &["a", "a"], &[]),
            Err(RequestError::ConflictingHost)
        );
        assert_eq!(
            admit("GET", "/", Some("a"), &["b"], &[]),
            Err(RequestError::ConflictingHost)
        );
        assert_eq!(
            admit("GET", "/", None, &["u@a"], &[]),
            Err(RequestError::Userinfo)
        );
    }

    #[test]
    fn underscores_in_header_names_are_refused_unless_allowed() {
        assert!(check_header_name("x-role", false).is_ok());
        assert!(check_header_name("x_role", false).is_err());
        assert!(check_header_name("x_role", true).is_ok());
    }
}
