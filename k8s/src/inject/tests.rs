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
