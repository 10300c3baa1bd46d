//! Jaeger (built from its Go modules by `make jaeger`, an OpenTelemetry Collector
//! distribution) as the trace backend tests export to: OTLP/gRPC and OTLP/HTTP receivers and
//! its query API on free loopback ports, in-memory storage.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::bin::run;
use crate::k8s::eventually;
use crate::net::free_addr;

/// Jaeger with in-memory storage, OTLP receivers and its query API on free loopback ports.
pub struct Jaeger {
    child: Child,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    query: SocketAddr,
}

impl Jaeger {
    pub fn start(dir: &Path) -> Self {
        let (otlp_grpc, otlp_http, query, query_grpc) =
            (free_addr(), free_addr(), free_addr(), free_addr());
        let config = dir.join("jaeger.yaml");
        std::fs::write(
            &config,
            format!(
                "service:\n  extensions: [jaeger_storage, jaeger_query]\n  pipelines:\n    traces:\n\
                 \x20     receivers: [otlp]\n      exporters: [jaeger_storage_exporter]\n\
                 \x20 telemetry: {{ metrics: {{ level: none }}, logs: {{ level: info }} }}\n\
                 extensions:\n  jaeger_query:\n    storage: {{ traces: mem }}\n\
                 \x20   http: {{ endpoint: \"{query}\" }}\n    grpc: {{ endpoint: \"{query_grpc}\" }}\n\
                 \x20 jaeger_storage:\n    backends: {{ mem: {{ memory: {{ max_traces: 100000 }} }} }}\n\
                 receivers:\n  otlp:\n    protocols:\n\
                 \x20     grpc: {{ endpoint: \"{otlp_grpc}\" }}\n      http: {{ endpoint: \"{otlp_http}\" }}\n\
                 exporters:\n  jaeger_storage_exporter: {{ trace_storage: mem }}\n"
            ),
        )
        .expect("jaeger config");
        let log = dir.join("jaeger.log");
        let out = std::fs::File::create(&log).expect("jaeger log");
        let child = Command::new(crate::bin::go_tool("jaeger"))
            .arg(format!("--config={}", config.display()))
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start jaeger");
        let jaeger = Self {
            child,
            otlp_grpc,
            otlp_http,
            query,
        };
        eventually(Duration::from_secs(30), "Jaeger's query API", || {
            jaeger.get("/api/services")
        });
        jaeger
    }

    /// A query API answer (`None` until it answers 200 with JSON).
    pub fn get(&self, path: &str) -> Option<Value> {
        let url = format!("http://{}{path}", self.query);
        let out = run(Path::new("curl"), ["-sS", "-f", "--max-time", "5", &url]);
        (out.code == 0)
            .then(|| serde_json::from_str(&out.stdout).ok())
            .flatten()
    }

    /// The traces Jaeger holds with a span of `service`.
    pub fn traces(&self, service: &str) -> Vec<Value> {
        let path = format!("/api/traces?service={service}&limit=1000&lookback=1h");
        self.get(&path)
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default()
    }

    /// One trace by id, once Jaeger has it.
    pub fn trace(&self, id: &str) -> Option<Value> {
        let found = self.get(&format!("/api/traces/{id}"))?;
        found["data"].as_array()?.first().cloned()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
