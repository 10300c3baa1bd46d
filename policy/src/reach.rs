//! Who can call a workload, as the engine sees it: the rules that apply to it (DENY, then
//! ALLOW, in policy order, as written) and, for each caller asked about, what the engine
//! would do with its calls — judged on the caller alone, so a rule that also names
//! operations or conditions allows (or denies) only some of its calls.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::compile::{Call, Mode, PolicySet, namespace_of, source_matches};
use crate::model::{Action, MeshDefault, Rule};

/// A rule that applies to the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Applying {
    /// `namespace/name`.
    pub policy: String,
    pub action: &'static str,
    pub rule: usize,
    #[serde(flatten)]
    pub text: Rule,
}

/// What the engine does with one caller's calls.
#[derive(Debug, Clone, Serialize)]
pub struct CallerReach {
    pub principal: String,
    /// `all`, `some` (a matching rule limits operations or has conditions) or `none`.
    pub allowed: &'static str,
    /// The rule or default that says so: `namespace/name rule N`, or `default:...`.
    pub by: String,
}

/// Who can call one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Reach {
    pub mesh_default: &'static str,
    /// Whether ALLOW policies apply (then only what they allow is allowed).
    pub allow_policies: bool,
    pub rules: Vec<Applying>,
    pub callers: Vec<CallerReach>,
}

impl PolicySet {
    /// Who can call the workload of `namespace` with `labels`, for each of `callers`.
    pub fn reach(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        callers: &[&str],
    ) -> Reach {
        let applying: Vec<(&crate::compile::Policy, usize, &Rule)> = self
            .policies()
            .iter()
            .filter(|p| p.applies_to(namespace, labels))
            .flat_map(|p| p.rules.iter().enumerate().map(move |(i, r)| (p, i, r)))
            .collect();
        let of = |action: Action| {
            applying
                .iter()
                .filter(move |(p, _, _)| p.action == action)
                .copied()
        };
        let allow_policies = of(Action::Allow).next().is_some();
        let callers = callers
            .iter()
            .map(|principal| {
                let call = Call {
                    principal,
                    namespace: namespace_of(principal),
                    port: 0,
                    http: None,
                };
                let matching = |action, mode| {
                    of(action).find(|(_, _, r)| {
                        r.from.is_empty() || r.from.iter().any(|s| source_matches(s, &call, mode))
                    })
                };
                let whole = |r: &Rule| r.to.is_empty() && r.when.is_empty();
                let by = |p: &crate::compile::Policy, i: usize| format!("{} rule {i}", p.id());
                let (allowed, by) = match matching(Action::Deny, Mode::Deny) {
                    Some((p, i, r)) if whole(r) => ("none", by(p, i)),
                    deny => match matching(Action::Allow, Mode::Allow) {
                        Some((p, i, r)) => {
                            let all = whole(r) && deny.is_none();
                            (if all { "all" } else { "some" }, by(p, i))
                        }
                        None if allow_policies => {
                            ("none", "default:deny (no ALLOW policy matched)".to_owned())
                        }
                        None => by_default(self.mesh_default(), principal, deny.is_some()),
                    },
                };
                CallerReach {
                    principal: (*principal).to_owned(),
                    allowed,
                    by,
                }
            })
            .collect();
        let rules = of(Action::Deny)
            .chain(of(Action::Allow))
            .map(|(p, i, r)| Applying {
                policy: p.id(),
                action: p.action.label(),
                rule: i,
                text: r.clone(),
            })
            .collect();
        Reach {
            mesh_default: self.mesh_default().name(),
            allow_policies,
            rules,
            callers,
        }
    }
}

/// What the mesh default does with a caller no ALLOW policy concerns (`partly_denied`: a
/// DENY rule matches some of its calls).
fn by_default(
    default: MeshDefault,
    principal: &str,
    partly_denied: bool,
) -> (&'static str, String) {
    let allowed = match default {
        MeshDefault::Deny => "none",
        MeshDefault::AllowAuthenticated if principal.is_empty() => "none",
        MeshDefault::AllowAuthenticated | MeshDefault::Allow if partly_denied => "some",
        MeshDefault::AllowAuthenticated | MeshDefault::Allow => "all",
    };
    (allowed, format!("default:{}", default.name()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn set(docs: &[&str]) -> PolicySet {
        let sources: Vec<(PathBuf, String)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (PathBuf::from(format!("p{i}.yaml")), (*d).to_owned()))
            .collect();
        crate::load::load_sources(&sources).expect("policies load")
    }

    const MESH_DENY: &str = "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: { name: mesh, namespace: ward-system }\nspec: { default: deny }\n";
    const WEB: &str = "spiffe://t/ns/bank/sa/web";
    const GW: &str = "spiffe://t/ns/edge/sa/gateway";
    const LEDGER: &str = "spiffe://t/ns/bank/sa/ledger";

    fn accounts() -> BTreeMap<String, String> {
        [("app".to_owned(), "accounts".to_owned())].into()
    }

    #[test]
    fn callers_are_told_apart_by_the_rules_that_name_them() {
        let allow = "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
            metadata: { name: readers, namespace: bank }\n\
            spec:\n  selector: { matchLabels: { app: accounts } }\n  action: ALLOW\n  rules:\n\
            \x20 - from: [ { principals: [\"spiffe://t/ns/bank/sa/web\"] } ]\n\
            \x20   to: [ { methods: [GET] } ]\n\
            \x20 - from: [ { namespaces: [edge] } ]\n";
        let reach = set(&[MESH_DENY, allow]).reach("bank", &accounts(), &[WEB, GW, LEDGER]);
        assert!(reach.allow_policies);
        assert_eq!(reach.rules.len(), 2);
        let by: Vec<(&str, &str)> = reach
            .callers
            .iter()
            .map(|c| (c.allowed, c.by.as_str()))
            .collect();
        assert_eq!(
            by,
            [
                ("some", "bank/readers rule 0"),
                ("all", "bank/readers rule 1"),
                ("none", "default:deny (no ALLOW policy matched)"),
            ]
        );
    }

    #[test]
    fn an_unconditional_deny_wins_and_the_default_decides_the_rest() {
        let deny = "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
            metadata: { name: no-edge, namespace: bank }\n\
            spec:\n  action: DENY\n  rules:\n  - from: [ { namespaces: [edge] } ]\n";
        let mesh_allow = "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: { name: mesh, namespace: ward-system }\nspec: { default: allow-authenticated }\n";
        let reach = set(&[mesh_allow, deny]).reach("bank", &accounts(), &[WEB, GW]);
        assert!(!reach.allow_policies);
        assert_eq!(reach.mesh_default, "allow-authenticated");
        assert_eq!(reach.callers[0].allowed, "all");
        assert_eq!(reach.callers[0].by, "default:allow-authenticated");
        assert_eq!(reach.callers[1].allowed, "none");
        assert_eq!(reach.callers[1].by, "bank/no-edge rule 0");
        assert_eq!(reach.rules[0].action, "DENY");
    }
}
