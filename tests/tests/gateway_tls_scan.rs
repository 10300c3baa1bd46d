//! The public listener's TLS posture as a scanner sees it: sslyze (PyPI, installed by
//! `scripts/install-deps.sh` into `target/tls-scan/venv`) against a running gateway,
//! checked against Mozilla's "intermediate" configuration and then finding by finding.

use std::path::Path;

use serde_json::Value;
use ward_tests::apps;
use ward_tests::bin::run;
use ward_tests::gateway::{Options, start_with};

fn accepted(scan: &Value, protocol: &str) -> Vec<String> {
    let result = &scan[format!("{protocol}_cipher_suites")]["result"];
    result["accepted_cipher_suites"]
        .as_array()
        .unwrap_or_else(|| panic!("{protocol}: no result: {result}"))
        .iter()
        .filter_map(|s| s["cipher_suite"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_finds_modern_tls_only_and_no_known_weakness_on_the_public_listener() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let sslyze =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tls-scan/venv/bin/sslyze");
        assert!(
            sslyze.exists(),
            "{} (scripts/install-deps.sh installs it)",
            sslyze.display()
        );
        let edge = start_with(addr, &Options::default());
        let report = edge.pki.dir().join("sslyze.json");
        let target = format!("api.bank.test:{}{{127.0.0.1}}", edge.port);
        let out = run(
            &sslyze,
            [
                "--json_out",
                &report.display().to_string(),
                "--certinfo_ca_file",
                &edge.ca.display().to_string(),
                "--mozilla_config",
                "intermediate",
                &target,
            ],
        );
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            text.contains(&format!("api.bank.test:{}: OK - Compliant", edge.port)),
            "{text}"
        );
        let report: Value =
            serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
        let server = &report["server_scan_results"][0];
        assert_eq!(server["scan_status"], "COMPLETED", "{server}");
        let scan = &server["scan_result"];
        for old in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"] {
            assert_eq!(accepted(scan, old), Vec::<String>::new(), "{old}");
        }
        let tls12 = accepted(scan, "tls_1_2");
        assert!(!tls12.is_empty());
        for suite in &tls12 {
            assert!(
                suite.contains("_ECDHE_")
                    && (suite.contains("_GCM_") || suite.contains("CHACHA20")),
                "TLS 1.2 suite without forward secrecy or AEAD: {suite}"
            );
        }
        assert!(!accepted(scan, "tls_1_3").is_empty());
        let result = |plugin: &str, field: &str| {
            assert_eq!(
                scan[plugin]["status"], "COMPLETED",
                "{plugin}: {}",
                scan[plugin]
            );
            scan[plugin]["result"][field].clone()
        };
        assert_eq!(result("heartbleed", "is_vulnerable_to_heartbleed"), false);
        assert_eq!(
            result("openssl_ccs_injection", "is_vulnerable_to_ccs_injection"),
            false
        );
        assert_eq!(result("tls_compression", "supports_compression"), false);
        assert_eq!(
            result(
                "session_renegotiation",
                "is_vulnerable_to_client_renegotiation_dos"
            ),
            false
        );
        let robot = result("robot", "robot_result");
        assert!(
            robot
                .as_str()
                .is_some_and(|r| r.starts_with("NOT_VULNERABLE")),
            "{robot}"
        );
        let curves: Vec<&str> = scan["elliptic_curves"]["result"]["supported_curves"]
            .as_array()
            .expect("curves")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        for curve in &curves {
            assert!(
                ["X25519", "secp256r1", "secp384r1"].contains(curve),
                "unexpected curve {curve}: {curves:?}"
            );
        }
        // 0-RTT data can be replayed by anyone on the path: never accepted. (Not in
        // sslyze's default scan: asked for alone.)
        let early = edge.pki.dir().join("early.json");
        run(
            &sslyze,
            [
                "--early_data",
                "--json_out",
                &early.display().to_string(),
                &target,
            ],
        );
        let early: Value =
            serde_json::from_slice(&std::fs::read(&early).expect("report")).expect("json");
        let early = &early["server_scan_results"][0]["scan_result"]["tls_1_3_early_data"];
        assert_eq!(early["status"], "COMPLETED", "{early}");
        assert_eq!(early["result"]["supports_early_data"], false, "{early}");
    })
    .await
    .expect("test thread");
}
