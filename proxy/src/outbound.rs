//! The outbound side: plaintext from the local app, mutual TLS to the peer sidecar.
//!
//! Each connection's protocol is detected (or fixed by config). HTTP — whether the app
//! speaks HTTP/1.1 or HTTP/2 — is carried to the peer over one pooled HTTP/2 connection;
//! HTTP/1.1 upgrades get a connection of their own; anything else is spliced as opaque TCP.
//! The peer must present exactly the configured SPIFFE ID or nothing is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tracing::Instrument;
use ward_certs::{ExpectedPeer, MeshIdentity};

use crate::config::{Limits, Protocol, UpgradeToken};
use crate::http::forward::{self, NextHop, authority_of, from_upstream};
use crate::http::guard::{SwitchSignal, may_switch, switched};
use crate::http::pool::H2Pool;
use crate::http::server::{Servers, Speak, serve_guarded, serve_http};
use crate::http::{Body, Failure, ORIGINAL_PROTOCOL, allowed_upgrade, failure_response, is_grpc};
use crate::inputs::ProxyInputs;
use crate::metrics::{self, Direction, Label, OpenConnection};
use crate::record;
use crate::resolve::{Destination, Resolve, Target};
use crate::trace::{Parent, RequestSpan};
use crate::transport::alpn::{ALPN_H2, ALPN_HTTP1, ALPN_TCP, ALPN_WARD_H2};
use crate::transport::connect::Dialer;
use crate::transport::detect::{self, Detected, Prefixed};
use crate::transport::idle::{Activity, Tracked};
use ward_runtime::Drain;

/// One outbound listener's forwarding state.
pub struct Outbound {
    protocol: Protocol,
    upgrades: Vec<UpgradeToken>,
    limits: Limits,
    servers: Servers,
    access_log: bool,
    resolver: Arc<dyn Resolve>,
    upstreams: Upstreams,
    /// This sidecar's SPIFFE ID: the source of what it sends.
    own_id: Label,
}

/// Connections to each destination resolved so far, made on first use and kept.
pub struct Upstreams {
    identity: MeshIdentity,
    limits: Limits,
    made: Mutex<HashMap<Destination, Arc<Upstream>>>,
}

impl Upstreams {
    pub fn new(identity: MeshIdentity, limits: Limits) -> Self {
        Self {
            identity,
            limits,
            made: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Destination, Arc<Upstream>>> {
        self.made.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How `to` is reached, its connection made now if it is new; an error only if its
    /// TLS settings cannot be made.
    pub fn prepare(
        &self,
        to: &Destination,
    ) -> Result<Arc<Upstream>, ward_certs::tls::TlsConfigError> {
        if let Some(up) = self.lock().get(to) {
            return Ok(up.clone());
        }
        let up = Arc::new(Upstream::new(to, &self.identity, &self.limits)?);
        Ok(self.lock().entry(to.clone()).or_insert(up).clone())
    }

    /// [`Upstreams::prepare`], with an error logged and `None`.
    pub fn get(&self, to: &Destination) -> Option<Arc<Upstream>> {
        self.prepare(to)
            .inspect_err(|e| {
                tracing::warn!(destination = %to.identity, addr = %to.addr, error = %e,
                    "cannot prepare a connection to the destination");
            })
            .ok()
    }
}

/// How one destination is reached: a pooled HTTP/2 connection for requests, and dialers
/// for upgrades and opaque TCP, each pinning the destination's identity and ALPN.
pub struct Upstream {
    /// The destination's SPIFFE ID, for metrics and logs.
    name: Label,
    pub(crate) h2: NextHop,
    upgrade: Dialer,
    tcp: Dialer,
}

impl Upstream {
    pub(crate) fn new(
        to: &Destination,
        identity: &MeshIdentity,
        limits: &Limits,
    ) -> Result<Self, ward_certs::tls::TlsConfigError> {
        let dialer = |alpn: &[&[u8]]| -> Result<Dialer, ward_certs::tls::TlsConfigError> {
            Ok(Dialer::Mesh {
                addr: to.addr,
                timeout: limits.connect_timeout,
                tls: identity.client_config(ExpectedPeer::Exact(to.identity.clone()), alpn)?,
            })
        };
        Ok(Self {
            name: metrics::identity(&to.identity.to_string()),
            h2: NextHop::H2(Arc::new(H2Pool::new(dialer(&[ALPN_WARD_H2, ALPN_H2])?))),
            upgrade: dialer(&[ALPN_HTTP1])?,
            tcp: dialer(&[ALPN_TCP])?,
        })
    }
}

impl Outbound {
    /// An outbound listener sending where `resolver` says. A destination known without a
    /// connection (a static upstream) is prepared now, so its errors stop the start.
    pub fn new(
        protocol: Protocol,
        upgrades: &[UpgradeToken],
        resolver: Arc<dyn Resolve>,
        inputs: &ProxyInputs,
    ) -> Result<Arc<Self>, ward_certs::tls::TlsConfigError> {
        let this = Self {
            protocol,
            upgrades: upgrades.to_vec(),
            limits: inputs.limits.clone(),
            servers: inputs.servers.clone(),
            access_log: inputs.access_log,
            resolver,
            upstreams: Upstreams::new(inputs.identity.mesh.clone(), inputs.limits.clone()),
            own_id: metrics::identity(&inputs.own_id.to_string()),
        };
        if let Some(to) = this.resolver.resolve(&Target::default()) {
            this.upstreams.prepare(&to)?;
        }
        Ok(Arc::new(this))
    }

    /// Where a connection to `target` goes, and how it is reached (`None`: not a mesh
    /// destination).
    pub fn upstream(&self, target: &Target) -> Option<Arc<Upstream>> {
        self.upstreams.get(&self.resolver.resolve(target)?)
    }

    /// Handles one connection from the app (to the listener's destination).
    pub async fn connection(self: Arc<Self>, tcp: TcpStream, drain: Drain) {
        let Some(up) = self.upstream(&Target::default()) else {
            tracing::debug!("outbound connection with no destination; closing");
            return;
        };
        self.connection_to(tcp, drain, up).await
    }

    /// Handles one connection from the app going to `up` (resolved by the caller).
    pub async fn connection_to(self: Arc<Self>, tcp: TcpStream, drain: Drain, up: Arc<Upstream>) {
        let _open = OpenConnection::new(Direction::Outbound);
        let activity = Activity::new();
        let mut io = Tracked::new(tcp, activity.clone());
        let (detected, prefix) = match self.protocol {
            Protocol::Tcp => (Detected::Tcp, Default::default()),
            Protocol::Http1 => (Detected::Http1, Default::default()),
            Protocol::Http2 | Protocol::Grpc => (Detected::Http2, Default::default()),
            Protocol::Auto => match detect::detect(&mut io, self.limits.detect_timeout).await {
                Ok((d, prefix)) => {
                    metrics::detected(if d == Detected::Tcp && prefix.is_empty() {
                        "timeout"
                    } else {
                        d.label()
                    });
                    (d, prefix)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "outbound connection failed before detection");
                    return;
                }
            },
        };
        let io = Prefixed::new(prefix, io);
        let app_http1 = match detected {
            Detected::Tcp => {
                let started = Instant::now();
                let forward = crate::transport::tcp::forward(
                    io,
                    &up.tcp,
                    Direction::Outbound,
                    self.limits.idle_timeout,
                );
                if let Some(carried) = forward.await {
                    let record = record::Tcp {
                        direction: Direction::Outbound,
                        peer: &up.name,
                        source: &self.own_id,
                        destination: &up.name,
                        carried,
                        elapsed: started.elapsed(),
                    };
                    record.write(self.access_log);
                }
                return;
            }
            Detected::Http1 => true,
            Detected::Http2 => false,
        };
        let service = |switch: Option<SwitchSignal>| {
            let (this, up) = (self.clone(), up.clone());
            move |req| {
                let (this, up) = (this.clone(), up.clone());
                let switch = switch.clone();
                async move { this.request(&up, req, app_http1, switch.as_ref()).await }
            }
        };
        let (servers, limits) = (&self.servers, &self.limits);
        if app_http1 {
            let service = |switch| service(Some(switch));
            serve_guarded(
                servers,
                Speak::Http1,
                io,
                service,
                &drain,
                &activity,
                limits,
            )
            .await;
        } else {
            let service = service(None);
            serve_http(
                servers,
                Speak::Http2,
                io,
                service,
                &drain,
                &activity,
                limits,
            )
            .await;
        }
    }

    async fn request(
        &self,
        up: &Upstream,
        req: Request<Incoming>,
        app_http1: bool,
        switch: Option<&SwitchSignal>,
    ) -> Response<Body> {
        let started = Instant::now();
        let switching = switch.filter(|_| may_switch(&req));
        let connect = req.method() == http::Method::CONNECT;
        let grpc = is_grpc(&req);
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let span = RequestSpan::start(
            Direction::Outbound,
            Parent::Continue,
            req.headers(),
            &method,
            &path,
            &self.own_id,
            &up.name,
        );
        let asked = if app_http1 {
            allowed_upgrade(&req, &self.upgrades)
        } else {
            None
        };
        let result = if let Some(asked) = asked {
            let mut req = req;
            span.propagate(req.headers_mut());
            forward::upgrade(
                &up.upgrade,
                req,
                asked,
                self.limits.request_timeout,
                self.limits.idle_timeout,
                switch.map(SwitchSignal::spliced),
            )
            .await
        } else {
            match to_mesh_request(req, app_http1) {
                Ok(mut req) => {
                    span.propagate(req.headers_mut());
                    let limit = crate::http::deadline(&req, self.limits.request_timeout);
                    let send = forward::send(&up.h2, req, limit);
                    send.instrument(span.span().clone()).await
                }
                Err(f) => Err(f),
            }
        };
        let (response, cause) = match result {
            Ok(resp) => (from_upstream(resp, app_http1), None),
            Err(f) => (failure_response(f, grpc), Some(f.cause())),
        };
        if let Some(switch) = switching {
            switch.answered(switched(&response, connect));
        }
        let record = record::Request {
            direction: Direction::Outbound,
            protocol: record::Protocol::of(grpc, app_http1),
            peer: &up.name,
            source: &self.own_id,
            destination: &up.name,
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
}

/// Rewrites an app request for the HTTP/2 hop between sidecars.
pub(crate) fn to_mesh_request(
    mut req: Request<Incoming>,
    app_http1: bool,
) -> Result<Request<Incoming>, Failure> {
    let authority = authority_of(&req).ok_or(Failure::BadRequest)?;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    *req.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path)
        .build()
        .map_err(|_| Failure::BadRequest)?;
    let headers = req.headers_mut();
    crate::http::strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    if app_http1 {
        headers.insert(ORIGINAL_PROTOCOL, HeaderValue::from_static("http/1.1"));
    } else {
        headers.remove(ORIGINAL_PROTOCOL);
    }
    *req.version_mut() = Version::HTTP_2;
    Ok(req)
}
