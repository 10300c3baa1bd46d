//! The sidecar injector against a real kube-apiserver: the control plane's webhook
//! (TLS from the mesh CA, caBundle patched in at start) injects pods created in a
//! labelled namespace, exactly as `ward inject` prints them; it honours opt-out, never
//! injects twice, refuses hostNetwork pods with the reason, and the trust bundle the
//! injected proxies mount is published to the namespace.

use serde_json::Value;
use ward_tests::bin::{run, ward};
use ward_tests::k8s::{Cluster, eventually};
use ward_tests::mesh::ControlPlane;
use ward_tests::net::free_addr;

use std::time::Duration;

const IMAGE: &str = "ward:test";

fn pod(name: &str, labels: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: {name}, namespace: shop, labels: {{ {labels} }}, annotations: {{ ward.dev/opaque-ports: \"5432\" }} }}\n\
         spec:\n  serviceAccountName: {name}\n  {extra_spec}containers: [ {{ name: app, image: shop:1, ports: [ {{ containerPort: 8080 }} ] }} ]\n"
    )
}

fn stored(cluster: &Cluster, ns: &str, name: &str) -> Value {
    let json = cluster
        .kubectl(["get", "pod", name, "-n", ns, "-o", "json"])
        .ok()
        .to_owned();
    serde_json::from_str(&json).unwrap()
}

fn has_sidecar(pod: &Value) -> bool {
    pod["spec"]["initContainers"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["name"] == "ward-proxy"))
}

/// Every field of `part` is in `whole` with the same value (lists element by element):
/// the API server adds defaults, never changes what was set.
fn contains(whole: &Value, part: &Value) -> Result<(), String> {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p.iter().try_for_each(|(k, v)| {
            contains(w.get(k).unwrap_or(&Value::Null), v).map_err(|e| format!("{k}.{e}"))
        }),
        (Value::Array(w), Value::Array(p)) if w.len() == p.len() => w
            .iter()
            .zip(p)
            .enumerate()
            .try_for_each(|(i, (w, p))| contains(w, p).map_err(|e| format!("[{i}]{e}"))),
        _ if whole == part => Ok(()),
        _ => Err(format!(": stored {whole}, ward inject {part}")),
    }
}

fn ward_volumes(pod: &Value) -> Value {
    Value::Array(
        pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with("ward-")))
            .cloned()
            .collect(),
    )
}

#[test]
fn the_webhook_injects_what_ward_inject_prints_and_refuses_what_it_must() {
    let cluster = Cluster::start();
    cluster.install_ward();
    let webhook = free_addr();
    let _cp = ControlPlane::start_kubernetes(
        cluster.dir(),
        &cluster.kubeconfig,
        "cluster.local",
        &[
            "--webhook",
            &webhook.to_string(),
            "--webhook-name",
            "127.0.0.1",
            "--proxy-image",
            IMAGE,
        ],
    );
    // No kube-proxy routes to the Service here, so the API server calls the webhook by URL
    // (the certificate carries 127.0.0.1 for that); the caBundle is the control plane's.
    cluster.route_webhook(webhook);
    cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, labels: { ward.dev/inject: enabled } }\n---\napiVersion: v1\nkind: Namespace\nmetadata: { name: plain }\n");

    // Injected, as `ward inject` prints it.
    let web = pod("web", "app: web", "");
    eventually(Duration::from_secs(20), "the webhook answers", || {
        let run = cluster.kubectl_with_input(["apply", "-f", "-"], &web);
        (run.code == 0).then_some(())
    });
    let stored_web = stored(&cluster, "shop", "web");
    assert!(has_sidecar(&stored_web), "{stored_web:#}");
    let file = cluster.dir().join("web.yaml");
    std::fs::write(&file, &web).unwrap();
    let printed = ward([
        "inject",
        "-f",
        &file.to_string_lossy(),
        "--proxy-image",
        IMAGE,
    ])
    .ok()
    .to_owned();
    let printed = yaml_to_json(&printed);
    contains(
        &stored_web["spec"]["initContainers"],
        &printed["spec"]["initContainers"],
    )
    .unwrap();
    contains(&ward_volumes(&stored_web), &ward_volumes(&printed)).unwrap();
    assert_eq!(
        stored_web["metadata"]["annotations"]["ward.dev/injected"],
        printed["metadata"]["annotations"]["ward.dev/injected"]
    );

    // Never twice: the printed (already injected) pod is stored with one sidecar.
    let twice = run(
        &ward_tests::bin::path("ward"),
        [
            "inject",
            "-f",
            &file.to_string_lossy(),
            "--proxy-image",
            IMAGE,
        ],
    )
    .ok()
    .replace("name: web", "name: web-again");
    cluster.apply(&twice);
    let again = stored(&cluster, "shop", "web-again");
    let sidecars = again["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "ward-proxy")
        .count();
    assert_eq!(sidecars, 1);

    // Opted out, and a namespace that is not labelled: untouched.
    cluster.apply(&pod("batch", "app: batch, ward.dev/inject: disabled", ""));
    assert!(!has_sidecar(&stored(&cluster, "shop", "batch")));
    cluster.apply(&pod("other", "app: other", "").replace("namespace: shop", "namespace: plain"));
    assert!(!has_sidecar(&stored(&cluster, "plain", "other")));
    // A pod that opts in where its namespace says nothing: injected.
    cluster.apply(
        &pod("keen", "app: keen, ward.dev/inject: enabled", "")
            .replace("namespace: shop", "namespace: plain"),
    );
    assert!(has_sidecar(&stored(&cluster, "plain", "keen")));

    // hostNetwork: refused with the reason.
    let refused = cluster.kubectl_with_input(
        ["apply", "-f", "-"],
        &pod("host", "app: host", "hostNetwork: true\n  "),
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("ward: cannot inject the sidecar into a hostNetwork pod"),
        "{}",
        refused.stderr
    );

    // A bad annotation: refused, naming it.
    let bad = pod("bad", "app: bad", "").replace("\"5432\"", "\"postgres\"");
    let refused = cluster.kubectl_with_input(["apply", "-f", "-"], &bad);
    assert!(
        refused
            .stderr
            .contains("annotation ward.dev/opaque-ports: \"postgres\" is not a list of ports"),
        "{}",
        refused.stderr
    );

    // The bundle the injected proxies mount is in the namespace.
    cluster.trust_bundle("shop");

    // `ward check`: no replica is ready (no kubelet runs here), so it fails and says so.
    let (code, lines) = ward_check(&cluster);
    assert_eq!(code, 1, "{lines}");
    assert!(
        lines.contains("[FAIL] control plane: 0/2 replicas ready"),
        "{lines}"
    );
    // Played by the test: the Deployment controller reports both replicas ready.
    cluster
        .kubectl([
            "patch",
            "deployment",
            "ward-control-plane",
            "-n",
            "ward-system",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":2,"readyReplicas":2}}"#,
        ])
        .ok();
    let (code, lines) = ward_check(&cluster);
    for line in [
        "[ok]   kubernetes API: reachable (v1.36.3)",
        "[ok]   CRDs: AuthorizationPolicy and MeshPolicy established",
        "[ok]   control plane: 2/2 replicas ready",
        "[ok]   injector configuration: caBundle is the mesh CA's",
        "[ok]   injector webhook: a dry-run pod in shop was injected",
        "[ok]   proxies: 3 injected pods, all at 0.1.0",
    ] {
        assert!(lines.contains(line), "{line} missing from:\n{lines}");
    }
    assert!(lines.contains("[ok]   CA: valid until "), "{lines}");
    assert!(lines.contains("[ok]   control-plane leader: "), "{lines}");
    assert_eq!(code, 0, "{lines}");
    // A broken injector is caught: the caBundle no longer matches the CA.
    cluster
        .kubectl([
            "patch",
            "mutatingwebhookconfiguration",
            "ward-injector",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"Zm9v"}]"#,
        ])
        .ok();
    let (code, lines) = ward_check(&cluster);
    assert_eq!(code, 1, "{lines}");
    assert!(
        lines.contains("[FAIL] injector configuration: caBundle is not the mesh CA's"),
        "{lines}"
    );
    assert!(
        lines.contains("[FAIL] injector webhook: a dry-run pod in shop was refused"),
        "{lines}"
    );
}

/// `ward check` against the cluster: (exit code, its lines).
fn ward_check(cluster: &Cluster) -> (i32, String) {
    let run = cluster.ward(["check"]);
    (run.code, run.stdout)
}

fn yaml_to_json(yaml: &str) -> serde_json::Value {
    yaml_serde::from_str(yaml).expect("ward inject prints YAML")
}

/// The configuration the injector writes into the sidecar's environment is one the proxy
/// accepts (every WARD_* name a setting, every value valid), with capture and
/// token-attested renewals on.
#[test]
fn the_injected_environment_is_a_valid_sidecar_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod.yaml");
    // With probes of each kind the sidecar runs.
    let probed = pod("web", "app: web", "").replace(
        "ports: [ { containerPort: 8080 } ] }",
        "ports: [ { containerPort: 8080 } ], readinessProbe: { httpGet: { path: /healthz, port: 8080 } }, \
         livenessProbe: { tcpSocket: { port: 8080 } }, startupProbe: { grpc: { port: 8080 }, timeoutSeconds: 5 } }",
    );
    assert!(probed.contains("startupProbe"));
    std::fs::write(&file, probed).unwrap();
    let printed: Value = yaml_to_json(ward(["inject", "-f", &file.to_string_lossy()]).ok());
    let proxy = printed["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ward-proxy")
        .unwrap();
    assert_eq!(
        proxy["args"],
        serde_json::json!(["sidecar", "--log-format", "json"]),
        "no config file"
    );
    // The mounted files, here.
    let (token, bundle) = (dir.path().join("token"), dir.path().join("bundle.pem"));
    std::fs::write(&token, "t").unwrap();
    std::fs::write(&bundle, "b").unwrap();
    let env: Vec<(String, String)> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let (name, value) = (e["name"].as_str()?, e["value"].as_str()?);
            let value = match name {
                "WARD_IDENTITY_TOKEN_FILE" => token.to_string_lossy().into_owned(),
                "WARD_IDENTITY_BUNDLE" => bundle.to_string_lossy().into_owned(),
                _ => value.to_owned(),
            };
            Some((name.to_owned(), value))
        })
        .collect();
    let config = ward_proxy::config::SidecarConfig::from_env(env).expect("a valid configuration");
    assert!(config.config.identity.renew_with_token);
    assert!(config.config.capture.is_some(), "transparent capture");
    let probes: Vec<&str> = config
        .config
        .app_probes
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        probes,
        [
            "/app-health/app/livez",
            "/app-health/app/readyz",
            "/app-health/app/startupz"
        ]
    );
    assert_eq!(
        config.config.app_probes["/app-health/app/startupz"].timeout,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(config.trust_domain.to_string(), "cluster.local");
}
