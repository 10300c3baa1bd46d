//! The comparative benchmark harness (`bench/run.py`) in smoke mode: a second or so per
//! case against nginx directly, two ward sidecars and two Envoy sidecars. No figure is
//! asserted — only that every case ran against every target and produced its numbers, so
//! the harness cannot rot between `make bench` runs.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use ward_tests::bin;

/// Runs `bench/SCRIPT --smoke` on the debug binaries: its output directory, the JSON
/// results it wrote to `RESULTS`, and its stderr.
fn smoke(script: &str, results: &str) -> (tempfile::TempDir, Value, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = bin::path("ward-proxy")
        .parent()
        .expect("binary directory")
        .to_owned();
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new("python3")
        .arg(root.join("bench").join(script))
        .arg("--smoke")
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("run python3 bench/{script} (bench/setup.sh installs its tools): {e}")
        });
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        run.status.success(),
        "bench/{script} --smoke failed ({}):\n{stderr}",
        run.status
    );
    let text = std::fs::read_to_string(out.path().join(results))
        .unwrap_or_else(|e| panic!("{results}: {e}"));
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{results}: {e}"));
    (out, json, stderr)
}

#[test]
fn bench_harness_smoke_run_measures_every_case_on_every_target() {
    let (out, json, stderr) = smoke("run.py", "latest.json");
    for case in ["http1", "http2", "grpc"] {
        for target in ["direct", "ward", "envoy"] {
            let r = &json["cases"][case][target];
            for key in ["rps", "p50_ms", "p99_ms", "p999_ms"] {
                assert!(
                    r[key].as_f64().is_some_and(|v| v > 0.0),
                    "{case}/{target}/{key} missing in {r}"
                );
            }
            assert_eq!(r["failed"], 0, "{case}/{target}: failed requests\n{stderr}");
            if target != "direct" {
                assert!(r["cpu_s_per_1k"].as_f64().is_some_and(|v| v > 0.0), "{r}");
            }
        }
    }
    for target in ["direct", "ward", "envoy"] {
        let mbs = &json["cases"]["tcp"][target]["mb_per_s"];
        assert!(mbs.as_f64().is_some_and(|v| v > 0.0), "tcp/{target}: {mbs}");
    }
    for sidecar in ["ward", "envoy"] {
        let s = &json["sidecars"][sidecar];
        for key in ["idle_rss_mib", "peak_rss_mib"] {
            assert!(s[key].as_f64().is_some_and(|v| v > 0.0), "{sidecar}: {s}");
        }
        assert!(
            s["rss_idle_conns"]["client_rss_mib"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{sidecar}: {s}"
        );
    }
    let table = std::fs::read_to_string(out.path().join("latest.md")).expect("latest.md");
    assert!(table.contains("| ward/envoy | ward/direct |"), "{table}");
}

#[test]
fn edge_bench_smoke_run_measures_the_gateway_and_envoy_jwt_authn() {
    let (out, json, stderr) = smoke("gateway.py", "gateway.json");
    for target in ["ward", "envoy"] {
        let r = &json["targets"][target];
        for key in [
            "rps",
            "p50_ms",
            "p99_ms",
            "edge_cpu_s_per_1k",
            "cpu_s_per_1k",
        ] {
            assert!(
                r[key].as_f64().is_some_and(|v| v > 0.0),
                "{target}/{key} missing in {r}"
            );
        }
        assert_eq!(r["failed"], 0, "{target}: failed requests\n{stderr}");
        // Both edges refuse a request without a token: the comparison is of equals.
        assert_eq!(r["no_token_status"], 401, "{target}: {r}");
    }
    let table = std::fs::read_to_string(out.path().join("gateway.md")).expect("gateway.md");
    assert!(table.contains("| req/s at saturation |"), "{table}");
}
