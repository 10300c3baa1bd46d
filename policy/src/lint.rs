//! Warnings about policies that load but cannot do what their author meant: rules that can
//! never match, and DENY rules that match every call.

use std::path::PathBuf;

use crate::compile::PolicySet;
use crate::model::{Action, Operation, Rule, Source};
use crate::pattern::Pattern;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:1: warning: {}",
            self.file.display(),
            self.line,
            self.message
        )
    }
}

/// Every warning for `set`, in file order.
pub fn warnings(set: &PolicySet) -> Vec<Warning> {
    let mut out = Vec::new();
    for p in set.policies() {
        let warn = |message: String| Warning {
            file: p.file.clone(),
            line: p.line,
            message: format!("{}: {message}", p.id()),
        };
        if p.rules.is_empty() {
            let what = match p.action {
                Action::Allow => {
                    "ALLOW policy without rules allows nothing (and still makes every other call to its workloads denied)"
                }
                Action::Deny => "DENY policy without rules denies nothing",
                Action::Audit => "AUDIT policy without rules audits nothing",
            };
            out.push(warn(what.to_owned()));
        }
        for (i, rule) in p.rules.iter().enumerate() {
            if let Some(why) = never_matches(rule) {
                out.push(warn(format!("rule {i} can never match: {why}")));
            } else if p.action == Action::Deny && matches_everything(rule) {
                out.push(warn(format!(
                    "rule {i} denies every call to the workloads it selects"
                )));
            }
        }
    }
    out
}

fn matches_everything(rule: &Rule) -> bool {
    rule.from.iter().all(source_is_empty)
        && rule.to.iter().all(operation_is_empty)
        && rule.when.is_empty()
}

fn source_is_empty(s: &Source) -> bool {
    s.principals.is_empty()
        && s.not_principals.is_empty()
        && s.namespaces.is_empty()
        && s.not_namespaces.is_empty()
}

fn operation_is_empty(o: &Operation) -> bool {
    o.ports.is_empty()
        && o.not_ports.is_empty()
        && o.methods.is_empty()
        && o.not_methods.is_empty()
        && o.paths.is_empty()
        && o.not_paths.is_empty()
        && o.hosts.is_empty()
        && o.grpc.is_none()
}

fn covered(allowed: &[Pattern], excluded: &[Pattern]) -> bool {
    !allowed.is_empty()
        && allowed
            .iter()
            .all(|a| excluded.iter().any(|e| *e == Pattern::Any || e == a))
}

fn never_matches(rule: &Rule) -> Option<String> {
    if !rule.from.is_empty()
        && rule.from.iter().all(|s| {
            let p: Vec<Pattern> = s.principals.iter().map(|p| p.0.clone()).collect();
            let np: Vec<Pattern> = s.not_principals.iter().map(|p| p.0.clone()).collect();
            covered(&p, &np) || covered(&s.namespaces, &s.not_namespaces)
        })
    {
        return Some("every source excludes what it includes".into());
    }
    if !rule.to.is_empty()
        && rule.to.iter().all(|o| {
            (!o.ports.is_empty() && o.ports.iter().all(|p| o.not_ports.contains(p)))
                || (!o.methods.is_empty() && o.methods.iter().all(|m| o.not_methods.contains(m)))
                || {
                    // Templates depend on the request's end user: never "covered" here.
                    let p: Vec<Pattern> =
                        o.paths.iter().filter_map(|p| p.plain().cloned()).collect();
                    let np: Vec<Pattern> = o
                        .not_paths
                        .iter()
                        .filter_map(|p| p.plain().cloned())
                        .collect();
                    p.len() == o.paths.len() && covered(&p, &np)
                }
        })
    {
        return Some("every operation excludes what it includes".into());
    }
    for c in &rule.when {
        if c.present == Some(false) && !c.values.is_empty() {
            return Some(format!(
                "condition on {} asks for values of a header that must be absent",
                c.key
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_sources;

    fn lint(spec: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: p, namespace: n }}\nspec:\n{spec}"
        );
        let set = load_sources(&[(PathBuf::from("p.yaml"), yaml)]).unwrap();
        warnings(&set).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn warns_on_rules_that_never_match_and_deny_everything() {
        assert_eq!(
            lint("  action: DENY\n  rules: [ {} ]\n"),
            vec!["p.yaml:1:1: warning: n/p: rule 0 denies every call to the workloads it selects"]
        );
        assert!(
            lint(
                "  action: ALLOW\n  rules: [ { to: [ { methods: [GET], notMethods: [GET] } ] } ]\n"
            )[0]
            .contains("rule 0 can never match")
        );
        assert!(lint("  action: ALLOW\n  rules: [ { from: [ { namespaces: [a], notNamespaces: [\"*\"] } ] } ]\n")[0].contains("can never match"));
        assert!(lint("  action: ALLOW\n  rules: [ { when: [ { key: \"request.headers[x]\", values: [a], present: false } ] } ]\n")[0].contains("must be absent"));
        assert!(lint("  action: ALLOW\n")[0].contains("allows nothing"));
        assert!(lint("  action: ALLOW\n  rules: [ { to: [ { ports: [80] } ] } ]\n").is_empty());
        assert!(
            lint("  action: DENY\n  rules: [ { to: [ { paths: [\"/admin*\"] } ] } ]\n").is_empty()
        );
    }
}
