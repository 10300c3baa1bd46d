//! The CustomResourceDefinitions, generated from the policy model's own types (kube derive
//! + schemars, see `ward_policy::model`), then shaped for the API server:
//!
//! - every string that has its own parser (patterns, methods, condition keys) is checked
//!   by a CEL rule whose message says what is expected in words, instead of a bare regex;
//! - every list is bounded, so the API server can bound the cost of those rules (and a
//!   policy cannot grow without limit);
//! - `MeshPolicy` must be named `default` (a CEL rule on the object) and may only live in
//!   `ward-system` (a ValidatingAdmissionPolicy, since a CRD schema cannot see the
//!   namespace).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};
use ward_policy::ROOT_NAMESPACE;
use ward_policy::model::{AuthorizationPolicy, MeshPolicy};

/// Most rules in one policy.
pub const MAX_RULES: u64 = 16;
/// Most sources, operations or conditions in one rule.
pub const MAX_CLAUSES: u64 = 8;
/// Most values in one list of a clause (principals, paths, methods, ...).
pub const MAX_VALUES: u64 = 32;

/// The CRDs, as the API server should store them.
pub fn crds() -> Vec<Value> {
    [AuthorizationPolicy::crd(), MeshPolicy::crd()]
        .into_iter()
        .map(shaped)
        .collect()
}

fn shaped(crd: CustomResourceDefinition) -> Value {
    let mut crd = serde_json::to_value(crd).expect("a CRD is JSON");
    if let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for version in versions {
            if let Some(spec) = version.pointer_mut("/schema/openAPIV3Schema/properties/spec") {
                bound(spec, &[]);
            }
        }
    }
    crd
}

/// Walks a schema: lists get `maxItems` by depth, pattern strings a CEL rule.
fn bound(schema: &mut Value, path: &[&str]) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let (Some(Value::String(pattern)), Some(Value::String(description))) =
        (object.remove("pattern"), object.get("description").cloned())
    {
        let rule = json!({
            "rule": format!("self.matches(r'{pattern}')"),
            "message": format!("must be {description}"),
        });
        object
            .entry("x-kubernetes-validations")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("x-kubernetes-validations is a list")
            .push(rule);
    }
    // schemars says `uint16` for ports; the API server knows int32/int64 only (the
    // minimum and maximum carry the range). A port is never 0.
    if object
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| f.starts_with("uint"))
    {
        object.remove("format");
        if matches!(path.last(), Some(&("ports" | "notPorts"))) {
            object.insert("minimum".into(), json!(1));
        }
    }
    if object.get("type").and_then(Value::as_str) == Some("array") {
        let limit = match path.last() {
            Some(&"rules") => MAX_RULES,
            Some(&("from" | "to" | "when")) => MAX_CLAUSES,
            _ => MAX_VALUES,
        };
        object.insert("maxItems".into(), json!(limit));
        if let Some(items) = object.get_mut("items") {
            bound(items, path);
        }
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            let mut deeper = path.to_vec();
            deeper.push(name);
            bound(property, &deeper);
        }
    }
}

/// Keeps `MeshPolicy` objects in `ward-system`: a ValidatingAdmissionPolicy and its
/// binding (CEL evaluated by the API server; GA since Kubernetes 1.30).
pub fn mesh_policy_namespace_rule() -> Vec<Value> {
    let name = "ward-meshpolicy-namespace";
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [{
                        "apiGroups": ["ward.dev"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["meshpolicies"],
                    }],
                },
                "validations": [{
                    "expression": format!("object.metadata.namespace == '{ROOT_NAMESPACE}'"),
                    "message": format!("a MeshPolicy belongs in namespace {ROOT_NAMESPACE}: it sets the defaults of the whole mesh"),
                    "reason": "Invalid",
                }],
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": name },
            "spec": { "policyName": name, "validationActions": ["Deny"] },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crds_come_from_the_model_and_are_bounded() {
        let crds = crds();
        assert_eq!(crds.len(), 2);
        let ap = &crds[0];
        assert_eq!(ap["metadata"]["name"], "authorizationpolicies.ward.dev");
        assert_eq!(ap["spec"]["scope"], "Namespaced");
        let spec = &ap["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["action"]["enum"],
            json!(["ALLOW", "DENY", "AUDIT"])
        );
        let rules = &spec["properties"]["rules"];
        assert_eq!(rules["maxItems"], MAX_RULES);
        let to = &rules["items"]["properties"]["to"];
        assert_eq!(to["maxItems"], MAX_CLAUSES);
        let methods = &to["items"]["properties"]["methods"];
        assert_eq!(methods["maxItems"], MAX_VALUES);
        let rule = &methods["items"]["x-kubernetes-validations"][0];
        assert_eq!(rule["rule"], "self.matches(r'^[A-Z0-9_-]+$')");
        assert_eq!(
            rule["message"],
            "must be an upper-case HTTP method such as GET"
        );
        assert!(methods["items"].get("pattern").is_none());
        let condition = &rules["items"]["properties"]["when"]["items"];
        assert!(
            condition["x-kubernetes-validations"]
                .to_string()
                .contains("a condition needs values or present"),
            "{condition}"
        );
        let mesh = &crds[1];
        assert!(
            mesh["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                .to_string()
                .contains("self.metadata.name == 'default'")
        );
    }
}
