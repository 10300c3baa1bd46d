//! The sidecar's configuration: one YAML file, overridable field by field from the
//! environment, parsed and validated once before any listener opens.
//!
//! Environment overrides exist because Kubernetes injection sets environment variables. A
//! variable `WARD_<SECTION>_<FIELD>` sets `section.field` (e.g. `WARD_LIMITS_IDLE_TIMEOUT=30s`,
//! `WARD_IDENTITY_CERT=/var/run/ward/svid.pem`); `WARD_<FIELD>` sets a top-level field
//! (`WARD_TRUST_DOMAIN`, `WARD_ADMIN`, `WARD_ACCESS_LOG`, and the lists `WARD_INBOUND` /
//! `WARD_OUTBOUND` as YAML flow sequences). Values are read as YAML scalars;
//! `WARD_WORKLOAD_LABELS` also takes `k=v,k=v`. An unknown `WARD_` variable is an error, so
//! a typo never silently leaves a default in force. `WARD_LOG` (the log filter) is not a
//! setting and is ignored here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ward_certs::{SpiffeId, TrustDomain};
use yaml_serde::Value;

/// Variables with the `WARD_` prefix that are not settings.
const NOT_SETTINGS: &[&str] = &["WARD_LOG"];
/// Sections whose fields can be set one by one from the environment.
const SECTIONS: &[&str] = &[
    // `workload_api` before `workload`: the first prefix that matches wins.
    "identity",
    "workload_api",
    "workload",
    "limits",
    "runtime",
    "policy",
    "audit",
    "capture",
    "tracing",
];
/// What errors name when there is no file.
const ENV_ORIGIN: &str = "WARD_* environment";
/// Top-level fields settable from the environment.
const TOP_LEVEL: &[&str] = &[
    "trust_domain",
    "admin",
    "access_log",
    "inbound",
    "outbound",
    "app_probes",
];

/// A configuration that cannot be used; its text is the one line the operator sees.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(msg: impl fmt::Display) -> Self {
        Self(msg.to_string())
    }
}

/// `ward-proxy sidecar` configuration, as documented in the README.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    pub trust_domain: String,
    pub identity: IdentityFiles,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub inbound: Vec<Inbound>,
    #[serde(default)]
    pub outbound: Vec<Outbound>,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub runtime: Runtime,
    /// One log line per request / TCP connection.
    #[serde(default)]
    pub access_log: bool,
    /// Where authorization policy comes from (static mode: a directory of YAML files).
    /// Required when there are inbound listeners.
    #[serde(default)]
    pub policy: Option<PolicySource>,
    #[serde(default)]
    pub audit: Audit,
    /// Transparent capture (after `ward-proxy init`): the app's connections arrive with
    /// their original destination.
    #[serde(default)]
    pub capture: Option<Capture>,
    /// The app's probes, which the kubelet asks the admin port for
    /// (`/app-health/CONTAINER/KIND`; the injector moves them there).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub app_probes: crate::probes::AppProbes,
    /// Request spans exported over OTLP; absent, none are made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    /// The SPIFFE Workload API for the app; absent, it is not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_api: Option<WorkloadApi>,
}

/// Transparent capture of the app's outbound connections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// Where `ward-proxy init` sends inbound connections: peers' mTLS, to the app port
    /// they meant, authorized as on an `inbound` listener.
    #[serde(default = "default_capture_inbound")]
    pub inbound: SocketAddr,
    /// Where `ward-proxy init` sends outbound connections.
    #[serde(default = "default_capture_outbound")]
    pub outbound: SocketAddr,
    /// Where it sends outbound connections to opaque ports (carried as TCP, never sniffed).
    #[serde(default = "default_capture_opaque")]
    pub outbound_opaque: SocketAddr,
    /// What the app's connections speak (detected by default).
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeToken>,
    /// A destination that is not a mesh workload: passed through as it came
    /// (`ALLOW_ANY`, the default) or refused (`REGISTRY_ONLY`).
    #[serde(default)]
    pub outbound_traffic_policy: TrafficPolicy,
    /// The mesh workloads this pod may call, by the address the app dials (the control
    /// plane's discovery replaces this list).
    #[serde(default)]
    pub destinations: Vec<CaptureDestination>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum TrafficPolicy {
    #[default]
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
}

/// A mesh workload as the app addresses it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureDestination {
    /// `IP:PORT` the app connects to.
    pub address: SocketAddr,
    /// The identity its sidecar must present.
    pub spiffe_id: String,
    /// The port its sidecar takes mTLS on (default: the address's own port, for a pod
    /// whose inbound is captured too).
    #[serde(default)]
    pub inbound_port: Option<u16>,
}

fn default_capture_inbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 15006))
}

fn default_capture_outbound() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15001))
}

fn default_capture_opaque() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15002))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySource {
    /// Watched: a change takes effect within a second; a broken file keeps the last good set.
    pub dir: PathBuf,
}

/// The audit log of authorization decisions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// `denied` (default) or `all`.
    pub decisions: AuditDecisions,
    /// `stdout` or a file path (appended to).
    pub log: String,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            decisions: AuditDecisions::Denied,
            log: "stdout".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDecisions {
    Denied,
    All,
}

/// Where the workload's identity comes from: static files (`cert` + `key`, from `ward cert
/// issue`) or the control plane (`control_plane` + `token_file`). `bundle` is the trust
/// bundle: the roots to trust, and with a control plane the bootstrap roots it must chain to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFiles {
    /// The SVID chain, leaf first.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key (only its path is ever shown).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The trust bundle (PEM roots); with a control plane, the roots its TLS chains to.
    /// Not used with `spire` (the agent gives the bundles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// `https://HOST:PORT` of the control plane.
    #[serde(default)]
    pub control_plane: Option<String>,
    /// A file holding the join token for the first certificate.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Send the token (re-read) with every renewal too: for Kubernetes service-account
    /// tokens, which the kubelet refreshes and any control-plane replica can review. Join
    /// tokens are used up by the first certificate, so this stays off for them.
    #[serde(default)]
    pub renew_with_token: bool,
    /// A SPIRE agent's Workload API as the identity source: the SVID, the bundle and the
    /// federated bundles come from it, and JWT-SVIDs for the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spire: Option<SpireSource>,
    /// How often the proxy reports to the control plane (for its dashboard).
    #[serde(default = "default_report_every", with = "duration")]
    pub report_every: Duration,
}

/// `identity.spire`: where the SPIRE agent serves the Workload API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpireSource {
    /// The agent's socket (`unix:///path` or a path).
    pub socket: String,
    /// Which of the SVIDs the agent gives this process to use (default: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
}

impl SpireSource {
    /// The socket's path, without a `unix://` scheme.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(
            self.socket
                .strip_prefix("unix://")
                .or_else(|| self.socket.strip_prefix("unix:"))
                .unwrap_or(&self.socket),
        )
    }
}

fn default_report_every() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where the app serves, reported to the control plane for discovery.
    #[serde(default)]
    pub serving: Vec<Serving>,
}

/// One address the app serves on, as other workloads dial it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Serving {
    pub address: SocketAddr,
    /// The port this sidecar takes mTLS on for it (default: the address's own port, which
    /// the inbound capture takes in).
    #[serde(default)]
    pub inbound_port: Option<u16>,
    /// What it speaks, if known (`http1`, `http2`, `grpc`, `tcp`).
    #[serde(default)]
    pub protocol: Option<String>,
}

/// How the app (inbound) or the peer (outbound) is spoken to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Detect from the first bytes (outbound) / follow the caller's protocol (inbound).
    #[default]
    Auto,
    Http1,
    Http2,
    Grpc,
    /// Opaque TCP: no detection, no HTTP handling.
    Tcp,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// Where peer sidecars connect with mTLS.
    pub listen: SocketAddr,
    /// The local app.
    pub app: SocketAddr,
    #[serde(default)]
    pub protocol: Protocol,
    /// The `Upgrade` protocols carried after a `101` (see [`UpgradeToken`]).
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeToken>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Where the local app connects in plaintext.
    pub listen: SocketAddr,
    /// The peer sidecar's inbound listener.
    pub upstream: SocketAddr,
    /// The only identity the upstream may present.
    pub server_identity: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// The `Upgrade` protocols carried after a `101` (see [`UpgradeToken`]).
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeToken>,
}

/// A protocol an HTTP/1.1 `Upgrade` may switch to. After the `101` the connection is a
/// spliced byte stream that no policy judges, so only protocols named here are carried
/// (`websocket` by default); a request asking for any other is sent on without its
/// `Upgrade`. `h2c` is never accepted: it would open an HTTP/2 connection to the app whose
/// requests bypass authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UpgradeToken(pub String);

impl<'de> Deserialize<'de> for UpgradeToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?.to_ascii_lowercase();
        let token = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
        if !token {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not an Upgrade protocol token"
            )));
        }
        if s == "h2c" || s.starts_with("h2c/") {
            return Err(serde::de::Error::custom(
                "h2c is never carried: its HTTP/2 requests would bypass authorization",
            ));
        }
        Ok(UpgradeToken(s))
    }
}

fn default_upgrades() -> Vec<UpgradeToken> {
    vec![UpgradeToken("websocket".to_owned())]
}

/// Resource limits; every default is what a production sidecar should run with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_header_bytes: usize,
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    #[serde(with = "duration")]
    pub detect_timeout: Duration,
    pub max_concurrent_streams: u32,
    /// Open connections per listener (each listener has its own budget).
    pub max_connections: usize,
    /// Open inbound connections per peer SPIFFE ID: one identity cannot take every slot.
    pub max_connections_per_peer: usize,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// How long to wait for an upstream (or the app) to accept a connection.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a request may wait for the upstream's response headers (504 past it).
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Accept header names with `_` (refused by default: some apps read `_` as `-`, which
    /// would let `x_user` stand in for a header the mesh controls).
    pub allow_header_underscores: bool,
    /// HTTP/2 flow-control windows the server offers (per stream, per connection); absent,
    /// they adapt to the measured bandwidth-delay product.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_stream_window: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_connection_window: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            detect_timeout: Duration::from_millis(300),
            max_concurrent_streams: 1024,
            max_connections: 10_000,
            max_connections_per_peer: 1_000,
            idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            allow_header_underscores: false,
            h2_stream_window: None,
            h2_connection_window: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    pub worker_threads: usize,
}

impl Default for Runtime {
    fn default() -> Self {
        Self { worker_threads: 2 }
    }
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

/// Durations as `300ms`, `10s`, `5m`, `1h`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (e.g. 300ms, 10s, 5m)"
            ))
        })
    }
}

/// A validated configuration with the values other code needs already parsed.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: SidecarConfig,
    pub trust_domain: TrustDomain,
    /// `server_identity` of each outbound entry, in order.
    pub server_identities: Vec<SpiffeId>,
}

impl SidecarConfig {
    /// Reads `path`, applies `WARD_*` overrides from `env`, and validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Validated, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
        Self::parse(&text, path, env)
    }

    /// The configuration from `WARD_*` variables alone (an injected sidecar's: no file to
    /// mount); relative paths are relative to the working directory.
    pub fn from_env(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Validated, ConfigError> {
        Self::parse("{}", Path::new(ENV_ORIGIN), env)
    }

    fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Validated, ConfigError> {
        Self::from_value(read_yaml(text, path)?, path, env)
    }

    /// The configuration from a YAML document already read from `path` (the gateway takes
    /// its own sections out first), with `WARD_*` overrides from `env`.
    pub(crate) fn from_value(
        mut value: Value,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Validated, ConfigError> {
        apply_env(&mut value, env)?;
        let config: SidecarConfig = deserialize(value, path)?;
        config.validate(path)
    }
}

/// A YAML document (an empty one is an empty mapping); errors say `file:line:column`.
pub(crate) fn read_yaml(text: &str, path: &Path) -> Result<Value, ConfigError> {
    let origin = path.display();
    let value: Value = yaml_serde::from_str(text).map_err(|e| match e.location() {
        Some(loc) => ConfigError::new(format!(
            "{origin}:{}:{}: {}",
            loc.line(),
            loc.column(),
            strip_location(&e.to_string())
        )),
        None => ConfigError::new(format!("{origin}: {e}")),
    })?;
    Ok(if value.is_null() {
        Value::Mapping(Default::default())
    } else {
        value
    })
}

/// `T` from a YAML value; errors name the file and the field.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    value: Value,
    path: &Path,
) -> Result<T, ConfigError> {
    let origin = path.display();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let inner = strip_location(&e.into_inner().to_string());
        if field == "." {
            ConfigError::new(format!("{origin}: {inner}"))
        } else {
            ConfigError::new(format!("{origin}: {field}: {inner}"))
        }
    })
}

mod env;
mod traces;
mod validate;
mod workload_api;

pub use self::traces::{TraceProtocol, Tracing};
pub use self::workload_api::WorkloadApi;

use self::env::{apply_env, strip_location};

#[cfg(test)]
mod tests;
