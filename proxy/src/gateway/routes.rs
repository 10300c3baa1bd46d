//! The gateway's routes: which requests (host, path) go to which mesh service, in the
//! order written; the first that matches takes the request, and a request no route takes
//! is 404. Paths are matched after the same normalization as policy, so `/public/../admin`
//! is routed (and judged) as `/admin`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use ward_certs::SpiffeId;

use crate::resolve::Destination;

/// How a route matches the path: written `{ prefix: P }`, `{ exact: P }` or `{ template: T }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "PathFields")]
pub enum PathMatch {
    /// The path is this, or continues it by whole segments (`/api` takes `/api` and
    /// `/api/x`, never `/apix`; `/api/` takes `/api/` and below).
    Prefix(String),
    /// Exactly this path.
    Exact(String),
    /// Segments where `{NAME}` is any one non-empty segment; a last `/*` takes any rest.
    Template(String),
}

/// The written form of [`PathMatch`]: exactly one field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathFields {
    prefix: Option<String>,
    exact: Option<String>,
    template: Option<String>,
}

impl TryFrom<PathFields> for PathMatch {
    type Error = String;

    fn try_from(f: PathFields) -> Result<Self, String> {
        match (f.prefix, f.exact, f.template) {
            (Some(p), None, None) => Ok(PathMatch::Prefix(p)),
            (None, Some(p), None) => Ok(PathMatch::Exact(p)),
            (None, None, Some(t)) => Ok(PathMatch::Template(t)),
            _ => Err("a path is one of { prefix: P }, { exact: P }, { template: T }".into()),
        }
    }
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".to_owned())
    }
}

/// Whether a route needs an end user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Authentication {
    /// A valid token is required: none is 401 with `WWW-Authenticate`.
    #[default]
    Required,
    /// A token is checked if present (an invalid one is 401); none is an anonymous call.
    Optional,
    /// No token is read; policy sees an anonymous call.
    None,
}

/// One route: which requests (host, path), where they go in the mesh, and how.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `api.example.com` or `*.example.com`; any host if absent.
    #[serde(default)]
    pub host: Option<String>,
    /// `{ prefix: /accounts/ }` (default `/`), `{ exact: /health }` or `{ template:
    /// /accounts/{id}/balance }` (a `{NAME}` is any one segment; a last `/*` any rest).
    #[serde(default)]
    pub path: PathMatch,
    /// The mesh service's sidecar (its inbound listener), with `server_identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<SocketAddr>,
    /// The only identity it may present (with `service`: the identity discovery must name
    /// for it, if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_identity: Option<String>,
    /// Instead of `upstream`: the address apps dial for the service; the control plane's
    /// discovery says which sidecar serves it and who that is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<SocketAddr>,
    #[serde(default)]
    pub authentication: Authentication,
    /// Pass the end user's token on (it is removed by default: the mesh gets the verified
    /// claims instead).
    #[serde(default)]
    pub forward_token: bool,
    /// How long to wait for the response head (default `limits.request_timeout`).
    #[serde(default, with = "optional_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub request_headers: HeaderRewrite,
    /// The gateway's `rate_limits` (by name) each request here takes a token from.
    #[serde(default)]
    pub rate_limits: Vec<String>,
}

/// Headers set (replacing any the client sent) or removed before the request is sent on.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRewrite {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

mod optional_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => crate::config::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        crate::config::duration::deserialize(d).map(Some)
    }
}

#[derive(Debug, Clone)]
enum CompiledPath {
    Prefix(String),
    Exact(String),
    /// `None` segments are placeholders.
    Template(Vec<Option<String>>, bool),
}

impl CompiledPath {
    fn new(m: &PathMatch) -> Result<Self, String> {
        let normal =
            |p: &str| ward_policy::normalize_path(p).map_err(|e| format!("path {p:?}: {e}"));
        Ok(match m {
            PathMatch::Prefix(p) => CompiledPath::Prefix(normal(p)?),
            PathMatch::Exact(p) => CompiledPath::Exact(normal(p)?),
            PathMatch::Template(t) => {
                let body = t
                    .strip_prefix('/')
                    .ok_or_else(|| format!("path template {t:?} must start with '/'"))?;
                let (body, rest) = match body.strip_suffix("/*") {
                    Some(b) => (b, true),
                    None => (body, false),
                };
                let mut segments = Vec::new();
                for seg in body.split('/') {
                    let placeholder = seg.len() > 2 && seg.starts_with('{') && seg.ends_with('}');
                    if placeholder {
                        segments.push(None);
                    } else if seg.is_empty() || seg.contains(['{', '}', '*']) {
                        return Err(format!(
                            "path template {t:?}: each segment is a name, {{NAME}}, or a last *"
                        ));
                    } else {
                        segments.push(Some(normal(&format!("/{seg}"))?[1..].to_owned()));
                    }
                }
                CompiledPath::Template(segments, rest)
            }
        })
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            CompiledPath::Exact(p) => path == p,
            CompiledPath::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || p.ends_with('/') || rest.starts_with('/')),
            CompiledPath::Template(segments, rest) => {
                let Some(mut parts) = path.strip_prefix('/').map(|p| p.split('/')) else {
                    return false;
                };
                for seg in segments {
                    match (parts.next(), seg) {
                        (Some(part), None) if !part.is_empty() => {}
                        (Some(part), Some(lit)) if part == lit => {}
                        _ => return false,
                    }
                }
                parts.next().is_some() == *rest
            }
        }
    }
}

/// A host a route takes: exact, or `*.` and a suffix (one or more labels before it).
#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    Suffix(String),
}

impl HostMatch {
    fn new(host: &str) -> Result<Self, String> {
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        };
        if let Some(suffix) = lower.strip_prefix("*.") {
            if valid(suffix) {
                return Ok(HostMatch::Suffix(format!(".{suffix}")));
            }
        } else if valid(&lower) {
            return Ok(HostMatch::Exact(lower));
        }
        Err(format!(
            "host {host:?} is not a host name or *.DOMAIN (no port)"
        ))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host == h,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// A checked route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its position in the configuration, for logs and audit (`routes[N]`).
    pub index: usize,
    host: Option<HostMatch>,
    path: CompiledPath,
    pub to: RouteTarget,
    pub authentication: Authentication,
    pub forward_token: bool,
    pub timeout: Option<Duration>,
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    pub remove_headers: Vec<HeaderName>,
    /// Indexes into the gateway's limits.
    pub limits: Vec<usize>,
}

/// Where a route's requests go.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// One sidecar, one identity.
    Fixed(Destination),
    /// Whatever discovery says serves `service`; if `identity` is given, only that.
    Discovered {
        service: SocketAddr,
        identity: Option<SpiffeId>,
    },
}

impl Route {
    /// `identity` is the route's `server_identity`, checked by the caller.
    pub fn new(config: &RouteConfig, identity: Option<SpiffeId>) -> Result<Self, String> {
        let to = match (config.upstream, config.service, identity) {
            (Some(addr), None, Some(identity)) => {
                RouteTarget::Fixed(Destination { addr, identity })
            }
            (Some(_), None, None) => return Err("upstream needs its server_identity".into()),
            (None, Some(service), identity) => RouteTarget::Discovered { service, identity },
            _ => {
                return Err(
                    "a route names upstream (with server_identity) or service, one of them".into(),
                );
            }
        };
        let host = config.host.as_deref().map(HostMatch::new).transpose()?;
        let path = CompiledPath::new(&config.path)?;
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("request_headers: {n:?} is not a header name"))
        };
        let mut set_headers = Vec::new();
        for (k, v) in &config.request_headers.set {
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("request_headers.set.{k}: not a header value"))?;
            set_headers.push((name(k)?, value));
        }
        let remove_headers = config
            .request_headers
            .remove
            .iter()
            .map(|n| name(n))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            index: 0,
            host,
            path,
            to,
            authentication: config.authentication,
            forward_token: config.forward_token,
            timeout: config.timeout,
            set_headers,
            remove_headers,
            limits: Vec::new(),
        })
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(m), Some(h)) => m.matches(h),
            (Some(_), None) => false,
        };
        host_ok && self.path.matches(path)
    }
}

/// The routes in order.
#[derive(Debug, Clone)]
pub struct Routes(Vec<Route>);

impl Routes {
    pub fn new(mut routes: Vec<Route>) -> Self {
        for (i, r) in routes.iter_mut().enumerate() {
            r.index = i;
        }
        Self(routes)
    }

    /// The first route taking a request for `host` (canonical, without port) and a
    /// normalized `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.0.iter().find(|r| r.matches(host, path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: PathMatch) -> Route {
        let config = RouteConfig {
            host: host.map(str::to_owned),
            path,
            upstream: Some("127.0.0.1:1".parse().unwrap()),
            server_identity: Some("spiffe://t/ns/a/sa/b".into()),
            service: None,
            authentication: Authentication::None,
            forward_token: false,
            timeout: None,
            request_headers: Default::default(),
            rate_limits: Vec::new(),
        };
        Route::new(
            &config,
            ward_certs::parse_spiffe_id("spiffe://t/ns/a/sa/b").ok(),
        )
        .unwrap()
    }

    #[test]
    fn prefixes_match_by_whole_segments() {
        let r = route(None, PathMatch::Prefix("/api".into()));
        assert!(r.matches(None, "/api"));
        assert!(r.matches(None, "/api/x"));
        assert!(!r.matches(None, "/apix"));
        let r = route(None, PathMatch::Prefix("/api/".into()));
        assert!(r.matches(None, "/api/x"));
        assert!(!r.matches(None, "/api"));
        assert!(route(None, PathMatch::default()).matches(None, "/anything"));
    }

    #[test]
    fn templates_and_exact_paths() {
        let r = route(None, PathMatch::Template("/accounts/{id}/balance".into()));
        assert!(r.matches(None, "/accounts/7/balance"));
        assert!(!r.matches(None, "/accounts//balance"));
        assert!(!r.matches(None, "/accounts/7/balance/x"));
        let r = route(None, PathMatch::Template("/accounts/{id}/*".into()));
        assert!(r.matches(None, "/accounts/7/x/y"));
        assert!(!r.matches(None, "/accounts/7"));
        let r = route(None, PathMatch::Exact("/health".into()));
        assert!(r.matches(None, "/health"));
        assert!(!r.matches(None, "/health/"));
        let bad = |t: &str| CompiledPath::new(&PathMatch::Template(t.into())).is_err();
        assert!(bad("/a/{x}y") && bad("/a/*/b") && bad("a/{x}") && bad("/a//b"));
    }

    #[test]
    fn hosts_exact_or_wildcard_and_case_blind() {
        let r = route(Some("API.Example.com."), PathMatch::default());
        assert!(r.matches(Some("api.example.com"), "/"));
        assert!(!r.matches(Some("x.api.example.com"), "/"));
        assert!(!r.matches(None, "/"), "a host route needs a host");
        let r = route(Some("*.example.com"), PathMatch::default());
        assert!(r.matches(Some("a.example.com"), "/"));
        assert!(r.matches(Some("a.b.example.com"), "/"));
        assert!(!r.matches(Some("example.com"), "/"));
        assert!(!r.matches(Some("badexample.com"), "/"));
        assert!(HostMatch::new("a.com:443").is_err());
        assert!(HostMatch::new("*").is_err());
    }
}
