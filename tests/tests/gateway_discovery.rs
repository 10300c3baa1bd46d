//! Gateway routes that name a service (the address apps dial) instead of a sidecar: the
//! control plane's discovery says which sidecar serves it and who that is, and a route that
//! names an identity goes nowhere else. (Routes refused in configuration: gateway_edge.)

use std::path::Path;
use std::time::{Duration, Instant};

use ward_tests::apps;
use ward_tests::bin::run;
use ward_tests::control_plane::ControlPlane;
use ward_tests::gateway::echo;
use ward_tests::mesh::{ORDERS_ID, Proxy, free_addr, mesh_default};

const GATEWAY_ID: &str = "spiffe://example.org/ns/edge/sa/gateway";

fn get(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let out = run(
        Path::new("curl"),
        ["-sS", "--max-time", "10", "-w", "\n%{http_code}", &url],
    );
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_service_follow_discovery_and_keep_to_the_identity_they_name() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let cp = ControlPlane::start(dir, "1h");
        let policy = format!(
            "{}---\napiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {{ name: edge-open, namespace: edge }}\n\
             spec: {{ selector: {{ matchLabels: {{ app: gateway }} }}, action: ALLOW, rules: [ {{ to: [ {{ methods: [GET] }} ] }} ] }}\n\
             ---\napiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {{ name: from-the-edge, namespace: default }}\n\
             spec: {{ selector: {{ matchLabels: {{ app: orders }} }}, action: ALLOW, rules: [ {{ from: [ {{ principals: [\"{GATEWAY_ID}\"] }} ] }} ] }}\n",
            mesh_default("deny")
        );
        std::fs::write(cp.policy_dir.join("policy.yaml"), policy).expect("policy");
        std::fs::copy(cp.bundle_path(), dir.join("bundle.pem")).expect("bundle");
        for (name, id, labels) in [
            ("orders", ORDERS_ID, "app=orders"),
            ("gateway", GATEWAY_ID, "app=gateway"),
        ] {
            let token = cp.token(id, labels, &[]);
            std::fs::write(dir.join(format!("{name}.token")), token).expect("token");
        }
        let identity = |name: &str| {
            format!(
                "identity: {{ control_plane: \"https://{}\", token_file: {name}.token, bundle: bundle.pem }}\n",
                cp.listen
            )
        };
        // orders says where its app serves and which port of its sidecar takes mTLS for it.
        let inbound = free_addr();
        let orders = format!(
            "trust_domain: example.org\n{}\
             workload: {{ serving: [ {{ address: \"{addr}\", inbound_port: {} }} ] }}\n\
             inbound: [ {{ listen: {inbound}, app: {addr} }} ]\nadmin: {}\n",
            identity("orders"),
            inbound.port(),
            free_addr()
        );
        let _orders = Proxy::start(dir, "orders", &orders);
        let listen = free_addr();
        let gateway = format!(
            "trust_domain: example.org\n{}listen: {listen}\nplaintext: true\n\
             routes:\n\
             \x20 - {{ path: {{ prefix: /orders }}, service: \"{addr}\", server_identity: \"{ORDERS_ID}\", authentication: none }}\n\
             \x20 - {{ path: {{ prefix: /any }}, service: \"{addr}\", authentication: none }}\n\
             \x20 - {{ path: {{ prefix: /pinned }}, service: \"{addr}\", server_identity: \"spiffe://example.org/ns/default/sa/other\", authentication: none }}\n\
             \x20 - {{ path: {{ prefix: /nowhere }}, service: \"127.0.0.1:9\", authentication: none }}\n\
             admin: {}\naccess_log: true\n",
            identity("gateway"),
            free_addr()
        );
        let gateway = Proxy::start_gateway(dir, "gateway", &gateway);

        // Discovery arrives after the orders sidecar registers: wait for the route to work.
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = loop {
            let (code, body) = get(listen.port(), "/orders/1");
            if code == 200 {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "never routed ({code} {body}):\n{}",
                gateway.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            echo(&body)["headers"]["x-ward-peer-identity"][0],
            GATEWAY_ID,
            "{body}"
        );
        assert_eq!(get(listen.port(), "/any/1").0, 200);
        // Discovery names orders for the service; a route that wants another identity,
        // or a service nobody serves, goes nowhere: 502, the reason in the access log.
        let (code, body) = get(listen.port(), "/pinned/1");
        assert_eq!((code, body.as_str()), (502, "upstream unavailable\n"));
        assert_eq!(get(listen.port(), "/nowhere/1").0, 502);
        let logs = gateway.logs();
        assert!(
            logs.lines()
                .filter(|l| l.contains("no_endpoint"))
                .count()
                >= 2,
            "{logs}"
        );
    })
    .await
    .expect("test thread");
}
