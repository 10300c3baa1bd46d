//! `ward demo`: the local mesh `make run` starts. With `--duration` it is a self-checking
//! end-to-end run (control plane, three apps, three token-bootstrapped sidecars, allowed and
//! forbidden traffic), and it must leave no process behind.

use std::path::Path;
use std::process::Command;

use ward_tests::bin;

/// PIDs of live processes whose environment carries the demo's marker for `dir`.
fn demo_processes(dir: &Path) -> Vec<u32> {
    let marker = format!("DEMO_MESH_DIR={}", dir.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let is_demo = environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes());
        if is_demo {
            pids.push(pid);
        }
    }
    pids
}

fn run_demo(dir: &Path, duration: &str) -> bin::Run {
    let dir = dir.to_str().expect("UTF-8 temp dir");
    bin::ward(["demo", "--duration", duration, "--data-dir", dir])
}

#[test]
fn demo_runs_a_mesh_that_obeys_its_policy_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = run_demo(dir.path(), "30s");
    let logs = || {
        let mut all = String::new();
        for entry in std::fs::read_dir(dir.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            all += &format!("---- {} ----\n{tail}\n", entry.path().display());
        }
        all
    };
    assert_eq!(run.code, 0, "{run:#?}\n{}", logs());
    assert!(run.stdout.contains("ward demo: PASS"), "{}", run.stdout);
    // The final table: every edge with its last status, and each workload's SVID.
    for row in [
        "web → accounts       GET /accounts/{id}",
        "web → accounts       DELETE /accounts/{id}",
        "accounts → ledger    ledger.v1.Ledger/GetBalance",
        "accounts → ledger    ledger.v1.Ledger/Post",
        "web → ledger         ledger.v1.Ledger/GetBalance",
        // Through the gateway (in front of web, which asks accounts, which asks the ledger):
        // a customer's own account, another's (BOLA), no token, and one over the rate limit.
        "alice → web          GET /accounts/{own} x1         allow",
        "alice → web          GET /accounts/{bob's}          deny",
        "carol → web          GET /accounts/{own} x4         limit",
        "anonymous → web      GET /accounts/{id}, no token   deny",
        "401 Unauthorized",
        "429 Too Many Requests",
        "spiffe://bank.local/ns/bank/sa/web",
        "spiffe://bank.local/ns/bank/sa/accounts",
        "spiffe://bank.local/ns/bank/sa/ledger",
        "403 Forbidden",
        "grpc PERMISSION_DENIED",
        "policy check --dir",
    ] {
        assert!(
            run.stdout.contains(row),
            "missing {row:?} in:\n{}",
            run.stdout
        );
    }
    // No sidecar ever got a certificate file: every SVID came from a join token.
    for name in ["web", "accounts", "ledger"] {
        let config = std::fs::read_to_string(dir.path().join(format!("{name}-sidecar.yaml")))
            .expect("sidecar config");
        assert!(config.contains("token_file"), "{config}");
        assert!(!config.contains("cert:"), "{config}");
    }
    // Denials reached the audit log of the called sidecar, naming the caller.
    let audit = std::fs::read_to_string(dir.path().join("logs/accounts-audit.log"))
        .expect("accounts audit log");
    assert!(
        audit.contains("\"method\":\"DELETE\"")
            && audit.contains("spiffe://bank.local/ns/bank/sa/web"),
        "{audit}"
    );
    // The gateway's refusals are in its audit log: the BOLA attempt names the end user.
    let audit = std::fs::read_to_string(dir.path().join("logs/gateway-audit.log"))
        .expect("gateway audit log");
    assert!(
        audit.contains("\"path\":\"/accounts/1002\"")
            && audit.contains("https://login.bank.local/1001")
            && audit.contains("rate-limit:per-customer"),
        "{audit}"
    );
    let tokens = ["alice", "bob", "carol"]
        .map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.jwt"))).expect("a token"));
    assert!(
        tokens.iter().all(|t| !audit.contains(t.trim())),
        "no token in the audit log"
    );
    let left = demo_processes(dir.path());
    assert!(left.is_empty(), "processes outlived ward demo: {left:?}");
}

#[test]
fn demo_fails_when_a_forbidden_call_gets_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The demo keeps policy files it finds; this one lets web delete accounts, which the
    // demo's expectations forbid.
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    std::fs::write(
        policies.join("accounts.yaml"),
        "apiVersion: ward.dev/v1alpha1\n\
         kind: AuthorizationPolicy\n\
         metadata: { name: web-owns-accounts, namespace: bank }\n\
         spec:\n  selector: { matchLabels: { app: accounts } }\n  action: ALLOW\n  rules:\n\
         \x20 - from: [ { principals: [\"spiffe://bank.local/ns/bank/sa/web\"] } ]\n",
    )
    .expect("write policy");
    let run = run_demo(dir.path(), "4s");
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("ward demo: FAIL"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("DELETE /accounts/{id}") && l.ends_with("<- unexpected")),
        "{}",
        run.stdout
    );
    let left = demo_processes(dir.path());
    assert!(left.is_empty(), "processes outlived ward demo: {left:?}");
}

/// Starts `ward demo` with `extra` arguments, sends `signal` once the mesh is up, and
/// returns how it exited and what it printed; asserts no child outlived it.
fn interrupt(extra: &[&str], signal: i32) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("temp dir");
    let mut demo = Command::new(bin::path("ward"))
        .arg("demo")
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ward demo");
    // Progress lines go to stderr when stdout is not a terminal; wait for the mesh.
    let stderr = demo.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut said = Vec::new();
    let up = lines.by_ref().map_while(Result::ok).any(|l| {
        said.push(l.clone());
        l.contains("mesh up")
    });
    assert!(
        up,
        "ward demo never brought the mesh up:\n{}",
        said.join("\n")
    );
    assert!(
        demo_processes(dir.path()).len() >= 7,
        "control plane, three apps and three sidecars: {:?}",
        demo_processes(dir.path())
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(demo.id() as i32, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = demo.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ward demo did not stop on signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut demo.stdout.take().expect("stdout"), &mut out)
        .expect("stdout");
    let left = demo_processes(dir.path());
    assert!(left.is_empty(), "processes outlived ward demo: {left:?}");
    (status, out)
}

#[test]
fn ctrl_c_stops_the_demo_and_every_child() {
    let (status, out) = interrupt(&[], libc::SIGINT);
    assert!(status.success(), "{status}");
    assert!(out.contains("ward demo: stopped"), "{out}");
}

#[test]
fn an_interrupted_timed_run_is_not_a_pass() {
    // `--duration` promises a verdict; stopped early (here by SIGTERM) it has none.
    let (status, out) = interrupt(&["--duration", "5m"], libc::SIGTERM);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("ward demo: stopped"), "{out}");
}
