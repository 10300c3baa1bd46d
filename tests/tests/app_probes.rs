//! The app probes the sidecar runs for the kubelet (`ward_proxy::probes`), against real
//! servers on loopback: HTTP (status, path and headers as configured), HTTPS (the app's
//! own certificate, unverified as by the kubelet), TCP and gRPC health; a failing, hung or
//! unknown probe is 503 (or 404) through the admin route, within the probe's timeout.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ward_proxy::probes::{AppProbe, AppProbes, HttpProbe, ProbeAction, route, run};

/// An HTTP/1 app on loopback answering `/healthz` 204, `/moved` 302 and anything else
/// 500; the request heads it got are kept.
fn app() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for mut tcp in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
            let status = if head.starts_with("get /healthz ") {
                "204 No Content"
            } else if head.starts_with("get /moved ") {
                "302 Found\r\nlocation: /elsewhere"
            } else {
                "500 Internal Server Error"
            };
            seen.lock().unwrap().push(head);
            let _ = tcp.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, heads)
}

fn http(port: u16, path: &str) -> ProbeAction {
    ProbeAction::Http(HttpProbe {
        port,
        path: path.into(),
        https: false,
        headers: vec![("x-probe".into(), "ready".into())],
    })
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn http_probes_pass_on_2xx_and_3xx_and_fail_otherwise() {
    let (port, heads) = app();
    run(&http(port, "/healthz")).await.expect("204 passes");
    run(&http(port, "/moved"))
        .await
        .expect("302 passes, as for the kubelet");
    let err = run(&http(port, "/broken")).await.unwrap_err();
    assert!(err.contains("500"), "{err}");
    let err = run(&http(closed_port(), "/healthz")).await.unwrap_err();
    assert!(!err.is_empty());
    let first = heads.lock().unwrap()[0].clone();
    assert!(
        first.contains("x-probe: ready"),
        "the configured header: {first}"
    );
    assert!(
        first.contains(&format!("host: 127.0.0.1:{port}")),
        "{first}"
    );
}

#[tokio::test]
async fn tcp_probes_pass_when_the_port_opens() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    run(&ProbeAction::Tcp { port }).await.expect("open port");
    drop(listener);
    assert!(
        run(&ProbeAction::Tcp { port }).await.is_err(),
        "closed port"
    );
}

#[tokio::test]
async fn grpc_probes_ask_the_health_service() {
    use tonic_health::ServingStatus;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Orders", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("shop.Ledger", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let grpc = |service: &str| ProbeAction::Grpc {
        port,
        service: service.into(),
    };
    run(&grpc("")).await.expect("the server as a whole serves");
    run(&grpc("shop.Orders")).await.expect("SERVING");
    let err = run(&grpc("shop.Ledger")).await.unwrap_err();
    assert!(err.contains("health status 2"), "NOT_SERVING: {err}");
    let err = run(&grpc("shop.Unknown")).await.unwrap_err();
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

#[tokio::test]
async fn https_probes_reach_an_app_with_its_own_certificate() {
    let pki = ward_tests::pki::TestPki::new("probe.test");
    let svid = pki.svid(&pki.id("app", "app"));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(svid.chain().to_vec(), svid.key().clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 2048];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let https = ProbeAction::Http(HttpProbe {
        port,
        path: "/".into(),
        https: true,
        headers: Vec::new(),
    });
    run(&https).await.expect("an HTTPS app answers");
    // The same port spoken to in plain HTTP does not pass.
    assert!(run(&http(port, "/")).await.is_err());
}

#[tokio::test]
async fn the_admin_route_answers_200_503_or_404_within_the_timeout() {
    let (port, _) = app();
    // Accepts and never answers.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let probe = |action, timeout| AppProbe {
        action,
        timeout: Duration::from_secs(timeout),
    };
    let probes: AppProbes = [
        ("/app-health/web/readyz", probe(http(port, "/healthz"), 1)),
        ("/app-health/web/livez", probe(http(port, "/broken"), 1)),
        ("/app-health/web/startupz", probe(http(hung_port, "/"), 1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let route = route(probes);
    let status = |rest: &str| {
        let answer = route(rest.to_owned());
        async move { answer.await.status().as_u16() }
    };
    assert_eq!(status("web/readyz").await, 200);
    assert_eq!(status("web/livez").await, 503);
    assert_eq!(
        status("web/other").await,
        404,
        "only the probes listed are run"
    );
    let started = Instant::now();
    assert_eq!(status("web/startupz").await, 503, "a hung app fails");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(hung);
}

#[test]
fn probe_entries_are_validated() {
    use ward_proxy::probes::validate;
    let one = |path: &str, action| -> AppProbes {
        [(
            path.to_owned(),
            AppProbe {
                action,
                timeout: Duration::from_secs(1),
            },
        )]
        .into()
    };
    assert!(validate(&one("/app-health/web/readyz", http(8080, "/healthz"))).is_ok());
    for (what, probes) in [
        ("outside the prefix", one("/metrics", http(8080, "/"))),
        ("empty name", one("/app-health/", http(8080, "/"))),
        (
            "relative path",
            one("/app-health/a/b", http(8080, "healthz")),
        ),
        (
            "port 0",
            one("/app-health/a/b", ProbeAction::Tcp { port: 0 }),
        ),
        (
            "bad header",
            one(
                "/app-health/a/b",
                ProbeAction::Http(HttpProbe {
                    port: 1,
                    path: "/".into(),
                    https: false,
                    headers: vec![("bad name".into(), "v".into())],
                }),
            ),
        ),
    ] {
        assert!(validate(&probes).is_err(), "{what}");
    }
    // As written in a configuration: exactly one action, known fields, a sane timeout.
    let parse = |yaml: &str| yaml_serde::from_str::<AppProbes>(yaml).map_err(|e| e.to_string());
    let ok = parse("/app-health/a/b: { grpc: { port: 9090 }, timeout: 2 }").unwrap();
    assert_eq!(ok["/app-health/a/b"].timeout, Duration::from_secs(2));
    for bad in [
        "/app-health/a/b: { tcp: { port: 1 }, http: { port: 2 } }",
        "/app-health/a/b: { timeout: 1 }",
        "/app-health/a/b: { tcp: { port: 1 }, timeuot: 3 }",
        "/app-health/a/b: { tcp: { port: 1 }, timeout: 0 }",
        "/app-health/a/b: { tcp: { port: 1, host: x } }",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}
