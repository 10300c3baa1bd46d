//! The app containers' probes, moved to the sidecar's admin port. With inbound capture,
//! the kubelet's plaintext probe of an app port would meet the sidecar's mTLS listener
//! and fail; so each HTTP, TCP and gRPC probe becomes an HTTP GET of
//! `/app-health/CONTAINER/KIND` on the admin port, and the original goes to the sidecar
//! (`WARD_APP_PROBES`), which runs it against the app on loopback (`ward_proxy::probes`).
//! Left as they are: `exec` probes, probes of another host, probes of a port excluded
//! from inbound capture, and every probe of a pod annotated
//! `ward.dev/rewrite-app-probes: "false"`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::ADMIN_PORT;

/// The annotation that turns the rewrite off (`"false"`).
pub const REWRITE_ANNOTATION: &str = "ward.dev/rewrite-app-probes";
/// The sidecar's variable holding the moved probes (JSON: path -> probe).
pub const PROBES_ENV: &str = "WARD_APP_PROBES";

/// Rewrites the probes of `spec`'s containers; returns the originals by admin path.
pub fn rewrite(spec: &mut PodSpec, excluded_inbound: &[u16]) -> BTreeMap<String, Value> {
    let mut moved = BTreeMap::new();
    for container in &mut spec.containers {
        let ports = container.ports.clone().unwrap_or_default();
        let name = container.name.clone();
        for (kind, slot) in [
            ("livez", &mut container.liveness_probe),
            ("readyz", &mut container.readiness_probe),
            ("startupz", &mut container.startup_probe),
        ] {
            let Some(probe) = slot.as_mut() else { continue };
            let Some(mut original) = original(probe, &ports, excluded_inbound) else {
                continue;
            };
            original["timeout"] = json!(probe.timeout_seconds.unwrap_or(1).clamp(1, 300));
            let path = format!("/app-health/{name}/{kind}");
            moved.insert(path.clone(), original);
            probe.tcp_socket = None;
            probe.grpc = None;
            probe.http_get = Some(HTTPGetAction {
                path: Some(path),
                port: IntOrString::Int(i32::from(ADMIN_PORT)),
                scheme: Some("HTTP".into()),
                ..HTTPGetAction::default()
            });
        }
    }
    moved
}

/// A probe's action as the sidecar runs it, if it is one to move.
fn original(probe: &Probe, ports: &[ContainerPort], excluded: &[u16]) -> Option<Value> {
    let port_of = |port: &IntOrString| -> Option<u16> {
        let number = match port {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        };
        number.filter(|n| *n != 0 && !excluded.contains(n))
    };
    if let Some(get) = &probe.http_get {
        if get.host.is_some() {
            return None;
        }
        let path = get.path.clone().unwrap_or_else(|| "/".into());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let headers: Vec<(String, String)> = get
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return Some(json!({ "http": {
            "port": port_of(&get.port)?,
            "path": path,
            "https": get.scheme.as_deref() == Some("HTTPS"),
            "headers": headers,
        } }));
    }
    if let Some(tcp) = &probe.tcp_socket {
        if tcp.host.is_some() {
            return None;
        }
        return Some(json!({ "tcp": { "port": port_of(&tcp.port)? } }));
    }
    if let Some(grpc) = &probe.grpc {
        return Some(json!({ "grpc": {
            "port": port_of(&IntOrString::Int(grpc.port))?,
            "service": grpc.service.clone().unwrap_or_default(),
        } }));
    }
    None
}
