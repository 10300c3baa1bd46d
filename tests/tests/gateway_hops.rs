//! The edge's own rules for what comes from outside: the client behind trusted proxies
//! (and never what a client says of itself), requests for a host their TLS connection was
//! not made for (421), declared bodies over the limit (413), and the edge's HTTP/2 limits
//! as a client sees them on the wire.

use std::path::Path;

use ward_tests::apps;
use ward_tests::bin::run;
use ward_tests::gateway::{Edge, Options, echo, start_with};

/// `path` with Alice's token and `extra` curl arguments: (status, the app's view).
fn as_alice(edge: &Edge, path: &str, extra: &[&str]) -> (u16, String) {
    let (code, _, body) = edge.get(path, Some(&edge.alice), extra);
    (code, body)
}

fn forwarded_for(body: &str) -> String {
    echo(body)["headers"]["x-forwarded-for"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_who_the_trusted_hops_say_and_nobody_else() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let forged = [
            "-H",
            "X-Forwarded-For: 1.2.3.4",
            "-H",
            "Forwarded: for=1.2.3.4",
        ];
        // No trusted hop (the default): what the client says of itself is replaced.
        let edge = start_with(addr, &Options::default());
        let (code, body) = as_alice(&edge, "/statements/alice/1", &forged);
        assert_eq!(code, 200, "{body}");
        assert_eq!(forwarded_for(&body), "127.0.0.1");
        assert!(echo(&body)["headers"].get("forwarded").is_none());
        drop(edge);

        // One trusted hop, limited per client: each client has its own bucket, whatever
        // it wrote further left.
        let options = Options {
            extra:
                "trusted_hops: 1\nrate_limits: [ { name: per-client, by: [client], rate: 2/h } ]"
                    .into(),
            accounts_route: ", rate_limits: [per-client]".into(),
            ..Options::default()
        };
        let edge = start_with(addr, &options);
        let via_lb = |chain: &str, proto: &str| {
            let xff = format!("X-Forwarded-For: {chain}");
            let xfp = format!("X-Forwarded-Proto: {proto}");
            as_alice(&edge, "/accounts/alice/x", &["-H", &xff, "-H", &xfp])
        };
        let (code, body) = via_lb("1.2.3.4, 203.0.113.7", "http");
        assert_eq!(code, 200, "{body}");
        assert_eq!(forwarded_for(&body), "203.0.113.7");
        assert_eq!(echo(&body)["headers"]["x-forwarded-proto"][0], "http");
        assert_eq!(via_lb("9.9.9.9, 203.0.113.7", "https").0, 200);
        assert_eq!(
            via_lb("203.0.113.7", "https").0,
            429,
            "the same client, third call"
        );
        assert_eq!(
            via_lb("203.0.113.7, 198.51.100.1", "https").0,
            200,
            "another client"
        );
        // The other client's request is audited with the client the trusted hop names.
        let line = edge.audit_line("the other client's line", |l| l["client"] == "198.51.100.1");
        assert_eq!(line["decision"], "allow", "{line}");
        // RFC 7239 `Forwarded` is preferred when present.
        let (code, body) = as_alice(
            &edge,
            "/statements/alice/1",
            &[
                "-H",
                "Forwarded: for=1.2.3.4, for=\"[2001:db8::7]:443\";proto=https",
            ],
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(forwarded_for(&body), "2001:db8::7");
    })
    .await
    .expect("test thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_the_connection_was_not_made_for_are_misdirected_and_big_bodies_refused() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let options = Options {
            extra: "max_body_bytes: 1024".into(),
            ..Options::default()
        };
        let edge = start_with(addr, &options);
        let auth = format!("Authorization: Bearer {}", edge.alice);
        // SNI admin.bank.test (its own certificate), Host api.bank.test: 421, over
        // HTTP/1.1 and HTTP/2 alike; the route would otherwise take it.
        for version in ["--http1.1", "--http2"] {
            let (code, _, body) = edge.curl(
                "admin.bank.test",
                "/statements/alice/1",
                &[version, "-H", "Host: api.bank.test", "-H", &auth],
            );
            assert_eq!(
                (code, body.as_str()),
                (421, "misdirected request\n"),
                "{version}"
            );
            let (code, _, body) = edge.curl(
                "admin.bank.test",
                "/statements/alice/1",
                &[version, "-H", &auth],
            );
            assert_eq!(code, 200, "{version}: {body}");
        }
        // A host the SNI's certificate is not for, under the route's wildcard.
        let (code, _, _) = edge.curl(
            "api.bank.test",
            "/statements/alice/1",
            &["-H", "Host: other.bank.test", "-H", &auth],
        );
        assert_eq!(code, 421);

        let small = "x".repeat(1000);
        let big = "x".repeat(2000);
        let post = |data: &str| {
            edge.curl(
                "api.bank.test",
                "/statements/alice/1",
                &["-H", &auth, "--data-binary", data],
            )
        };
        assert_eq!(post(&small).0, 200);
        // Refused before its body is read: as with the chunked case below, curl may see
        // the connection close before the 413; the access log is checked after both.
        let (code, _, body) = post(&big);
        assert!(
            (code, body.as_str()) == (413, "payload too large\n") || code == 0,
            "{code} {body}"
        );
        // Without a declared length (chunked), the body is cut off where it passes the
        // limit: the app never gets a whole request.
        let chunked = |data: &str| {
            edge.curl(
                "api.bank.test",
                "/statements/alice/1",
                &[
                    "--http1.1",
                    "-H",
                    &auth,
                    "-H",
                    "Transfer-Encoding: chunked",
                    "--data-binary",
                    data,
                ],
            )
        };
        let (code, _, body) = chunked(&small);
        assert_eq!(code, 200, "{body}");
        assert_eq!(echo(&body)["body_len"], 1000, "{body}");
        // The gateway answers 413 while curl may still be sending: over HTTP/1.1 the
        // connection then closes, and curl can see that close before the answer. Either
        // way nothing succeeded, and the gateway's access log says why.
        let (code, _, body) = chunked(&big);
        assert!(
            (code, body.as_str()) == (413, "payload too large\n") || code == 0,
            "{code} {body}"
        );
        let logs = edge.gateway.logs();
        assert!(
            logs.lines()
                .filter(|l| l.contains("body_too_large") && l.contains("status=413"))
                .count()
                >= 2,
            "{logs}"
        );
    })
    .await
    .expect("test thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_runs_with_edge_limits_unless_told_otherwise() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let edge = start_with(addr, &Options::default());
        // The SETTINGS frame the gateway sends, as nghttp prints it.
        let settings = |edge: &Edge| {
            let url = format!("https://127.0.0.1:{}/health", edge.port);
            let out = run(Path::new("nghttp"), ["-v", "-n", &url]);
            assert!(
                out.stdout.contains("recv SETTINGS frame"),
                "{}{}",
                out.stdout,
                out.stderr
            );
            out.stdout
        };
        let seen = settings(&edge);
        for want in [
            "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]",
            "SETTINGS_INITIAL_WINDOW_SIZE(0x04):65536]",
        ] {
            assert!(seen.contains(want), "{want}: {seen}");
        }
        let (code, config) = edge.gateway.admin_get("/config");
        assert_eq!(code, 200);
        // The gateway's own sections are shown beside the shared ones.
        let shown: serde_json::Value = serde_json::from_str(&config).expect("JSON");
        assert_eq!(shown["routes"].as_array().map(Vec::len), Some(3), "{shown}");
        assert_eq!(
            shown["issuers"][0]["issuer"], "https://idp.bank.test",
            "{shown}"
        );
        assert_eq!(shown["trusted_hops"], 0, "{shown}");
        assert_eq!(shown["dpop"]["max_age"], "1m", "{shown}");
        for want in [
            "\"max_concurrent_streams\":100",
            "\"h2_stream_window\":65536",
            "\"h2_connection_window\":1048576",
        ] {
            assert!(config.replace(' ', "").contains(want), "{want}: {config}");
        }
        drop(edge);
        let options = Options {
            extra: "limits: { max_concurrent_streams: 7 }".into(),
            ..Options::default()
        };
        let edge = start_with(addr, &options);
        let seen = settings(&edge);
        assert!(
            seen.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7]"),
            "{seen}"
        );
        let (_, config) = edge.gateway.admin_get("/config");
        assert!(
            config
                .replace(' ', "")
                .contains("\"max_concurrent_streams\":7"),
            "{config}"
        );
        assert!(
            config
                .replace(' ', "")
                .contains("\"h2_stream_window\":65536"),
            "{config}"
        );
    })
    .await
    .expect("test thread");
}
