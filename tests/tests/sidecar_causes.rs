//! Every error response the sidecar makes itself names its cause in the access log and a
//! metric (never to the caller), and `protocol: auto` falls back to HTTP/1.1 for an app
//! that does not speak HTTP/2.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use ward_tests::apps;
use ward_tests::mesh::{Pair, PairOptions, free_addr, http_get, mesh_default};
use ward_tests::pki::LeafSpec;

async fn wait_for(what: &str, mut check: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let Some(missing) = check() else { return };
        assert!(Instant::now() < deadline, "{what}: {missing}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_response_names_its_cause_in_the_access_log() {
    // No app behind the server sidecar: connection refused.
    let app = free_addr();
    let options = PairOptions {
        policy: Some(mesh_default("allow-authenticated")),
        ..Default::default()
    };
    let pair = Pair::launch(app, options).await;
    let outbound = pair.outbound;
    let got = tokio::task::spawn_blocking(move || http_get(outbound, "/x"))
        .await
        .expect("task");
    let (status, body) = got.expect("answer");
    assert_eq!(status, 502);
    assert_eq!(body, "upstream unavailable\n", "nothing about the cause");
    wait_for("cause in the server sidecar's access log", || {
        let logs = pair.orders.logs();
        let line = logs
            .lines()
            .find(|l| l.contains("ward::access") && l.contains("status=502"));
        match line {
            Some(l) if l.contains("upstream_connect_failure") => None,
            _ => Some(logs),
        }
    })
    .await;
    assert!(
        pair.orders.logs().contains("app connection failed"),
        "a WARN names the unreachable app: {}",
        pair.orders.logs()
    );
    let metrics = pair.orders.admin_get("/metrics").1;
    assert!(
        metrics.contains(
            "ward_request_failures_total{direction=\"inbound\",cause=\"upstream_connect_failure\"} 1"
        ),
        "{metrics}"
    );

    // The client sidecar expecting another identity: its own failure, its own cause.
    let app = apps::http_echo().await;
    let options = PairOptions {
        policy: Some(mesh_default("allow-authenticated")),
        expect_identity: Some("spiffe://example.org/ns/default/sa/someone-else".into()),
        ..Default::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    let outbound = pair.outbound;
    let got = tokio::task::spawn_blocking(move || http_get(outbound, "/x"))
        .await
        .expect("task");
    assert_eq!(got.map(|(s, _)| s), Some(502));
    wait_for("identity mismatch in the client sidecar's log", || {
        let logs = pair.web.logs();
        logs.contains("cause=\"upstream_identity_mismatch\"")
            .then_some(())
            .map_or(Some(logs), |()| None)
    })
    .await;
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_only_app_gets_http1_when_the_caller_speaks_http2() {
    let app = apps::http1_only_echo().await;
    let options = PairOptions {
        policy: Some(mesh_default("allow-authenticated")),
        ..Default::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    let web = pair.pki.craft(&LeafSpec::svid(&pair.web_id()));
    let config = ward_tests::tls::svid_client(web.chain.clone(), web.key(), &[&b"h2"[..]]);
    let tls = ward_tests::tls::connect(pair.inbound, config)
        .await
        .expect("handshake");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = http::Request::builder()
            .uri("https://orders/x")
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).expect("echo");
        assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
    }
    let metrics = pair.orders.admin_get("/metrics").1;
    assert!(
        metrics.contains("ward_app_protocol_fallback_total{to=\"http1\"} 1"),
        "counted once, then remembered: {metrics}"
    );
    assert_eq!(app.hits(), 2);
}
