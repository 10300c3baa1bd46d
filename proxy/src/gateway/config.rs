//! `ward-proxy gateway` configuration: one YAML file. The sections a sidecar has for its
//! identity, workload, policy, audit, admin, limits and runtime mean the same here (and take
//! the same `WARD_*` overrides); the gateway's own sections are `listen`, `tls` (or
//! `plaintext: true`), `issuers`, `token`, `forward_claims` and `routes`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ward_certs::SpiffeId;
use yaml_serde::Value;

use super::api_keys::ApiKeysConfig;
use super::credentials::TokenSource;
use super::dpop::{Dpop, DpopConfig};
use super::issuers::IssuerConfig;
use super::jwt::Issuer;
use super::ratelimit::shared::RedisConfig;
use super::ratelimit::{LimitSpec, RateLimitConfig};
use super::routes::{Authentication, Route, RouteConfig, Routes};
use crate::config::{ConfigError, SidecarConfig, Validated};

/// The gateway's own sections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// The public listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Public TLS; required unless `plaintext: true`.
    #[serde(default)]
    pub tls: Option<PublicTls>,
    /// Serve the public listener without TLS (behind a TLS-terminating load balancer).
    #[serde(default)]
    pub plaintext: bool,
    /// The end-user token issuers trusted.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Where the token is read: `authorization` (default), `{ header: NAME }`, `{ cookie:
    /// NAME }`.
    #[serde(default = "default_token")]
    pub token: TokenSource,
    /// The verified claims sent into the mesh (`x-ward-end-user`); all of them by default.
    #[serde(default)]
    pub forward_claims: Option<Vec<String>>,
    /// Token buckets routes name in their `rate_limits`.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// API keys partners send instead of tokens.
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    /// Share the buckets with the other replicas through Redis.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// How DPoP proofs (RFC 9449) of key-bound tokens are judged.
    #[serde(default)]
    pub dpop: DpopConfig,
    /// Proxies in front of the gateway trusted to append the client to `Forwarded` /
    /// `X-Forwarded-For` (0: the client is the connection's peer).
    #[serde(default)]
    pub trusted_hops: usize,
    /// The largest request body declared (`Content-Length`) that is taken.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    pub routes: Vec<RouteConfig>,
}

/// The public listener's TLS: server certificates (picked by SNI among their DNS names; the
/// first serves clients that send no name), re-read when their files change.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicTls {
    pub certificates: Vec<CertFiles>,
    /// Roots for optional client certificates (certificate-bound tokens, RFC 8705); a
    /// client without one is still served.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// The chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM; only the path is ever shown).
    pub key: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

fn default_max_body() -> u64 {
    10 * 1024 * 1024
}

fn default_token() -> TokenSource {
    TokenSource::Authorization
}

/// Sections of the file that belong to the gateway.
const GATEWAY_KEYS: [&str; 13] = [
    "api_keys",
    "dpop",
    "max_body_bytes",
    "trusted_hops",
    "listen",
    "tls",
    "plaintext",
    "issuers",
    "token",
    "forward_claims",
    "rate_limits",
    "redis",
    "routes",
];
/// Sidecar sections with no meaning on a gateway.
const SIDECAR_ONLY: [&str; 4] = ["inbound", "outbound", "capture", "app_probes"];

/// A checked gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayValidated {
    /// The shared sections, as a sidecar would have them (no listeners).
    pub common: Validated,
    pub gateway: GatewaySection,
    pub issuers: Vec<Issuer>,
    /// The checked limits, in order; routes refer to them by index.
    pub limits: Vec<LimitSpec>,
    pub routes: Routes,
}

impl GatewayValidated {
    /// Reads `path`, applies `WARD_*` overrides from `env` to the shared sections, checks
    /// everything and reads the issuers' key sets.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
        let mut value = crate::config::read_yaml(&text, path)?;
        let Value::Mapping(map) = &mut value else {
            return Err(ConfigError::new(format!(
                "{}: not a mapping of sections",
                path.display()
            )));
        };
        for key in SIDECAR_ONLY {
            if map.contains_key(key) {
                return Err(ConfigError::new(format!(
                    "{}: {key}: a sidecar setting; a gateway has `listen` and `routes`",
                    path.display()
                )));
            }
        }
        let mut own = yaml_serde::Mapping::new();
        for key in GATEWAY_KEYS {
            if let Some(v) = map.remove(key) {
                own.insert(Value::String(key.to_owned()), v);
            }
        }
        edge_limits(map);
        let gateway: GatewaySection = crate::config::deserialize(Value::Mapping(own), path)?;
        let common = SidecarConfig::from_value(value, path, env)?;
        check(common, gateway, path)
    }
}

/// Limits a public listener runs with unless the file says otherwise (after Envoy's edge
/// guidance): few concurrent streams per connection, and HTTP/2 windows of fixed size so a
/// client cannot make the gateway buffer much for it. The rest are the sidecar's.
const EDGE_LIMITS: [(&str, u64); 3] = [
    ("max_concurrent_streams", 100),
    ("h2_stream_window", 64 * 1024),
    ("h2_connection_window", 1024 * 1024),
];

/// Puts the edge's limits into the file's `limits` where it does not state them.
fn edge_limits(map: &mut yaml_serde::Mapping) {
    let key = Value::String("limits".into());
    let limits = map
        .entry(key)
        .or_insert_with(|| Value::Mapping(yaml_serde::Mapping::new()));
    if let Value::Mapping(limits) = limits {
        for (name, value) in EDGE_LIMITS {
            limits
                .entry(Value::String(name.into()))
                .or_insert_with(|| Value::Number(value.into()));
        }
    }
}

/// Makes errors that name the file and the field.
struct At<'a>(&'a Path);

impl At<'_> {
    fn err(&self, field: &str, msg: &dyn std::fmt::Display) -> ConfigError {
        ConfigError::new(format!("{}: {field}: {msg}", self.0.display()))
    }

    /// `p` relative to the configuration file's directory.
    fn resolve(&self, p: &mut PathBuf) {
        if p.is_relative() {
            *p = self.0.parent().unwrap_or(Path::new(".")).join(&*p);
        }
    }
}

fn check(
    common: Validated,
    mut gateway: GatewaySection,
    path: &Path,
) -> Result<GatewayValidated, ConfigError> {
    let at = At(path);
    if common.config.policy.is_none() && common.config.identity.control_plane.is_none() {
        return Err(at.err(
            "policy",
            &"required without a control plane: every request the gateway carries is authorized \
              (policy: { dir: PATH })",
        ));
    }
    check_tls(&mut gateway, &at)?;
    if let Some(keys) = &mut gateway.api_keys {
        at.resolve(&mut keys.store);
    }
    if let Some(file) = gateway
        .dpop
        .nonce
        .as_mut()
        .and_then(|n| n.secret_file.as_mut())
    {
        at.resolve(file);
    }
    Dpop::new(&gateway.dpop).map_err(|e| at.err("dpop", &e))?;
    let mut issuers = Vec::new();
    for (i, issuer) in gateway.issuers.iter_mut().enumerate() {
        if let Some(file) = &mut issuer.jwks_file {
            at.resolve(file);
        }
        if let Some(file) = &mut issuer.ca_file {
            at.resolve(file);
        }
        issuer
            .source()
            .map_err(|e| at.err(&format!("issuers[{i}]"), &e))?;
        let loaded = issuer
            .load()
            .map_err(|e| at.err(&format!("issuers[{i}]"), &e))?;
        if loaded.issuer == super::api_keys::ISSUER {
            // API keys' principals are apikey/NAME: a token issuer of that name could
            // pass for them.
            return Err(at.err(
                &format!("issuers[{i}]"),
                &"issuer \"apikey\" is reserved for API keys",
            ));
        }
        if issuers.iter().any(|o: &Issuer| o.issuer == loaded.issuer) {
            return Err(at.err(&format!("issuers[{i}]"), &"issuer listed twice"));
        }
        issuers.push(loaded);
    }
    let mut limits: Vec<LimitSpec> = Vec::new();
    for (i, l) in gateway.rate_limits.iter().enumerate() {
        let spec = l
            .check()
            .map_err(|e| at.err(&format!("rate_limits[{i}]"), &e))?;
        if limits.iter().any(|o| o.name == spec.name) {
            return Err(at.err(&format!("rate_limits[{i}].name"), &"named twice"));
        }
        limits.push(spec);
    }
    let can_authenticate = !issuers.is_empty() || gateway.api_keys.is_some();
    let routes = check_routes(&gateway, &common, can_authenticate, &limits, &at)?;
    Ok(GatewayValidated {
        common,
        gateway,
        issuers,
        limits,
        routes,
    })
}

/// Public TLS or plaintext, one of them; certificate paths resolved.
fn check_tls(gateway: &mut GatewaySection, at: &At) -> Result<(), ConfigError> {
    match (&mut gateway.tls, gateway.plaintext) {
        (Some(_), true) => Err(at.err("plaintext", &"set both tls and plaintext: choose one")),
        (None, false) => Err(at.err(
            "tls",
            &"required (or `plaintext: true` behind a TLS-terminating load balancer)",
        )),
        (Some(tls), false) => {
            if tls.certificates.is_empty() {
                return Err(at.err("tls.certificates", &"at least one { cert, key }"));
            }
            for c in &mut tls.certificates {
                at.resolve(&mut c.cert);
                at.resolve(&mut c.key);
            }
            if let Some(ca) = &mut tls.client_ca {
                at.resolve(ca);
            }
            Ok(())
        }
        (None, true) => Ok(()),
    }
}

/// Each route checked: its service's identity in the trust domain, an issuer if it
/// authenticates, and its limits by name.
fn check_routes(
    gateway: &GatewaySection,
    common: &Validated,
    have_issuers: bool,
    limits: &[LimitSpec],
    at: &At,
) -> Result<Routes, ConfigError> {
    if gateway.routes.is_empty() {
        return Err(at.err("routes", &"at least one route"));
    }
    let mut routes = Vec::new();
    for (i, r) in gateway.routes.iter().enumerate() {
        let field = format!("routes[{i}]");
        let id = match &r.server_identity {
            Some(text) => {
                let id: SpiffeId = ward_certs::parse_spiffe_id(text)
                    .map_err(|e| at.err(&format!("{field}.server_identity"), &e))?;
                if !id.is_member_of(&common.trust_domain) {
                    return Err(at.err(
                        &format!("{field}.server_identity"),
                        &format!("{id} is not in trust domain {}", common.trust_domain),
                    ));
                }
                Some(id)
            }
            None => None,
        };
        if r.authentication != Authentication::None && !have_issuers {
            return Err(at.err(
                &format!("{field}.authentication"),
                &"needs at least one issuer or api_keys (or authentication: none)",
            ));
        }
        let mut route = Route::new(r, id).map_err(|e| at.err(&field, &e))?;
        if r.service.is_some() && common.config.identity.control_plane.is_none() {
            return Err(at.err(
                &format!("{field}.service"),
                &"needs a control plane, whose discovery names the service's sidecar",
            ));
        }
        for name in &r.rate_limits {
            let index = limits.iter().position(|l| &l.name == name).ok_or_else(|| {
                at.err(
                    &format!("{field}.rate_limits"),
                    &format!("no limit named {name:?}"),
                )
            })?;
            route.limits.push(index);
        }
        routes.push(route);
    }
    Ok(Routes::new(routes))
}
