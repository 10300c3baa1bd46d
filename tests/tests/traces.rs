//! Request traces against a real trace backend: Jaeger (built from its Go modules by
//! `make jaeger`, an OpenTelemetry Collector distribution) receives the proxies' spans
//! over OTLP/gRPC and OTLP/HTTP, and its query API shows what arrived.
//!
//! - `ward demo --otlp`: a customer's request crosses gateway → web → accounts → ledger and
//!   is one trace of six spans (each hop's server span and each app call's client span),
//!   with identities, policy decisions, route and status on them; a refused request ends at
//!   the gateway; a call an app makes without a trace starts one at its sidecar.
//! - A sidecar pair exporting over OTLP/HTTP: the caller's `traceparent`/`tracestate` are
//!   continued, an unsampled trace is propagated but not recorded, a malformed header is
//!   replaced by a new trace, and with `sampling: 0` new traces are not recorded.
//! - A collector that never answers: requests go on unslowed and spans past the queue are
//!   dropped and counted.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ward_tests::bin::{self, run};
use ward_tests::jaeger::Jaeger;
use ward_tests::k8s::eventually;
use ward_tests::mesh::{Pair, PairOptions};

/// A span of a Jaeger trace, with its service and tags read out.
#[derive(Debug, Clone)]
struct Span {
    id: String,
    parent: Option<String>,
    service: String,
    tags: serde_json::Map<String, Value>,
}

impl Span {
    fn tag(&self, key: &str) -> String {
        match self.tags.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }
}

fn spans(trace: &Value) -> Vec<Span> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Span {
            id: s["spanID"].as_str().unwrap_or_default().to_owned(),
            parent: s["references"].as_array().and_then(|refs| {
                refs.iter()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| r["spanID"].as_str().map(str::to_owned))
            }),
            service: processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            tags: s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| Some((t["key"].as_str()?.to_owned(), t["value"].clone())))
                .collect(),
        })
        .collect()
}

/// The one child of `parent` in `spans` from `service` going `direction`.
fn child<'a>(spans: &'a [Span], parent: &Span, service: &str, direction: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent.as_deref() == Some(&parent.id))
        .filter(|s| s.service == service && s.tag("ward.direction") == direction)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {service} {direction} child of {parent:?} in {spans:#?}"
    );
    found[0]
}

const GATEWAY: &str = "spiffe://bank.local/ns/bank/sa/gateway";
const WEB: &str = "spiffe://bank.local/ns/bank/sa/web";
const ACCOUNTS: &str = "spiffe://bank.local/ns/bank/sa/accounts";
const LEDGER: &str = "spiffe://bank.local/ns/bank/sa/ledger";

#[test]
fn a_customer_request_across_gateway_web_accounts_ledger_is_one_trace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let jaeger = Jaeger::start(dir.path());
    let data = dir.path().join("demo");
    let otlp = format!("http://{}", jaeger.otlp_grpc);
    let demo = bin::ward([
        "demo",
        "--duration",
        "12s",
        "--data-dir",
        data.to_str().expect("UTF-8 dir"),
        "--otlp",
        &otlp,
    ]);
    assert_eq!(demo.code, 0, "{demo:#?}");
    assert!(demo.stdout.contains("ward demo: PASS"), "{}", demo.stdout);

    // A customer's allowed request: six spans in one trace, each the child of the one
    // before, every hop's identities and decision on its span.
    let (trace, gateway) = eventually(Duration::from_secs(20), "a full trace", || {
        jaeger.traces("gateway").into_iter().find_map(|t| {
            let all = spans(&t);
            let root = all.iter().find(|s| {
                s.tag("ward.direction") == "gateway" && s.tag("http.response.status_code") == "200"
            })?;
            (all.len() == 6).then(|| (all.clone(), root.clone()))
        })
    });
    assert_eq!(gateway.service, "gateway");
    assert_eq!(gateway.parent, None, "the gateway starts the trace");
    assert_eq!(gateway.tag("span.kind"), "server");
    assert_eq!(gateway.tag("ward.destination"), GATEWAY);
    assert_eq!(gateway.tag("ward.authz.decision"), "allow");
    assert!(
        gateway
            .tag("ward.authz.policy")
            .contains("customers-read-own-account")
    );
    assert_eq!(gateway.tag("ward.route"), "0");
    assert_eq!(gateway.tag("http.request.method"), "GET");
    let web_in = child(&trace, &gateway, "web", "inbound");
    assert_eq!(web_in.tag("span.kind"), "server");
    assert_eq!(web_in.tag("ward.source"), GATEWAY);
    assert_eq!(web_in.tag("ward.destination"), WEB);
    assert!(
        web_in
            .tag("ward.authz.policy")
            .contains("gateway-reaches-web"),
        "{web_in:?}"
    );
    let web_out = child(&trace, web_in, "web", "outbound");
    assert_eq!(web_out.tag("span.kind"), "client");
    assert_eq!(web_out.tag("ward.source"), WEB);
    assert_eq!(web_out.tag("ward.destination"), ACCOUNTS);
    let accounts_in = child(&trace, web_out, "accounts", "inbound");
    assert_eq!(accounts_in.tag("ward.source"), WEB);
    assert!(
        accounts_in
            .tag("ward.authz.policy")
            .contains("web-reads-accounts")
    );
    let accounts_out = child(&trace, accounts_in, "accounts", "outbound");
    assert_eq!(accounts_out.tag("ward.destination"), LEDGER);
    let ledger_in = child(&trace, accounts_out, "ledger", "inbound");
    assert_eq!(ledger_in.tag("ward.source"), ACCOUNTS);
    assert_eq!(ledger_in.tag("ward.authz.decision"), "allow");
    assert!(
        ledger_in
            .tag("ward.authz.policy")
            .contains("accounts-reads-ledger")
    );
    for span in [web_in, web_out, accounts_in, accounts_out, ledger_in] {
        assert_eq!(span.tag("http.response.status_code"), "200", "{span:?}");
    }

    // Bob's account asked for by alice: refused at the gateway, nothing further.
    let refused = jaeger.traces("gateway").into_iter().find_map(|t| {
        let all = spans(&t);
        let root = all
            .iter()
            .find(|s| s.tag("http.response.status_code") == "403")?;
        Some((all.len(), root.clone()))
    });
    let (count, root) = refused.expect("a trace of a refused customer request");
    assert_eq!(
        count, 1,
        "a refused request goes no further than the gateway"
    );
    assert_eq!(root.tag("ward.authz.decision"), "deny");
    assert!(
        root.tag("ward.authz.policy").starts_with("default:deny"),
        "{root:?}"
    );

    // The demo's own calls from web's sidecar carry no trace: each starts one there, and
    // the span that starts it has no parent.
    let started_at_web = jaeger.traces("web").into_iter().any(|t| {
        spans(&t).iter().any(|s| {
            s.parent.is_none() && s.service == "web" && s.tag("ward.direction") == "outbound"
        })
    });
    assert!(started_at_web, "a trace started at web's outbound side");
}

/// `traceparent` of `trace` / `span`, sampled or not.
fn traceparent(trace: &str, span: &str, sampled: bool) -> String {
    format!("00-{trace}-{span}-0{}", u8::from(sampled))
}

/// GET through the pair's outbound listener with `headers`; the echo app's view of it.
fn get_with(pair: &Pair, headers: &[(&str, &str)]) -> Value {
    let url = format!("http://{}/traced", pair.outbound);
    let mut args = vec!["-sS".to_owned(), "--max-time".into(), "5".into(), url];
    for (name, value) in headers {
        args.extend(["-H".to_owned(), format!("{name}: {value}")]);
    }
    let out = run(Path::new("curl"), &args);
    assert_eq!(out.code, 0, "{out:#?}");
    serde_json::from_str(&out.stdout).expect("echo JSON")
}

/// What the app got as `traceparent`: (trace id, parent span id, flags).
fn received(echo: &Value) -> (String, String, String) {
    let header = echo["headers"]["traceparent"][0]
        .as_str()
        .expect("the app gets a traceparent")
        .to_owned();
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(parts[0], "00", "{header}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_pair_continues_the_callers_trace_over_otlp_http() {
    let app = ward_tests::apps::http_echo().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let jaeger = Jaeger::start(dir.path());
    let extra = format!(
        "tracing: {{ endpoint: \"http://{}\", protocol: http, interval: 100ms }}\n",
        jaeger.otlp_http
    );
    let options = PairOptions {
        extra,
        ..PairOptions::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    tokio::task::spawn_blocking(move || {
        // A sampled caller trace, with vendor state: continued, the state carried.
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller = "00f067aa0ba902b7";
        let echo = get_with(
            &pair,
            &[
                ("traceparent", &traceparent(trace_id, caller, true)),
                ("tracestate", "acme=t61rcWkgMzE"),
            ],
        );
        let (tid, app_parent, flags) = received(&echo);
        assert_eq!((tid.as_str(), flags.as_str()), (trace_id, "01"));
        assert_ne!(app_parent, caller, "the app's parent is the inbound span");
        assert_eq!(echo["headers"]["tracestate"][0], "acme=t61rcWkgMzE");
        let trace = eventually(
            Duration::from_secs(20),
            "the caller's trace in Jaeger",
            || jaeger.trace(trace_id).filter(|t| spans(t).len() == 2),
        );
        let all = spans(&trace);
        let client = all.iter().find(|s| s.service == "web").expect("web's span");
        let server = all
            .iter()
            .find(|s| s.service == "orders")
            .expect("orders' span");
        assert_eq!(client.parent.as_deref(), Some(caller));
        assert_eq!(client.tag("span.kind"), "client");
        assert_eq!(server.parent.as_deref(), Some(client.id.as_str()));
        assert_eq!(server.id, app_parent, "the app's parent is the server span");
        assert_eq!(server.tag("ward.source"), pair.web_id());
        assert_eq!(server.tag("ward.destination"), pair.orders_id());
        assert_eq!(server.tag("ward.authz.decision"), "allow");
        assert_eq!(server.tag("url.path"), "/traced");

        // Not sampled by the caller: propagated as such, never recorded.
        let unsampled = "0af7651916cd43dd8448eb211c80319c";
        let echo = get_with(
            &pair,
            &[("traceparent", &traceparent(unsampled, caller, false))],
        );
        let (tid, _, flags) = received(&echo);
        assert_eq!((tid.as_str(), flags.as_str()), (unsampled, "00"));

        // No trace, or a malformed one: a new trace starts at the outbound sidecar.
        for sent in [
            None,
            Some("00-zzzz-00f067aa0ba902b7-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"),
        ] {
            let headers: Vec<(&str, &str)> = sent.iter().map(|v| ("traceparent", *v)).collect();
            let echo = get_with(&pair, &headers);
            let (tid, _, flags) = received(&echo);
            assert_ne!(tid, trace_id);
            assert_eq!(flags, "01", "sampling 1 records every new trace");
            let trace = eventually(Duration::from_secs(20), "the new trace", || {
                jaeger.trace(&tid).filter(|t| spans(t).len() == 2)
            });
            let roots: Vec<Span> = spans(&trace)
                .into_iter()
                .filter(|s| s.parent.is_none())
                .collect();
            assert_eq!(roots.len(), 1, "{sent:?}");
            assert_eq!(roots[0].service, "web");
        }
        // By now the unsampled request's spans would have been exported long since.
        assert!(
            jaeger.trace(unsampled).is_none(),
            "an unsampled trace was recorded"
        );
        let (_, metrics) = pair.web.admin_get("/metrics");
        assert!(
            metrics.contains("ward_trace_spans_exported_total"),
            "{metrics}"
        );
    })
    .await
    .expect("checks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_requests_nothing_and_drops_are_counted() {
    let app = ward_tests::apps::http_echo().await;
    // Accepts connections (the kernel completes them) and never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let extra = format!(
        "tracing: {{ endpoint: \"http://{silent_addr}\", sampling: 0, queue: 2, batch: 1, timeout: 30s }}\n"
    );
    let options = PairOptions {
        extra,
        ..PairOptions::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    tokio::task::spawn_blocking(move || {
        // sampling: 0 — a new trace is propagated unsampled.
        let (_, _, flags) = received(&get_with(&pair, &[]));
        assert_eq!(flags, "00", "sampling 0 records no new trace");
        // A caller's sampled trace is still recorded (its decision is followed): the
        // spans queue up behind the export that never returns, and the rest are dropped.
        for i in 0..8 {
            let trace = format!("{:032x}", 0xabc0_u128 + i);
            let echo = get_with(
                &pair,
                &[(
                    "traceparent",
                    &traceparent(&trace, "00f067aa0ba902b7", true),
                )],
            );
            assert_eq!(received(&echo).0, trace);
        }
        eventually(Duration::from_secs(10), "spans dropped and counted", || {
            let (_, metrics) = pair.web.admin_get("/metrics");
            metrics
                .lines()
                .find(|l| l.starts_with("ward_trace_spans_dropped_total{reason=\"queue_full\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .filter(|n| *n >= 1.0)
        });
        drop(silent);
    })
    .await
    .expect("checks");
}

#[test]
fn a_bad_tracing_section_is_refused_with_its_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (tracing, field) in [
        ("{ endpoint: \"https://c:4317\" }", "tracing.endpoint"),
        ("{ endpoint: \"http://c:4317/v1\" }", "tracing.endpoint"),
        (
            "{ endpoint: \"http://c:4317\", sampling: 1.5 }",
            "tracing.sampling",
        ),
        (
            "{ endpoint: \"http://c:4317\", queue: 10, batch: 20 }",
            "tracing.batch",
        ),
        (
            "{ endpoint: \"http://c:4317\", protocol: zipkin }",
            "tracing",
        ),
        ("{ endpoint: \"http://c:4317\", sample: 1 }", "tracing"),
    ] {
        let config = dir.path().join("sidecar.yaml");
        std::fs::write(
            &config,
            format!(
                "trust_domain: example.org\nidentity: {{ cert: a.pem, key: a.key, bundle: b.pem }}\n\
                 tracing: {tracing}\n"
            ),
        )
        .expect("config");
        let out = run(
            &bin::path("ward-proxy"),
            ["sidecar", "--config", config.to_str().expect("UTF-8")],
        );
        let err = out.fails_with(1);
        assert!(err.contains(field), "{tracing}: {err}");
    }
}
