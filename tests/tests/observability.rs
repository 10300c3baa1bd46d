//! What operators load from deploy/observability, checked with real parts: the alert rules
//! pass `promtool check rules` and their own `promtool test rules` suite (promtool built
//! from the Prometheus module by `make promtool`); every query of the Grafana
//! dashboard is valid PromQL; and every metric the rules and the dashboard name is one a
//! running mesh (a control plane, two sidecars with tokens, a trace collector) exports.
//! On the way: a caller denied again and again is flagged as a denial spike — counted by
//! source, and written to the audit log as a line of kind `anomaly`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use ward_tests::bin::run;
use ward_tests::jaeger::Jaeger;
use ward_tests::mesh::{Extra, ManagedPair, Proxy, WEB_ID};
use ward_tests::net::free_addr;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/observability")
        .join(file)
}

fn promtool(args: &[&str]) -> ward_tests::bin::Run {
    run(&ward_tests::bin::go_tool("promtool"), args)
}

#[test]
fn the_alert_rules_are_valid_and_pass_their_tests() {
    let rules = deploy("ward-alerts.yaml");
    let check = promtool(&["check", "rules", rules.to_str().expect("UTF-8")]);
    assert_eq!(check.code, 0, "{check:#?}");
    let tests = deploy("ward-alerts.test.yaml");
    let tested = promtool(&["test", "rules", tests.to_str().expect("UTF-8")]);
    assert_eq!(tested.code, 0, "{tested:#?}");
    assert!(tested.stdout.contains("SUCCESS"), "{tested:#?}");
}

/// Every PromQL query of the dashboard: panels' targets and annotations.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana-dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        queries.push(annotation["expr"].as_str().expect("expr").to_owned());
    }
    assert!(queries.len() >= 15, "{queries:?}");
    queries
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let dir = tempfile::tempdir().expect("temp dir");
    // As recording rules, promtool parses each; Grafana's `$__rate_interval` becomes what
    // it stands for.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in dashboard_queries().iter().enumerate() {
        let query = query.replace("$__rate_interval", "1m");
        rules += &format!("      - record: dashboard:query_{i}\n        expr: {query:?}\n");
    }
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).expect("rules");
    let check = promtool(&["check", "rules", file.to_str().expect("UTF-8")]);
    assert_eq!(check.code, 0, "{check:#?}");
}

/// The `ward_*` metric names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ward_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let before = rest[..at].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// One raw exchange: `bytes` sent (then our side closed, if `half_close`), whatever comes
/// back until the other side closes.
fn exchange(addr: std::net::SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    tcp.write_all(bytes).expect("write");
    if half_close {
        tcp.shutdown(std::net::Shutdown::Write).expect("half-close");
    }
    let mut back = Vec::new();
    let _ = tcp.read_to_end(&mut back);
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_mesh_exports_every_metric_the_dashboard_and_alerts_use() {
    let app = ward_tests::apps::http_echo().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let jaeger = Jaeger::start(dir.path());
    // web exports its spans to Jaeger; orders to a collector that never answers, so it
    // drops them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let extra = Extra {
        web: format!(
            "tracing: {{ endpoint: \"http://{}\", interval: 100ms }}\n",
            jaeger.otlp_grpc
        ),
        orders: format!(
            "tracing: {{ endpoint: \"http://{}\", queue: 1, batch: 1, timeout: 30s }}\n\
             audit: {{ decisions: denied, log: orders-audit.log }}\n",
            silent.local_addr().expect("addr")
        ),
    };
    let policy = "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
                  metadata: { name: orders-read, namespace: default }\n\
                  spec:\n  selector: { matchLabels: { app: orders } }\n  action: ALLOW\n\
                  \x20 rules:\n    - to: [ { methods: [GET], paths: [\"/orders/*\"] } ]\n";
    let mesh = ManagedPair::launch_with(app.addr, "1h", policy.to_owned(), extra).await;
    let outbound = mesh.outbound;
    tokio::task::spawn_blocking(move || {
        let get = |path: &str| {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n");
            String::from_utf8_lossy(&exchange(outbound, request.as_bytes(), false)).into_owned()
        };
        for _ in 0..3 {
            assert!(get("/orders/1").starts_with("HTTP/1.1 200"));
        }
        // Denied again and again: a spike for this caller (a first minute of 20 or more).
        for _ in 0..25 {
            assert!(get("/admin").starts_with("HTTP/1.1 403"));
        }
        // Opaque TCP (not HTTP): refused by orders, its bytes up to then counted at web.
        let _ = exchange(outbound, b"\x00\x01 not http\r\n\r\n", true);
        // A proxy whose token the control plane refuses.
        std::fs::write(mesh.dir.path().join("bogus.token"), "not-a-token").expect("token");
        let bogus = Proxy::spawn(
            mesh.dir.path(),
            "bogus",
            &format!(
                "trust_domain: example.org\nidentity: {{ control_plane: \"https://{}\", \
                 token_file: bogus.token, bundle: bundle.pem }}\nadmin: {}\n",
                mesh.cp.listen,
                free_addr()
            ),
            &[],
        );
        let wanted = [
            "ward_anomalies_total",
            "ward_trace_spans_dropped_total",
            "ward_trace_spans_exported_total",
            "ward_cp_certs_refused_total",
            "ward_tcp_bytes_total",
        ];
        let scrape = || {
            [
                mesh.web.admin_get("/metrics").1,
                mesh.orders.admin_get("/metrics").1,
                ward_tests::net::http_get(mesh.cp.admin, "/metrics")
                    .map(|(_, body)| body)
                    .unwrap_or_default(),
            ]
            .concat()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut all = scrape();
        while !wanted.iter().all(|w| all.contains(w)) {
            let absent: Vec<_> = wanted.iter().filter(|w| !all.contains(*w)).collect();
            assert!(
                std::time::Instant::now() < deadline,
                "never exported: {absent:?}\n{all}"
            );
            std::thread::sleep(Duration::from_millis(100));
            all = scrape();
        }
        let exported = metric_names(&all);
        bogus.terminate();

        let used: BTreeSet<String> = dashboard_queries()
            .iter()
            .chain([std::fs::read_to_string(deploy("ward-alerts.yaml")).expect("rules")].iter())
            .flat_map(|q| metric_names(q))
            .collect();
        let missing: Vec<&String> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "used but not exported: {missing:?}\nexported: {exported:?}"
        );

        // The spike, by source, and its audit line.
        let (_, metrics) = mesh.orders.admin_get("/metrics");
        let series = format!("ward_anomalies_total{{kind=\"denial_spike\",source=\"{WEB_ID}\"}} 1");
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
        let logs = std::fs::read_to_string(mesh.dir.path().join("orders-audit.log"))
            .expect("orders' audit log");
        let anomaly: Value = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["kind"] == "anomaly")
            .unwrap_or_else(|| panic!("no anomaly audit line in:\n{logs}"));
        assert_eq!(anomaly["anomaly"], "denial_spike");
        assert_eq!(anomaly["source"], WEB_ID);
        assert_eq!(anomaly["denials_this_minute"], 20);
        let denied = |protocol: &str| {
            logs.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l["kind"] == "decision" && l["decision"] == "deny")
                .filter(|l| l["protocol"] == protocol)
                .count()
        };
        assert_eq!(
            denied("http"),
            25,
            "every denial is audited as a decision too"
        );
        assert_eq!(
            denied("tcp"),
            1,
            "the opaque connection: no policy allows TCP"
        );
        drop(silent);
    })
    .await
    .expect("checks");
}
