//! Authentication of a request's end user, per route: the token read from where the
//! gateway is configured to look, verified against the issuers, or the refusal. A route
//! that requires an end user answers a request without a token with 401 and
//! `WWW-Authenticate: Bearer` (RFC 6750 §3); a token that does not verify is 401 with
//! `error="invalid_token"` — the same words for every reason, which only the audit log
//! names.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use super::api_keys::ApiKeys;
use super::credentials::{self, Scheme, TokenSource};
use super::jwt::{self, Issuer};
use super::routes::Authentication;
use crate::authz::end_user::EndUser;
use crate::http::Body;

/// Who the end user is, as far as this route asks.
#[derive(Debug)]
pub enum Authenticated {
    /// The route reads no token.
    NotAsked,
    /// No token, and the route does not require one.
    Anonymous,
    User(EndUser),
}

impl Authenticated {
    pub fn user(&self) -> Option<&EndUser> {
        match self {
            Authenticated::User(u) => Some(u),
            _ => None,
        }
    }

    /// The audit line's `authentication`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Authenticated::NotAsked => "none",
            Authenticated::Anonymous => "anonymous",
            Authenticated::User(_) => "verified",
        }
    }
}

/// Why a request is not authenticated (for the audit log).
#[derive(Debug)]
pub struct Refusal {
    /// No token at all (the challenge then carries no error code).
    pub missing: bool,
    pub reason: String,
    /// The issuer the token claims, when none of its keys held signed it: fetching its
    /// keys again may let the token verify (the IdP rotated).
    pub refresh: Option<String>,
}

/// What end users may present: tokens (from where, checked against which issuers) and, if
/// configured, API keys.
pub struct Credentials<'a> {
    pub token: &'a TokenSource,
    pub issuers: &'a [Issuer],
    pub api_keys: Option<&'a ApiKeys>,
}

/// Authenticates the end user of a request on a route with `mode`: an API key if one is
/// presented (never together with a token), else a token.
pub fn authenticate(
    headers: &HeaderMap,
    mode: Authentication,
    creds: &Credentials<'_>,
    now: SystemTime,
) -> Result<Authenticated, Refusal> {
    if mode == Authentication::None {
        return Ok(Authenticated::NotAsked);
    }
    let refuse = |reason: String| Refusal {
        missing: false,
        reason,
        refresh: None,
    };
    if let Some(keys) = creds.api_keys {
        match keys.presented(headers) {
            Err(e) => return Err(refuse(e)),
            Ok(Some(key)) => {
                if !matches!(credentials::token(headers, creds.token), Ok(None)) {
                    return Err(refuse("both an API key and a token".into()));
                }
                return keys.verify(key).map(Authenticated::User).map_err(refuse);
            }
            Ok(None) => {}
        }
    }
    let (token, scheme) = match credentials::token(headers, creds.token) {
        Ok(Some(found)) => found,
        Ok(None) if mode == Authentication::Optional => return Ok(Authenticated::Anonymous),
        Ok(None) => {
            return Err(Refusal {
                missing: true,
                reason: "no token".into(),
                refresh: None,
            });
        }
        Err(e) => return Err(refuse(e.to_string())),
    };
    if scheme == Scheme::DPoP {
        return Err(refuse(
            "DPoP proofs are not accepted on this gateway yet".into(),
        ));
    }
    let verified = jwt::verify(token, creds.issuers, now).map_err(|e| Refusal {
        refresh: matches!(e, jwt::JwtError::UnknownKey(_))
            .then(|| jwt::claimed_issuer(token))
            .flatten(),
        ..refuse(e.to_string())
    })?;
    // A sender-constrained token (RFC 8705, RFC 9449) is only as good as its proof of
    // possession, which this gateway does not check yet: refused rather than taken as a
    // bearer token.
    if verified.claims.contains_key("cnf") {
        return Err(refuse(
            "token is bound to a key (cnf) whose proof is not checked here yet".into(),
        ));
    }
    let user = EndUser::new(
        verified.issuer,
        verified.subject.as_deref(),
        verified.kid,
        verified.claims,
    );
    Ok(Authenticated::User(user))
}

/// The 401 for a refusal: `WWW-Authenticate` and a body that says nothing more; a gRPC
/// caller gets `UNAUTHENTICATED` (16).
pub fn unauthorized(refusal: &Refusal, grpc: bool) -> Response<Body> {
    let challenge = if refusal.missing {
        HeaderValue::from_static("Bearer realm=\"ward\"")
    } else {
        HeaderValue::from_static("Bearer realm=\"ward\", error=\"invalid_token\"")
    };
    let mut response = answer(StatusCode::UNAUTHORIZED, "16", "unauthorized\n", grpc);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    response
}

/// The 404 for a request no route takes (gRPC: `UNIMPLEMENTED`).
pub fn not_found(grpc: bool) -> Response<Body> {
    answer(StatusCode::NOT_FOUND, "12", "not found\n", grpc)
}

/// The 429 for a request over a rate limit (gRPC: `RESOURCE_EXHAUSTED`); the caller adds
/// `Retry-After` and `RateLimit-*`.
pub fn too_many_requests(grpc: bool) -> Response<Body> {
    answer(
        StatusCode::TOO_MANY_REQUESTS,
        "8",
        "too many requests\n",
        grpc,
    )
}

/// An answer of the gateway's own: `status` with a fixed plain-text body, or for gRPC a
/// trailers-only response with `grpc-status`.
fn answer(
    status: StatusCode,
    grpc_status: &'static str,
    text: &'static str,
    grpc: bool,
) -> Response<Body> {
    let body = if grpc { "" } else { text };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    let h = response.headers_mut();
    if grpc {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(grpc_status));
    } else {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        *response.status_mut() = status;
    }
    response
}
