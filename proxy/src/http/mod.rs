//! HTTP as both listeners serve and forward it: header rules shared by the inbound and
//! outbound paths (here), errors that say nothing about their cause ([`errors`]), the
//! server with its limits and HTTP/1 guard ([`server`], [`guard`]), the client side
//! ([`pool`], [`forward`], [`replay`]).

pub mod errors;
pub mod forward;
pub mod guard;
pub mod pool;
pub mod replay;
pub mod server;

pub use errors::{Failure, failure_response};

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::UpgradeToken;

/// Body of a response handed back to a caller: the upstream's, or one we made.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Set by the outbound sidecar when the app spoke HTTP/1.x, so that the inbound sidecar,
/// receiving the request over HTTP/2, speaks HTTP/1.1 to its app too (`protocol: auto`).
pub const ORIGINAL_PROTOCOL: HeaderName = HeaderName::from_static("x-ward-original-protocol");
pub const PEER_IDENTITY: HeaderName = HeaderName::from_static("x-ward-peer-identity");
pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// The end user the gateway verified (see `crate::gateway::end_user`).
pub const END_USER: HeaderName = HeaderName::from_static("x-ward-end-user");

/// Headers only ward sets, from what it verified itself. Whatever a caller sends under
/// these names — in the head or in trailers — is removed; the inbound side sets the first
/// two after every other header rule has run, `x-ward-original-protocol` travels only
/// between ward sidecars (ALPN [`crate::transport::alpn::ALPN_WARD_H2`]), and
/// `x-ward-end-user` only from the gateway.
pub const MESH_ONLY: [HeaderName; 4] = [PEER_IDENTITY, XFCC, ORIGINAL_PROTOCOL, END_USER];

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

/// Request hygiene and the canonical facts of a request (normalized path, authority), as
/// both a sidecar's inbound side and the gateway judge them; `default_port` is the port a
/// target without one means (443 for `https`, else 80).
pub fn admit<B>(
    req: &Request<B>,
    default_port: u16,
    allow_header_underscores: bool,
) -> Result<ward_policy::request::Admitted, ward_policy::RequestError> {
    ward_policy::request::Incoming {
        method: req.method().as_str(),
        path: req.uri().path(),
        target_authority: req.uri().authority().map(|a| a.as_str().as_bytes()),
        hosts: req
            .headers()
            .get_all(header::HOST)
            .iter()
            .map(|h| h.as_bytes()),
        default_port,
        header_names: req.headers().keys().map(|n| n.as_str()),
        allow_header_underscores,
    }
    .admit()
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
