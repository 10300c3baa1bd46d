//! `ward-proxy init` in network-namespace pods: the rules go in whole or not at all, a rerun
//! replaces them, `--undo` removes them, and a captured connection keeps its original
//! destination while the proxy's own connections are never captured.
//!
//! These need root (network namespaces, nftables); CI runs as root. Elsewhere each test
//! prints why it cannot run and returns.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use ward_tests::apps::echo_heads;
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

/// The two ways `ward-proxy init` writes its rules.
#[derive(Clone, Copy, Debug)]
enum Rules {
    Nftables,
    Iptables,
}

impl Rules {
    fn flag(self) -> &'static str {
        match self {
            Rules::Nftables => "nftables",
            Rules::Iptables => "iptables",
        }
    }

    /// The rules in force in `ns`, without timestamps.
    fn in_force(self, ns: &Netns) -> String {
        let dumps: &[&[&str]] = match self {
            Rules::Nftables => &[&["nft", "list", "ruleset"]],
            Rules::Iptables => &[
                &["iptables-save", "-t", "nat"],
                &["ip6tables-save", "-t", "nat"],
            ],
        };
        dumps
            .iter()
            .flat_map(|argv| {
                let out = ns.exec(argv);
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What the installed rules must say (the proxy's UID excluded, both redirects).
    fn installed_marks(self) -> [&'static str; 4] {
        match self {
            Rules::Nftables => [
                "table inet ward",
                "meta skuid 1337 return",
                "redirect to :15001",
                "redirect to :15006",
            ],
            Rules::Iptables => [
                "WARD_OUTPUT",
                "--uid-owner 1337 -j RETURN",
                "--to-ports 15001",
                "--to-ports 15006",
            ],
        }
    }
}

fn init(ns: &Netns, rules: Rules, args: &[&str]) -> std::process::Output {
    let proxy = proxy();
    let mut argv = vec![proxy.as_str(), "init", "--backend", rules.flag()];
    argv.extend_from_slice(args);
    ns.exec(&argv)
}

#[test]
fn init_is_whole_idempotent_undoable_and_refused_without_privileges() {
    if skip() {
        return;
    }
    init_rules(Rules::Nftables);
}

#[test]
fn init_with_iptables_is_idempotent_undoable_and_refused_without_privileges() {
    if skip() {
        return;
    }
    init_rules(Rules::Iptables);
}

fn init_rules(rules: Rules) {
    let pod = Netns::create();
    let first = init(
        &pod,
        rules,
        &["--exclude-inbound-ports", "8081", "--opaque-ports", "3306"],
    );
    assert!(first.status.success(), "{first:?}");
    let installed = rules.in_force(&pod);
    for mark in rules.installed_marks() {
        assert!(installed.contains(mark), "{mark} missing:\n{installed}");
    }

    // A rerun replaces, never duplicates.
    let again = init(
        &pod,
        rules,
        &["--exclude-inbound-ports", "8081", "--opaque-ports", "3306"],
    );
    assert!(again.status.success(), "{again:?}");
    assert_eq!(rules.in_force(&pod), installed);

    // A plan that cannot work is refused and changes nothing. (What nft itself refuses
    // changes nothing either: `nft -f` applies a whole transaction or none of it.)
    let refused = init(&pod, rules, &["--outbound-port", "15006"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(
        rules.in_force(&pod),
        installed,
        "a refused plan changes nothing"
    );

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
        "--backend",
        rules.flag(),
    ]);
    let stderr = String::from_utf8_lossy(&unprivileged.stderr);
    assert_eq!(unprivileged.status.code(), Some(1), "{unprivileged:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not permitted") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(rules.in_force(&pod), installed);

    // Undo removes it, and undoing nothing is fine.
    let [table, ..] = rules.installed_marks();
    for _ in 0..2 {
        let undo = init(&pod, rules, &["--undo"]);
        assert!(undo.status.success(), "{undo:?}");
        assert!(!rules.in_force(&pod).contains(table));
    }

    let dry = init(&pod, rules, &["--dry-run"]);
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains(table));
    assert!(
        !rules.in_force(&pod).contains(table),
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
    redirect(Rules::Nftables);
}

#[test]
fn iptables_rules_capture_the_same_way() {
    if skip() {
        return;
    }
    redirect(Rules::Iptables);
}

fn redirect(rules: Rules) {
    let (pod, other) = (Netns::create(), Netns::create());
    netns::link(&pod, "10.77.0.1/24", &other, "10.77.0.2/24");
    let out = init(&pod, rules, &["--exclude-inbound-ports", "8081"]);
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

    // IPv6 the same way (IP6T_SO_ORIGINAL_DST).
    for (ns, addr) in [(&pod, "fd77::1/64"), (&other, "fd77::2/64")] {
        let dev = ns_device(ns);
        ns.ip(&["-6", "addr", "add", addr, "dev", &dev, "nodad"])
            .expect("v6 address");
    }
    let server6 = other.in_thread(|| TcpListener::bind("[fd77::2]:80").expect("bind v6 :80"));
    let capture6 = pod.in_thread(|| TcpListener::bind("[::]:15001").expect("bind v6 :15001"));
    let _server6_seen = answer_once(server6, "direct");
    let capture6_seen = answer_once(capture6, "captured");
    let out = pod.exec(&[
        "timeout",
        "10",
        "bash",
        "-c",
        "exec 3<>/dev/tcp/fd77::2/80 && head -1 <&3",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "captured [fd77::2]:80"
    );
    assert_eq!(
        capture6_seen.join().expect("capture thread"),
        "[fd77::2]:80"
    );
}

/// An HTTP/1.1 server that answers every request with its own head (so the caller sees
/// the headers the app received), on a listener made inside a namespace.
/// Answers every connection with one line.
fn say(listener: TcpListener, line: &'static str) {
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(line.as_bytes());
        }
    });
}

fn curl(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["curl", "-s", "--max-time", "10"];
    argv.extend_from_slice(args);
    let out = ns.exec(&argv);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn captured_calls_go_over_mtls_pass_through_or_are_refused() {
    if skip() {
        return;
    }
    use ward_tests::mesh::Proxy;
    use ward_tests::pki::TestPki;

    let pki = TestPki::new("example.org");
    let dir = pki.dir().to_owned();
    let (web_id, orders_id) = (pki.id("default", "web"), pki.id("default", "orders"));
    for (sa, id) in [("web", &web_id), ("orders", &orders_id)] {
        let svid = pki.svid_ttl(id, Duration::from_secs(3600));
        svid.write(
            &dir.join(format!("{sa}.pem")),
            &dir.join(format!("{sa}.key")),
        )
        .expect("write svid");
    }
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    std::fs::write(
        policies.join("p.yaml"),
        format!(
            "{}---\napiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {{ name: web-reads, namespace: default }}\n\
             spec: {{ action: ALLOW, rules: [ {{ from: [ {{ principals: [\"{web_id}\"] }} ], to: [ {{ methods: [GET] }} ] }}, \
             {{ from: [ {{ principals: [\"{web_id}\"] }} ], to: [ {{ ports: [3306] }} ] }} ] }}\n",
            ward_tests::mesh::mesh_default("deny")
        ),
    )
    .expect("policy");
    // The web sidecar runs as the proxy's UID and reads its files as it.
    let chown = std::process::Command::new("chown")
        .args(["-R", "1337:1337"])
        .arg(&dir)
        .status()
        .expect("chown");
    assert!(chown.success());

    let (web, orders) = (Netns::create(), Netns::create());
    netns::link(&web, "10.77.0.1/24", &orders, "10.77.0.2/24");
    echo_heads(orders.in_thread(|| TcpListener::bind("0.0.0.0:8080").expect("app")));
    // A protocol where the server speaks first, on a port the web pod marks opaque.
    say(
        orders.in_thread(|| TcpListener::bind("0.0.0.0:3306").expect("opaque")),
        "greeting\n",
    );
    say(
        orders.in_thread(|| TcpListener::bind("10.77.0.2:9000").expect("plain")),
        "plain\n",
    );
    // Both pods are captured; the orders pod's plain server port is excluded.
    for (pod, args) in [
        (&orders, &["--exclude-inbound-ports", "9000"][..]),
        (&web, &["--opaque-ports", "3306"]),
    ] {
        let out = init(pod, Rules::Nftables, args);
        assert!(out.status.success(), "{out:?}");
    }
    let in_orders = orders.proxy_prefix();
    let in_orders: Vec<&str> = in_orders.iter().map(String::as_str).collect();
    let orders_cfg = String::from(
        "trust_domain: example.org\n\
         identity: { cert: orders.pem, key: orders.key, bundle: ca/bundle.pem }\n\
         workload: { namespace: default, labels: { app: orders } }\n\
         capture: {}\n\
         policy: { dir: policies }\nadmin: \"127.0.0.1:15000\"\n",
    );
    let mut orders_proxy = Proxy::spawn_prefixed(
        &dir,
        "orders",
        &orders_cfg,
        &[],
        &[],
        &in_orders,
        Some(&orders.name),
    );
    orders_proxy.wait_ready();

    let web_cfg = |policy: &str| {
        format!(
            "trust_domain: example.org\n\
             identity: {{ cert: web.pem, key: web.key, bundle: ca/bundle.pem }}\n\
             workload: {{ namespace: default, labels: {{ app: web }} }}\n\
             policy: {{ dir: policies }}\nadmin: \"127.0.0.1:15000\"\n\
             capture:\n  outbound_traffic_policy: {policy}\n  destinations:\n\
             \x20   - {{ address: \"10.77.0.2:8080\", spiffe_id: \"{orders_id}\" }}\n\
             \x20   - {{ address: \"10.77.0.2:3306\", spiffe_id: \"{orders_id}\" }}\n"
        )
    };
    let as_proxy = web.proxy_prefix();
    let as_proxy: Vec<&str> = as_proxy.iter().map(String::as_str).collect();
    let mut web_proxy = Proxy::spawn_prefixed(
        &dir,
        "web",
        &web_cfg("ALLOW_ANY"),
        &[],
        &[],
        &as_proxy,
        Some(&web.name),
    );
    web_proxy.wait_ready();

    // The app calls the other pod's address; the server app sees who called, over mTLS.
    let seen = curl(&web, &["http://10.77.0.2:8080/accounts/1"]);
    assert!(
        seen.contains(&format!("x-ward-peer-identity: {web_id}")),
        "{seen}\n{}\n{}",
        web_proxy.logs(),
        orders_proxy.logs()
    );
    // Policy still decides: DELETE is not allowed.
    let denied = curl(
        &web,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "http://10.77.0.2:8080/accounts/1",
        ],
    );
    assert_eq!(denied, "403");
    // A caller outside the mesh (here: plaintext, as the uncaptured proxy UID) never
    // reaches the captured app: its inbound takes mTLS only.
    let prefix = web.proxy_prefix();
    let outsider = std::process::Command::new(&prefix[0])
        .args(&prefix[1..])
        .args([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "http://10.77.0.2:8080/accounts/1",
        ])
        .output()
        .expect("curl as the proxy UID");
    assert_eq!(String::from_utf8_lossy(&outsider.stdout), "000");
    // Not a mesh destination: passed through as it came (its port is excluded from capture
    // in the orders pod, so it reaches the plain server there).
    assert_eq!(call(&web, None, "10.77.0.2:9000"), "plain");
    // An opaque port: carried over mTLS as TCP at once, never sniffed (detection would wait
    // for the client to speak first, and time out).
    assert_eq!(call(&web, None, "10.77.0.2:3306"), "greeting");
    let metrics = web_proxy.admin_get("/metrics").1;
    // GET, DELETE and this one.
    assert!(
        metrics.contains("ward_capture_total{route=\"mesh\"} 3"),
        "{metrics}"
    );
    assert!(!metrics.contains("result=\"timeout\""), "{metrics}");

    // The MeshPolicy says REGISTRY_ONLY: from the next connection on, a destination that
    // is no mesh workload is refused (the sidecar follows its policy directory).
    let policy_file = dir.join("policies").join("p.yaml");
    let policy = std::fs::read_to_string(&policy_file).expect("policy");
    let strict = policy.replace(
        "spec: { default: deny }",
        "spec: { default: deny, outboundTrafficPolicy: REGISTRY_ONLY }",
    );
    assert_ne!(strict, policy);
    let tmp = dir.join("policies").join(".p.yaml.tmp");
    std::fs::write(&tmp, &strict).expect("write policy");
    std::fs::rename(&tmp, &policy_file).expect("replace policy");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while call(&web, None, "10.77.0.2:9000") == "plain" {
        assert!(
            std::time::Instant::now() < deadline,
            "REGISTRY_ONLY never took effect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = web_proxy.admin_get("/metrics").1;
    assert!(
        metrics.contains("ward_capture_refused_total{reason=\"not_in_registry\"}"),
        "{metrics}"
    );
    std::fs::write(&tmp, &policy).expect("write policy");
    std::fs::rename(&tmp, &policy_file).expect("restore policy");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while call(&web, None, "10.77.0.2:9000") != "plain" {
        assert!(
            std::time::Instant::now() < deadline,
            "ALLOW_ANY never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The sidecar's own REGISTRY_ONLY (config): the mesh still works, anything else is
    // refused and counted.
    web_proxy.terminate();
    let _ = web_proxy.wait_exit(Duration::from_secs(10));
    let mut web_proxy = Proxy::spawn_prefixed(
        &dir,
        "web-registry-only",
        &web_cfg("REGISTRY_ONLY"),
        &[],
        &[],
        &as_proxy,
        Some(&web.name),
    );
    web_proxy.wait_ready();
    assert_eq!(call(&web, None, "10.77.0.2:9000"), "");
    let metrics = web_proxy.admin_get("/metrics").1;
    assert!(
        metrics.contains("ward_capture_refused_total{reason=\"not_in_registry\"} 1"),
        "{metrics}"
    );
    let seen = curl(&web, &["http://10.77.0.2:8080/accounts/1"]);
    assert!(
        seen.contains(&format!("x-ward-peer-identity: {web_id}")),
        "{seen}"
    );
    let metrics = web_proxy.admin_get("/metrics").1;
    assert!(
        metrics.contains("ward_capture_total{route=\"mesh\"} 1"),
        "{metrics}"
    );

    // A connection straight to the capture port has itself as destination: refused, as
    // carrying it would loop.
    assert_eq!(call(&web, None, "127.0.0.1:15001"), "");
    let metrics = web_proxy.admin_get("/metrics").1;
    assert!(
        metrics.contains("ward_capture_refused_total{reason=\"loop\"} 1"),
        "{metrics}"
    );
}

#[test]
fn discovery_from_the_control_plane_routes_captured_calls() {
    if skip() {
        return;
    }
    use ward_tests::mesh::Proxy;

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_owned();
    let (web, orders) = (Netns::create(), Netns::create());
    netns::link(&web, "10.77.0.1/24", &orders, "10.77.0.2/24");
    echo_heads(orders.in_thread(|| TcpListener::bind("0.0.0.0:8080").expect("app")));

    // The control plane runs in the orders pod, its port excluded from capture there.
    let (web_id, orders_id) = (
        "spiffe://example.org/ns/default/sa/web",
        "spiffe://example.org/ns/default/sa/orders",
    );
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    std::fs::write(
        policies.join("p.yaml"),
        format!(
            "{}---\napiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {{ name: web-reads, namespace: default }}\n\
             spec: {{ selector: {{ matchLabels: {{ app: orders }} }}, action: ALLOW, rules: [ {{ from: [ {{ principals: [\"{web_id}\"] }} ], to: [ {{ ports: [8080], methods: [GET] }} ] }} ] }}\n",
            ward_tests::mesh::mesh_default("deny")
        ),
    )
    .expect("policy");
    let data = dir.join("cp-data");
    let cp_log = std::fs::File::create(dir.join("cp.log")).expect("log");
    let ward = bin::path("ward");
    let mut cp = orders
        .command(ward.to_str().expect("utf-8"))
        .args([
            "control-plane",
            "--trust-domain",
            "example.org",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--policy-dir")
        .arg(&policies)
        .args(["--listen", "10.77.0.2:15012", "--admin", "127.0.0.1:15014"])
        .stdout(std::process::Stdio::null())
        .stderr(cp_log)
        .spawn()
        .expect("spawn the control plane");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !orders.in_thread(|| std::net::TcpStream::connect("10.77.0.2:15012").is_ok()) {
        assert!(
            std::time::Instant::now() < deadline,
            "control plane not listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::copy(data.join("bundle.pem"), dir.join("bundle.pem")).expect("bootstrap bundle");
    for (sa, id) in [("web", web_id), ("orders", orders_id)] {
        let out = std::process::Command::new(&ward)
            .args(["token", "create", "--data-dir"])
            .arg(&data)
            .args(["--spiffe-id", id, "--labels", &format!("app={sa}")])
            .output()
            .expect("ward token create");
        assert!(out.status.success(), "{out:?}");
        std::fs::write(dir.join(format!("{sa}.token")), &out.stdout).expect("token file");
    }
    for path in ["bundle.pem", "web.token", "orders.token"] {
        let ok = std::process::Command::new("chown")
            .args(["1337:1337"])
            .arg(dir.join(path))
            .status()
            .expect("chown");
        assert!(ok.success());
    }
    let ok = std::process::Command::new("chmod")
        .args(["755"])
        .arg(&dir)
        .status();
    assert!(ok.expect("chmod").success());

    for (pod, args) in [
        (&orders, &["--exclude-inbound-ports", "15012"][..]),
        (&web, &["--control-plane", "10.77.0.2:15012"]),
    ] {
        let out = init(pod, Rules::Nftables, args);
        assert!(out.status.success(), "{out:?}");
    }
    let sidecar = |sa: &str, serving: &str| {
        format!(
            "trust_domain: example.org\n\
             identity: {{ control_plane: \"https://10.77.0.2:15012\", token_file: {sa}.token, bundle: bundle.pem }}\n\
             workload: {{ serving: [{serving}] }}\n\
             capture: {{}}\nadmin: \"127.0.0.1:15000\"\n"
        )
    };
    let start = |ns: &Netns, sa: &str, serving: &str| {
        let prefix = ns.proxy_prefix();
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        let mut proxy = Proxy::spawn_prefixed(
            &dir,
            sa,
            &sidecar(sa, serving),
            &[],
            &[],
            &prefix,
            Some(&ns.name),
        );
        proxy.wait_ready();
        proxy
    };
    let orders_proxy = start(&orders, "orders", "{ address: \"10.77.0.2:8080\" }");
    let web_proxy = start(&web, "web", "");

    // The web sidecar knows the orders pod's address from discovery alone.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = web_proxy.admin_get("/metrics").1;
        if metrics.contains("ward_discovery_endpoints 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no discovery:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = curl(&web, &["http://10.77.0.2:8080/accounts/1"]);
    assert!(
        seen.contains(&format!("x-ward-peer-identity: {web_id}")),
        "{seen}\n{}\n{}\n{}",
        web_proxy.logs(),
        orders_proxy.logs(),
        web_proxy.admin_get("/metrics").1
    );
    let _ = cp.kill();
    let _ = cp.wait();
}

/// The veth device of a namespace made by `netns::link` (the one that is not `lo`).
fn ns_device(ns: &Netns) -> String {
    let out = ns.exec(&["ip", "-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .find(|name| name != "lo")
        .expect("a veth device")
}
