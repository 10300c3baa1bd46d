//! Two `ward-proxy sidecar` processes between a client and an app, on loopback: HTTP/1.1
//! and HTTP/2 through curl, identity headers, upgrades, and every refusal the data plane
//! owes a hostile or broken peer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use ward_tests::apps::{self, App};
use ward_tests::bin::{Run, run};
use ward_tests::mesh::{Pair, PairOptions};

async fn curl(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || run(Path::new("curl"), &args))
        .await
        .expect("curl task")
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

async fn pair(app: &App, options: PairOptions) -> Pair {
    Pair::launch(app.addr, options).await
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn header<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_through_two_sidecars_with_curl() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let url = format!("http://{}/accounts/42?x=1", mesh.outbound);

    let out = curl(s(&["-sS", "-H", "x-app: kept", &url])).await;
    let echo = json(out.ok());
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/accounts/42");
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "the app speaks HTTP/1.1 as its caller did"
    );
    assert_eq!(
        header(&echo, "x-ward-peer-identity"),
        vec![mesh.web_id().as_str()]
    );
    assert_eq!(
        header(&echo, "x-forwarded-client-cert"),
        vec![format!("By={};URI={}", mesh.orders_id(), mesh.web_id()).as_str()]
    );
    assert_eq!(header(&echo, "x-app"), vec!["kept"]);
    assert_eq!(
        header(&echo, "host"),
        vec![mesh.outbound.to_string().as_str()]
    );
    assert!(
        header(&echo, "x-ward-original-protocol").is_empty(),
        "internal header removed"
    );

    // Keep-alive: two requests on one app connection.
    let out = curl(s(&["-sv", &url, &url])).await;
    assert!(
        out.stderr.contains("Re-using existing connection"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout.matches("\"method\":\"GET\"").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_cannot_forge_identity_headers() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let url = format!("http://{}/", mesh.outbound);
    let out = curl(s(&[
        "-sS",
        "-H",
        "x-ward-peer-identity: spiffe://evil.example/ns/admin/sa/root",
        "-H",
        "x-forwarded-client-cert: By=x;URI=spiffe://evil.example/ns/admin/sa/root",
        &url,
    ]))
    .await;
    let echo = json(out.ok());
    assert_eq!(
        header(&echo, "x-ward-peer-identity"),
        vec![mesh.web_id().as_str()]
    );
    let xfcc = header(&echo, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1);
    assert!(!xfcc[0].contains("evil"), "{xfcc:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_reaches_an_http2_app() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let url = format!("http://{}/h2", mesh.outbound);
    let out = curl(s(&[
        "-sS",
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &url,
    ]))
    .await;
    let (body, version) = out.ok().rsplit_once('\n').expect("version line");
    assert_eq!(version, "2");
    let echo = json(body);
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(
        header(&echo, "x-ward-peer-identity"),
        vec![mesh.web_id().as_str()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_chunked_and_with_expect_continue() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.bin");
    std::fs::write(&file, vec![b'x'; 3 * 1024 * 1024]).unwrap();
    let data = format!("@{}", file.display());
    let url = format!("http://{}/upload", mesh.outbound);

    let chunked = curl(s(&[
        "-sS",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        &url,
    ]))
    .await;
    assert_eq!(json(chunked.ok())["body_len"], 3 * 1024 * 1024);

    let expect = curl(s(&[
        "-sSv",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &data,
        &url,
    ]))
    .await;
    assert!(
        expect.stderr.contains("HTTP/1.1 100 Continue"),
        "{}",
        expect.stderr
    );
    assert_eq!(json(&expect.stdout)["body_len"], 3 * 1024 * 1024);
}

/// Writes raw bytes to `addr` and reads until the peer closes or 10 s pass.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_passed_through() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let addr = mesh.outbound;
    let echoed = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(
            b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("upgrade: websocket"),
            "{head}"
        );
        tcp.write_all(b"frames both ways").unwrap();
        let mut back = [0u8; 16];
        tcp.read_exact(&mut back).unwrap();
        back
    })
    .await
    .unwrap();
    assert_eq!(&echoed, b"frames both ways");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_headers_get_431() {
    let app = apps::http_echo().await;
    let mesh = pair(
        &app,
        PairOptions {
            limits: vec!["max_header_bytes: 16384".into()],
            ..Default::default()
        },
    )
    .await;
    let big = format!("x-big: {}", "a".repeat(20_000));
    let out = curl(s(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &big,
        &format!("http://{}/", mesh.outbound),
    ]))
    .await;
    assert_eq!(out.stdout, "431");
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_is_refused_and_never_forwarded() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let addr = mesh.outbound;
    let reply = tokio::task::spawn_blocking(move || {
        raw_exchange(
            addr,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(
        reply.matches("HTTP/1.1").count(),
        1,
        "one response, then closed: {reply}"
    );
    assert_eq!(app.hits(), 0, "nothing reached the app");

    // Conflicting Content-Lengths and invalid header bytes too.
    for bad in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n",
    ] {
        let bad = bad.to_vec();
        let reply = tokio::task::spawn_blocking(move || raw_exchange(addr, &bad))
            .await
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    }
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_within_the_header_timeout() {
    let app = apps::http_echo().await;
    let mesh = pair(
        &app,
        PairOptions {
            limits: vec!["header_read_timeout: 1s".into()],
            ..Default::default()
        },
    )
    .await;
    let addr = mesh.outbound;
    let held = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
        let started = Instant::now();
        // Trickle a header byte every 200 ms; the server must close on us.
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            if tcp.write_all(b"X").is_err() {
                break;
            }
            tcp.set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let mut buf = [0u8; 64];
            match tcp.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(held < Duration::from_secs(4), "cut off after {held:?}");
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_port_refuses_plaintext_and_clients_without_an_svid() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let plain = curl(s(&["-sS", "-m", "5", &format!("http://{}/", mesh.inbound)])).await;
    assert_ne!(
        plain.code, 0,
        "plaintext must not get an HTTP answer: {plain:?}"
    );

    let inbound = mesh.inbound.to_string();
    let bundle = mesh.pki.bundle_path();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &inbound,
                "-CAfile",
                bundle.to_str().unwrap(),
                "-tls1_3",
                "-quiet",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("HTTP/1.1"),
        "no HTTP answer without an SVID: {stdout}"
    );
    assert_eq!(app.hits(), 0);
    let metrics = mesh.orders.admin_get("/metrics").1;
    assert!(
        metrics
            .contains("ward_tls_handshakes_total{direction=\"inbound\",result=\"no_certificate\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_another_identity_is_refused() {
    let app = apps::http_echo().await;
    let options = PairOptions {
        expect_identity: Some("spiffe://example.org/ns/default/sa/billing".into()),
        ..Default::default()
    };
    let mesh = pair(&app, options).await;
    let out = curl(s(&[
        "-sS",
        "-w",
        "\n%{http_code}",
        &format!("http://{}/", mesh.outbound),
    ]))
    .await;
    let (body, code) = out.ok().rsplit_once('\n').unwrap();
    assert_eq!(code, "502");
    assert!(
        !body.contains("orders") && !body.contains("spiffe"),
        "no detail: {body}"
    );
    assert_eq!(app.hits(), 0);
    let metrics = mesh.web.admin_get("/metrics").1;
    assert!(
        metrics.contains(
            "ward_tls_handshakes_total{direction=\"outbound\",result=\"identity_mismatch\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_liveness_readiness_metrics_config_and_certs() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    curl(s(&["-sS", &format!("http://{}/", mesh.outbound)]))
        .await
        .ok();

    let web = &mesh.web;
    assert_eq!(web.admin_get("/live").0, 200);
    let (code, ready) = web.admin_get("/ready");
    assert_eq!(code, 200);
    assert_eq!(json(&ready)["ready"], true);

    let metrics = web.admin_get("/metrics").1;
    for name in [
        "ward_requests_total{direction=\"outbound\",protocol=\"http1\"",
        "ward_request_duration_seconds_bucket",
        "ward_tcp_connections_open",
        "ward_tls_handshakes_total{direction=\"outbound\",result=\"ok\"}",
        "ward_cert_expiry_timestamp_seconds",
        "ward_protocol_detect_total{result=\"http1\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    let config = web.admin_get("/config").1;
    let parsed = json(&config);
    assert_eq!(parsed["trust_domain"], "example.org");
    assert!(!config.contains("PRIVATE KEY"), "{config}");

    let certs = json(&web.admin_get("/certs").1);
    assert_eq!(certs["spiffe_id"], mesh.web_id());
    assert!(certs["serial"].as_str().unwrap().len() >= 16);
    assert!(certs["seconds_left"].as_u64().unwrap() > 3000);
    assert!(certs["not_after"].as_str().unwrap().ends_with('Z'));
    assert_eq!(certs["bundle"]["roots"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    let app = apps::http_echo().await;
    let mut mesh = pair(
        &app,
        PairOptions {
            limits: vec!["request_timeout: 1s".into()],
            ..Default::default()
        },
    )
    .await;
    let code = |path: &str| {
        let url = format!("http://{}{path}", mesh.outbound);
        curl(s(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]))
    };
    assert_eq!(code("/slow?ms=3000").await.ok(), "504");
    assert_eq!(code("/").await.ok(), "200");

    // gRPC callers get the same failures as gRPC statuses.
    let grpc_status = |path: &'static str, outbound: SocketAddr| {
        let url = format!("http://{outbound}{path}");
        curl(s(&[
            "-sS",
            "--http2-prior-knowledge",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            "",
            &url,
        ]))
    };

    mesh.orders.terminate();
    mesh.orders
        .wait_exit(Duration::from_secs(10))
        .expect("orders stops");
    assert_eq!(code("/").await.ok(), "502");
    let headers = grpc_status("/svc/Method", mesh.outbound).await;
    assert!(headers.ok().contains("grpc-status: 14"), "{headers:?}");
}
