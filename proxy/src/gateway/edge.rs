//! The public listener: a client's connection (public TLS, or plaintext if configured),
//! then for each request — hygiene and path normalization as at a sidecar's inbound side,
//! the route, the end user, the policy decision — and the request sent on into the mesh
//! over mutual TLS with the gateway's own SVID, to the one identity the route names.
//!
//! Answers the gateway makes itself say nothing of why: 400, 401 (with its challenge),
//! 403, 404, 502, 504. The audit log has the reason, the route, the end user's principal,
//! issuer and key id — never the token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;
use ward_policy::request::Admitted as Judged;
use ward_policy::{Call, HttpCall};

use super::api_keys::ApiKeys;
use super::authn::{self, Authenticated};
use super::config::GatewayValidated;
use super::credentials::TokenSource;
use super::dpop::{Dpop, Target};
use super::forwarded::{self, Client, Peer};
use super::issuers::Issuers;
use super::onward;
use super::public_tls::Certificates;
use super::ratelimit::shared::Shared;
use super::ratelimit::{KeyFacts, Limiter, Verdict};
use super::routes::{Route, RouteTarget, Routes};
use crate::authz::{Authorizer, EdgeFacts, Facts};
use crate::config::Limits;
use crate::http::forward::{self, from_upstream};
use crate::http::guard::{SwitchSignal, may_switch};
use crate::http::server::{Servers, Speak, serve_guarded, serve_http};
use crate::http::{Body, Failure, failure_response, is_grpc};
use crate::inputs::ProxyInputs;
use crate::metrics::{self, Direction, Label, OpenConnection};
use crate::outbound::{Upstream, Upstreams, to_mesh_request};
use crate::record;
use crate::resolve::Endpoints;
use crate::trace::{Parent, RequestSpan};
use crate::transport::alpn::{ALPN_H2, ALPN_HTTP1};
use crate::transport::idle::{Activity, Tracked};
use ward_runtime::Drain;

/// The public listener's state.
pub struct Edge {
    routes: Routes,
    /// Each destination's connections.
    upstreams: Upstreams,
    /// A fixed route's destination, by route index (discovered ones: `None`).
    fixed: Vec<Option<Arc<Upstream>>>,
    /// The mesh's endpoints, when a route names a service.
    discovered: Option<Endpoints>,
    issuers: Arc<Issuers>,
    api_keys: Option<Arc<ApiKeys>>,
    dpop: Dpop,
    token: TokenSource,
    forward_claims: Option<Vec<String>>,
    authz: Arc<Authorizer>,
    limiter: Limiter,
    acceptor: Option<TlsAcceptor>,
    /// The public certificates, to tell whether a host is one a connection's may serve.
    certificates: Option<Arc<Certificates>>,
    trusted_hops: usize,
    max_body_bytes: u64,
    port: u16,
    limits: Limits,
    servers: Servers,
    access_log: bool,
    /// The gateway's SPIFFE ID: the server of its clients' requests.
    own_id: Label,
}

/// Why the gateway answers a request itself.
enum Refusal {
    Failure(Failure),
    NoRoute,
    Unauthenticated(authn::Refusal),
    Limited,
    /// The request names a host its TLS connection was not set up for (421).
    Misdirected,
}

/// A request with its route and end user, not yet judged.
struct Identified<'a> {
    route: &'a Route,
    path: String,
    authority: Option<ward_policy::Authority>,
    authenticated: Result<Authenticated, authn::Refusal>,
}

impl Identified<'_> {
    fn user(&self) -> Option<&crate::authz::end_user::EndUser> {
        self.authenticated
            .as_ref()
            .ok()
            .and_then(Authenticated::user)
    }
}

impl Edge {
    pub fn new(
        validated: &GatewayValidated,
        inputs: &ProxyInputs,
        tls: Option<(Arc<rustls::ServerConfig>, Arc<Certificates>)>,
        issuers: Arc<Issuers>,
        api_keys: Option<Arc<ApiKeys>>,
    ) -> anyhow::Result<Arc<Self>> {
        // Fixed destinations are prepared now, so their errors stop the start.
        let upstreams = Upstreams::new(inputs.identity.mesh.clone(), inputs.limits.clone());
        let fixed = validated
            .routes
            .iter()
            .map(|route| match &route.to {
                RouteTarget::Fixed(to) => upstreams.prepare(to).map(Some),
                RouteTarget::Discovered { .. } => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let discovering = fixed.iter().any(Option::is_none);
        let discovered = if discovering {
            inputs.discovery()
        } else {
            None
        };
        let gateway = &validated.gateway;
        let shared = gateway
            .redis
            .as_ref()
            .map(Shared::start)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let limiter = Limiter::new(validated.limits.clone(), shared);
        Ok(Arc::new(Self {
            routes: validated.routes.clone(),
            upstreams,
            fixed,
            discovered,
            issuers,
            api_keys,
            dpop: Dpop::new(&gateway.dpop).map_err(anyhow::Error::msg)?,
            token: gateway.token.clone(),
            forward_claims: gateway.forward_claims.clone(),
            authz: inputs.authz.clone(),
            limiter,
            acceptor: tls.as_ref().map(|(c, _)| TlsAcceptor::from(c.clone())),
            certificates: tls.map(|(_, certs)| certs),
            trusted_hops: gateway.trusted_hops,
            max_body_bytes: gateway.max_body_bytes,
            port: gateway.listen.port(),
            limits: inputs.limits.clone(),
            servers: inputs.servers.clone(),
            access_log: inputs.access_log,
            own_id: metrics::identity(&inputs.own_id.to_string()),
        }))
    }

    /// Handles one client connection.
    pub async fn connection(self: Arc<Self>, tcp: TcpStream, drain: Drain) {
        let _open = OpenConnection::new(Direction::Gateway);
        let addr = tcp
            .peer_addr()
            .map(|a: SocketAddr| a.ip().to_string())
            .unwrap_or_default();
        let activity = Activity::new();
        let io = Tracked::new(tcp, activity.clone());
        let Some(acceptor) = self.acceptor.clone() else {
            let peer = Arc::new(Peer {
                addr,
                tls: false,
                cert: None,
                sni: None,
            });
            return self.serve(io, Speak::Either, peer, drain, activity).await;
        };
        let handshake = acceptor.accept(io);
        let tls = match tokio::time::timeout(self.limits.header_read_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                metrics::handshake(Direction::Gateway, "error");
                tracing::debug!(error = %e, client = %addr, "public TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::handshake(Direction::Gateway, "timeout");
                return;
            }
        };
        let (_, conn) = tls.get_ref();
        metrics::handshake(Direction::Gateway, crate::transport::handshake_kind(conn));
        let speak = match conn.alpn_protocol() {
            Some(ALPN_H2) => Speak::Http2,
            Some(ALPN_HTTP1) => Speak::Http1,
            _ => Speak::Either,
        };
        // RFC 8705 §3.1: the thumbprint of the DER certificate, as `x5t#S256` states it.
        let cert = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| super::dpop::sha256_b64url(leaf.as_ref()));
        let peer = Arc::new(Peer {
            addr,
            tls: true,
            cert,
            sni: conn.server_name().map(str::to_ascii_lowercase),
        });
        self.serve(tls, speak, peer, drain, activity).await
    }

    async fn serve<I>(
        self: Arc<Self>,
        io: I,
        speak: Speak,
        peer: Arc<Peer>,
        drain: Drain,
        activity: Activity,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = |switch: Option<SwitchSignal>| {
            let (this, peer) = (self.clone(), peer.clone());
            move |req| {
                let (this, peer) = (this.clone(), peer.clone());
                let switch = switch.clone();
                async move {
                    // Nothing is switched at the edge: `Upgrade` is hop-by-hop and dropped.
                    if let Some(switch) = switch.filter(|_| may_switch(&req)) {
                        switch.answered(false);
                    }
                    this.request(req, &peer).await
                }
            }
        };
        let (servers, limits) = (&self.servers, &self.limits);
        if speak == Speak::Http2 {
            serve_http(servers, speak, io, service(None), &drain, &activity, limits).await
        } else {
            let service = |switch| service(Some(switch));
            serve_guarded(servers, speak, io, service, &drain, &activity, limits).await
        }
    }

    async fn request(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let started = Instant::now();
        let origin = forwarded::origin(req.headers(), &peer.addr, peer.tls, self.trusted_hops);
        let client = &Client {
            addr: origin.addr,
            https: origin.https,
            cert: peer.cert.as_deref(),
            sni: peer.sni.as_deref(),
        };
        let grpc = is_grpc(&req);
        let caller_http1 = req.version() != Version::HTTP_2;
        let method = req.method().clone();
        let raw_path = req.uri().path().to_owned();
        let span = RequestSpan::start(
            Direction::Gateway,
            Parent::Link,
            req.headers(),
            &method,
            &raw_path,
            &client.addr,
            &self.own_id,
        );
        let (response, cause, path) = self.handle(req, client, grpc, caller_http1, &span).await;
        let record = record::Request {
            direction: Direction::Gateway,
            protocol: record::Protocol::of(grpc, caller_http1),
            peer: &client.addr,
            source: &metrics::EXTERNAL,
            destination: &self.own_id,
            method: &method,
            path: path.as_deref().unwrap_or(&raw_path),
            status: response.status().as_u16(),
            cause,
            elapsed: started.elapsed(),
            span: &span,
        };
        record.write(self.access_log);
        response
    }

    /// The answer, why the gateway answered itself (if it did), and the normalized path.
    async fn handle(
        &self,
        mut req: Request<Incoming>,
        client: &Client<'_>,
        grpc: bool,
        caller_http1: bool,
        span: &RequestSpan,
    ) -> (Response<Body>, Option<&'static str>, Option<String>) {
        let refused = |refusal: Refusal| match refusal {
            Refusal::Failure(f) => (failure_response(f, grpc), f.cause()),
            Refusal::NoRoute => (authn::not_found(grpc), "no_route"),
            Refusal::Unauthenticated(r) => {
                (authn::unauthorized(&r, grpc, &self.dpop), "unauthenticated")
            }
            Refusal::Limited => (authn::too_many_requests(grpc), "rate_limited"),
            Refusal::Misdirected => (authn::misdirected(grpc), "misdirected"),
        };
        let mut identified = match self.identify(&mut req, client) {
            Ok(identified) => identified,
            Err((refusal, path)) => {
                let (answer, cause) = refused(refusal);
                return (answer, Some(cause), path);
            }
        };
        // A key the gateway does not hold: the IdP may have rotated; fetch and try again.
        if let Err(r) = &identified.authenticated
            && let Some(issuer) = &r.refresh
            && self.issuers.refresh(issuer).await
        {
            let (route, authority) = (identified.route, identified.authority.as_ref());
            identified.authenticated = self.authenticate(&req, authority, client, route);
        }
        let key = KeyFacts {
            principal: identified.user().map(|u| u.principal.as_str()),
            api_key: identified
                .user()
                .filter(|u| u.issuer == super::api_keys::ISSUER)
                .and_then(|u| u.kid.as_deref()),
            client: &client.addr,
            route: identified.route.index,
        };
        let verdict = self.limiter.check(&identified.route.limits, &key).await;
        let route = identified.route;
        span.route(route.index);
        let (mut response, cause, path) =
            match self.decide(&mut req, client, grpc, identified, &verdict, span) {
                Ok(path) => {
                    span.propagate(req.headers_mut());
                    let forward = self.forward(req, route, caller_http1, grpc);
                    let (response, cause) = forward.instrument(span.span().clone()).await;
                    (response, cause, path)
                }
                Err((refusal, path)) => {
                    let (answer, cause) = refused(refusal);
                    (answer, Some(cause), path)
                }
            };
        for (name, value) in verdict.headers {
            response.headers_mut().insert(name, value);
        }
        (response, cause, Some(path))
    }

    /// Sends an admitted request on to the route's service.
    async fn forward(
        &self,
        req: Request<Incoming>,
        route: &Route,
        caller_http1: bool,
        grpc: bool,
    ) -> (Response<Body>, Option<&'static str>) {
        let Some(up) = self.upstream(route) else {
            return (
                failure_response(Failure::ConnectFailed, grpc),
                Some("no_endpoint"),
            );
        };
        let limit = route.timeout.unwrap_or(self.limits.request_timeout);
        let result = match to_mesh_request(req, caller_http1) {
            Ok(mut req) => {
                // A body without a declared length is cut off where a declared one is refused.
                req.extensions_mut()
                    .insert(crate::http::replay::BodyLimit(self.max_body_bytes));
                let limit = crate::http::deadline(&req, limit);
                forward::send(&up.h2, req, limit).await
            }
            Err(f) => Err(f),
        };
        match result {
            Ok(resp) => (from_upstream(resp, caller_http1), None),
            Err(f) => (failure_response(f, grpc), Some(f.cause())),
        }
    }

    /// Where a route's request goes now: its one sidecar, or what discovery last said
    /// serves its service (if that is the identity the route names, when it names one).
    fn upstream(&self, route: &Route) -> Option<Arc<Upstream>> {
        match &route.to {
            RouteTarget::Fixed(_) => self.fixed.get(route.index).cloned().flatten(),
            RouteTarget::Discovered { service, identity } => {
                let found = self.discovered.as_ref()?.load().get(service).cloned();
                let Some(to) =
                    found.filter(|to| identity.as_ref().is_none_or(|i| *i == to.identity))
                else {
                    tracing::debug!(route = route.index, %service, "no endpoint for the route's service");
                    return None;
                };
                self.upstreams.get(&to)
            }
        }
    }

    fn authenticate(
        &self,
        req: &Request<Incoming>,
        authority: Option<&ward_policy::Authority>,
        client: &Client<'_>,
        route: &Route,
    ) -> Result<Authenticated, authn::Refusal> {
        let issuers = self.issuers.current();
        let creds = authn::Credentials {
            token: &self.token,
            issuers: &issuers,
            api_keys: self.api_keys.as_deref(),
            dpop: &self.dpop,
        };
        let presented = authn::Presented {
            headers: req.headers(),
            target: Target {
                method: req.method().as_str(),
                scheme: if client.https { "https" } else { "http" },
                authority,
                path: req.uri().path(),
            },
            client_cert: client.cert,
        };
        authn::authenticate(&presented, route.authentication, &creds, SystemTime::now())
    }

    /// Request hygiene, the route, and the end user (or why there is none).
    fn identify(
        &self,
        req: &mut Request<Incoming>,
        client: &Client<'_>,
    ) -> Result<Identified<'_>, (Refusal, Option<String>)> {
        let default_port = if client.https { 443 } else { 80 };
        let admitted = crate::http::admit(req, default_port, self.limits.allow_header_underscores);
        let Judged { path, authority } = match admitted {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(client = %client.addr, reason = %why, "request refused (400)");
                let f = Failure::BadRequest;
                return Err((Refusal::Failure(f), None));
            }
        };
        let host = authority.as_ref().map(|a| a.host.as_str());
        if let (Some(sni), Some(host), Some(certs)) = (client.sni, host, &self.certificates)
            && host != sni
            && !certs.covers(sni, host)
        {
            // Another host than the handshake's, on a certificate not made for it: a
            // client reusing a connection where it should not, or fronting (RFC 9110 §15.5.20).
            return Err((Refusal::Misdirected, Some(path)));
        }
        if req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_body_bytes)
        {
            return Err((Refusal::Failure(Failure::TooLarge), Some(path)));
        }
        let Some(route) = self.routes.find(host, &path) else {
            return Err((Refusal::NoRoute, Some(path)));
        };
        crate::http::strip_hop_by_hop(req.headers_mut());
        crate::http::strip_mesh_only(req.headers_mut());
        let authenticated = self.authenticate(req, authority.as_ref(), client, route);
        Ok(Identified {
            route,
            path,
            authority,
            authenticated,
        })
    }

    /// The decision — rate limit, authentication, policy, each refusal in the audit log —
    /// and the request rewritten for the mesh. Returns the normalized path, with the
    /// refusal if there is one.
    fn decide(
        &self,
        req: &mut Request<Incoming>,
        client: &Client<'_>,
        grpc: bool,
        identified: Identified<'_>,
        verdict: &Verdict,
        span: &RequestSpan,
    ) -> Result<String, (Refusal, String)> {
        let Identified {
            route,
            path,
            authority,
            authenticated,
        } = identified;
        let request_id = crate::inbound::new_request_id();
        let user = authenticated.as_ref().ok().and_then(Authenticated::user);
        let headers = crate::inbound::HttpHeaders(req.headers());
        let call = Call {
            principal: "",
            namespace: None,
            port: self.port,
            http: Some(HttpCall {
                method: req.method().as_str(),
                path: &path,
                authority: authority.as_ref(),
                headers: &headers,
                auth: user.map(|u| u.auth()),
            }),
        };
        let outcome = match &authenticated {
            Ok(a) => a.outcome().to_owned(),
            Err(refusal) => format!("refused: {}", refusal.reason),
        };
        let facts = Facts {
            source: &metrics::EXTERNAL,
            protocol: if grpc { "grpc" } else { "http" },
            method: Some(req.method().as_str()),
            path: Some(&path),
            request_id: Some(&request_id),
            edge: Some(EdgeFacts {
                client: &client.addr,
                route: Some(route.index),
                authentication: &outcome,
                issuer: user.map(|u| u.issuer.as_str()),
                kid: user.and_then(|u| u.kid.as_deref()),
                limit: verdict.limited_by.as_deref(),
            }),
        };
        if let Some(limit) = &verdict.limited_by {
            let rule = format!("rate-limit:{limit}");
            self.authz.refused(&call, facts, &rule);
            span.refused(&rule);
            return Err((Refusal::Limited, path));
        }
        if authenticated.is_err() {
            self.authz.refused(&call, facts, "authentication");
            span.refused("authentication");
            if let Err(refusal) = authenticated {
                return Err((Refusal::Unauthenticated(refusal), path));
            }
        }
        let decision = self.authz.decide(&call, facts);
        span.decided(&decision);
        if !decision.allowed {
            return Err((Refusal::Failure(Failure::Forbidden), path));
        }
        let end_user = user.and_then(|u| u.header_value(self.forward_claims.as_deref()));
        let credentials = onward::Credentials {
            token: &self.token,
            api_key: self.api_keys.as_deref().map(ApiKeys::header),
        };
        let onward = onward::Onward {
            route,
            path: &path,
            client,
            request_id: &request_id,
            end_user,
        };
        if let Err(f) = onward::prepare(req, onward, credentials) {
            return Err((Refusal::Failure(f), path));
        }
        Ok(path)
    }
}
