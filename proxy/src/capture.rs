//! Transparent capture: the app's outbound connections arrive (redirected by
//! `ward-proxy init`) with their original destination. One that goes to a mesh workload is
//! carried over mTLS to that workload's sidecar, as through an `outbound` listener; any
//! other leaves as it came (passthrough), unless `outbound_traffic_policy: REGISTRY_ONLY`
//! refuses it. A connection without an original destination, or one that points back at
//! the proxy itself, is refused: capturing it would loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use ward_certs::SpiffeId;
use ward_runtime::Drain;

use crate::config::{Capture as CaptureConfig, Protocol, SidecarConfig, TrafficPolicy};
use crate::inputs::ProxyInputs;
use crate::metrics::Direction;
use crate::outbound::Outbound;
use crate::record;
use crate::resolve::{Destination, Registry, Target};

pub const CAPTURE_TOTAL: &str = "ward_capture_total";
pub const CAPTURE_REFUSED_TOTAL: &str = "ward_capture_refused_total";

/// The capture listeners' shared state.
pub struct Capture {
    detected: Arc<Outbound>,
    opaque: Arc<Outbound>,
    /// The sidecar's own setting; the MeshPolicy in force (`authz`) may say so too.
    registry_only: bool,
    authz: Arc<crate::authz::Authorizer>,
    /// Ports the proxy itself listens on: a destination on one of them, on a local
    /// address, is the proxy.
    own_ports: Vec<u16>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    access_log: bool,
    /// This sidecar's identity: the source of passthrough connections.
    own_label: crate::metrics::Label,
}

impl Capture {
    /// The capture of `config.capture`, with `ids` the destinations' parsed identities.
    pub fn new(
        config: &SidecarConfig,
        capture: &CaptureConfig,
        ids: Vec<SpiffeId>,
        discovered: Option<crate::control::discovery::Endpoints>,
        inputs: &ProxyInputs,
    ) -> Result<Arc<Self>, ward_certs::tls::TlsConfigError> {
        let registry: HashMap<SocketAddr, Destination> = capture
            .destinations
            .iter()
            .zip(ids)
            .map(|(d, identity)| {
                let port = d.inbound_port.unwrap_or(d.address.port());
                let addr = SocketAddr::new(d.address.ip(), port);
                (d.address, Destination { addr, identity })
            })
            .collect();
        let registry = Arc::new(Registry {
            configured: registry,
            discovered,
        });
        let detected = Outbound::new(
            capture.protocol,
            &capture.upgrades,
            registry.clone(),
            inputs,
        )?;
        let opaque = Outbound::new(Protocol::Tcp, &[], registry, inputs)?;
        let mut own_ports = vec![
            capture.outbound.port(),
            capture.outbound_opaque.port(),
            config.admin.port(),
        ];
        own_ports.extend(config.inbound.iter().map(|l| l.listen.port()));
        own_ports.extend(config.outbound.iter().map(|l| l.listen.port()));
        Ok(Arc::new(Self {
            detected,
            opaque,
            registry_only: capture.outbound_traffic_policy == TrafficPolicy::RegistryOnly,
            authz: inputs.authz.clone(),
            own_ports,
            connect_timeout: config.limits.connect_timeout,
            idle_timeout: config.limits.idle_timeout,
            access_log: config.access_log,
            own_label: crate::metrics::identity(&inputs.own_id.to_string()),
        }))
    }

    /// One captured connection; `opaque` when it came through the opaque port.
    pub async fn connection(self: Arc<Self>, tcp: TcpStream, drain: Drain, opaque: bool) {
        let Some(orig) = original_destination(&tcp) else {
            return;
        };
        if (orig.ip().is_loopback() || orig.ip().is_unspecified())
            && self.own_ports.contains(&orig.port())
        {
            refused("loop");
            tracing::warn!(%orig, "captured connection points at the proxy's own port; refused");
            return;
        }
        let target = Target {
            original_dst: Some(orig),
        };
        let outbound = if opaque { &self.opaque } else { &self.detected };
        if let Some(up) = outbound.upstream(&target) {
            metrics::counter!(CAPTURE_TOTAL, "route" => "mesh").increment(1);
            return outbound.clone().connection_to(tcp, drain, up).await;
        }
        if self.registry_only || self.authz.registry_only() {
            refused("not_in_registry");
            tracing::debug!(%orig, "not a mesh destination, and the mesh allows only those");
            return;
        }
        metrics::counter!(CAPTURE_TOTAL, "route" => "passthrough").increment(1);
        self.passthrough(tcp, orig).await;
    }

    /// Carries the connection to where it was going, unchanged.
    async fn passthrough(&self, tcp: TcpStream, orig: SocketAddr) {
        let started = Instant::now();
        let connected = tokio::time::timeout(self.connect_timeout, TcpStream::connect(orig)).await;
        let other = match connected {
            Ok(Ok(other)) => other,
            Ok(Err(e)) => {
                tracing::debug!(%orig, error = %e, "passthrough: destination unavailable");
                return;
            }
            Err(_) => {
                tracing::debug!(%orig, "passthrough: connect timed out");
                return;
            }
        };
        let _ = other.set_nodelay(true);
        let (carried, _) = crate::transport::tcp::splice(tcp, other, self.idle_timeout).await;
        let peer = orig.to_string();
        let record = record::Tcp {
            direction: Direction::Outbound,
            peer: &peer,
            source: &self.own_label,
            destination: &crate::metrics::EXTERNAL,
            carried,
            elapsed: started.elapsed(),
        };
        record.write(self.access_log);
    }
}

/// Where a captured connection (inbound or outbound) was going; `None`, counted, when it
/// has no original destination or its destination is where it arrived (it was not
/// redirected to us: carrying it on would loop).
pub fn original_destination(tcp: &TcpStream) -> Option<SocketAddr> {
    let local = tcp.local_addr().ok()?;
    match crate::transport::orig_dst::original_dst(tcp, local) {
        Ok(orig) if orig == local => {
            refused("loop");
            tracing::debug!(%orig, "captured connection was not redirected; refused");
            None
        }
        Ok(orig) => Some(orig),
        Err(e) => {
            refused("no_original_destination");
            tracing::debug!(error = %e, "captured connection without an original destination");
            None
        }
    }
}

fn refused(reason: &'static str) {
    metrics::counter!(CAPTURE_REFUSED_TOTAL, "reason" => reason).increment(1);
}
