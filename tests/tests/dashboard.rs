//! The control plane's dashboard, as an operator sees it: `ward demo` runs the mesh (its
//! control plane with `--dashboard`), and `tests/browser/dashboard.py` drives headless
//! Chromium (Debian's, with selenium from PyPI; both installed by
//! `scripts/install-deps.sh`) through the page — workloads, edges, a denial, anomalies,
//! who can call, a rotation. Screenshots of a failure land in `target/browser/shots/`.
//! Here too: the page is small, loads nothing from elsewhere, and is served read-only with
//! a strict Content-Security-Policy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use ward_tests::bin::run;
use ward_tests::k8s::eventually;
use ward_tests::net::{free_addr, http_get};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `ward demo` as a child, stopped (SIGTERM, then waited for) on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: a plain kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.0.wait();
    }
}

/// The address of the first outbound listener in a demo sidecar's configuration.
fn outbound_of(config: &str) -> SocketAddr {
    let after = &config[config.find("outbound:").expect("outbound section")..];
    let listen = &after[after.find("listen: ").expect("listen") + "listen: ".len()..];
    let end = listen.find(',').expect("end of address");
    listen[..end].trim().parse().expect("address")
}

/// Raw HTTP/1.1 GET: status line and headers, and body.
fn get_raw(addr: SocketAddr, path: &str) -> (String, String) {
    let out = run(
        Path::new("curl"),
        [
            "-sS",
            "-i",
            "--max-time",
            "5",
            &format!("http://{addr}{path}"),
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let (head, body) = out.stdout.split_once("\r\n\r\n").expect("head and body");
    (head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn the_dashboard_shows_the_demo_mesh_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo");
    let dashboard = free_addr();
    let log = std::fs::File::create(dir.path().join("demo.log")).expect("log");
    let child = Command::new(ward_tests::bin::path("ward"))
        .args([
            "demo",
            "--duration",
            "170s",
            "--svid-ttl",
            "40s",
            "--data-dir",
        ])
        .arg(&data)
        .args(["--dashboard", &dashboard.to_string()])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start ward demo");
    let _demo = Demo(child);
    eventually(Duration::from_secs(60), "four workloads reporting", || {
        let (status, body) = http_get(dashboard, "/api/mesh")?;
        let view: Value = serde_json::from_str(&body).ok()?;
        let reporting = view["workloads"]
            .as_array()?
            .iter()
            .filter(|w| w["reporting"] == true)
            .count();
        (status == 200 && reporting == 4).then_some(())
    });

    // Small, self-contained, served with a strict policy.
    let (head, page) = get_raw(dashboard, "/");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let (_, script) = get_raw(dashboard, "/app.js");
    let (_, style) = get_raw(dashboard, "/app.css");
    let weight = page.len() + script.len() + style.len();
    assert!(weight < 24 * 1024, "page weight {weight} bytes");
    for asset in [&page, &script, &style] {
        assert!(
            !asset.contains("//cdn") && !asset.contains("https://"),
            "loads from elsewhere"
        );
    }
    let post = run(
        Path::new("curl"),
        [
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("http://{dashboard}/api/mesh"),
        ],
    );
    assert_eq!(post.stdout, "405", "read-only");

    // Every edge of a new mesh is a first-ever call: flagged once, remembered in the data
    // directory, audited by the control plane.
    let (gateway, web_id) = (
        "spiffe://bank.local/ns/bank/sa/gateway",
        "spiffe://bank.local/ns/bank/sa/web",
    );
    let first_calls = eventually(Duration::from_secs(30), "first calls flagged", || {
        let view: Value = serde_json::from_str(&http_get(dashboard, "/api/mesh")?.1).ok()?;
        let calls: Vec<(String, String)> = view["anomalies"]
            .as_array()?
            .iter()
            .filter(|a| a["kind"] == "first_call")
            .filter_map(|a| {
                Some((
                    a["source"].as_str()?.into(),
                    a["destination"].as_str()?.into(),
                ))
            })
            .collect();
        calls
            .iter()
            .any(|c| c.0 == gateway && c.1 == web_id)
            .then_some(calls)
    });
    assert_eq!(
        first_calls
            .iter()
            .filter(|c| c.0 == gateway && c.1 == web_id)
            .count(),
        1,
        "flagged once: {first_calls:?}"
    );
    let audit = std::fs::read_to_string(data.join("control-plane/audit.log")).expect("audit");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"first_call\"") && l.contains(web_id)),
        "{audit}"
    );
    let known = std::fs::read_to_string(data.join("control-plane/edges.json")).expect("edges");
    assert!(known.contains(gateway), "{known}");

    let web = std::fs::read_to_string(data.join("web-sidecar.yaml")).expect("web's config");
    let shots = root().join("target/browser/shots");
    let python = root().join("target/browser/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh",
        python.display()
    );
    let browser = run(
        &python,
        [
            root()
                .join("tests/browser/dashboard.py")
                .to_str()
                .expect("UTF-8"),
            &format!("http://{dashboard}/"),
            &outbound_of(&web).to_string(),
            shots.to_str().expect("UTF-8"),
        ],
    );
    assert_eq!(
        browser.code,
        0,
        "{browser:#?}\ndemo log:\n{}",
        std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default()
    );
    assert!(browser.stdout.contains("all checks passed"), "{browser:#?}");
}
