//! `ward inject -f`: every pod and pod template of a YAML stream.

use k8s_openapi::api::core::v1::Pod;

use super::{Injected, Injector, inject};

/// Injects every pod and pod template of a YAML stream; returns the objects and a line per
/// workload saying what was done. Fails on the first document that is not YAML or
/// whose pod cannot be injected, naming it.
pub fn inject_manifests(
    text: &str,
    injector: &Injector,
) -> Result<(Vec<serde_json::Value>, Vec<String>), String> {
    use serde::Deserialize;
    let mut objects = Vec::new();
    let mut report = Vec::new();
    for (i, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .map_err(|e| format!("document {}: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or("(unnamed)")
            .to_owned();
        let label = format!("{}/{name}", kind.to_ascii_lowercase());
        let template = match kind.as_str() {
            "Pod" => Some(""),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                Some("/spec/template")
            }
            "CronJob" => Some("/spec/jobTemplate/spec/template"),
            _ => None,
        };
        let mut value = value;
        if let Some(pointer) = template {
            let slot = value
                .pointer_mut(pointer)
                .ok_or_else(|| format!("{label}: no pod template at {pointer}"))?;
            let pod: Pod = serde_json::from_value(slot.clone())
                .map_err(|e| format!("{label}: not a pod: {e}"))?;
            match inject(&pod, injector).map_err(|e| format!("{label}: {e}"))? {
                Injected::Pod(injected) => {
                    let mut injected =
                        serde_json::to_value(&*injected).map_err(|e| format!("{label}: {e}"))?;
                    if !pointer.is_empty() {
                        // A template has no apiVersion/kind of its own.
                        if let Some(o) = injected.as_object_mut() {
                            o.remove("apiVersion");
                            o.remove("kind");
                        }
                    }
                    *slot = injected;
                    report.push(format!("{label}: injected"));
                }
                Injected::Skipped(why) => report.push(format!("{label}: not injected: {why}")),
            }
        }
        objects.push(value);
    }
    Ok((objects, report))
}
