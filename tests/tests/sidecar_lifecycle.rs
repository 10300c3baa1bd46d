//! A sidecar's life outside of traffic: configuration errors refused before anything
//! listens, settings from the environment, and a graceful drain on SIGTERM.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ward_tests::apps;
use ward_tests::bin::run;
use ward_tests::mesh::{Pair, PairOptions, Proxy, free_addr, http_get};
use ward_tests::pki::TestPki;

fn write_identity(pki: &TestPki) {
    let svid = pki.svid(&pki.id("default", "web"));
    svid.write(&pki.dir().join("web.pem"), &pki.dir().join("web.key"))
        .unwrap();
}

#[test]
fn config_errors_are_one_line_and_nothing_listens() {
    let pki = TestPki::new("example.org");
    write_identity(&pki);
    let (listen, admin) = (free_addr(), free_addr());
    let base = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: web.pem, key: web.key, bundle: ca/bundle.pem }}\n\
         outbound:\n  - {{ listen: {listen}, upstream: 127.0.0.1:9, server_identity: spiffe://example.org/ns/default/sa/orders }}\n\
         admin: {admin}\n"
    );
    let cases = [
        (
            base.replace("trust_domain:", "trust_domian:"),
            "unknown field `trust_domian`",
        ),
        (base.replace("web.key", "missing.key"), "identity.key"),
        (
            base.replace("upstream: 127.0.0.1:9", "upstream: nowhere"),
            "outbound[0].upstream",
        ),
        (
            base.replace(&admin.to_string(), &listen.to_string()),
            "is used by another listener",
        ),
        (base.replace("ca/bundle.pem", "web.pem"), "identity.bundle"),
    ];
    for (config, want) in cases {
        let path = pki.dir().join("bad.yaml");
        std::fs::write(&path, &config).unwrap();
        let out = run(
            &ward_tests::bin::path("ward-proxy"),
            ["sidecar", "--config", path.to_str().unwrap()],
        );
        let line = out.fails_with(1);
        assert!(line.contains(want), "want {want:?}: {line}");
        assert!(TcpStream::connect(listen).is_err(), "nothing may listen");
        assert!(TcpStream::connect(admin).is_err(), "nothing may listen");
    }
}

#[test]
fn settings_come_from_the_environment_too() {
    let pki = TestPki::new("example.org");
    write_identity(&pki);
    let (in_file, in_env) = (free_addr(), free_addr());
    let config = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: web.pem, key: web.key, bundle: ca/bundle.pem }}\n\
         admin: {in_file}\n"
    );
    let env = in_env.to_string();
    let mut proxy = Proxy::spawn(
        pki.dir(),
        "web",
        &config,
        &[
            ("WARD_ADMIN", env.as_str()),
            ("WARD_LIMITS_IDLE_TIMEOUT", "42s"),
        ],
    );
    proxy.admin = in_env;
    proxy.wait_ready();
    let (_, config) = proxy.admin_get("/config");
    assert!(config.contains("\"idle_timeout\": \"42s\""), "{config}");
    assert!(
        http_get(in_file, "/live").is_none(),
        "the file's admin address is overridden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let mut mesh = tokio::task::spawn_blocking(move || Pair::start(addr, PairOptions::default()))
        .await
        .unwrap();
    let url = format!("http://{}/slow?ms=1500", mesh.outbound);
    let slow = tokio::task::spawn_blocking(move || {
        run(
            Path::new("curl"),
            ["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url],
        )
    });

    // Wait until the slow request has reached the app, then ask the client sidecar to stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.hits() == 0 {
        assert!(Instant::now() < deadline, "request never reached the app");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mesh.web.terminate();

    // New connections are refused once the listener has closed.
    let outbound = mesh.outbound;
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(outbound).is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let out = slow.await.unwrap();
    assert_eq!(out.ok(), "200", "the in-flight request completes");
    let status = tokio::task::spawn_blocking(move || {
        let status = mesh.web.wait_exit(Duration::from_secs(10));
        (status, mesh)
    })
    .await
    .unwrap();
    let (status, mesh) = status;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        mesh.web.logs()
    );
}
