//! `ward-proxy init` in network-namespace pods: the rules go in whole or not at all, a rerun
//! replaces them, `--undo` removes them, and a captured connection keeps its original
//! destination while the proxy's own connections are never captured.
//!
//! These need root (network namespaces, nftables); CI runs as root. Elsewhere each test
//! prints why it cannot run and returns.

use std::io::Write;
use std::net::TcpListener;

use ward_tests::bin;
use ward_tests::netns::{self, Netns};

fn skip() -> bool {
    match netns::unavailable() {
        Some(why) => {
            eprintln!("SKIPPED (needs root with network namespaces and nftables): {why}");
            true
        }
        None => false,
    }
}

fn proxy() -> String {
    bin::path("ward-proxy").display().to_string()
}

fn ruleset(ns: &Netns) -> String {
    String::from_utf8_lossy(&ns.exec(&["nft", "list", "ruleset"]).stdout).into_owned()
}

fn init(ns: &Netns, args: &[&str]) -> std::process::Output {
    let proxy = proxy();
    let mut argv = vec![proxy.as_str(), "init"];
    argv.extend_from_slice(args);
    ns.exec(&argv)
}

#[test]
fn init_is_whole_idempotent_undoable_and_refused_without_privileges() {
    if skip() {
        return;
    }
    let pod = Netns::create();
    let first = init(
        &pod,
        &["--exclude-inbound-ports", "8081", "--opaque-ports", "3306"],
    );
    assert!(first.status.success(), "{first:?}");
    let installed = ruleset(&pod);
    assert!(installed.contains("table inet ward"), "{installed}");
    assert!(installed.contains("redirect to :15001") && installed.contains("redirect to :15006"));
    assert!(installed.contains("meta skuid 1337 return"));

    // A rerun replaces, never duplicates.
    let again = init(
        &pod,
        &["--exclude-inbound-ports", "8081", "--opaque-ports", "3306"],
    );
    assert!(again.status.success(), "{again:?}");
    assert_eq!(ruleset(&pod), installed);

    // A plan that cannot work is refused and changes nothing. (What nft itself refuses
    // changes nothing either: `nft -f` applies a whole transaction or none of it.)
    let refused = init(&pod, &["--outbound-port", "15006"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(ruleset(&pod), installed, "a refused plan changes nothing");

    // Without privileges: one line, exit 1, nothing changed.
    let proxy = proxy();
    let unprivileged = pod.exec(&[
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        &proxy,
        "init",
        "--undo",
    ]);
    let stderr = String::from_utf8_lossy(&unprivileged.stderr);
    assert_eq!(unprivileged.status.code(), Some(1), "{unprivileged:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not permitted") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(ruleset(&pod), installed);

    // Undo removes it, and undoing nothing is fine.
    for _ in 0..2 {
        let undo = init(&pod, &["--undo"]);
        assert!(undo.status.success(), "{undo:?}");
        assert!(!ruleset(&pod).contains("table inet ward"));
    }

    let dry = init(&pod, &["--dry-run"]);
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("delete table inet ward"));
    assert!(
        !ruleset(&pod).contains("table inet ward"),
        "--dry-run changes nothing"
    );
}

/// Accepts one connection and answers with `word` and what it was accepted as.
fn answer_once(listener: TcpListener, word: &'static str) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let local = conn.local_addr().expect("local address");
        let orig = ward_proxy::transport::orig_dst::original_dst(&conn, local)
            .map(|a| a.to_string())
            .unwrap_or_else(|e| format!("none ({e})"));
        let _ = conn.write_all(format!("{word} {orig}\n").as_bytes());
        orig
    })
}

fn call(ns: &Netns, as_uid: Option<&str>, to: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && head -1 <&3",
        to.split(':').next().unwrap_or_default(),
        to.split(':').nth(1).unwrap_or_default()
    );
    let mut argv: Vec<&str> = Vec::new();
    if let Some(uid) = as_uid {
        argv.extend(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]);
    }
    argv.extend(["timeout", "10", "bash", "-c", &script]);
    let out = ns.exec(&argv);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_captured_connection_keeps_its_destination_and_the_proxy_is_never_captured() {
    if skip() {
        return;
    }
    let (pod, other) = (Netns::create(), Netns::create());
    netns::link(&pod, "10.77.0.1/24", &other, "10.77.0.2/24");
    let out = init(&pod, &["--exclude-inbound-ports", "8081"]);
    assert!(out.status.success(), "{out:?}");

    // The other pod's server, and the capture port in this pod.
    let server = other.in_thread(|| TcpListener::bind("10.77.0.2:80").expect("bind :80"));
    let capture = pod.in_thread(|| TcpListener::bind("0.0.0.0:15001").expect("bind :15001"));
    let server_seen = answer_once(server, "direct");
    let capture_seen = answer_once(capture, "captured");

    // The app's connection goes to the sidecar, which learns where it was going.
    assert_eq!(call(&pod, None, "10.77.0.2:80"), "captured 10.77.0.2:80");
    assert_eq!(capture_seen.join().expect("capture thread"), "10.77.0.2:80");
    // The proxy's own (UID 1337) leaves as it is.
    let direct = call(&pod, Some("1337"), "10.77.0.2:80");
    assert!(direct.starts_with("direct "), "{direct}");
    let seen = server_seen.join().expect("server thread");
    assert!(
        seen.starts_with("none"),
        "not a redirected connection: {seen}"
    );

    // Into the pod: any port goes to the inbound capture port, keeping the port the peer
    // meant; an excluded port reaches its listener directly.
    let inbound = pod.in_thread(|| TcpListener::bind("0.0.0.0:15006").expect("bind :15006"));
    let excluded = pod.in_thread(|| TcpListener::bind("0.0.0.0:8081").expect("bind :8081"));
    let inbound_seen = answer_once(inbound, "captured");
    let excluded_seen = answer_once(excluded, "direct");
    assert_eq!(
        call(&other, None, "10.77.0.1:8080"),
        "captured 10.77.0.1:8080"
    );
    assert_eq!(
        inbound_seen.join().expect("inbound thread"),
        "10.77.0.1:8080"
    );
    assert!(call(&other, None, "10.77.0.1:8081").starts_with("direct "));
    // Not redirected: it was meant for where it arrived.
    assert_eq!(
        excluded_seen.join().expect("excluded thread"),
        "10.77.0.1:8081"
    );
}
