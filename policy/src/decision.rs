//! The outcome of a decision and what made it: a policy's rule, no ALLOW matching, or the
//! mesh default — as the audit log, metrics and `ward policy check` name them.

use std::fmt;
use std::sync::Arc;

use crate::model::MeshDefault;

/// What decided a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    /// A policy's rule (`namespace/name`, rule index).
    Rule { policy: Arc<str>, rule: usize },
    /// ALLOW policies apply and none matched.
    NoAllowMatched,
    /// The mesh default.
    Default(MeshDefault),
}

impl fmt::Display for Decider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decider::Rule { policy, rule } => write!(f, "{policy} rule {rule}"),
            Decider::NoAllowMatched => f.write_str("default:deny (no ALLOW policy matched)"),
            Decider::Default(d) => write!(f, "default:{}", d.name()),
        }
    }
}

impl Decider {
    /// The value of the `policy` metric label and audit field.
    pub fn policy_label(&self) -> String {
        match self {
            Decider::Rule { policy, .. } => policy.to_string(),
            Decider::NoAllowMatched => "default:deny".to_owned(),
            Decider::Default(d) => format!("default:{}", d.name()),
        }
    }

    pub fn rule(&self) -> Option<usize> {
        match self {
            Decider::Rule { rule, .. } => Some(*rule),
            _ => None,
        }
    }
}

/// The outcome for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub decider: Decider,
    /// The first AUDIT policy that matched, if any (never changes `allowed`).
    pub audit: Option<Decider>,
}

impl Decision {
    /// `ALLOW`, `DENY`, or with an audit match `AUDIT+ALLOW` / `AUDIT+DENY`.
    pub fn verdict(&self) -> &'static str {
        match (self.audit.is_some(), self.allowed) {
            (false, true) => "ALLOW",
            (false, false) => "DENY",
            (true, true) => "AUDIT+ALLOW",
            (true, false) => "AUDIT+DENY",
        }
    }
}
