//! What the app is sent: exactly what was judged, with the identity headers set by the
//! sidecar, as HTTP/1.1 with `Host` or HTTP/2 with `:authority`.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Request, Uri, Version};
use hyper::body::Incoming;
use ward_policy::{Authority, RequestError};

use super::Peer;
use crate::http::forward::authority_of;
use crate::http::{Failure, PEER_IDENTITY, XFCC};

/// Rewrites the request to carry exactly what was judged: the normalized path (with the
/// query) and the canonical authority as the target, and no `Host` line of its own.
pub(super) fn carry_judged_target(
    req: &mut Request<Incoming>,
    path: &str,
    authority: Option<&Authority>,
) -> Result<(), RequestError> {
    req.headers_mut().remove(header::HOST);
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut uri = Uri::builder();
    if let Some(a) = authority {
        uri = uri.scheme("http").authority(a.canonical());
    }
    *req.uri_mut() = uri.path_and_query(pq).build().map_err(|_| {
        RequestError::BadAuthority(authority.map(Authority::canonical).unwrap_or_default())
    })?;
    Ok(())
}

/// Sets the identity headers from the verified peer; any the caller sent were removed at
/// admission, after hop-by-hop headers, so nothing can name these away.
pub(super) fn set_identity_headers(headers: &mut http::HeaderMap, peer: &Peer, own_id: &str) {
    if let Ok(v) = HeaderValue::from_str(&peer.name) {
        headers.insert(PEER_IDENTITY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("By={own_id};URI={}", peer.name)) {
        headers.insert(XFCC, v);
    }
}

/// Rewrites a request for the app: HTTP/1.1 with a Host header, or HTTP/2 with :authority.
pub(super) fn to_app_request(
    mut req: Request<Incoming>,
    app: SocketAddr,
    app_http1: bool,
) -> Result<Request<Incoming>, Failure> {
    let authority = authority_of(&req).unwrap_or_else(|| app.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let connect_to = if app_http1 {
        app.to_string()
    } else {
        authority.clone()
    };
    *req.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(connect_to.as_str())
        .path_and_query(path)
        .build()
        .map_err(|_| Failure::BadRequest)?;
    // Hop-by-hop and mesh-only headers were removed at admission.
    let headers = req.headers_mut();
    if app_http1 {
        let host = HeaderValue::from_str(&authority).map_err(|_| Failure::BadRequest)?;
        headers.insert(header::HOST, host);
        *req.version_mut() = Version::HTTP_11;
    } else {
        headers.remove(header::HOST);
        *req.version_mut() = Version::HTTP_2;
    }
    Ok(req)
}
