//! Policies compiled for evaluation, and the decision for one call.
//!
//! A [`PolicySet`] is everything loaded; [`PolicySet::for_workload`] picks what applies to one
//! workload (its namespace's policies whose selector matches its labels, plus the root
//! namespace's) once per policy update, so a decision only walks the policies that can
//! matter. Evaluation follows one rule: any matching DENY denies; else, if any ALLOW policy
//! applies, one must match; else the mesh default decides. AUDIT matches are reported and
//! never change the outcome. A TCP connection has no HTTP facts: an ALLOW rule that needs
//! them never matches it, while a DENY rule is judged on its L4 part alone (fail closed).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::RequestAuth;
pub use crate::decision::{Decider, Decision};
use crate::model::ConditionKey;
use crate::model::{
    Action, AuthorizationPolicyDoc, Condition, MeshDefault, Operation, OutboundTrafficPolicy,
    ROOT_NAMESPACE, Rule, Source,
};
use crate::pattern::{PathPattern, Pattern};
use crate::request::{Authority, list_elements};

/// One loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub action: Action,
    /// `None`: every workload of the namespace.
    pub selector: Option<BTreeMap<String, String>>,
    pub rules: Vec<Rule>,
    /// Where it was defined (a file, or the origin the control plane named).
    pub file: PathBuf,
    pub line: usize,
}

impl Policy {
    pub(crate) fn new(
        doc: AuthorizationPolicyDoc,
        namespace: String,
        file: PathBuf,
        line: usize,
    ) -> Self {
        Self {
            line,
            ..Self::from_spec(namespace, doc.metadata.name, doc.spec, file)
        }
    }

    /// A policy read from elsewhere than a file (a Kubernetes object), `origin` naming it.
    pub fn from_spec(
        namespace: String,
        name: String,
        spec: crate::model::AuthorizationSpec,
        origin: PathBuf,
    ) -> Self {
        Self {
            namespace,
            name,
            action: spec.action,
            selector: spec.selector.map(|s| s.match_labels),
            rules: spec.rules,
            file: origin,
            line: 0,
        }
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether this policy applies to a workload of `namespace` with `labels`.
    pub fn applies_to(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        let in_scope = self.namespace == ROOT_NAMESPACE || self.namespace == namespace;
        in_scope
            && self
                .selector
                .as_ref()
                .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// Everything loaded from a policy directory.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    mesh_default: MeshDefault,
    outbound: OutboundTrafficPolicy,
    gateways: Vec<String>,
}

impl PolicySet {
    pub fn new(policies: Vec<Policy>, mesh_default: MeshDefault) -> Self {
        Self {
            policies,
            mesh_default,
            outbound: OutboundTrafficPolicy::default(),
            gateways: Vec::new(),
        }
    }

    /// The set with the MeshPolicy's `gateways`.
    pub fn with_gateways(mut self, gateways: Vec<String>) -> Self {
        self.gateways = gateways;
        self
    }

    /// The SPIFFE IDs of the mesh's gateways.
    pub fn gateways(&self) -> &[String] {
        &self.gateways
    }

    /// The set with the MeshPolicy's `outboundTrafficPolicy`.
    pub fn with_outbound(mut self, outbound: OutboundTrafficPolicy) -> Self {
        self.outbound = outbound;
        self
    }

    /// The MeshPolicy's `outboundTrafficPolicy` (ALLOW_ANY without one).
    pub fn outbound_traffic_policy(&self) -> OutboundTrafficPolicy {
        self.outbound
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn mesh_default(&self) -> MeshDefault {
        self.mesh_default
    }

    /// The policies that apply to one workload, ready to decide its calls.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadPolicy {
        let mut deny = Vec::new();
        let mut allow = Vec::new();
        let mut audit = Vec::new();
        for p in self
            .policies
            .iter()
            .filter(|p| p.applies_to(namespace, labels))
        {
            let compiled = CompiledPolicy {
                id: p.id().into(),
                rules: p.rules.clone(),
            };
            match p.action {
                Action::Deny => deny.push(compiled),
                Action::Allow => allow.push(compiled),
                Action::Audit => audit.push(compiled),
            }
        }
        WorkloadPolicy {
            has_allow: !allow.is_empty(),
            count: deny.len() + allow.len() + audit.len(),
            deny: RuleIndex::new(deny),
            allow: RuleIndex::new(allow),
            audit: RuleIndex::new(audit),
            mesh_default: self.mesh_default,
            gateways: self.gateways.clone().into(),
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledPolicy {
    id: Arc<str>,
    rules: Vec<Rule>,
}

/// The rules of one action, indexed by exact caller principal.
///
/// A rule whose every source names only exact principals can match only those callers; it
/// is filed under each of them. Every other rule is "general" and always considered. A
/// decision then looks at the caller's own rules plus the general ones instead of every
/// rule, and still reports the first match in policy order.
#[derive(Debug, Clone, Default)]
struct RuleIndex {
    policies: Vec<CompiledPolicy>,
    by_principal: HashMap<String, Vec<(usize, usize)>>,
    general: Vec<(usize, usize)>,
}

impl RuleIndex {
    fn new(policies: Vec<CompiledPolicy>) -> Self {
        let mut by_principal: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut general = Vec::new();
        for (p, policy) in policies.iter().enumerate() {
            for (r, rule) in policy.rules.iter().enumerate() {
                match exact_principals(rule) {
                    Some(principals) => {
                        for principal in principals {
                            let slot = by_principal.entry(principal.to_owned()).or_default();
                            if slot.last() != Some(&(p, r)) {
                                slot.push((p, r));
                            }
                        }
                    }
                    None => general.push((p, r)),
                }
            }
        }
        Self {
            policies,
            by_principal,
            general,
        }
    }

    /// The first rule, in policy order, that matches.
    fn first_match(&self, call: &Call<'_>, mode: Mode) -> Option<Decider> {
        let matches =
            |&(p, r): &(usize, usize)| rule_matches(&self.policies[p].rules[r], call, mode);
        let specific = self
            .by_principal
            .get(call.principal)
            .and_then(|candidates| candidates.iter().copied().find(|c| matches(c)));
        let general = self.general.iter().copied().find(|c| matches(c));
        let (p, r) = match (specific, general) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Decider::Rule {
            policy: self.policies[p].id.clone(),
            rule: r,
        })
    }
}

/// The exact principals a rule is limited to, if every one of its sources lists only exact
/// principals (and nothing else can widen it).
fn exact_principals(rule: &Rule) -> Option<Vec<&str>> {
    if rule.from.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for source in &rule.from {
        if source.principals.is_empty() {
            return None;
        }
        for p in &source.principals {
            match &p.0 {
                crate::pattern::Pattern::Exact(id) => out.push(id.as_str()),
                _ => return None,
            }
        }
    }
    Some(out)
}

/// The facts of one call at the inbound side (or at the gateway).
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The caller's verified SPIFFE ID; empty for a caller from outside the mesh (at the
    /// gateway), which no `principals` or `namespaces` pattern matches, not even `*`.
    pub principal: &'a str,
    /// The caller's namespace (from `…/ns/<namespace>/…`), if its ID has one.
    pub namespace: Option<&'a str>,
    /// The application port called.
    pub port: u16,
    /// HTTP facts; `None` for a TCP connection.
    pub http: Option<HttpCall<'a>>,
}

impl Call<'_> {
    /// Whether someone verified makes the call: a mesh peer, or an end user (at the
    /// gateway) — what the mesh default `allow-authenticated` asks for.
    pub fn is_authenticated(&self) -> bool {
        !self.principal.is_empty() || self.http.as_ref().is_some_and(|h| h.auth.is_some())
    }
}

/// Request headers as the engine reads them: every value of a name, in the order received,
/// as raw bytes (a value need not be UTF-8, and is never dropped for it).
pub trait Headers {
    /// Calls `f` on each value of header `name` (given in lower case) until it returns
    /// `true`; whether it did.
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

impl Headers for Vec<(String, Vec<u8>)> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| f(v))
    }
}

impl Headers for Vec<(String, String)> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| f(v.as_bytes()))
    }
}

#[derive(Clone, Copy)]
pub struct HttpCall<'a> {
    /// Upper case (see [`crate::request::check_method`]).
    pub method: &'a str,
    /// The normalized path, without the query string. A path of the shape
    /// `/service/method` is also judged by gRPC rules, whatever the content-type.
    pub path: &'a str,
    /// The canonical authority, if the request named one.
    pub authority: Option<&'a Authority>,
    pub headers: &'a dyn Headers,
    /// The verified end user, if the request carries one (see [`crate::auth`]).
    pub auth: Option<RequestAuth<'a>>,
}

impl fmt::Debug for HttpCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCall")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("authority", &self.authority)
            .field("auth", &self.auth)
            .finish()
    }
}

/// The namespace of `principal` if it is an ID of `trust_domain`: a federated trust
/// domain's `ns/<name>` is not our namespace of that name, so it matches no `namespaces`
/// pattern (its principals still match `principals` patterns).
pub fn namespace_in<'a>(principal: &'a str, trust_domain: &str) -> Option<&'a str> {
    let rest = principal
        .strip_prefix("spiffe://")?
        .strip_prefix(trust_domain)?;
    if !rest.starts_with('/') {
        return None;
    }
    namespace_of(principal)
}

/// The namespace segment of a `spiffe://td/ns/<namespace>/…` ID.
pub fn namespace_of(principal: &str) -> Option<&str> {
    let path = principal.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut segments = path.split('/');
    match (segments.next(), segments.next()) {
        (Some("ns"), Some(ns)) if !ns.is_empty() => Some(ns),
        _ => None,
    }
}

/// The policies that apply to one workload.
#[derive(Debug, Clone)]
pub struct WorkloadPolicy {
    deny: RuleIndex,
    allow: RuleIndex,
    audit: RuleIndex,
    has_allow: bool,
    count: usize,
    mesh_default: MeshDefault,
    gateways: Arc<[String]>,
}

/// Which action's rules are being matched; it decides how missing and repeated facts count.
///
/// - A TCP connection has no HTTP facts: an ALLOW or AUDIT rule that needs them does not
///   match it; a DENY rule ignores them (fail closed).
/// - A header condition on a header sent more than once (or as a comma-separated list):
///   DENY and AUDIT match if any value matches; ALLOW needs every value to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Allow,
    Deny,
    Audit,
}

impl WorkloadPolicy {
    /// A workload to which nothing applies and the default is `mesh_default`.
    pub fn empty(mesh_default: MeshDefault) -> Self {
        Self {
            deny: RuleIndex::default(),
            allow: RuleIndex::default(),
            audit: RuleIndex::default(),
            has_allow: false,
            count: 0,
            mesh_default,
            gateways: Arc::new([]),
        }
    }

    /// Whether `principal` is one of the mesh's gateways, whose end-user header is believed.
    pub fn trusts_gateway(&self, principal: &str) -> bool {
        !principal.is_empty() && self.gateways.iter().any(|g| g == principal)
    }

    pub fn decide(&self, call: &Call<'_>) -> Decision {
        let audit = self.audit.first_match(call, Mode::Audit);
        if let Some(decider) = self.deny.first_match(call, Mode::Deny) {
            return Decision {
                allowed: false,
                decider,
                audit,
            };
        }
        if self.has_allow {
            return match self.allow.first_match(call, Mode::Allow) {
                Some(decider) => Decision {
                    allowed: true,
                    decider,
                    audit,
                },
                None => Decision {
                    allowed: false,
                    decider: Decider::NoAllowMatched,
                    audit,
                },
            };
        }
        let allowed = match self.mesh_default {
            MeshDefault::Deny => false,
            MeshDefault::AllowAuthenticated => call.is_authenticated(),
            MeshDefault::Allow => true,
        };
        Decision {
            allowed,
            decider: Decider::Default(self.mesh_default),
            audit,
        }
    }

    /// How many policies apply (for readiness detail and tests).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn any_or_empty<T>(list: &[T], f: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(f)
}

fn rule_matches(rule: &Rule, call: &Call<'_>, mode: Mode) -> bool {
    any_or_empty(&rule.from, |s| source_matches(s, call, mode))
        && any_or_empty(&rule.to, |o| operation_matches(o, call, mode))
        && rule.when.iter().all(|c| condition_matches(c, call, mode))
}

pub(crate) fn source_matches(s: &Source, call: &Call<'_>, mode: Mode) -> bool {
    let ns = call.namespace.unwrap_or("");
    request_principal_matches(s, call, mode)
        && any_or_empty(&s.principals, |p| {
            !call.principal.is_empty() && p.0.matches(call.principal)
        })
        && !s.not_principals.iter().any(|p| p.0.matches(call.principal))
        && (s.namespaces.is_empty()
            || (call.namespace.is_some() && s.namespaces.iter().any(|p| p.matches(ns))))
        && !(call.namespace.is_some() && s.not_namespaces.iter().any(|p| p.matches(ns)))
}

/// The end-user part of a source. A request without a verified end user matches no
/// `requestPrincipals` (not even `*`) and no `notRequestPrincipals`, so `notRequestPrincipals:
/// ["*"]` in a DENY rule refuses anonymous requests. A TCP connection has no end user to
/// judge: ALLOW and AUDIT do not match, DENY does (fail closed).
fn request_principal_matches(s: &Source, call: &Call<'_>, mode: Mode) -> bool {
    if s.request_principals.is_empty() && s.not_request_principals.is_empty() {
        return true;
    }
    let Some(http) = &call.http else {
        return mode == Mode::Deny;
    };
    let principal = http.auth.as_ref().map(|a| a.principal);
    let matches = |p: &crate::pattern::RequestPrincipal| principal.is_some_and(|v| p.0.matches(v));
    any_or_empty(&s.request_principals, matches) && !s.not_request_principals.iter().any(matches)
}

/// A path pattern judged for `mode` (`include`: in `paths`, else in `notPaths`). A
/// claim-bound template that cannot be judged (no end user, or not the claim) fails closed:
/// a DENY rule's `paths` match and its `notPaths` do not; for ALLOW and AUDIT the reverse.
fn path_matches(p: &PathPattern, http: &HttpCall<'_>, mode: Mode, include: bool) -> bool {
    p.matches(http.path, http.auth.as_ref())
        .unwrap_or((mode == Mode::Deny) == include)
}

fn needs_http(o: &Operation) -> bool {
    !o.methods.is_empty()
        || !o.not_methods.is_empty()
        || !o.paths.is_empty()
        || !o.not_paths.is_empty()
        || !o.hosts.is_empty()
        || o.grpc.is_some()
}

fn operation_matches(o: &Operation, call: &Call<'_>, mode: Mode) -> bool {
    let l4 =
        (o.ports.is_empty() || o.ports.contains(&call.port)) && !o.not_ports.contains(&call.port);
    if !l4 {
        return false;
    }
    let Some(http) = &call.http else {
        return mode == Mode::Deny || !needs_http(o);
    };
    any_or_empty(&o.methods, |m| m.0 == http.method)
        && !o.not_methods.iter().any(|m| m.0 == http.method)
        && any_or_empty(&o.paths, |p| path_matches(p, http, mode, true))
        && !o
            .not_paths
            .iter()
            .any(|p| path_matches(p, http, mode, false))
        && (o.hosts.is_empty()
            || http
                .authority
                .is_some_and(|a| o.hosts.iter().any(|p| p.matches(a))))
        && o.grpc.as_ref().is_none_or(|g| match grpc_route(http.path) {
            Some((service, method)) => {
                g.service.as_ref().is_none_or(|s| s.matches(service))
                    && any_or_empty(&g.methods, |m| m.matches(method))
            }
            None => false,
        })
}

fn condition_matches(c: &Condition, call: &Call<'_>, mode: Mode) -> bool {
    let Some(http) = &call.http else {
        return mode == Mode::Deny;
    };
    let name = match &c.key {
        ConditionKey::Header(name) => name.as_str(),
        ConditionKey::Claim(path) => return claim_matches(c, &path.0, http.auth.as_ref()),
    };
    if let Some(present) = c.present
        && http.headers.any_value(name, &mut |_| true) != present
    {
        return false;
    }
    if c.values.is_empty() {
        return true;
    }
    match mode {
        Mode::Deny | Mode::Audit => http
            .headers
            .any_value(name, &mut |v| value_matches_some(&c.values, v)),
        Mode::Allow => {
            http.headers.any_value(name, &mut |_| true)
                && !http
                    .headers
                    .any_value(name, &mut |v| !value_matches_all(&c.values, v))
        }
    }
}

/// A condition on a claim of the verified end user. The claim is verified data, not a
/// header a client could repeat, so a list claim (`groups`, `scope`) matches when any of its
/// values matches, for every action. No end user, or no such claim: it is absent.
fn claim_matches(c: &Condition, path: &[String], auth: Option<&RequestAuth<'_>>) -> bool {
    let mut present = false;
    let hit = auth.is_some_and(|a| {
        a.claims.any_value(path, &mut |v| {
            present = true;
            c.values.iter().any(|p| p.matches(v))
        })
    });
    if c.present.is_some_and(|want| present != want) {
        return false;
    }
    c.values.is_empty() || hit
}

/// For DENY: the value, or any element of it read as a list, matches a pattern.
fn value_matches_some(patterns: &[Pattern], value: &[u8]) -> bool {
    let matches = |v: &[u8]| patterns.iter().any(|p| p.matches_bytes(v));
    matches(value) || (value.contains(&b',') && list_elements(value).any(matches))
}

/// For ALLOW: the value matches a pattern, and so does each element of it read as a list.
fn value_matches_all(patterns: &[Pattern], value: &[u8]) -> bool {
    let matches = |v: &[u8]| patterns.iter().any(|p| p.matches_bytes(v));
    matches(value) && (!value.contains(&b',') || list_elements(value).all(matches))
}

/// Splits a gRPC `:path` (`/package.Service/Method`) into service and method.
pub fn grpc_route(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}
