//! What `ward install` prints and `deploy/base` holds: the namespace, the CRDs and their
//! admission rule, the control plane's ServiceAccount and least-privilege RBAC, its
//! Deployment (two replicas, one leader), Service, PodDisruptionBudget and the injector's
//! MutatingWebhookConfiguration.

use serde_json::{Value, json};
use ward_policy::ROOT_NAMESPACE;

/// Names the manifests and the control plane share.
pub mod names {
    pub const CONTROL_PLANE: &str = "ward-control-plane";
    pub const WEBHOOK_CONFIGURATION: &str = "ward-injector";
    pub const WEBHOOK: &str = "inject.ward.dev";
    /// For pods that opt in where their namespace says nothing.
    pub const POD_WEBHOOK: &str = "inject-pod.ward.dev";
    pub const WEBHOOK_PATH: &str = "/inject";
    pub const LEASE: &str = "ward-control-plane";
    pub const CA_SECRET: &str = "ward-ca";
    /// The ConfigMap holding the trust bundle, in every meshed namespace.
    pub const BUNDLE_CONFIGMAP: &str = "ward-trust-bundle";
    /// Namespace and pod label: `enabled` opts in (namespace), `disabled` opts out (pod).
    pub const INJECT_LABEL: &str = "ward.dev/inject";
    pub const GRPC_PORT: u16 = 15012;
    pub const ADMIN_PORT: u16 = 15014;
    pub const WEBHOOK_PORT: u16 = 15017;
}

use names::*;

/// What the rendered manifests depend on.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The image holding `ward` and `ward-proxy`.
    pub image: String,
    pub trust_domain: String,
    pub replicas: u32,
}

/// The image of this version of ward.
pub fn default_image() -> String {
    format!("ward:{}", env!("CARGO_PKG_VERSION"))
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            image: default_image(),
            trust_domain: "cluster.local".into(),
            replicas: 2,
        }
    }
}

/// Every object, in the order `kubectl apply` should see them.
pub fn render(options: &InstallOptions) -> Vec<Value> {
    let mut objects = vec![namespace()];
    objects.extend(crate::crd::crds());
    objects.extend(crate::crd::mesh_policy_namespace_rule());
    objects.extend(rbac());
    objects.push(deployment(options));
    objects.push(service());
    objects.push(disruption_budget());
    objects.push(webhook_configuration());
    objects
}

/// The objects as one YAML stream.
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| yaml_serde::to_string(o).expect("JSON values are YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn labels() -> Value {
    json!({ "app.kubernetes.io/name": CONTROL_PLANE, "app.kubernetes.io/part-of": "ward" })
}

fn namespace() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ROOT_NAMESPACE,
            "labels": {
                // The control plane runs under the restricted Pod Security Standard.
                "pod-security.kubernetes.io/enforce": "restricted",
                INJECT_LABEL: "disabled",
            },
        },
    })
}

/// Least privilege: read policy and pods cluster-wide, review tokens, patch only its own
/// webhook configuration; in `ward-system`, only its own Lease and CA Secret.
fn rbac() -> Vec<Value> {
    let cluster_rules = json!([
        { "apiGroups": ["ward.dev"], "resources": ["authorizationpolicies", "meshpolicies"],
          "verbs": ["get", "list", "watch"] },
        // Their definitions, read to notice an upgrade (policy watches start over then).
        { "apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
          "resourceNames": crate::crd_changes::POLICY_CRDS, "verbs": ["get"] },
        // Their Accepted condition (the leader writes it).
        { "apiGroups": ["ward.dev"], "resources": ["authorizationpolicies/status", "meshpolicies/status"],
          "verbs": ["patch"] },
        { "apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list", "watch"] },
        { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] },
        { "apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
          "resourceNames": [WEBHOOK_CONFIGURATION], "verbs": ["get", "patch"] },
        // The trust bundle, published to meshed namespaces for injected pods to mount.
        { "apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"] },
        { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"] },
        { "apiGroups": [""], "resources": ["configmaps"], "resourceNames": [BUNDLE_CONFIGMAP],
          "verbs": ["get", "patch"] },
    ]);
    let namespaced_rules = json!([
        // `create` cannot be limited to a name; get and update can.
        { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] },
        { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
          "resourceNames": [LEASE], "verbs": ["get", "update"] },
        { "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] },
        { "apiGroups": [""], "resources": ["secrets"], "resourceNames": [CA_SECRET],
          "verbs": ["get", "update"] },
        { "apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"] },
        // Each replica's status ConfigMap (`ward-status-POD`: named after the pod, so not
        // listable by name here), read by the leader for rotation and by `ward check`.
        { "apiGroups": [""], "resources": ["configmaps"],
          "verbs": ["get", "list", "create", "patch", "delete"] },
    ]);
    let subject =
        json!([{ "kind": "ServiceAccount", "name": CONTROL_PLANE, "namespace": ROOT_NAMESPACE }]);
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": CONTROL_PLANE, "namespace": ROOT_NAMESPACE, "labels": labels() },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": CONTROL_PLANE, "labels": labels() },
            "rules": cluster_rules,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": CONTROL_PLANE, "labels": labels() },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROL_PLANE },
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": CONTROL_PLANE, "namespace": ROOT_NAMESPACE, "labels": labels() },
            "rules": namespaced_rules,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": CONTROL_PLANE, "namespace": ROOT_NAMESPACE, "labels": labels() },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROL_PLANE },
            "subjects": subject,
        }),
    ]
}

fn deployment(options: &InstallOptions) -> Value {
    let args = json!([
        "control-plane",
        "--kubernetes",
        "--trust-domain",
        options.trust_domain,
        "--data-dir",
        "/var/run/ward",
        "--listen",
        format!("0.0.0.0:{GRPC_PORT}"),
        "--admin",
        format!("0.0.0.0:{ADMIN_PORT}"),
        "--webhook",
        format!("0.0.0.0:{WEBHOOK_PORT}"),
        "--proxy-image",
        options.image,
        "--log-format",
        "json",
    ]);
    let env_from_field = |name: &str, path: &str| json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } });
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": CONTROL_PLANE, "namespace": ROOT_NAMESPACE, "labels": labels() },
        "spec": {
            "replicas": options.replicas,
            "selector": { "matchLabels": { "app.kubernetes.io/name": CONTROL_PLANE } },
            "strategy": { "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": {
                "metadata": {
                    "labels": labels(),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": ADMIN_PORT.to_string(),
                    },
                },
                "spec": {
                    "serviceAccountName": CONTROL_PLANE,
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "affinity": { "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": { "matchLabels": { "app.kubernetes.io/name": CONTROL_PLANE } },
                        },
                    }]}},
                    "containers": [{
                        "name": "control-plane",
                        "image": options.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["ward"],
                        "args": args,
                        "env": [
                            env_from_field("POD_NAME", "metadata.name"),
                            env_from_field("POD_NAMESPACE", "metadata.namespace"),
                        ],
                        "ports": [
                            { "name": "grpc", "containerPort": GRPC_PORT },
                            { "name": "webhook", "containerPort": WEBHOOK_PORT },
                            { "name": "admin", "containerPort": ADMIN_PORT },
                        ],
                        "readinessProbe": { "httpGet": { "path": "/ready", "port": "admin" }, "periodSeconds": 5 },
                        "livenessProbe": { "httpGet": { "path": "/live", "port": "admin" }, "periodSeconds": 10 },
                        "resources": {
                            "requests": { "cpu": "100m", "memory": "64Mi" },
                            "limits": { "memory": "256Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [{ "name": "data", "mountPath": "/var/run/ward" }],
                    }],
                    "volumes": [{ "name": "data", "emptyDir": { "medium": "Memory" } }],
                },
            },
        },
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": CONTROL_PLANE, "namespace": ROOT_NAMESPACE, "labels": labels() },
        "spec": {
            "selector": { "app.kubernetes.io/name": CONTROL_PLANE },
            "ports": [
                { "name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc" },
                { "name": "webhook", "port": 443, "targetPort": "webhook" },
            ],
        },
    })
}

fn disruption_budget() -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": CONTROL_PLANE, "namespace": ROOT_NAMESPACE, "labels": labels() },
        "spec": {
            "minAvailable": 1,
            "selector": { "matchLabels": { "app.kubernetes.io/name": CONTROL_PLANE } },
        },
    })
}

/// Pods created in a namespace labelled `ward.dev/inject=enabled`, unless the pod says
/// `ward.dev/inject=disabled`. The caBundle is patched in by the control plane at start.
fn webhook_configuration() -> Value {
    let webhook = |name: &str, namespaces: Value, objects: Value| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            // A pod of a meshed namespace must not start outside the mesh.
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 10,
            "clientConfig": {
                "service": { "namespace": ROOT_NAMESPACE, "name": CONTROL_PLANE, "path": WEBHOOK_PATH, "port": 443 },
            },
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "scope": "Namespaced",
            }],
            "namespaceSelector": namespaces,
            "objectSelector": objects,
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": WEBHOOK_CONFIGURATION, "labels": labels() },
        "webhooks": [
            // Every pod of a namespace that opted in, unless the pod opted out.
            webhook(
                WEBHOOK,
                json!({ "matchLabels": { INJECT_LABEL: "enabled" } }),
                json!({ "matchExpressions": [
                    { "key": INJECT_LABEL, "operator": "NotIn", "values": ["disabled"] },
                ]}),
            ),
            // A pod that opted in, in a namespace that said nothing (one that said
            // `disabled` keeps its pods out; one that said `enabled` is the entry above).
            webhook(
                POD_WEBHOOK,
                json!({ "matchExpressions": [{ "key": INJECT_LABEL, "operator": "DoesNotExist" }] }),
                json!({ "matchLabels": { INJECT_LABEL: "enabled" } }),
            ),
        ],
    })
}
