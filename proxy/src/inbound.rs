//! The inbound side: mutual TLS from peers, authorization, then plaintext to the local app.
//!
//! The peer must present an SVID of our trust domain; its SPIFFE ID is what authorization
//! sees and what the app is told, in headers the peer cannot forge (any it sent are
//! removed). ALPN says how the peer speaks: `h2` (ward sidecars, and SPIFFE-aware peers such
//! as Envoy), `http/1.1`, or `ward-tcp/1` for opaque TCP. The app is spoken to in the
//! protocol it speaks: fixed by config, or with `auto` the one the original caller used.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use ward_certs::{MeshIdentity, SpiffeId};
use ward_policy::compile::{grpc_route, namespace_of};
use ward_policy::{Call, HttpCall};

use crate::authz::{Authorizer, Facts};
use crate::config::{Inbound as InboundConfig, Limits, Protocol};
use crate::drain::Drain;
use crate::forward::{self, NextHop};
use crate::h1guard::H1Guard;
use crate::http::{
    Body, Failure, ORIGINAL_PROTOCOL, PEER_IDENTITY, XFCC, failure_response, is_grpc, is_upgrade,
};
use crate::idle::{Activity, Tracked};
use crate::listener::{Servers, serve_http};
use crate::metrics::{self, Direction, OpenConnection};
use crate::outbound::{
    ALPN_H2, ALPN_HTTP1, ALPN_TCP, authority_of, from_upstream, keep_upgrade_headers,
};
use crate::pool::{Dialer, H2Pool};

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A fresh request id: 128 random bits in hex.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Request headers as the policy engine reads them.
struct HttpHeaders<'a>(&'a http::HeaderMap);

impl ward_policy::Headers for HttpHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A verified peer: its SPIFFE ID, and the same as text for headers, metrics and logs.
pub struct Peer {
    pub id: SpiffeId,
    pub name: String,
}

/// One inbound listener's state.
pub struct Inbound {
    app: SocketAddr,
    protocol: Protocol,
    own_id: String,
    acceptor: TlsAcceptor,
    authz: Arc<Authorizer>,
    app_h1: NextHop,
    app_h2: NextHop,
    app_dialer: Dialer,
    limits: Limits,
    servers: Servers,
    access_log: bool,
}

impl Inbound {
    pub fn new(
        config: &InboundConfig,
        own_id: &SpiffeId,
        identity: &MeshIdentity,
        authz: Arc<Authorizer>,
        limits: &Limits,
        servers: Servers,
        access_log: bool,
    ) -> Result<Arc<Self>, ward_certs::tls::TlsConfigError> {
        let tls = identity.server_config(&[ALPN_H2, ALPN_HTTP1, ALPN_TCP])?;
        let app_dialer = Dialer::Tcp {
            addr: config.app,
            timeout: limits.connect_timeout,
        };
        Ok(Arc::new(Self {
            app: config.app,
            protocol: config.protocol,
            own_id: own_id.to_string(),
            acceptor: TlsAcceptor::from(tls),
            authz,
            app_h1: NextHop::H1(Box::new(forward::app_h1_client(limits.connect_timeout))),
            app_h2: NextHop::H2(Arc::new(H2Pool::new(app_dialer.clone()))),
            app_dialer,
            limits: limits.clone(),
            servers,
            access_log,
        }))
    }

    /// Handles one connection from a peer.
    pub async fn connection(self: Arc<Self>, tcp: TcpStream, drain: Drain) {
        let _open = OpenConnection::new(Direction::Inbound);
        let activity = Activity::new();
        let handshake = self.acceptor.accept(Tracked::new(tcp, activity.clone()));
        let tls = match tokio::time::timeout(self.limits.header_read_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                metrics::handshake(Direction::Inbound, handshake_failure(&e));
                tracing::debug!(error = %e, "inbound TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::handshake(Direction::Inbound, "timeout");
                return;
            }
        };
        let (_, conn) = tls.get_ref();
        let Some(peer) = ward_certs::tls::peer_spiffe_id(conn.peer_certificates()) else {
            metrics::handshake(Direction::Inbound, "bad_certificate");
            return;
        };
        metrics::handshake(Direction::Inbound, handshake_kind(conn));
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let peer = Arc::new(Peer {
            name: peer.to_string(),
            id: peer,
        });
        if self.protocol == Protocol::Tcp || alpn.as_deref() == Some(ALPN_TCP) {
            return self.tcp(tls, &peer).await;
        }
        let this = self.clone();
        let p = peer.clone();
        let service = move |req| {
            let this = this.clone();
            let peer = p.clone();
            async move { this.request(req, &peer).await }
        };
        let idle = self.limits.idle_timeout;
        match alpn.as_deref() {
            Some(ALPN_H2) => {
                serve_http(&self.servers.http2, tls, service, &drain, &activity, idle).await
            }
            Some(ALPN_HTTP1) => {
                let io = H1Guard::new(
                    tls,
                    self.limits.max_header_bytes,
                    self.limits.header_read_timeout,
                );
                serve_http(&self.servers.http1, io, service, &drain, &activity, idle).await
            }
            _ => {
                let io = H1Guard::new(
                    tls,
                    self.limits.max_header_bytes,
                    self.limits.header_read_timeout,
                );
                serve_http(&self.servers.auto, io, service, &drain, &activity, idle).await
            }
        }
    }

    /// A TCP connection: decided once at the start, before any byte reaches the app, and
    /// again whenever the policy changes while it is open.
    async fn tcp<S>(&self, stream: S, peer: &Peer)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut changes = self.authz.subscribe();
        if !self.tcp_allowed(peer) {
            return;
        }
        let (limits, log) = (&self.limits, self.access_log);
        let forward = crate::tcp::forward(
            stream,
            &self.app_dialer,
            Direction::Inbound,
            &peer.name,
            limits.idle_timeout,
            log,
        );
        let revoked = async {
            while changes.changed().await.is_ok() {
                if !self.tcp_allowed(peer) {
                    tracing::info!(peer = %peer.name, "policy changed: closing TCP connection");
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = forward => {}
            _ = revoked => {}
        }
    }

    fn tcp_allowed(&self, peer: &Peer) -> bool {
        let call = Call {
            principal: &peer.name,
            namespace: namespace_of(&peer.name),
            port: self.app.port(),
            http: None,
        };
        let facts = Facts {
            protocol: "tcp",
            method: None,
            path: None,
            request_id: None,
        };
        self.authz.decide(&call, facts).allowed
    }

    async fn request(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let started = Instant::now();
        let grpc = is_grpc(&req);
        let caller_http1 = req.version() != Version::HTTP_2;
        let method = req.method().clone();
        let (response, protocol, path) = match self.admit(req, peer, grpc) {
            Ok((req, path)) => {
                let (response, protocol) = self.forward(req, peer, grpc, caller_http1).await;
                (response, protocol, path)
            }
            Err((response, path)) => (response, if grpc { "grpc" } else { "http" }, path),
        };
        let elapsed = started.elapsed();
        metrics::request(
            Direction::Inbound,
            protocol,
            &peer.name,
            response.status().as_u16(),
            elapsed,
        );
        if self.access_log {
            tracing::info!(target: "ward::access", direction = "inbound", protocol, peer = %peer.name,
                %method, path, status = response.status().as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0);
        }
        response
    }

    /// Request hygiene, path normalization, request id and the authorization decision.
    /// Returns the request to forward (with its normalized path), or the refusal.
    #[allow(clippy::result_large_err)]
    fn admit(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        grpc: bool,
    ) -> Result<(Request<Incoming>, String), (Response<Body>, String)> {
        let raw_path = req.uri().path().to_owned();
        let bad = |path: String| (failure_response(Failure::BadRequest, grpc), path);
        if !self.limits.allow_header_underscores
            && req.headers().keys().any(|k| k.as_str().contains('_'))
        {
            return Err(bad(raw_path));
        }
        let path = match ward_policy::normalize_path(&raw_path) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(peer = %peer.name, path = %raw_path, error = %e, "path refused");
                return Err(bad(raw_path));
            }
        };
        if path != raw_path {
            let pq = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = pq.parse().ok();
            match Uri::from_parts(parts) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return Err(bad(path)),
            }
        }
        let request_id = match req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => {
                let id = new_request_id();
                if let Ok(v) = HeaderValue::from_str(&id) {
                    req.headers_mut().insert(REQUEST_ID, v);
                }
                id
            }
        };
        let host = authority_of(&req);
        let headers = HttpHeaders(req.headers());
        let call = Call {
            principal: &peer.name,
            namespace: namespace_of(&peer.name),
            port: self.app.port(),
            http: Some(HttpCall {
                method: req.method().as_str(),
                path: &path,
                host: host.as_deref(),
                grpc: if grpc { grpc_route(&path) } else { None },
                headers: &headers,
            }),
        };
        let facts = Facts {
            protocol: if grpc { "grpc" } else { "http" },
            method: Some(req.method().as_str()),
            path: Some(&path),
            request_id: Some(&request_id),
        };
        if self.authz.decide(&call, facts).allowed {
            Ok((req, path))
        } else {
            Err((failure_response(Failure::Forbidden, grpc), path))
        }
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        grpc: bool,
        caller_http1: bool,
    ) -> (Response<Body>, &'static str) {
        set_identity_headers(req.headers_mut(), peer, &self.own_id);
        if caller_http1 && is_upgrade(&req) {
            let req = keep_upgrade_headers(req);
            let result = forward::upgrade(
                &self.app_dialer,
                req,
                self.limits.request_timeout,
                self.limits.idle_timeout,
            )
            .await;
            return match result {
                Ok(resp) => (from_upstream(resp, true), "http1"),
                Err(f) => (failure_response(f, grpc), "http1"),
            };
        }
        let app_http1 = match self.protocol {
            Protocol::Http1 => true,
            Protocol::Http2 | Protocol::Grpc => false,
            Protocol::Auto | Protocol::Tcp => {
                let original = req.headers().get(ORIGINAL_PROTOCOL);
                match original {
                    Some(v) => v.as_bytes() == b"http/1.1",
                    None => caller_http1,
                }
            }
        };
        let protocol = if grpc {
            "grpc"
        } else if app_http1 {
            "http1"
        } else {
            "http2"
        };
        let limit = crate::http::deadline(&req, self.limits.request_timeout);
        let hop = if app_http1 {
            &self.app_h1
        } else {
            &self.app_h2
        };
        let result = match to_app_request(req, self.app, app_http1) {
            Ok(req) => forward::send(hop, req, limit).await,
            Err(f) => Err(f),
        };
        let response = match result {
            Ok(resp) => from_upstream(resp, caller_http1),
            Err(f) => failure_response(f, grpc),
        };
        (response, protocol)
    }
}

/// Replaces whatever identity headers the peer sent with the verified ones.
fn set_identity_headers(headers: &mut http::HeaderMap, peer: &Peer, own_id: &str) {
    headers.remove(PEER_IDENTITY);
    headers.remove(XFCC);
    if let Ok(v) = HeaderValue::from_str(&peer.name) {
        headers.insert(PEER_IDENTITY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("By={own_id};URI={}", peer.name)) {
        headers.insert(XFCC, v);
    }
}

/// Rewrites a request for the app: HTTP/1.1 with a Host header, or HTTP/2 with :authority.
fn to_app_request(
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
    let headers = req.headers_mut();
    crate::http::strip_hop_by_hop(headers);
    headers.remove(ORIGINAL_PROTOCOL);
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

/// `resumed` for an abbreviated (session-resumption) handshake, `ok` for a full one.
pub fn handshake_kind(conn: &rustls::CommonState) -> &'static str {
    match conn.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => "resumed",
        _ => "ok",
    }
}

/// A metrics label for a failed inbound handshake.
fn handshake_failure(e: &std::io::Error) -> &'static str {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::NoCertificatesPresented) => "no_certificate",
        Some(rustls::Error::InvalidCertificate(_)) => "bad_certificate",
        Some(rustls::Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "error",
        None => "error",
    }
}
