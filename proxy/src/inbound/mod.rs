//! The inbound side: mutual TLS from peers, authorization, then plaintext to the local app.
//!
//! The peer must present an SVID of our trust domain; its SPIFFE ID is what authorization
//! sees and what the app is told, in headers the peer cannot forge (any it sent are
//! removed). ALPN says how the peer speaks: `h2` (ward sidecars, and SPIFFE-aware peers such
//! as Envoy), `http/1.1`, or `ward-tcp/1` for opaque TCP. The app is spoken to in the
//! protocol it speaks: fixed by config, or with `auto` the one the original caller used.

use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;
use ward_certs::SpiffeId;
use ward_policy::compile::namespace_in;
use ward_policy::request::Admitted as Judged;
use ward_policy::{Call, HttpCall};

use crate::authz::end_user::EndUser;
use crate::authz::{Authorizer, Facts};
use crate::config::{Inbound as InboundConfig, Limits, Protocol, UpgradeToken};
use crate::http::forward::from_upstream;
use crate::http::forward::{self, NextHop};
use crate::http::guard::{SwitchSignal, may_switch, switched};
use crate::http::server::{Servers, Speak, serve_guarded, serve_http};
use crate::http::{
    Body, END_USER, Failure, ORIGINAL_PROTOCOL, allowed_upgrade, failure_response, is_grpc,
};
use crate::inputs::ProxyInputs;
use crate::metrics::{self, Direction, Label, OpenConnection};
use crate::record;
use crate::trace::{Parent, RequestSpan};
use crate::transport::alpn::{ALPN_H2, ALPN_HTTP1, ALPN_TCP, ALPN_WARD_H2};
use crate::transport::detect::Prefixed;
use crate::transport::handshake_kind;
use crate::transport::idle::{Activity, Tracked};
use ward_runtime::Drain;

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A fresh request id: 128 random bits in hex.
pub(crate) fn new_request_id() -> String {
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

/// Request headers as the policy engine reads them: every value, as bytes.
pub(crate) struct HttpHeaders<'a>(pub(crate) &'a http::HeaderMap);

impl ward_policy::Headers for HttpHeaders<'_> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.0.get_all(name).iter().any(|v| f(v.as_bytes()))
    }
}

/// A request that passed admission, ready to forward.
struct Admitted {
    req: Request<Incoming>,
    /// The normalized path (what was judged and is forwarded).
    path: String,
    /// The protocol to switch to, if the request asks for one this listener carries.
    upgrade: Option<HeaderValue>,
    /// Whether the original caller spoke HTTP/1.x, as a ward sidecar said.
    original_http1: Option<bool>,
}

/// A verified peer: its SPIFFE ID, and the same as text for headers and logs and as a
/// metrics label.
pub struct Peer {
    pub id: SpiffeId,
    pub name: String,
    pub label: Label,
}

/// One inbound listener's state.
pub struct Inbound {
    apps: Apps,
    protocol: Protocol,
    upgrades: Vec<UpgradeToken>,
    own_id: String,
    /// Our trust domain: only its peers have namespaces (a federated peer has none).
    own_trust_domain: String,
    own_label: Label,
    acceptor: TlsAcceptor,
    authz: Arc<Authorizer>,
    app_h1: NextHop,
    limits: Limits,
    servers: Servers,
    access_log: bool,
    peers: PeerSlots,
}

mod app;
mod peers;
mod rewrite;

use self::app::{App, Apps};
use self::peers::PeerSlots;
use self::rewrite::{carry_judged_target, set_identity_headers, to_app_request};

impl Inbound {
    /// An inbound listener in front of `config.app`, authorizing with `inputs.authz`.
    pub fn new(
        config: &InboundConfig,
        inputs: &ProxyInputs,
    ) -> Result<Arc<Self>, ward_certs::tls::TlsConfigError> {
        let apps = Apps::fixed(config.app, inputs.limits.connect_timeout);
        Self::with_apps(apps, config.protocol, &config.upgrades, inputs)
    }

    /// The inbound capture listener: each connection goes to the app port the peer meant
    /// (its original destination), which is also the port policy judges.
    pub fn captured(
        protocol: Protocol,
        upgrades: &[UpgradeToken],
        inputs: &ProxyInputs,
    ) -> Result<Arc<Self>, ward_certs::tls::TlsConfigError> {
        let apps = Apps::captured(inputs.limits.connect_timeout);
        Self::with_apps(apps, protocol, upgrades, inputs)
    }

    fn with_apps(
        apps: Apps,
        protocol: Protocol,
        upgrades: &[UpgradeToken],
        inputs: &ProxyInputs,
    ) -> Result<Arc<Self>, ward_certs::tls::TlsConfigError> {
        let limits = &inputs.limits;
        let tls =
            inputs
                .identity
                .mesh
                .server_config(&[ALPN_WARD_H2, ALPN_H2, ALPN_HTTP1, ALPN_TCP])?;
        Ok(Arc::new(Self {
            apps,
            protocol,
            upgrades: upgrades.to_vec(),
            own_id: inputs.own_id.to_string(),
            own_trust_domain: inputs.own_id.trust_domain().to_string(),
            own_label: metrics::identity(&inputs.own_id.to_string()),
            acceptor: TlsAcceptor::from(tls),
            authz: inputs.authz.clone(),
            app_h1: NextHop::H1(Box::new(forward::app_h1_client(limits.connect_timeout))),
            limits: limits.clone(),
            servers: inputs.servers.clone(),
            access_log: inputs.access_log,
            peers: PeerSlots::default(),
        }))
    }

    /// Handles one connection from a peer.
    pub async fn connection(self: Arc<Self>, tcp: TcpStream, drain: Drain) {
        let Some(app) = self.apps.for_connection(&tcp) else {
            return;
        };
        let _open = OpenConnection::new(Direction::Inbound);
        let activity = Activity::new();
        let Some(tls) = self.handshake(tcp, &activity).await else {
            return;
        };
        let (_, conn) = tls.get_ref();
        let Some(peer) = ward_certs::tls::peer_spiffe_id(conn.peer_certificates()) else {
            metrics::handshake(Direction::Inbound, "bad_certificate");
            return;
        };
        metrics::handshake(Direction::Inbound, handshake_kind(conn));
        let name = peer.to_string();
        let Some(_slot) = self.peers.take(&name, self.limits.max_connections_per_peer) else {
            ::metrics::counter!("ward_connections_closed_total", "reason" => "peer_limit")
                .increment(1);
            tracing::warn!(peer = %name, "per-peer connection limit reached; closing");
            return;
        };
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let peer = Arc::new(Peer {
            label: metrics::identity(&name),
            name,
            id: peer,
        });
        if self.protocol == Protocol::Tcp || alpn.as_deref() == Some(ALPN_TCP) {
            return self.tcp(tls, &peer, &app).await;
        }
        let ward_peer = alpn.as_deref() == Some(ALPN_WARD_H2);
        let service = |switch: Option<SwitchSignal>| {
            let (this, peer, app) = (self.clone(), peer.clone(), app.clone());
            move |req| {
                let (this, peer, app) = (this.clone(), peer.clone(), app.clone());
                let switch = switch.clone();
                async move {
                    this.request(req, &peer, &app, ward_peer, switch.as_ref())
                        .await
                }
            }
        };
        let (servers, limits) = (&self.servers, &self.limits);
        match alpn.as_deref() {
            Some(ALPN_WARD_H2 | ALPN_H2) => {
                let service = service(None);
                serve_http(
                    servers,
                    Speak::Http2,
                    tls,
                    service,
                    &drain,
                    &activity,
                    limits,
                )
                .await
            }
            Some(ALPN_HTTP1) => {
                let service = |switch| service(Some(switch));
                serve_guarded(
                    servers,
                    Speak::Http1,
                    tls,
                    service,
                    &drain,
                    &activity,
                    limits,
                )
                .await
            }
            _ => {
                let service = |switch| service(Some(switch));
                serve_guarded(
                    servers,
                    Speak::Either,
                    tls,
                    service,
                    &drain,
                    &activity,
                    limits,
                )
                .await
            }
        }
    }

    /// The TLS handshake, bounded by `header_read_timeout`; a failure is counted, and
    /// answered with an alert where rustls sends none.
    async fn handshake(
        &self,
        tcp: TcpStream,
        activity: &Activity,
    ) -> Option<tokio_rustls::server::TlsStream<Tracked<Prefixed<TcpStream>>>> {
        let handshake = async {
            let io = crate::transport::tls_alerts::first_record_checked(tcp).await?;
            let accepted = self
                .acceptor
                .accept(Tracked::new(io, activity.clone()))
                .into_fallible()
                .await;
            match accepted {
                Ok(tls) => Ok(tls),
                Err((e, mut io)) => {
                    crate::transport::tls_alerts::after_failed_handshake(&e, &mut io).await;
                    Err(e)
                }
            }
        };
        match tokio::time::timeout(self.limits.header_read_timeout, handshake).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                metrics::handshake(Direction::Inbound, handshake_failure(&e));
                tracing::debug!(error = %e, "inbound TLS handshake failed");
                None
            }
            Err(_) => {
                metrics::handshake(Direction::Inbound, "timeout");
                None
            }
        }
    }

    /// A TCP connection: decided once at the start, before any byte reaches the app, and
    /// again whenever the policy changes while it is open.
    async fn tcp<S>(&self, stream: S, peer: &Peer, app: &App)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut changes = self.authz.subscribe();
        if !self.tcp_allowed(peer, app) {
            return;
        }
        let started = Instant::now();
        let forward = async {
            let forward = crate::transport::tcp::forward(
                stream,
                &app.dialer,
                Direction::Inbound,
                self.limits.idle_timeout,
            );
            if let Some(carried) = forward.await {
                let record = record::Tcp {
                    direction: Direction::Inbound,
                    peer: &peer.name,
                    source: &peer.label,
                    destination: &self.own_label,
                    carried,
                    elapsed: started.elapsed(),
                };
                record.write(self.access_log);
            }
        };
        let revoked = async {
            while changes.changed().await.is_ok() {
                if !self.tcp_allowed(peer, app) {
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

    fn tcp_allowed(&self, peer: &Peer, app: &App) -> bool {
        let call = Call {
            principal: &peer.name,
            namespace: namespace_in(&peer.name, &self.own_trust_domain),
            port: app.addr.port(),
            http: None,
        };
        let facts = Facts {
            source: &peer.label,
            protocol: "tcp",
            method: None,
            path: None,
            request_id: None,
            edge: None,
        };
        self.authz.decide(&call, facts).allowed
    }

    async fn request(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        app: &App,
        ward_peer: bool,
        switch: Option<&SwitchSignal>,
    ) -> Response<Body> {
        let started = Instant::now();
        let switching = switch.filter(|_| may_switch(&req));
        let connect = req.method() == http::Method::CONNECT;
        let grpc = is_grpc(&req);
        let caller_http1 = req.version() != Version::HTTP_2;
        // The original caller's protocol, as a ward peer reports it.
        let reported_http1 = ward_peer
            .then(|| req.headers().get(ORIGINAL_PROTOCOL))
            .flatten()
            .map(|v| v.as_bytes() == b"http/1.1");
        let method = req.method().clone();
        let span = RequestSpan::start(
            Direction::Inbound,
            Parent::Continue,
            req.headers(),
            &method,
            req.uri().path(),
            &peer.name,
            &self.own_id,
        );
        let admitted = self.admit(req, peer, app.addr.port(), reported_http1, grpc, &span);
        let (result, path) = match admitted {
            Ok(mut admitted) => {
                let path = admitted.path.clone();
                let spliced = switch
                    .filter(|_| admitted.upgrade.is_some())
                    .map(SwitchSignal::spliced);
                span.propagate(admitted.req.headers_mut());
                let forward = self.forward(admitted, peer, app, caller_http1, spliced);
                (forward.instrument(span.span().clone()).await, path)
            }
            Err((failure, path)) => (Err(failure), path),
        };
        let (response, cause) = match result {
            Ok(resp) => (resp, None),
            Err(f) => (failure_response(f, grpc), Some(f.cause())),
        };
        if let Some(switch) = switching {
            switch.answered(switched(&response, connect));
        }
        let record = record::Request {
            direction: Direction::Inbound,
            protocol: record::Protocol::of(grpc, reported_http1.unwrap_or(caller_http1)),
            peer: &peer.name,
            source: &peer.label,
            destination: &self.own_label,
            method: &method,
            path: &path,
            status: response.status().as_u16(),
            cause,
            elapsed: started.elapsed(),
            span: &span,
        };
        record.write(self.access_log);
        response
    }

    /// Request hygiene, canonical facts (method, path, authority), request id and the
    /// authorization decision. Hop-by-hop headers and headers only ward sets are removed
    /// before anything is judged, so nothing the caller names in `Connection` can take
    /// away what ward adds later. Returns the request to forward, or the refusal.
    fn admit(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        port: u16,
        original_http1: Option<bool>,
        grpc: bool,
        span: &RequestSpan,
    ) -> Result<Admitted, (Failure, String)> {
        let https = req.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let default_port = if https { 443 } else { 80 };
        let admitted = crate::http::admit(&req, default_port, self.limits.allow_header_underscores);
        let Judged { path, authority } = match admitted {
            Ok(admitted) => admitted,
            Err(why) => {
                let raw = req.uri().path();
                let path = ward_policy::normalize_path(raw).unwrap_or_else(|_| raw.to_owned());
                tracing::debug!(peer = %peer.name, %path, reason = %why, "request refused (400)");
                return Err((Failure::BadRequest, path));
            }
        };
        let upgrade = allowed_upgrade(&req, &self.upgrades);
        crate::http::strip_hop_by_hop(req.headers_mut());
        let end_user = match self.end_user(&req, peer) {
            Ok(end_user) => end_user,
            Err(why) => {
                tracing::debug!(peer = %peer.name, %path, reason = %why, "request refused (400)");
                return Err((Failure::BadRequest, path));
            }
        };
        crate::http::strip_mesh_only(req.headers_mut());
        if let Some((_, value)) = &end_user {
            // The app may read the end user the gateway verified too.
            req.headers_mut().insert(END_USER, value.clone());
        }
        if let Err(e) = carry_judged_target(&mut req, &path, authority.as_ref()) {
            tracing::debug!(peer = %peer.name, %path, reason = %e, "request refused (400)");
            return Err((Failure::BadRequest, path));
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
        let headers = HttpHeaders(req.headers());
        let call = Call {
            principal: &peer.name,
            namespace: namespace_in(&peer.name, &self.own_trust_domain),
            port,
            http: Some(HttpCall {
                method: req.method().as_str(),
                path: &path,
                authority: authority.as_ref(),
                headers: &headers,
                auth: end_user.as_ref().map(|(u, _)| u.auth()),
            }),
        };
        let facts = Facts {
            source: &peer.label,
            protocol: if grpc { "grpc" } else { "http" },
            method: Some(req.method().as_str()),
            path: Some(&path),
            request_id: Some(&request_id),
            edge: None,
        };
        let decision = self.authz.decide(&call, facts);
        span.decided(&decision);
        if decision.allowed {
            Ok(Admitted {
                req,
                path,
                upgrade,
                original_http1,
            })
        } else {
            Err((Failure::Forbidden, path))
        }
    }

    /// The end user a trusted gateway sent (`x-ward-end-user`), with the header's value; from
    /// any other caller the header is ignored here and removed with the other mesh-only
    /// headers. A gateway's header that is sent twice or does not read is refused.
    fn end_user(
        &self,
        req: &Request<Incoming>,
        peer: &Peer,
    ) -> Result<Option<(EndUser, HeaderValue)>, String> {
        let mut values = req.headers().get_all(END_USER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if !self.authz.trusts_gateway(&peer.name) {
            return Ok(None);
        }
        if values.next().is_some() {
            return Err("x-ward-end-user sent twice".into());
        }
        EndUser::from_header(value.as_bytes()).map(|u| Some((u, value.clone())))
    }

    async fn forward(
        &self,
        admitted: Admitted,
        peer: &Peer,
        app: &App,
        caller_http1: bool,
        spliced: Option<crate::http::guard::Spliced>,
    ) -> Result<Response<Body>, Failure> {
        let Admitted {
            mut req,
            upgrade,
            original_http1,
            ..
        } = admitted;
        set_identity_headers(req.headers_mut(), peer, &self.own_id);
        if let Some(asked) = upgrade {
            // The app gets an origin-form request with `Host`, as from any HTTP/1.1 client.
            let req = match to_app_request(req, app.addr, true) {
                Ok(mut req) => {
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    if let Ok(origin) = pq.parse() {
                        *req.uri_mut() = origin;
                    }
                    req
                }
                Err(f) => return Err(f),
            };
            let result = forward::upgrade(
                &app.dialer,
                req,
                asked,
                self.limits.request_timeout,
                self.limits.idle_timeout,
                spliced,
            )
            .await;
            return result.map(|resp| from_upstream(resp, true));
        }
        let app_http1 = match self.protocol {
            Protocol::Http1 => true,
            Protocol::Http2 | Protocol::Grpc => false,
            Protocol::Auto | Protocol::Tcp => {
                original_http1.unwrap_or(caller_http1) || !app.speaks_h2().await
            }
        };
        let limit = crate::http::deadline(&req, self.limits.request_timeout);
        let hop = if app_http1 { &self.app_h1 } else { &app.h2 };
        let result = match to_app_request(req, app.addr, app_http1) {
            Ok(req) => forward::send(hop, req, limit).await,
            Err(f) => Err(f),
        };
        result.map(|resp| from_upstream(resp, caller_http1))
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
