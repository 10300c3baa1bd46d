//! The policy schema as it is written (`apiVersion: ward.dev/v1alpha1`): YAML files now,
//! the same shape as Kubernetes CRDs later. Every struct refuses unknown fields and every
//! value is checked as it is read, so a mistake is reported at its own line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::pattern::{HostPattern, PathPattern, Pattern, PrincipalPattern};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationSpec {
    #[serde(default)]
    pub selector: Option<Selector>,
    pub action: Action,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<Source>,
    #[serde(default)]
    pub to: Vec<Operation>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<PrincipalPattern>,
    #[serde(default)]
    pub not_principals: Vec<PrincipalPattern>,
    #[serde(default)]
    pub namespaces: Vec<Pattern>,
    #[serde(default)]
    pub not_namespaces: Vec<Pattern>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
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
    #[serde(default)]
    pub grpc: Option<Grpc>,
}

/// An HTTP method token, upper case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(pub String);

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grpc {
    /// Fully qualified service, e.g. `bank.v1.Accounts` (pattern).
    #[serde(default)]
    pub service: Option<Pattern>,
    /// Method names, e.g. `Get*`.
    #[serde(default)]
    pub methods: Vec<Pattern>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub key: ConditionKey,
    #[serde(default)]
    pub values: Vec<Pattern>,
    #[serde(default)]
    pub present: Option<bool>,
}

/// `request.headers[NAME]`, the name kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionKey(pub String);

impl<'de> Deserialize<'de> for ConditionKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let name = s
            .strip_prefix("request.headers[")
            .and_then(|r| r.strip_suffix(']'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
        match name {
            Some(n) => Ok(ConditionKey(n.to_ascii_lowercase())),
            None => Err(serde::de::Error::custom(format!(
                "condition key {s:?} is not request.headers[NAME]"
            ))),
        }
    }
}

/// The mesh-wide default when no policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSpec {
    pub default: MeshDefault,
    /// What a captured connection to an address that is no mesh workload does.
    #[serde(default, rename = "outboundTrafficPolicy")]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
}

/// Where a pod's captured connections may go when the destination is no mesh workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum OutboundTrafficPolicy {
    /// Out as it came (passthrough).
    #[default]
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
    /// Refused: only mesh destinations.
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
}
