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
    let mut mesh = Pair::launch(addr, PairOptions::default()).await;
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

#[test]
fn json_logs_when_asked() {
    let pki = TestPki::new("example.org");
    write_identity(&pki);
    let admin = free_addr();
    let config = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: web.pem, key: web.key, bundle: ca/bundle.pem }}\n\
         admin: {admin}\n"
    );
    let mut proxy = Proxy::spawn_with(pki.dir(), "web", &config, &[], &["--log-format", "json"]);
    proxy.wait_ready();
    let logs = proxy.logs();
    let ready = logs
        .lines()
        .find(|l| l.contains("sidecar ready"))
        .unwrap_or_else(|| panic!("no ready line: {logs}"));
    let line: serde_json::Value = serde_json::from_str(ready).expect("a JSON log line");
    assert_eq!(line["fields"]["spiffe_id"], pki.id("default", "web"));
}

fn read_closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    use std::io::Write;
    let app = apps::http_echo().await;
    let addr = app.addr;
    let options = PairOptions {
        limits: vec!["idle_timeout: 1s".into()],
        ..Default::default()
    };
    let mesh = Pair::launch(addr, options).await;
    let outbound = mesh.outbound;
    let closed = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(outbound).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let started = Instant::now();
        // The response arrives, then nothing moves: the keep-alive connection must close.
        let closed = read_closes_within(&mut tcp, Duration::from_secs(5));
        (closed, started.elapsed())
    })
    .await
    .unwrap();
    assert!(closed.0, "idle connection still open");
    assert!(
        closed.1 < Duration::from_secs(4),
        "closed after {:?}",
        closed.1
    );
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_once() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let options = PairOptions {
        limits: vec!["max_connections: 2".into()],
        ..Default::default()
    };
    let mesh = Pair::launch(addr, options).await;
    let outbound = mesh.outbound;
    let (held_open, third_closed) = tokio::task::spawn_blocking(move || {
        let mut first = TcpStream::connect(outbound).unwrap();
        let mut second = TcpStream::connect(outbound).unwrap();
        let mut third = TcpStream::connect(outbound).unwrap();
        let third_closed = read_closes_within(&mut third, Duration::from_secs(3));
        let held_open = !read_closes_within(&mut first, Duration::from_millis(500))
            && !read_closes_within(&mut second, Duration::from_millis(500));
        (held_open, third_closed)
    })
    .await
    .unwrap();
    assert!(third_closed, "the third connection must be closed");
    assert!(held_open, "the first two stay open");
    drop(mesh);
}
