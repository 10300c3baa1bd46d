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

use std::collections::{BTreeMap, HashSet};
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
    "identity", "workload", "limits", "runtime", "policy", "audit",
];
/// Top-level fields settable from the environment.
const TOP_LEVEL: &[&str] = &["trust_domain", "admin", "access_log", "inbound", "outbound"];

/// A configuration that cannot be used; its text is the one line the operator sees.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(msg: impl fmt::Display) -> Self {
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
    /// The trust bundle (PEM roots).
    pub bundle: PathBuf,
    /// `https://HOST:PORT` of the control plane.
    #[serde(default)]
    pub control_plane: Option<String>,
    /// A file holding the join token for the first certificate.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
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
mod duration {
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
        let origin = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("{origin}: {e}")))?;
        let mut value: Value = yaml_serde::from_str(&text).map_err(|e| match e.location() {
            Some(loc) => ConfigError::new(format!(
                "{origin}:{}:{}: {}",
                loc.line(),
                loc.column(),
                strip_location(&e.to_string())
            )),
            None => ConfigError::new(format!("{origin}: {e}")),
        })?;
        if value.is_null() {
            value = Value::Mapping(Default::default());
        }
        apply_env(&mut value, env)?;
        let config: SidecarConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            let inner = strip_location(&e.into_inner().to_string());
            if field == "." {
                ConfigError::new(format!("{origin}: {inner}"))
            } else {
                ConfigError::new(format!("{origin}: {field}: {inner}"))
            }
        })?;
        config.validate(path)
    }

    fn validate(self, path: &Path) -> Result<Validated, ConfigError> {
        let origin = path.display();
        let base = path.parent().unwrap_or(Path::new("."));
        let err = |field: &str, msg: &dyn fmt::Display| {
            ConfigError::new(format!("{origin}: {field}: {msg}"))
        };
        let trust_domain = ward_certs::parse_trust_domain(&self.trust_domain)
            .map_err(|e| err("trust_domain", &e))?;

        let mut config = self;
        let id = &mut config.identity;
        let static_mode = id.cert.is_some() || id.key.is_some();
        let control_mode = id.control_plane.is_some() || id.token_file.is_some();
        match (static_mode, control_mode) {
            (true, true) => {
                return Err(err(
                    "identity",
                    &"give cert + key (static) or control_plane + token_file, not both",
                ));
            }
            (false, false) => {
                return Err(err(
                    "identity",
                    &"needs cert + key (static) or control_plane + token_file",
                ));
            }
            (true, false) if id.cert.is_none() || id.key.is_none() => {
                return Err(err("identity", &"cert and key go together"));
            }
            (false, true) if id.control_plane.is_none() || id.token_file.is_none() => {
                return Err(err("identity", &"control_plane and token_file go together"));
            }
            _ => {}
        }
        if let Some(cp) = &id.control_plane {
            let addr = cp.strip_prefix("https://").unwrap_or("");
            if addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(err(
                    "identity.control_plane",
                    &format!("{cp:?} is not https://HOST:PORT"),
                ));
            }
        }
        let files = [
            ("identity.cert", id.cert.as_mut()),
            ("identity.key", id.key.as_mut()),
            ("identity.bundle", Some(&mut id.bundle)),
            ("identity.token_file", id.token_file.as_mut()),
        ];
        for (field, file) in files {
            let Some(file) = file else { continue };
            // Relative paths are relative to the config file, not to the working directory.
            if file.is_relative() {
                *file = base.join(&*file);
            }
            if let Err(e) = std::fs::metadata(&*file) {
                return Err(err(field, &format!("{}: {e}", file.display())));
            }
        }

        if config.audit.log != "stdout" && Path::new(&config.audit.log).is_relative() {
            config.audit.log = base.join(&config.audit.log).display().to_string();
        }
        if let Some(policy) = &mut config.policy {
            if policy.dir.is_relative() {
                policy.dir = base.join(&policy.dir);
            }
            if !policy.dir.is_dir() {
                return Err(err(
                    "policy.dir",
                    &format!("{}: not a directory", policy.dir.display()),
                ));
            }
        } else if !config.inbound.is_empty() && config.identity.control_plane.is_none() {
            return Err(err(
                "policy",
                &"required when inbound listeners are configured without a control plane \
                  (policy: { dir: PATH })",
            ));
        }

        let mut server_identities = Vec::with_capacity(config.outbound.len());
        for (i, out) in config.outbound.iter().enumerate() {
            let field = format!("outbound[{i}].server_identity");
            let id = ward_certs::parse_spiffe_id(&out.server_identity)
                .map_err(|e| err(&field, &format!("{:?}: {e}", out.server_identity)))?;
            if !id.is_member_of(&trust_domain) {
                return Err(err(
                    &field,
                    &format!("{id} is not in trust domain {trust_domain}"),
                ));
            }
            server_identities.push(id);
        }

        let mut seen = HashSet::new();
        let listens = std::iter::once(("admin".to_owned(), config.admin))
            .chain(
                config
                    .inbound
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (format!("inbound[{i}].listen"), l.listen)),
            )
            .chain(
                config
                    .outbound
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (format!("outbound[{i}].listen"), l.listen)),
            );
        for (field, addr) in listens {
            if addr.port() != 0 && !seen.insert(addr) {
                return Err(err(&field, &format!("{addr} is used by another listener")));
            }
        }

        let limits = &config.limits;
        for (field, zero) in [
            ("limits.max_header_bytes", limits.max_header_bytes == 0),
            (
                "limits.max_concurrent_streams",
                limits.max_concurrent_streams == 0,
            ),
            ("limits.max_connections", limits.max_connections == 0),
            (
                "limits.max_connections_per_peer",
                limits.max_connections_per_peer == 0,
            ),
            (
                "limits.header_read_timeout",
                limits.header_read_timeout.is_zero(),
            ),
            ("limits.detect_timeout", limits.detect_timeout.is_zero()),
            ("limits.idle_timeout", limits.idle_timeout.is_zero()),
            ("limits.connect_timeout", limits.connect_timeout.is_zero()),
            ("limits.request_timeout", limits.request_timeout.is_zero()),
            ("runtime.worker_threads", config.runtime.worker_threads == 0),
        ] {
            if zero {
                return Err(err(field, &"must be greater than zero"));
            }
        }
        Ok(Validated {
            config,
            trust_domain,
            server_identities,
        })
    }
}

/// yaml errors end with " at line L column C"; the caller prints the location first.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn apply_env(
    value: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("WARD_") && !NOT_SETTINGS.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (key, raw) in vars {
        let name = key["WARD_".len()..].to_ascii_lowercase();
        let (section, field) = if TOP_LEVEL.contains(&name.as_str()) {
            (None, name.clone())
        } else if let Some((section, field)) = SECTIONS
            .iter()
            .find_map(|s| name.strip_prefix(&format!("{s}_")).map(|f| (*s, f)))
        {
            (Some(section), field.to_owned())
        } else {
            return Err(ConfigError::new(format!(
                "{key}: not a ward-proxy setting (see the README for WARD_<SECTION>_<FIELD>)"
            )));
        };
        let parsed = if section == Some("workload") && field == "labels" && !raw.contains('{') {
            parse_labels(&raw).map_err(|e| ConfigError::new(format!("{key}: {e}")))?
        } else {
            yaml_serde::from_str::<Value>(&raw).map_err(|e| {
                ConfigError::new(format!("{key}: {}", strip_location(&e.to_string())))
            })?
        };
        let root = value
            .as_mapping_mut()
            .ok_or_else(|| ConfigError::new("the configuration must be a YAML mapping"))?;
        let target = match section {
            None => root,
            Some(section) => {
                let entry = root
                    .entry(Value::String(section.to_owned()))
                    .or_insert_with(|| Value::Mapping(Default::default()));
                entry.as_mapping_mut().ok_or_else(|| {
                    ConfigError::new(format!("{key}: section {section} is not a mapping"))
                })?
            }
        };
        target.insert(Value::String(field), parsed);
    }
    Ok(())
}

fn parse_labels(raw: &str) -> Result<Value, String> {
    let mut map = yaml_serde::Mapping::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not key=value"))?;
        map.insert(
            Value::String(k.trim().into()),
            Value::String(v.trim().into()),
        );
    }
    Ok(Value::Mapping(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for f in ["web.pem", "web.key", "bundle.pem"] {
                std::fs::write(dir.path().join(f), "x").unwrap();
            }
            std::fs::create_dir(dir.path().join("policies")).unwrap();
            Self { dir }
        }

        fn load(&self, yaml: &str, env: &[(&str, &str)]) -> Result<Validated, String> {
            let path = self.dir.path().join("sidecar.yaml");
            std::fs::write(&path, yaml).unwrap();
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            SidecarConfig::load(&path, env).map_err(|e| e.to_string())
        }
    }

    const GOOD: &str = "\
trust_domain: example.org
identity: { cert: web.pem, key: web.key, bundle: bundle.pem }
workload: { namespace: default, labels: { app: web } }
inbound:
  - { listen: 127.0.0.1:16006, app: 127.0.0.1:9080, protocol: auto }
outbound:
  - listen: 127.0.0.1:17001
    upstream: 127.0.0.1:16106
    server_identity: spiffe://example.org/ns/default/sa/orders
    protocol: tcp
admin: 127.0.0.1:15000
policy: { dir: policies }
audit: { decisions: all, log: stdout }
limits: { max_header_bytes: 65536, header_read_timeout: 10s, detect_timeout: 300ms,
          max_concurrent_streams: 1024, max_connections: 10000, idle_timeout: 300s,
          drain_timeout: 20s }
";

    #[test]
    fn the_documented_example_loads() {
        let files = Files::new();
        let v = files.load(GOOD, &[]).unwrap();
        assert_eq!(v.trust_domain.to_string(), "example.org");
        assert_eq!(v.config.outbound[0].protocol, Protocol::Tcp);
        assert_eq!(v.config.limits.detect_timeout, Duration::from_millis(300));
        assert_eq!(
            v.server_identities[0].to_string(),
            "spiffe://example.org/ns/default/sa/orders"
        );
        assert!(
            v.config
                .identity
                .cert
                .as_ref()
                .is_some_and(|c| c.is_absolute()),
            "relative to the config file"
        );
        assert_eq!(v.config.runtime.worker_threads, 2);
    }

    #[test]
    fn environment_overrides_fields_and_lists() {
        let files = Files::new();
        let v = files
            .load(
                GOOD,
                &[
                    ("WARD_LIMITS_IDLE_TIMEOUT", "30s"),
                    ("WARD_ADMIN", "127.0.0.1:15999"),
                    ("WARD_WORKLOAD_LABELS", "app=api, tier=backend"),
                    ("WARD_RUNTIME_WORKER_THREADS", "4"),
                    ("WARD_ACCESS_LOG", "true"),
                    ("WARD_OUTBOUND", "[]"),
                    ("WARD_LOG", "debug"),
                    ("PATH", "/bin"),
                ],
            )
            .unwrap();
        let c = &v.config;
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.admin.port(), 15999);
        assert_eq!(c.workload.labels["tier"], "backend");
        assert_eq!(c.runtime.worker_threads, 4);
        assert!(c.access_log);
        assert!(c.outbound.is_empty());
    }

    #[test]
    fn each_bad_config_is_one_line_naming_the_field_or_file() {
        let files = Files::new();
        type Env = Vec<(&'static str, &'static str)>;
        let cases: Vec<(String, Env, &str)> = vec![
            (
                GOOD.replace("idle_timeout: 300s", "idle_timout: 300s"),
                vec![],
                "limits.idle_timout: unknown field `idle_timout`",
            ),
            (
                GOOD.replace("bundle: bundle.pem", "bundle: nope.pem"),
                vec![],
                "identity.bundle: ",
            ),
            (
                GOOD.replace("app: 127.0.0.1:9080", "app: localhost"),
                vec![],
                "inbound[0].app: invalid socket address",
            ),
            (
                GOOD.replace(
                    "protocol: auto }",
                    "protocol: auto, upgrades: [websocket, h2c] }",
                ),
                vec![],
                "inbound[0].upgrades[1]: h2c is never carried",
            ),
            (
                GOOD.replace("127.0.0.1:17001", "127.0.0.1:16006"),
                vec![],
                "outbound[0].listen: 127.0.0.1:16006 is used by another listener",
            ),
            (
                GOOD.replace("sa/orders", "sa/../orders"),
                vec![],
                "outbound[0].server_identity",
            ),
            (
                GOOD.replace("spiffe://example.org/ns", "spiffe://other.org/ns"),
                vec![],
                "not in trust domain example.org",
            ),
            (
                GOOD.replace("detect_timeout: 300ms", "detect_timeout: soon"),
                vec![],
                "limits.detect_timeout: invalid duration",
            ),
            (
                GOOD.replace("protocol: tcp", "protocol: quic"),
                vec![],
                "outbound[0].protocol: unknown variant `quic`",
            ),
            (
                GOOD.replace("trust_domain: example.org", "trust_domain: Example.org"),
                vec![],
                "trust_domain:",
            ),
            (
                GOOD.to_owned(),
                vec![("WARD_LIMITS_IDLE_TIMOUT", "1s")],
                "limits.idle_timout: unknown field `idle_timout`",
            ),
            (
                GOOD.to_owned(),
                vec![("WARD_BOGUS", "1")],
                "WARD_BOGUS: not a ward-proxy setting",
            ),
            (
                GOOD.to_owned(),
                vec![("WARD_RUNTIME_WORKER_THREADS", "0")],
                "runtime.worker_threads: must be greater than zero",
            ),
            (
                "trust_domain: [unclosed\n".to_owned(),
                vec![],
                "sidecar.yaml:2:1: did not find expected",
            ),
            (
                GOOD.replace("dir: policies", "dir: nowhere"),
                vec![],
                "policy.dir: ",
            ),
            (
                GOOD.replace("policy: { dir: policies }\n", ""),
                vec![],
                "policy: required when inbound listeners",
            ),
            (
                GOOD.replace("decisions: all", "decisions: some"),
                vec![],
                "audit.decisions: unknown variant",
            ),
            (
                GOOD.replace(
                    "key: web.key,",
                    "key: web.key, control_plane: \"https://127.0.0.1:15012\",",
                ),
                vec![],
                "identity: give cert + key (static) or control_plane + token_file, not both",
            ),
            (
                GOOD.replace(
                    "cert: web.pem, key: web.key,",
                    "control_plane: \"https://127.0.0.1:15012\",",
                ),
                vec![],
                "identity: control_plane and token_file go together",
            ),
            (
                GOOD.replace(
                    "cert: web.pem, key: web.key,",
                    "control_plane: \"http://cp\", token_file: web.key,",
                ),
                vec![],
                "identity.control_plane: \"http://cp\" is not https://HOST:PORT",
            ),
        ];
        for (yaml, env, want) in cases {
            let err = files.load(&yaml, &env).expect_err(want);
            assert!(err.contains(want), "want {want:?} in {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
            assert!(
                err.contains("sidecar.yaml") || err.starts_with("WARD_"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_control_plane_identity_needs_no_cert_files_and_no_policy_dir() {
        let files = Files::new();
        let yaml = GOOD
            .replace(
                "cert: web.pem, key: web.key,",
                "control_plane: \"https://127.0.0.1:15012\", token_file: web.key,",
            )
            .replace("policy: { dir: policies }\n", "");
        let v = files.load(&yaml, &[]).unwrap();
        assert!(v.config.identity.cert.is_none());
        assert!(
            v.config.policy.is_none(),
            "policy comes from the control plane"
        );
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = SidecarConfig::load(Path::new("/nonexistent/ward.yaml"), Vec::new()).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/ward.yaml: "),
            "{err}"
        );
    }
}
