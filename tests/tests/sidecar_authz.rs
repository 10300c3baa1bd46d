//! Per-call authorization end to end: policy files in a watched directory, two sidecar
//! processes, real apps — allowed, denied, explained, reloaded under load.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use ward_tests::apps::{self, App, pb};
use ward_tests::mesh::{Pair, PairOptions, mesh_default};

const WEB: &str = "spiffe://example.org/ns/default/sa/web";

fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: orders }} }}\n  action: {action}\n  rules:\n{rules}---\n"
    )
}

/// web may GET /orders/*; nobody may touch /admin*.
fn orders_policy() -> String {
    [
        policy("orders-read", "ALLOW", &format!(
            "  - from: [ {{ principals: [\"{WEB}\"] }} ]\n    to: [ {{ methods: [GET], paths: [\"/orders/*\", \"/admin*\", \"/public/*\"] }} ]\n"
        )),
        policy("no-admin", "DENY", "  - to: [ { paths: [\"/admin*\"] } ]\n"),
    ]
    .concat()
}

async fn pair(app: &App, policy: String, inbound_protocol: &'static str) -> Pair {
    let addr = app.addr;
    let options = PairOptions {
        policy: Some(policy),
        inbound_protocol,
        outbound_protocol: inbound_protocol,
        ..Default::default()
    };
    Pair::launch(addr, options).await
}

/// Status and body of a GET with a raw (un-normalized) path through the client sidecar.
fn raw_get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: orders\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    let _ = tcp.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let (path, extra) = (path.to_owned(), extra.to_owned());
    tokio::task::spawn_blocking(move || raw_get(addr, &path, &extra))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_denied_and_explained() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, orders_policy(), "auto").await;

    let (status, body) = get(mesh.outbound, "/orders/7", "x-request-id: trace-1\r\n").await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echo["headers"]["x-request-id"][0], "trace-1",
        "request id passed on"
    );

    let (status, body) = get(mesh.outbound, "/admin/users", "").await;
    assert_eq!((status, body.as_str()), (403, "forbidden"));
    let (status, body) = get(mesh.outbound, "/cart", "").await;
    assert_eq!((status, body.as_str()), (403, "forbidden"));
    assert_eq!(app.hits(), 1, "denied calls never reach the app");

    // The audit log explains each decision; the caller learned nothing.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = mesh.audit_lines();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let find = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no audit line for {path}: {lines:?}"))
    };
    let admin = find("/admin/users");
    assert_eq!(admin["decision"], "deny");
    assert_eq!(admin["policy"], "default/no-admin");
    assert_eq!(admin["rule"], 0);
    assert_eq!(admin["source"], WEB);
    assert_eq!(admin["destination"], mesh.orders_id());
    assert_eq!(admin["method"], "GET");
    assert!(
        admin["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32),
        "{admin}"
    );
    assert!(admin["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let cart = find("/cart");
    assert_eq!(cart["policy"], "default:deny");
    assert_eq!(cart["rule"], Value::Null);
    let ok = find("/orders/7");
    assert_eq!(
        (ok["decision"].as_str(), ok["policy"].as_str()),
        (Some("allow"), Some("default/orders-read"))
    );
    assert_eq!(ok["request_id"], "trace-1");

    let metrics = mesh.orders.admin_get("/metrics").1;
    // Denials by policy and by the caller's identity.
    let denials = format!(
        "ward_authz_decisions_total{{decision=\"deny\",policy=\"default/no-admin\",source=\"{WEB}\"}} 1"
    );
    assert!(metrics.contains(&denials), "{denials} missing:\n{metrics}");
    // Allowed and denied requests carry the same protocol label: what the caller spoke;
    // both ends' identities label the golden metrics, and nothing of the request does.
    let orders = mesh.orders_id();
    let ends = format!("source=\"{WEB}\",destination=\"{orders}\"");
    for class in ["2xx", "4xx"] {
        let series = format!(
            "ward_requests_total{{direction=\"inbound\",protocol=\"http1\",{ends},status_class=\"{class}\"}}"
        );
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    let latency = format!(
        "ward_request_duration_seconds_bucket{{direction=\"inbound\",protocol=\"http1\",{ends},le=\"+Inf\"}} 3"
    );
    assert!(metrics.contains(&latency), "{latency} missing:\n{metrics}");
    assert!(
        !metrics.contains("/orders/7") && !metrics.contains("trace-1"),
        "{metrics}"
    );
    assert!(!metrics.contains("protocol=\"http\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_do_not_walk_past_a_deny_rule() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, orders_policy(), "auto").await;
    // Each of these is /admin after normalization: denied like /admin.
    for path in [
        "/public/../admin",
        "//admin",
        "/%61dmin",
        "/./admin",
        "/orders/%2e%2e/admin",
        "/admin/.",
    ] {
        let (status, _) = get(mesh.outbound, path, "").await;
        assert_eq!(status, 403, "{path}");
    }
    // What cannot be normalized safely is refused outright.
    for path in [
        "/admin%2Fx",
        "/orders/..%5Cadmin",
        "/a/%00",
        "/../admin",
        "/orders/%zz",
    ] {
        let (status, _) = get(mesh.outbound, path, "").await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(app.hits(), 0);
    // The app sees the normalized path it was authorized for.
    let (status, body) = get(mesh.outbound, "/public/x/../y", "").await;
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/public/y");
    // Header names with underscores are refused (some apps read `_` as `-`).
    let (status, _) = get(mesh.outbound, "/orders/1", "x_user: admin\r\n").await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_denied_with_permission_denied() {
    let app = apps::grpc_echo().await;
    let grpc_policy = policy(
        "ledger",
        "ALLOW",
        "  - to: [ { grpc: { service: ward.test.Echo, methods: [\"Unary\"] } } ]\n",
    );
    let mesh = pair(&app, grpc_policy, "auto").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.outbound))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::echo_client::EchoClient::new(channel);
    client
        .unary(pb::Message::default())
        .await
        .expect("Unary is allowed");
    let status = client
        .server_stream(pb::Message {
            count: 1,
            ..Default::default()
        })
        .await
        .expect_err("ServerStream is not");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().is_empty(), "no detail: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_tcp_gets_no_byte_to_the_app_and_loses_its_connection_on_revocation() {
    let app = apps::tcp_echo().await;
    // Denied from the start.
    let mesh = pair(&app, mesh_default("deny"), "tcp").await;
    let outbound = mesh.outbound;
    let got = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(outbound).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = tcp.write_all(b"let me in");
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap();
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(app.hits(), 0, "no connection reached the app");
    drop(mesh);

    // Allowed, then the policy changes while the connection is open.
    let mesh = pair(&app, mesh_default("allow-authenticated"), "tcp").await;
    let outbound = mesh.outbound;
    let mut tcp = TcpStream::connect(outbound).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 15];
    tcp.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220 ward-test\r\n");
    mesh.set_policy(&mesh_default("deny"));
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let closed = matches!(tcp.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "connection must be closed after the policy change");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_under_load_flips_within_a_second_without_failing_allowed_calls() {
    let app = apps::http_echo().await;
    let allow_all = policy(
        "open",
        "ALLOW",
        "  - to: [ { paths: [\"/orders/*\", \"/reports/*\"] } ]\n",
    );
    let mesh = pair(&app, allow_all, "auto").await;
    let outbound = mesh.outbound;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::SeqCst) {
                match raw_get(outbound, "/orders/1", "").0 {
                    200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    assert_eq!(get(outbound, "/reports/q3", "").await.0, 200);

    mesh.set_policy(
        &[
            policy(
                "open",
                "ALLOW",
                "  - to: [ { paths: [\"/orders/*\", \"/reports/*\"] } ]\n",
            ),
            policy(
                "close-reports",
                "DENY",
                "  - to: [ { paths: [\"/reports/*\"] } ]\n",
            ),
        ]
        .concat(),
    );
    let edited = Instant::now();
    loop {
        if get(outbound, "/reports/q3", "").await.0 == 403 {
            break;
        }
        assert!(
            edited.elapsed() < Duration::from_secs(3),
            "policy not in force"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flipped = edited.elapsed();
    // Allowed calls must keep succeeding under the new policy, not just before it.
    let at_flip = ok.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ok.load(Ordering::SeqCst) < at_flip + 10 {
        assert!(
            Instant::now() < deadline,
            "allowed calls stopped after the reload"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(
        flipped < Duration::from_secs(1),
        "flipped after {flipped:?}"
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "allowed calls failed during the reload"
    );
    assert!(ok.load(Ordering::SeqCst) > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_is_refused_and_the_last_good_one_stays() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, orders_policy(), "auto").await;
    mesh.set_policy("apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: x, namespace: default }\nspec:\n  action: PERMIT\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = mesh.orders.admin_get("/metrics").1;
        if metrics.contains("ward_policy_reloads_total{result=\"error\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload error not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        mesh.orders
            .logs()
            .contains("policy.yaml:5:11: spec.action: unknown variant `PERMIT`"),
        "{}",
        mesh.orders.logs()
    );
    assert_eq!(
        get(mesh.outbound, "/orders/1", "").await.0,
        200,
        "last good policy in force"
    );
    assert_eq!(get(mesh.outbound, "/admin", "").await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_policy_the_sidecar_is_not_ready_and_denies() {
    let app = apps::http_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = ward_tests::pki::TestPki::new("example.org");
    let svid = pki.svid(&pki.id("default", "orders"));
    svid.write(&dir.path().join("o.pem"), &dir.path().join("o.key"))
        .unwrap();
    std::fs::copy(pki.bundle_path(), dir.path().join("bundle.pem")).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), "kind: [broken\n").unwrap();
    let (admin, inbound) = (ward_tests::mesh::free_addr(), ward_tests::mesh::free_addr());
    let config = format!(
        "trust_domain: example.org\nidentity: {{ cert: o.pem, key: o.key, bundle: bundle.pem }}\n\
         inbound: [ {{ listen: {inbound}, app: {} }} ]\npolicy: {{ dir: policies }}\nadmin: {admin}\n",
        app.addr
    );
    let proxy = ward_tests::mesh::Proxy::spawn(dir.path(), "orders", &config, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Wait until the identity is loaded (on a busy machine /ready may first answer while
    // it is still pending): from then on only the policy keeps the sidecar unready.
    let (code, body) = loop {
        if let Some(r) = ward_tests::mesh::http_get(admin, "/ready")
            && !r.1.contains("\"identity\"")
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "admin never answered without identity pending:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"policy\""), "{body}");

    // A caller holding a valid SVID is still denied: no policy has been loaded.
    let web = pki.svid(WEB);
    web.write(&dir.path().join("w.pem"), &dir.path().join("w.key"))
        .unwrap();
    let d = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &inbound.to_string(),
                "-alpn",
                "http/1.1",
            ])
            .args([
                "-cert",
                d.join("w.pem").to_str().unwrap(),
                "-key",
                d.join("w.key").to_str().unwrap(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n");
        // -quiet ignores EOF on stdin; the connection ends when the server closes it.
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(app.hits(), 0);
}
