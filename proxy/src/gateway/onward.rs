//! The request as it goes on into the mesh: the normalized path, the end user's credentials
//! removed (unless the route forwards them), the route's header rewrites, the verified end
//! user, the client and the request id.

use http::Request;
use http::header::{self, HeaderName, HeaderValue};
use hyper::body::Incoming;

use super::credentials::{self, TokenSource};
use super::forwarded::Client;
use super::routes::{Authentication, Route};
use crate::http::{END_USER, Failure};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const DPOP: HeaderName = HeaderName::from_static("dpop");

/// Where the end user's credentials are, to remove them.
pub(super) struct Credentials<'a> {
    pub token: &'a TokenSource,
    /// The API key header, if the gateway takes API keys.
    pub api_key: Option<&'a HeaderName>,
}

/// An admitted request's facts that go on with it.
pub(super) struct Onward<'a> {
    pub route: &'a Route,
    pub path: &'a str,
    pub client: &'a Client<'a>,
    pub request_id: &'a str,
    pub end_user: Option<HeaderValue>,
}

/// Rewrites `req` for the mesh.
pub(super) fn prepare(
    req: &mut Request<Incoming>,
    onward: Onward<'_>,
    credentials: Credentials<'_>,
) -> Result<(), Failure> {
    let Onward {
        route,
        path,
        client,
        request_id,
        end_user,
    } = onward;
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        format!("{path}{query}")
            .parse()
            .map_err(|_| Failure::BadRequest)?,
    );
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Failure::BadRequest)?;
    let headers = req.headers_mut();
    if !route.forward_token && route.authentication != Authentication::None {
        credentials::remove(headers, credentials.token);
        headers.remove(DPOP);
        if let Some(name) = credentials.api_key {
            headers.remove(name);
        }
    }
    for name in &route.remove_headers {
        headers.remove(name);
    }
    for (name, value) in &route.set_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(v) = end_user {
        headers.insert(END_USER, v);
    }
    // The client as the trusted hops tell it (else the connection's), nothing older.
    headers.remove(header::FORWARDED);
    if let Ok(v) = HeaderValue::from_str(&client.addr) {
        headers.insert(FORWARDED_FOR, v);
    }
    let proto = if client.https { "https" } else { "http" };
    headers.insert(FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, v);
    }
    Ok(())
}
