//! The end user a `ward policy check` or `test` case names (its principal and claims),
//! and the one-or-many values a header or claim is given as.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;

/// A header's or claim's value: one, or a list (sent or held more than once).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

impl HeaderValues {
    pub(crate) fn values(&self) -> &[String] {
        match self {
            HeaderValues::One(v) => std::slice::from_ref(v),
            HeaderValues::Many(v) => v,
        }
    }
}

/// An end user: `ISSUER/SUBJECT` and claims, a name mapping to one value or a list.
/// A name is a top-level claim, or `request.auth.claims[a][b]` for a nested one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndUserSpec {
    pub(crate) principal: String,
    #[serde(default)]
    pub(crate) claims: BTreeMap<String, HeaderValues>,
}

impl EndUserSpec {
    /// The claims as the policy engine reads them: (path, value) pairs.
    pub(crate) fn pairs(&self) -> anyhow::Result<Vec<(Vec<String>, String)>> {
        let mut out = Vec::new();
        for (name, values) in &self.claims {
            let path = if name.starts_with("request.auth.claims") {
                ward_policy::auth::ClaimPath::parse(name)
                    .with_context(|| format!("claim {name:?} is not request.auth.claims[A][B]..."))?
                    .0
            } else {
                vec![name.clone()]
            };
            for v in values.values() {
                out.push((path.clone(), v.clone()));
            }
        }
        Ok(out)
    }
}
