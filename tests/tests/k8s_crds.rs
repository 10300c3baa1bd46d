//! The CRDs against a real kube-apiserver: `ward install` applies cleanly, an invalid
//! policy is refused by the API server with a message a person understands, and each
//! document is judged the same by the API server and by the file loader (one schema).

use ward_tests::bin::ward;
use ward_tests::k8s::Cluster;

const VALID: &str = r#"apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: accounts-read, namespace: bank }
spec:
  selector: { matchLabels: { app: accounts } }
  action: ALLOW
  rules:
  - from:
    - principals: ["spiffe://cluster.local/ns/web/sa/frontend", "spiffe://cluster.local/ns/ops/*"]
      namespaces: ["web"]
    to:
    - ports: [8080]
      methods: ["GET"]
      paths: ["/accounts/*"]
      hosts: ["accounts.bank.svc:8080"]
      grpc: { service: "bank.v1.Accounts", methods: ["Get*"] }
    when:
    - { key: "request.headers[x-tenant]", values: ["eu-*"] }
  - from:
    - requestPrincipals: ["https://idp.bank.example/*"]
      notRequestPrincipals: ["https://idp.bank.example/banned"]
    to:
    - paths: ["/accounts/{request.auth.claims[sub]}/*"]
    when:
    - { key: "request.auth.claims[realm_access][roles]", values: ["teller"] }
"#;

/// (what is wrong, the spec, words the API server's refusal must contain)
const INVALID: &[(&str, &str, &str)] = &[
    (
        "lower-case method",
        "action: ALLOW\n  rules: [{to: [{methods: [get]}]}]",
        "spec.rules[0].to[0].methods[0]: Invalid value: \"get\": must be an upper-case HTTP method such as GET",
    ),
    (
        "relative path",
        "action: ALLOW\n  rules: [{to: [{paths: [accounts]}]}]",
        "spec.rules[0].to[0].paths[0]: Invalid value: \"accounts\": must be a path starting with /",
    ),
    (
        "star inside a principal",
        "action: ALLOW\n  rules: [{from: [{principals: [\"spiffe://td/ns/*/sa/x\"]}]}]",
        "must be a SPIFFE ID (spiffe://TD/ns/NS/sa/SA), a spiffe:// prefix*",
    ),
    (
        "unknown action",
        "action: PERMIT",
        "spec.action: Unsupported value: \"PERMIT\": supported values: \"ALLOW\", \"DENY\", \"AUDIT\"",
    ),
    (
        "condition without values",
        "action: ALLOW\n  rules: [{when: [{key: \"request.headers[x-a]\"}]}]",
        "a condition needs values or present",
    ),
    (
        "condition on something else",
        "action: ALLOW\n  rules: [{when: [{key: \"source.ip\", values: [x]}]}]",
        "must be request.headers[NAME]",
    ),
    (
        "claim key of another shape",
        "action: ALLOW\n  rules: [{when: [{key: \"request.auth.claim[sub]\", values: [x]}]}]",
        "must be request.headers[NAME] or request.auth.claims[NAME]",
    ),
    (
        "request principal without issuer",
        "action: ALLOW\n  rules: [{from: [{requestPrincipals: [alice]}]}]",
        "must be ISSUER/SUBJECT of a verified end user",
    ),
    (
        "port zero",
        "action: ALLOW\n  rules: [{to: [{ports: [0]}]}]",
        "spec.rules[0].to[0].ports[0]: Invalid value: 0: spec.rules[0].to[0].ports[0] in body should be greater than or equal to 1",
    ),
];

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name}, namespace: bank }}\nspec:\n  {spec}\n"
    )
}

#[test]
fn the_crds_install_and_judge_policies_as_the_file_loader_does() {
    let cluster = Cluster::start();
    eprintln!("kube-apiserver ready in {:?}", cluster.started_in);
    // deploy/base is `ward install`, applied here with kustomize.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base");
    let checked_in = std::fs::read_to_string(base.join("ward.yaml")).unwrap();
    assert!(
        ward(["install"]).ok() == checked_in,
        "deploy/base/ward.yaml differs from `ward install`: run make deploy-manifests"
    );
    let applied = cluster.install_ward();
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/authorizationpolicies.ward.dev created",
        "customresourcedefinition.apiextensions.k8s.io/meshpolicies.ward.dev created",
        "validatingadmissionpolicy.admissionregistration.k8s.io/ward-meshpolicy-namespace created",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/ward-injector created",
        "deployment.apps/ward-control-plane created",
    ] {
        assert!(
            applied.contains(object),
            "{object} missing from:\n{applied}"
        );
    }
    cluster.kubectl(["create", "namespace", "bank"]).ok();

    // The valid policy: accepted by the API server, and by the file loader.
    cluster.apply(VALID);
    let listed = cluster
        .kubectl(["get", "wap", "-n", "bank"])
        .ok()
        .to_owned();
    assert!(
        listed.contains("accounts-read") && listed.contains("ALLOW"),
        "{listed}"
    );
    let dir = cluster.dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("valid.yaml"), VALID).unwrap();
    ward(["policy", "lint", &dir.to_string_lossy()]).ok();

    for (i, (what, spec, said)) in INVALID.iter().enumerate() {
        let doc = policy(&format!("bad-{i}"), spec);
        let run = cluster.kubectl_with_input(["apply", "-f", "-"], &doc);
        assert_ne!(run.code, 0, "{what}: the API server accepted {doc}");
        assert!(run.stderr.contains(said), "{what}: {}", run.stderr);
        // The same document in a policy directory is refused too.
        let file = dir.join("bad.yaml");
        std::fs::write(&file, &doc).unwrap();
        let lint = ward(["policy", "lint", &dir.to_string_lossy()]);
        assert_ne!(lint.code, 0, "{what}: the file loader accepted {doc}");
        assert!(lint.stdout.contains("bad.yaml:"), "{what}: {lint:?}");
        std::fs::remove_file(&file).unwrap();
    }
    let none = cluster
        .kubectl(["get", "wap", "-n", "bank", "-o", "name"])
        .ok()
        .to_owned();
    assert_eq!(
        none.trim(),
        "authorizationpolicy.ward.dev/accounts-read",
        "nothing invalid was stored"
    );
}

#[test]
fn there_is_one_mesh_policy_and_it_lives_in_ward_system() {
    let cluster = Cluster::start();
    cluster.install_ward();
    cluster.kubectl(["create", "namespace", "bank"]).ok();
    let mesh = |name: &str, ns: &str, default: &str| {
        format!(
            "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec: {{ default: {default} }}\n"
        )
    };
    let refused = [
        (
            mesh("strict", "ward-system", "deny"),
            "there is one MeshPolicy per mesh: name it default",
        ),
        (
            mesh("default", "bank", "deny"),
            "a MeshPolicy belongs in namespace ward-system",
        ),
        (
            mesh(
                "default",
                "ward-system",
                "deny, gateways: [\"spiffe://td/ns/edge/*\"]",
            ),
            "must be one exact SPIFFE ID",
        ),
        (
            mesh("default", "ward-system", "maybe"),
            "spec.default: Unsupported value: \"maybe\": supported values: \"deny\", \"allow-authenticated\", \"allow\"",
        ),
    ];
    for (doc, said) in refused {
        // The admission policy is enforced once the API server has loaded it.
        let run = ward_tests::k8s::eventually(std::time::Duration::from_secs(20), said, || {
            let run = cluster.kubectl_with_input(["apply", "-f", "-"], &doc);
            (run.code != 0).then_some(run)
        });
        assert!(run.stderr.contains(said), "{}", run.stderr);
    }
    let applied = cluster.apply(&mesh("default", "ward-system", "allow-authenticated"));
    assert!(
        applied.contains("meshpolicy.ward.dev/default created"),
        "{applied}"
    );
}
