//! The policy model on the wire (`ward.v1.PolicySnapshot`): what the control plane sends a
//! proxy — the mesh default and the policies that apply to its workload, as typed messages
//! — and how a proxy turns them back into a [`PolicySet`]. Every value received is checked
//! by the same rules as a policy file (a pattern with a `*` in the middle, a lower-case
//! method, a malformed SPIFFE ID are refused), so the network can hand a proxy nothing a
//! file could not.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::de::value::{Error as ValueError, StrDeserializer};
use ward_api::v1;

use crate::compile::{Policy, PolicySet};
use crate::load::{PolicyError, PolicyErrors};
use crate::model::{
    Action, Condition, Grpc, MeshDefault, Operation, OutboundTrafficPolicy, Rule, Source,
};

/// The snapshot for a workload of `namespace` with `labels`: the mesh default and every
/// policy that applies to it — nothing about other workloads.
pub fn snapshot(
    version: u64,
    set: &PolicySet,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> v1::PolicySnapshot {
    v1::PolicySnapshot {
        version,
        mesh_default: mesh_default_to(set.mesh_default()) as i32,
        outbound_traffic_policy: match set.outbound_traffic_policy() {
            OutboundTrafficPolicy::AllowAny => v1::OutboundTrafficPolicy::AllowAny,
            OutboundTrafficPolicy::RegistryOnly => v1::OutboundTrafficPolicy::RegistryOnly,
        } as i32,
        policies: set
            .policies()
            .iter()
            .filter(|p| p.applies_to(namespace, labels))
            .map(policy_to)
            .collect(),
        gateways: set.gateways().to_vec(),
    }
}

/// The policy set a snapshot describes, or every reason it cannot be one.
pub fn policy_set(snapshot: &v1::PolicySnapshot) -> Result<PolicySet, PolicyErrors> {
    let mut errors = Vec::new();
    let mesh_default = match v1::MeshDefault::try_from(snapshot.mesh_default) {
        Ok(v1::MeshDefault::Unspecified | v1::MeshDefault::Deny) => MeshDefault::Deny,
        Ok(v1::MeshDefault::AllowAuthenticated) => MeshDefault::AllowAuthenticated,
        Ok(v1::MeshDefault::Allow) => MeshDefault::Allow,
        Err(_) => {
            errors.push(error(
                "snapshot",
                0,
                format!("unknown mesh default {}", snapshot.mesh_default),
            ));
            MeshDefault::Deny
        }
    };
    let outbound = match v1::OutboundTrafficPolicy::try_from(snapshot.outbound_traffic_policy) {
        Ok(v1::OutboundTrafficPolicy::RegistryOnly) => OutboundTrafficPolicy::RegistryOnly,
        Ok(_) => OutboundTrafficPolicy::AllowAny,
        Err(_) => {
            errors.push(error(
                "snapshot",
                0,
                format!(
                    "unknown outbound traffic policy {}",
                    snapshot.outbound_traffic_policy
                ),
            ));
            OutboundTrafficPolicy::AllowAny
        }
    };
    let mut policies: Vec<Policy> = Vec::new();
    for p in &snapshot.policies {
        match policy_from(p) {
            Ok(policy) if policies.iter().any(|q| q.id() == policy.id()) => errors.push(error(
                &p.origin,
                p.line,
                format!("policy {} is sent twice", policy.id()),
            )),
            Ok(policy) => policies.push(policy),
            Err(reason) => errors.push(error(&p.origin, p.line, reason)),
        }
    }
    let mut gateways = Vec::new();
    for g in &snapshot.gateways {
        match parse::<crate::model::SpiffeIdName>("gateways", g) {
            Ok(id) => gateways.push(id.0),
            Err(reason) => errors.push(error("snapshot", 0, reason)),
        }
    }
    if errors.is_empty() {
        Ok(PolicySet::new(policies, mesh_default)
            .with_outbound(outbound)
            .with_gateways(gateways))
    } else {
        Err(PolicyErrors(errors))
    }
}

fn error(origin: &str, line: u32, reason: String) -> PolicyError {
    PolicyError {
        file: PathBuf::from(origin),
        line: line as usize,
        column: 0,
        reason,
    }
}

fn mesh_default_to(d: MeshDefault) -> v1::MeshDefault {
    match d {
        MeshDefault::Deny => v1::MeshDefault::Deny,
        MeshDefault::AllowAuthenticated => v1::MeshDefault::AllowAuthenticated,
        MeshDefault::Allow => v1::MeshDefault::Allow,
    }
}

fn policy_to(p: &Policy) -> v1::AuthorizationPolicy {
    let action = match p.action {
        Action::Allow => v1::Action::Allow,
        Action::Deny => v1::Action::Deny,
        Action::Audit => v1::Action::Audit,
    };
    v1::AuthorizationPolicy {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        action: action as i32,
        selector: p.selector.as_ref().map(|s| v1::Selector {
            match_labels: s.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }),
        rules: p.rules.iter().map(rule_to).collect(),
        origin: p.file.display().to_string(),
        line: u32::try_from(p.line).unwrap_or(u32::MAX),
    }
}

fn texts<T: std::fmt::Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn rule_to(r: &Rule) -> v1::Rule {
    v1::Rule {
        from: r
            .from
            .iter()
            .map(|s| v1::Source {
                principals: s.principals.iter().map(|p| p.0.to_string()).collect(),
                not_principals: s.not_principals.iter().map(|p| p.0.to_string()).collect(),
                namespaces: texts(&s.namespaces),
                not_namespaces: texts(&s.not_namespaces),
                request_principals: s
                    .request_principals
                    .iter()
                    .map(|p| p.0.to_string())
                    .collect(),
                not_request_principals: s
                    .not_request_principals
                    .iter()
                    .map(|p| p.0.to_string())
                    .collect(),
            })
            .collect(),
        to: r.to.iter().map(operation_to).collect(),
        when: r
            .when
            .iter()
            .map(|c| v1::Condition {
                key: c.key.to_string(),
                values: texts(&c.values),
                present: c.present,
            })
            .collect(),
    }
}

fn operation_to(o: &Operation) -> v1::Operation {
    v1::Operation {
        ports: o.ports.iter().map(|&p| u32::from(p)).collect(),
        not_ports: o.not_ports.iter().map(|&p| u32::from(p)).collect(),
        methods: o.methods.iter().map(|m| m.0.clone()).collect(),
        not_methods: o.not_methods.iter().map(|m| m.0.clone()).collect(),
        paths: texts(&o.paths),
        not_paths: texts(&o.not_paths),
        hosts: texts(&o.hosts),
        grpc: o.grpc.as_ref().map(|g| v1::Grpc {
            service: g.service.as_ref().map(ToString::to_string),
            methods: texts(&g.methods),
        }),
    }
}

/// One value checked exactly as a policy file's would be.
fn parse<T: DeserializeOwned>(field: &str, value: &str) -> Result<T, String> {
    T::deserialize(StrDeserializer::<ValueError>::new(value)).map_err(|e| format!("{field}: {e}"))
}

fn parse_all<T: DeserializeOwned>(field: &str, values: &[String]) -> Result<Vec<T>, String> {
    values.iter().map(|v| parse(field, v)).collect()
}

fn ports(field: &str, values: &[u32]) -> Result<Vec<u16>, String> {
    values
        .iter()
        .map(|&p| u16::try_from(p).map_err(|_| format!("{field}: port {p} is not 0-65535")))
        .collect()
}

fn policy_from(p: &v1::AuthorizationPolicy) -> Result<Policy, String> {
    if p.namespace.is_empty() || p.name.is_empty() {
        return Err("metadata.namespace and metadata.name are required".into());
    }
    let action = match v1::Action::try_from(p.action) {
        Ok(v1::Action::Allow) => Action::Allow,
        Ok(v1::Action::Deny) => Action::Deny,
        Ok(v1::Action::Audit) => Action::Audit,
        _ => {
            return Err(format!(
                "spec.action {} is not ALLOW, DENY or AUDIT",
                p.action
            ));
        }
    };
    let rules = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule_from(r).map_err(|e| format!("spec.rules[{i}].{e}")))
        .collect::<Result<_, _>>()?;
    Ok(Policy {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        action,
        selector: p.selector.as_ref().map(|s| {
            s.match_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        rules,
        file: PathBuf::from(&p.origin),
        line: p.line as usize,
    })
}

fn rule_from(r: &v1::Rule) -> Result<Rule, String> {
    let from = r
        .from
        .iter()
        .map(|s| {
            Ok(Source {
                principals: parse_all("from.principals", &s.principals)?,
                not_principals: parse_all("from.notPrincipals", &s.not_principals)?,
                namespaces: parse_all("from.namespaces", &s.namespaces)?,
                not_namespaces: parse_all("from.notNamespaces", &s.not_namespaces)?,
                request_principals: parse_all("from.requestPrincipals", &s.request_principals)?,
                not_request_principals: parse_all(
                    "from.notRequestPrincipals",
                    &s.not_request_principals,
                )?,
            })
        })
        .collect::<Result<_, String>>()?;
    let to = r.to.iter().map(operation_from).collect::<Result<_, _>>()?;
    let when = r
        .when
        .iter()
        .map(|c| {
            Ok(Condition {
                key: parse("when.key", &c.key)?,
                values: parse_all("when.values", &c.values)?,
                present: c.present,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Rule { from, to, when })
}

fn operation_from(o: &v1::Operation) -> Result<Operation, String> {
    Ok(Operation {
        ports: ports("to.ports", &o.ports)?,
        not_ports: ports("to.notPorts", &o.not_ports)?,
        methods: parse_all("to.methods", &o.methods)?,
        not_methods: parse_all("to.notMethods", &o.not_methods)?,
        paths: parse_all("to.paths", &o.paths)?,
        not_paths: parse_all("to.notPaths", &o.not_paths)?,
        hosts: parse_all("to.hosts", &o.hosts)?,
        grpc: o
            .grpc
            .as_ref()
            .map(|g| {
                Ok::<_, String>(Grpc {
                    service: g
                        .service
                        .as_deref()
                        .map(|s| parse("to.grpc.service", s))
                        .transpose()?,
                    methods: parse_all("to.grpc.methods", &g.methods)?,
                })
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
apiVersion: ward.dev/v1alpha1
kind: MeshPolicy
metadata: { name: mesh, namespace: ward-system }
spec: { default: allow-authenticated, outboundTrafficPolicy: REGISTRY_ONLY, gateways: ["spiffe://example.org/ns/edge/sa/gateway"] }
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: orders-read, namespace: shop }
spec:
  selector: { matchLabels: { app: orders } }
  action: ALLOW
  rules:
  - from: [ { principals: ["spiffe://example.org/ns/shop/sa/web", "spiffe://example.org/ns/ops/*"], notNamespaces: ["test*"] } ]
    to: [ { methods: [GET, HEAD], notPaths: ["/admin*"], paths: ["/orders*", "*.json"], ports: [8080], hosts: ["Orders.Example.Org.:8080"] } ]
    when: [ { key: "request.headers[X-Tenant]", values: ["eu-*"] }, { key: "request.headers[x-debug]", present: false } ]
  - from: [ { requestPrincipals: ["https://idp.example/*"], notRequestPrincipals: ["https://idp.example/banned"] } ]
    to: [ { paths: ["/accounts/{request.auth.claims[sub]}/*"] } ]
    when: [ { key: "request.auth.claims[realm][roles]", values: ["teller"] } ]
  - to: [ { grpc: { service: "bank.v1.*", methods: ["Get*"] } } ]
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: no-delete, namespace: ward-system }
spec: { action: DENY, rules: [ { to: [ { methods: [DELETE], notPorts: [9000] } ] } ] }
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: other-workload, namespace: shop }
spec: { selector: { matchLabels: { app: web } }, action: AUDIT, rules: [ {} ] }
"#;

    fn loaded() -> PolicySet {
        crate::load_sources(&[(PathBuf::from("policies/shop.yaml"), POLICIES.to_owned())]).unwrap()
    }

    fn orders() -> BTreeMap<String, String> {
        [("app".to_owned(), "orders".to_owned())].into()
    }

    #[test]
    fn a_snapshot_carries_what_applies_and_compiles_to_the_same_policies() {
        let set = loaded();
        let snap = snapshot(7, &set, "shop", &orders());
        assert_eq!(snap.version, 7);
        let names: Vec<_> = snap.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["orders-read", "no-delete"],
            "nothing for other workloads"
        );
        assert_eq!(snap.policies[0].origin, "policies/shop.yaml");
        let back = policy_set(&snap).unwrap();
        assert_eq!(back.mesh_default(), MeshDefault::AllowAuthenticated);
        assert_eq!(
            back.outbound_traffic_policy(),
            OutboundTrafficPolicy::RegistryOnly
        );
        assert_eq!(back.gateways(), ["spiffe://example.org/ns/edge/sa/gateway"]);
        let applying: Vec<_> = set
            .policies()
            .iter()
            .filter(|p| p.applies_to("shop", &orders()))
            .collect();
        assert_eq!(
            format!("{applying:?}"),
            format!("{:?}", back.policies().iter().collect::<Vec<_>>())
        );
        // And through protobuf bytes.
        let bytes = prost::Message::encode_to_vec(&snap);
        let decoded: v1::PolicySnapshot = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, snap);
    }

    #[test]
    fn what_a_file_may_not_say_the_wire_may_not_either() {
        let good = snapshot(1, &loaded(), "shop", &orders());
        type Tamper = Box<dyn Fn(&mut v1::PolicySnapshot)>;
        let cases: Vec<(&str, Tamper)> = vec![
            (
                "'*' may only stand alone",
                Box::new(|s| s.policies[0].rules[0].to[0].paths[0] = "/a/*/b".into()),
            ),
            (
                "upper-case HTTP method",
                Box::new(|s| s.policies[0].rules[0].to[0].methods[0] = "get".into()),
            ),
            (
                "bad SPIFFE ID",
                Box::new(|s| {
                    s.policies[0].rules[0].from[0].principals[0] = "spiffe://x/../y".into()
                }),
            ),
            (
                "must start with spiffe://",
                Box::new(|s| s.policies[0].rules[0].from[0].principals[0] = "web*".into()),
            ),
            (
                "must start with '/'",
                Box::new(|s| s.policies[0].rules[0].to[0].paths[0] = "orders".into()),
            ),
            (
                "not request.headers[NAME]",
                Box::new(|s| s.policies[0].rules[0].when[0].key = "headers.x".into()),
            ),
            (
                "must be ISSUER/SUBJECT",
                Box::new(|s| s.policies[0].rules[1].from[0].request_principals[0] = "alice".into()),
            ),
            (
                "a placeholder must be a whole segment",
                Box::new(|s| {
                    s.policies[0].rules[1].to[0].paths[0] = "/a/{request.auth.claims[sub]}x".into()
                }),
            ),
            (
                "not request.auth.claims[NAME]",
                Box::new(|s| s.policies[0].rules[1].when[0].key = "request.auth.claim[x]".into()),
            ),
            (
                "port 70000",
                Box::new(|s| s.policies[0].rules[0].to[0].ports[0] = 70_000),
            ),
            (
                "not ALLOW, DENY or AUDIT",
                Box::new(|s| s.policies[0].action = 0),
            ),
            (
                "not a host name pattern",
                Box::new(|s| s.policies[0].rules[0].to[0].hosts[0] = "a@b".into()),
            ),
            (
                "are required",
                Box::new(|s| s.policies[1].namespace.clear()),
            ),
            (
                "sent twice",
                Box::new(|s| s.policies[1] = s.policies[0].clone()),
            ),
            ("unknown mesh default", Box::new(|s| s.mesh_default = 9)),
            (
                "not one exact SPIFFE ID",
                Box::new(|s| s.gateways[0] = "spiffe://example.org/ns/edge/*".into()),
            ),
        ];
        for (want, tamper) in cases {
            let mut snap = good.clone();
            tamper(&mut snap);
            let errors = policy_set(&snap)
                .err()
                .unwrap_or_else(|| panic!("{want}: accepted"));
            let text = errors.to_string();
            assert!(text.contains(want), "{want}: {text}");
        }
        policy_set(&good).expect("the untampered snapshot");
    }
}
