//! The policy schema as it is written (`apiVersion: ward.dev/v1alpha1`): YAML files now,
//! the same shape as Kubernetes CRDs later. Every struct refuses unknown fields and every
//! value is checked as it is read, so a mistake is reported at its own line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::ClaimPath;
use crate::pattern::{HostPattern, PathPattern, Pattern, PrincipalPattern, RequestPrincipal};

pub const API_VERSION: &str = "ward.dev/v1alpha1";
/// The root namespace: policies here apply to every workload of the mesh.
pub const ROOT_NAMESPACE: &str = "ward-system";

/// `apiVersion`, accepted only as [`API_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersion;

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == API_VERSION {
            Ok(ApiVersion)
        } else {
            Err(serde::de::Error::custom(format!(
                "apiVersion {s:?} is not {API_VERSION}"
            )))
        }
    }
}

/// Just enough of a document to know its kind.
#[derive(Debug, Deserialize)]
pub struct Head {
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicyDoc {
    pub api_version: ApiVersion,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: AuthorizationSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshPolicyDoc {
    pub api_version: ApiVersion,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: MeshSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub enum Action {
    #[serde(rename = "ALLOW")]
    Allow,
    #[serde(rename = "DENY")]
    Deny,
    #[serde(rename = "AUDIT")]
    Audit,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
        }
    }
}

/// What an `AuthorizationPolicy` says: the file's `spec`, and the CRD's.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(feature = "crd", derive(kube::CustomResource, schemars::JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "ward.dev",
        version = "v1alpha1",
        kind = "AuthorizationPolicy",
        namespaced,
        shortname = "wap",
        category = "ward",
        doc = "Who may call the workloads a selector picks in this namespace (all of them in ward-system), and how.",
        status = "PolicyStatus",
        printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
        printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
pub struct AuthorizationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    pub action: Action,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<Source>,
    #[serde(default)]
    pub to: Vec<Operation>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<PrincipalPattern>,
    #[serde(default)]
    pub not_principals: Vec<PrincipalPattern>,
    #[serde(default)]
    pub namespaces: Vec<Pattern>,
    #[serde(default)]
    pub not_namespaces: Vec<Pattern>,
    /// The verified end user (`ISSUER/SUBJECT`), from a token the gateway checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<RequestPrincipal>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<RequestPrincipal>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub struct Operation {
    #[serde(default, deserialize_with = "ports")]
    #[cfg_attr(feature = "crd", schemars(with = "Vec<u16>"))]
    pub ports: Vec<u16>,
    #[serde(default, deserialize_with = "ports")]
    #[cfg_attr(feature = "crd", schemars(with = "Vec<u16>"))]
    pub not_ports: Vec<u16>,
    #[serde(default)]
    pub methods: Vec<Method>,
    #[serde(default)]
    pub not_methods: Vec<Method>,
    #[serde(default)]
    pub paths: Vec<PathPattern>,
    #[serde(default)]
    pub not_paths: Vec<PathPattern>,
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Grpc>,
}

/// Port numbers, 1-65535 (no connection is to port 0).
fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let ports = Vec::<u16>::deserialize(d)?;
    if ports.contains(&0) {
        return Err(serde::de::Error::custom("port 0 is not a port (1-65535)"));
    }
    Ok(ports)
}

/// An HTTP method token, upper case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(pub String);

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let token = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if token {
            Ok(Method(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "method {s:?} must be an upper-case HTTP method such as GET"
            )))
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub struct Grpc {
    /// Fully qualified service, e.g. `bank.v1.Accounts` (pattern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Pattern>,
    /// Method names, e.g. `Get*`.
    #[serde(default)]
    pub methods: Vec<Pattern>,
}

/// A condition on the request. It must test something: `values`, `present`, or both (one
/// with neither would match every call and is almost always a mistake).
#[derive(Debug, Clone, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "crd", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "crd",
    x_kube(
        validation = Rule::new("has(self.values) || has(self.present)").message("a condition needs values or present")
    )
)]
pub struct Condition {
    pub key: ConditionKey,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            key: ConditionKey,
            #[serde(default)]
            values: Vec<Pattern>,
            #[serde(default)]
            present: Option<bool>,
        }
        let Fields {
            key,
            values,
            present,
        } = Fields::deserialize(d)?;
        if values.is_empty() && present.is_none() {
            return Err(serde::de::Error::custom(
                "a condition needs values or present",
            ));
        }
        Ok(Condition {
            key,
            values,
            present,
        })
    }
}

/// What a condition tests: `request.headers[NAME]` (the name kept in lower case) or a claim
/// of the verified end user, `request.auth.claims[NAME]` (nested: `[NAME][NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    Header(String),
    Claim(ClaimPath),
}

impl std::fmt::Display for ConditionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConditionKey::Header(name) => write!(f, "request.headers[{name}]"),
            ConditionKey::Claim(path) => path.fmt(f),
        }
    }
}

impl Serialize for ConditionKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConditionKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.starts_with("request.auth.") {
            return ClaimPath::parse(&s).map(ConditionKey::Claim).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "condition key {s:?} is not request.auth.claims[NAME] (nested: [NAME][NAME])"
                ))
            });
        }
        let name = s
            .strip_prefix("request.headers[")
            .and_then(|r| r.strip_suffix(']'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
        match name {
            Some(n) => Ok(ConditionKey::Header(n.to_ascii_lowercase())),
            None => Err(serde::de::Error::custom(format!(
                "condition key {s:?} is not request.headers[NAME] or request.auth.claims[NAME]"
            ))),
        }
    }
}

/// The mesh-wide default when no policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub enum MeshDefault {
    /// Strict zero trust: nothing is allowed unless a policy allows it.
    #[default]
    #[serde(rename = "deny")]
    Deny,
    /// Any caller with a valid SVID of the mesh.
    #[serde(rename = "allow-authenticated")]
    AllowAuthenticated,
    /// Everything (migration only).
    #[serde(rename = "allow")]
    Allow,
}

impl MeshDefault {
    /// The name as written in config, code and metrics (`default:<name>`).
    pub fn name(self) -> &'static str {
        match self {
            MeshDefault::Deny => "deny",
            MeshDefault::AllowAuthenticated => "allow-authenticated",
            MeshDefault::Allow => "allow",
        }
    }
}

/// What the control plane says of a policy object on Kubernetes (the leader replica writes
/// it): whether it reads, for which generation, and which generation is in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub struct PolicyStatus {
    /// The generation the conditions are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last generation that read, which stays in force while a later one does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<PolicyCondition>,
}

/// A condition, as Kubernetes writes them (`Accepted`: True or False).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub struct PolicyCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339.
    pub last_transition_time: String,
}

/// What the `MeshPolicy` says: the mesh's defaults. One per mesh, in `ward-system`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "crd", derive(kube::CustomResource, schemars::JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "ward.dev",
        version = "v1alpha1",
        kind = "MeshPolicy",
        namespaced,
        category = "ward",
        doc = "The mesh's defaults: one, named default, in ward-system.",
        validation = Rule::new("self.metadata.name == 'default'").message("there is one MeshPolicy per mesh: name it default (in namespace ward-system)"),
        status = "PolicyStatus",
        printcolumn = r#"{"name":"Default","type":"string","jsonPath":".spec.default"}"#,
        printcolumn = r#"{"name":"Outbound","type":"string","jsonPath":".spec.outboundTrafficPolicy"}"#,
        printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
    )
)]
pub struct MeshSpec {
    pub default: MeshDefault,
    /// What a captured connection to an address that is no mesh workload does.
    #[serde(default, rename = "outboundTrafficPolicy")]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// The SPIFFE IDs of the mesh's gateways: the only callers whose `x-ward-end-user` (the
    /// end user a gateway verified) a sidecar believes; from anyone else it is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<SpiffeIdName>,
}

/// One exact SPIFFE ID (no pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeIdName(pub String);

impl Serialize for SpiffeIdName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SpiffeIdName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ward_certs::parse_spiffe_id(&s)
            .map(|id| SpiffeIdName(id.to_string()))
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not one exact SPIFFE ID: {e}")))
    }
}

/// Where a pod's captured connections may go when the destination is no mesh workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub enum OutboundTrafficPolicy {
    /// Out as it came (passthrough).
    #[default]
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
    /// Refused: only mesh destinations.
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
}
