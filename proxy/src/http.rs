//! What the inbound and outbound HTTP paths share: hop-by-hop header rules, error
//! responses that say nothing about the cause, and the server settings that enforce limits.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config::{Limits, UpgradeToken};

/// Body of a response handed back to a caller: the upstream's, or one we made.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Set by the outbound sidecar when the app spoke HTTP/1.x, so that the inbound sidecar,
/// receiving the request over HTTP/2, speaks HTTP/1.1 to its app too (`protocol: auto`).
pub const ORIGINAL_PROTOCOL: HeaderName = HeaderName::from_static("x-ward-original-protocol");
pub const PEER_IDENTITY: HeaderName = HeaderName::from_static("x-ward-peer-identity");
pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Headers only ward sets, from what it verified itself. Whatever a caller sends under
/// these names — in the head or in trailers — is removed; the inbound side sets the first
/// two after every other header rule has run, and `x-ward-original-protocol` travels only
/// between ward sidecars (ALPN [`crate::outbound::ALPN_WARD_H2`]).
pub const MESH_ONLY: [HeaderName; 3] = [PEER_IDENTITY, XFCC, ORIGINAL_PROTOCOL];

/// Removes every [`MESH_ONLY`] header, and any spelt with `_` for `-` (which apps that
/// read headers CGI-style, with `limits.allow_header_underscores`, take for the same).
pub fn strip_mesh_only(headers: &mut HeaderMap) {
    for name in &MESH_ONLY {
        headers.remove(name);
    }
    let lookalikes: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.contains('_') && MESH_ONLY.iter().any(|m| k.replace('_', "-") == m.as_str())
        })
        .cloned()
        .collect();
    for name in lookalikes {
        headers.remove(&name);
    }
}

/// Headers that describe one hop's connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names. `te` survives
/// only as `te: trailers`, which gRPC needs end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let trailers_only = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !trailers_only {
        headers.remove(header::TE);
    }
}

/// The protocol an HTTP/1.1 request may switch to: it asks (`Connection: upgrade` and one
/// `Upgrade` header naming exactly one protocol) for one the listener carries. Any other
/// request is forwarded as an ordinary one, its `Upgrade` stripped as hop-by-hop.
pub fn allowed_upgrade<B>(req: &Request<B>, allowed: &[UpgradeToken]) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    let mut upgrades = req.headers().get_all(header::UPGRADE).iter();
    let (Some(token), None) = (upgrades.next(), upgrades.next()) else {
        return None;
    };
    let wanted = token.as_bytes().trim_ascii();
    let carried = asks
        && !wanted.contains(&b',')
        && allowed
            .iter()
            .any(|a| wanted.eq_ignore_ascii_case(a.0.as_bytes()));
    carried.then(|| token.clone())
}

/// Whether a response agrees to the upgrade that was asked for: `101` naming the same
/// protocol. A `101` to anything else would hand the caller an unjudged stream.
pub fn upgrade_accepted<B>(resp: &Response<B>, asked: &HeaderValue) -> bool {
    resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && resp.headers().get(header::UPGRADE).is_some_and(|v| {
            v.as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(asked.as_bytes().trim_ascii())
        })
}

/// Whether the request is gRPC-shaped enough to be answered in gRPC's terms (errors as
/// `grpc-status`). Authorization does not depend on it: gRPC rules judge the path.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/grpc")
    })
}

/// The deadline a gRPC caller set (`grpc-timeout`: up to 8 digits and a unit of H, M, S, m,
/// u or n), if any and well-formed.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How long to wait for the response head: the configured limit, or a gRPC caller's shorter
/// deadline.
pub fn deadline<B>(req: &Request<B>, limit: Duration) -> Duration {
    grpc_timeout(req.headers()).map_or(limit, |d| d.min(limit))
}

/// Why a request could not be carried. Each maps to one status and nothing else reaches
/// the caller; the access log and `ward_request_failures_total` name the cause (in the
/// spirit of Envoy's response flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The upstream could not be reached: refused, unreachable, or no connection in time.
    ConnectFailed,
    /// The upstream's certificate is valid but it is not the identity it must be.
    IdentityMismatch,
    /// The TLS handshake with the upstream failed otherwise (bad certificate, protocol).
    TlsFailed,
    /// The connection or the stream broke before a response head came.
    UpstreamReset,
    /// The upstream refused the request unprocessed as often as attempts are allowed.
    RetryLimit,
    /// The upstream switched protocols unasked, or to another protocol than asked.
    SwitchRefused,
    /// The upstream did not answer in time.
    Timeout,
    /// The request itself is malformed or ambiguous.
    BadRequest,
    /// Authorization said no.
    Forbidden,
}

impl Failure {
    /// The access log's `cause` and the metric label.
    pub fn cause(self) -> &'static str {
        match self {
            Failure::ConnectFailed => "upstream_connect_failure",
            Failure::IdentityMismatch => "upstream_identity_mismatch",
            Failure::TlsFailed => "upstream_tls_failure",
            Failure::UpstreamReset => "upstream_reset",
            Failure::RetryLimit => "retry_limit",
            Failure::SwitchRefused => "upstream_switch_refused",
            Failure::Timeout => "upstream_timeout",
            Failure::BadRequest => "bad_request",
            Failure::Forbidden => "denied",
        }
    }
}

impl From<&crate::pool::ConnectError> for Failure {
    fn from(e: &crate::pool::ConnectError) -> Self {
        use crate::pool::ConnectError;
        match e {
            ConnectError::Io { .. } | ConnectError::Timeout { .. } => Failure::ConnectFailed,
            ConnectError::Identity { .. } => Failure::IdentityMismatch,
            ConnectError::BadCertificate { .. } | ConnectError::Tls { .. } => Failure::TlsFailed,
            ConnectError::Handshake { .. } => Failure::UpstreamReset,
        }
    }
}

/// The response for a failure: plain HTTP status, or for gRPC a trailers-only response with
/// the matching `grpc-status`. Bodies are fixed words, never internal detail.
pub fn failure_response(failure: Failure, grpc: bool) -> Response<Body> {
    let (status, grpc_status, text) = match failure {
        Failure::ConnectFailed
        | Failure::IdentityMismatch
        | Failure::TlsFailed
        | Failure::UpstreamReset
        | Failure::RetryLimit
        | Failure::SwitchRefused => (StatusCode::BAD_GATEWAY, "14", "upstream unavailable\n"),
        Failure::Timeout => (StatusCode::GATEWAY_TIMEOUT, "4", "upstream timeout\n"),
        Failure::BadRequest => (StatusCode::BAD_REQUEST, "13", "bad request\n"),
        Failure::Forbidden => (StatusCode::FORBIDDEN, "7", "forbidden"),
    };
    let mut response = if grpc {
        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(grpc_status));
        r
    } else {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
            text.as_bytes(),
        ))));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    response.headers_mut().remove(header::CONNECTION);
    response
}

/// The HTTP server for app (outbound) and peer (inbound) connections, with every limit set.
pub fn server(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper needs at least 8 KiB; past this the head is refused with 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): a peer whose reset streams pile up gets GOAWAY.
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .adaptive_window(true);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["te", "x-kept"]);

        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "te other than trailers is hop-by-hop");
    }

    #[test]
    fn mesh_only_headers_go_in_every_spelling() {
        let mut h = HeaderMap::new();
        for k in [
            "x-ward-peer-identity",
            "x_ward_peer_identity",
            "x-forwarded_client-cert",
            "x_other",
        ] {
            h.append(
                HeaderName::from_static(k),
                HeaderValue::from_static("forged"),
            );
        }
        strip_mesh_only(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x_other"]);
    }

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(t("200m"), Some(Duration::from_millis(200)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(t("123456789m"), None, "more than 8 digits");
        assert_eq!(t("5x"), None);
        assert_eq!(t("m"), None);
        assert_eq!(t(""), None);
    }

    #[test]
    fn failures_say_nothing_but_the_status() {
        let r = failure_response(Failure::ConnectFailed, false);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let r = failure_response(Failure::Timeout, true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "4");
        let r = failure_response(Failure::Forbidden, true);
        assert_eq!(r.headers()["grpc-status"], "7");
    }
}
