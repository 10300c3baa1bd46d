//! The injector's unit tests.
use super::*;

fn injector() -> Injector {
    Injector::new("ward:test".into(), "cluster.local".into(), "ward-system")
}

fn pod(yaml: &str) -> Pod {
    yaml_serde::from_str(yaml).unwrap()
}

fn injected(pod: &Pod) -> Pod {
    match inject(pod, &injector()).unwrap() {
        Injected::Pod(p) => *p,
        Injected::Skipped(why) => panic!("skipped: {why}"),
    }
}

const APP: &str = "metadata: { name: web, labels: { app: web } }\nspec:\n  initContainers: [ { name: migrate, image: m } ]\n  containers: [ { name: web, image: web } ]\n";

#[test]
fn the_proxy_is_a_native_sidecar_after_init_and_before_the_apps_init_containers() {
    let pod = injected(&pod(APP));
    let spec = pod.spec.unwrap();
    let init: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, [INIT, PROXY, "migrate"]);
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(
        proxy.restart_policy.as_deref(),
        Some("Always"),
        "native sidecar"
    );
    assert!(
        proxy.startup_probe.is_some(),
        "the app starts once the proxy is ready"
    );
    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!(
        (sc.run_as_user, sc.run_as_non_root),
        (Some(PROXY_UID), Some(true))
    );
    let env: BTreeMap<_, _> = proxy
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
        .collect();
    assert_eq!(
        env["WARD_IDENTITY_CONTROL_PLANE"],
        "https://ward-control-plane.ward-system.svc:15012"
    );
    assert_eq!(env["WARD_IDENTITY_RENEW_WITH_TOKEN"], "true");
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let caps = init
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_ADMIN".to_owned(), "NET_RAW".to_owned()][..])
    );
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "ward-token")
        .unwrap();
    let projection = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .as_ref()
        .unwrap();
    assert_eq!(projection.audience.as_deref(), Some("ward"));
    assert_eq!(
        spec.containers.len(),
        1,
        "the app's containers are untouched"
    );
    assert!(
        pod.metadata
            .annotations
            .unwrap()
            .contains_key(INJECTED_ANNOTATION)
    );
}

#[test]
fn never_twice_opt_out_and_host_network_refused() {
    let once = injected(&pod(APP));
    assert_eq!(
        inject(&once, &injector()).unwrap(),
        Injected::Skipped("the pod already has the sidecar")
    );
    let out = pod(&APP.replace(
        "labels: { app: web }",
        "labels: { app: web, ward.dev/inject: disabled }",
    ));
    assert!(matches!(
        inject(&out, &injector()).unwrap(),
        Injected::Skipped(_)
    ));
    let host = pod(&APP.replace("spec:\n", "spec:\n  hostNetwork: true\n"));
    let err = inject(&host, &injector()).unwrap_err();
    assert_eq!(err, InjectError::HostNetwork);
    assert!(err.to_string().contains("hostNetwork pod"), "{err}");
}

#[test]
fn annotations_set_exclusions_opaque_ports_and_resources_and_bad_ones_are_refused() {
    let annotated = APP.replace(
        "labels: { app: web } }",
        "labels: { app: web }, annotations: { ward.dev/exclude-inbound-ports: \"9090, 9091\", ward.dev/exclude-outbound-cidrs: \"10.0.0.0/8\", ward.dev/opaque-ports: \"5432\", ward.dev/proxy-memory-limit: 512Mi } }",
    );
    let pod = injected(&pod(&annotated));
    let spec = pod.spec.unwrap();
    let args = spec.init_containers.as_ref().unwrap()[0]
        .args
        .clone()
        .unwrap();
    for want in [
        "--exclude-inbound-ports=9090,9091",
        "--exclude-outbound-cidrs=10.0.0.0/8",
        "--opaque-ports=5432",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    let limits = spec.init_containers.as_ref().unwrap()[1]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .clone()
        .unwrap();
    assert_eq!(limits["memory"], Quantity("512Mi".into()));
    for (annotation, value) in [
        ("ward.dev/opaque-ports", "http"),
        ("ward.dev/exclude-inbound-ports", "0"),
        ("ward.dev/exclude-outbound-cidrs", "10.0.0.0/33"),
        ("ward.dev/proxy-cpu-limit", "lots"),
    ] {
        let bad = super::tests::pod(&APP.replace(
            "labels: { app: web } }",
            &format!("labels: {{ app: web }}, annotations: {{ {annotation}: \"{value}\" }} }}"),
        ));
        let err = inject(&bad, &injector()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("annotation {annotation}: {value:?}")),
            "{err}"
        );
    }
}

const PROBED: &str = "metadata: { name: web, annotations: { ward.dev/exclude-inbound-ports: \"9901\" } }
spec:
  containers:
  - name: web
    image: web
    ports: [ { name: http, containerPort: 8080 }, { name: admin, containerPort: 9901 } ]
    readinessProbe: { httpGet: { path: healthz, port: http, scheme: HTTPS, httpHeaders: [ { name: x-probe, value: r } ] }, timeoutSeconds: 3, periodSeconds: 7 }
    livenessProbe: { tcpSocket: { port: 8080 } }
    startupProbe: { grpc: { port: 8080, service: shop.Orders } }
  - name: sidecar
    image: s
    readinessProbe: { httpGet: { path: /ready, port: 9901 } }
    livenessProbe: { exec: { command: [ \"true\" ] } }
    startupProbe: { httpGet: { path: /, port: 8080, host: example.com } }
";

fn proxy_env(pod: &Pod, name: &str) -> Option<String> {
    pod.spec
        .as_ref()?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == PROXY)?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

#[test]
fn app_probes_move_to_the_admin_port_and_their_originals_to_the_sidecar() {
    let injected = injected(&pod(PROBED));
    let spec = injected.spec.as_ref().unwrap();
    let web = &spec.containers[0];
    let ready = web.readiness_probe.as_ref().unwrap();
    let get = ready.http_get.as_ref().unwrap();
    assert_eq!(get.path.as_deref(), Some("/app-health/web/readyz"));
    assert_eq!(get.port, IntOrString::Int(i32::from(ADMIN_PORT)));
    assert_eq!(get.scheme.as_deref(), Some("HTTP"));
    assert_eq!(ready.period_seconds, Some(7), "the timing stays");
    for (probe, path) in [
        (&web.liveness_probe, "/app-health/web/livez"),
        (&web.startup_probe, "/app-health/web/startupz"),
    ] {
        let probe = probe.as_ref().unwrap();
        assert!(
            probe.tcp_socket.is_none() && probe.grpc.is_none(),
            "{probe:?}"
        );
        assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some(path));
    }
    let moved: serde_json::Value =
        serde_json::from_str(&proxy_env(&injected, probes::PROBES_ENV).unwrap()).unwrap();
    assert_eq!(
        moved,
        serde_json::json!({
            "/app-health/web/readyz": { "http": { "port": 8080, "path": "/healthz", "https": true, "headers": [["x-probe", "r"]] }, "timeout": 3 },
            "/app-health/web/livez": { "tcp": { "port": 8080 }, "timeout": 1 },
            "/app-health/web/startupz": { "grpc": { "port": 8080, "service": "shop.Orders" }, "timeout": 1 },
        })
    );
    // An excluded port (not captured), an exec probe and another host's are left alone.
    let other = &spec.containers[1];
    assert_eq!(
        other
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/ready")
    );
    assert!(other.liveness_probe.as_ref().unwrap().exec.is_some());
    assert_eq!(
        other
            .startup_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .host
            .as_deref(),
        Some("example.com")
    );
}

#[test]
fn the_probe_rewrite_can_be_turned_off_and_a_bad_value_is_refused() {
    let off = PROBED.replace(
        "ward.dev/exclude-inbound-ports: \"9901\"",
        "ward.dev/rewrite-app-probes: \"false\"",
    );
    let kept = injected(&pod(&off));
    let web = &kept.spec.as_ref().unwrap().containers[0];
    assert!(web.liveness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert!(proxy_env(&kept, probes::PROBES_ENV).is_none());
    let bad = PROBED.replace(
        "ward.dev/exclude-inbound-ports: \"9901\"",
        "ward.dev/rewrite-app-probes: \"no\"",
    );
    let err = inject(&pod(&bad), &injector()).unwrap_err().to_string();
    assert!(err.contains("ward.dev/rewrite-app-probes"), "{err}");
}

fn env_of(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

#[test]
fn the_workload_api_is_mounted_into_the_apps_for_their_users_only() {
    let yaml = "metadata: { name: web, annotations: { ward.dev/workload-api: enabled } }\n\
                spec:\n  securityContext: { runAsUser: 1000 }\n  containers:\n\
                \x20   - { name: web, image: web }\n\
                \x20   - { name: tool, image: t, securityContext: { runAsUser: 2000 } }\n";
    let with_api = injected(&pod(yaml));
    let spec = with_api.spec.unwrap();
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    let env = env_of(proxy);
    assert_eq!(
        env["WARD_WORKLOAD_API_SOCKET"],
        "/run/ward/workload-api/socket"
    );
    assert_eq!(env["WARD_WORKLOAD_API_ALLOWED_UIDS"], "[1000, 2000]");
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "ward-workload-api")
        .expect("volume");
    assert_eq!(
        volume.empty_dir.as_ref().and_then(|e| e.medium.as_deref()),
        Some("Memory")
    );
    for app in &spec.containers {
        assert_eq!(
            env_of(app)["SPIFFE_ENDPOINT_SOCKET"],
            "unix:///run/ward/workload-api/socket"
        );
        let mount = app
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "ward-workload-api")
            .expect("mount");
        assert_eq!(mount.read_only, Some(true));
    }
    // The users can be named instead; without either, the pod is refused with the reason.
    let named = "metadata: { name: web, annotations: { ward.dev/workload-api: enabled, ward.dev/workload-api-uids: \"7, 8\" } }\n\
                 spec:\n  containers: [ { name: web, image: web } ]\n";
    let pod2 = injected(&pod(named));
    let proxy = &pod2.spec.unwrap().init_containers.unwrap()[1];
    assert_eq!(env_of(proxy)["WARD_WORKLOAD_API_ALLOWED_UIDS"], "[7, 8]");
    let unknown = "metadata: { name: web, annotations: { ward.dev/workload-api: enabled } }\n\
                   spec:\n  containers: [ { name: web, image: web } ]\n";
    let err = inject(&pod(unknown), &injector()).unwrap_err().to_string();
    assert!(err.contains("runAsUser"), "{err}");
    for bad in [
        "ward.dev/workload-api: maybe",
        "ward.dev/workload-api: enabled, ward.dev/workload-api-uids: \"root\"",
    ] {
        let yaml = format!(
            "metadata: {{ name: web, annotations: {{ {bad} }} }}\nspec:\n  containers: [ {{ name: web, image: web }} ]\n"
        );
        assert!(inject(&pod(&yaml), &injector()).is_err(), "{bad}");
    }
    // Without the annotation nothing of it is added.
    let plain = injected(&pod(APP));
    let spec = plain.spec.unwrap();
    assert!(!env_of(&spec.containers[0]).contains_key("SPIFFE_ENDPOINT_SOCKET"));
    assert!(!env_of(&spec.init_containers.unwrap()[1]).contains_key("WARD_WORKLOAD_API_SOCKET"));
}
