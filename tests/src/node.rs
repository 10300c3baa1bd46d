//! A test harness that plays the Kubernetes node for the tests (no kubelet runs): it reads
//! a Pod as the API server stored it (after injection), gives it a network namespace on a
//! bridge with an address, reports that address in the Pod's status, and runs its
//! containers as processes: `ward-init` (the real `ward-proxy init`, root, in the
//! namespace), `ward-proxy` as the native sidecar would run (UID 1337, its configuration
//! only from the container's environment), and a test app on the container's port. The
//! projected token comes from the TokenRequest API (audience and lifetime from the pod's
//! volume) and the trust bundle from the ConfigMap, written where the volumes would mount.
//! The control plane's Service address is mapped to where the control plane listens, as
//! DNS and kube-proxy would.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::k8s::{Cluster, eventually};
use crate::netns::Netns;

/// The bridge the pods hang off, in the root namespace, and the next address on it.
pub struct Node {
    bridge: String,
    /// The root namespace's address on the bridge (the control plane is reached there).
    pub host: Ipv4Addr,
    next: u8,
    dir: PathBuf,
}

/// One running pod: its namespace, address and processes (killed on drop).
pub struct RunningPod {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub name: String,
    sidecar: Child,
    pub log: PathBuf,
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        let _ = self.sidecar.kill();
        let _ = self.sidecar.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn run(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect(argv[0]);
    assert!(
        out.status.success(),
        "{}: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Node {
    /// A bridge `10.78.N.0/24` in the root namespace (N from the process id, so parallel
    /// test processes do not collide).
    pub fn new(dir: &Path) -> Self {
        let n = (std::process::id() % 200) as u8 + 20;
        let bridge = format!("wbr{}", std::process::id() % 100_000);
        let host = Ipv4Addr::new(10, 78, n, 1);
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        run(&["ip", "addr", "add", &format!("{host}/24"), "dev", &bridge]);
        run(&["ip", "link", "set", &bridge, "up"]);
        std::fs::create_dir_all(dir).expect("node dir");
        // The proxies (UID 1337) read their token and bundle here.
        run(&["chmod", "755", &dir.to_string_lossy()]);
        Self {
            bridge,
            host,
            next: 2,
            dir: dir.to_owned(),
        }
    }

    /// A ClusterIP for a Service in this node's range (`10.96.N.last`, N this node's; the
    /// API server's range is 10.96.0.0/16), held by the root namespace so that `service`
    /// can play kube-proxy there.
    pub fn cluster_ip(&self, last: u8) -> Ipv4Addr {
        let ip = Ipv4Addr::new(10, 96, self.host.octets()[2], last);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            &self.bridge,
        ]);
        ip
    }

    /// Runs pod `ns/name` as stored: its sidecar reaches the control plane at `cp`, its app
    /// answers on every container port. Waits until the sidecar is ready.
    pub fn run_pod(
        &mut self,
        cluster: &Cluster,
        ns: &str,
        name: &str,
        cp: SocketAddr,
    ) -> RunningPod {
        let pod: Value = serde_json::from_str(
            cluster
                .kubectl(["get", "pod", name, "-n", ns, "-o", "json"])
                .ok(),
        )
        .expect("pod JSON");
        let (netns, ip) = self.attach(cluster, ns, name);

        let files = self.mounts(cluster, &pod, ns, name);
        let containers = |key: &str| pod["spec"][key].as_array().cloned().unwrap_or_default();
        run_init(&netns, &containers("initContainers"));
        let sidecar_spec = containers("initContainers")
            .into_iter()
            .find(|c| c["name"] == "ward-proxy")
            .expect("the pod was injected");
        let log = files.join("ward-proxy.log");
        let sidecar = self.start_sidecar(&netns, &sidecar_spec, &pod, &files, cp, &log);
        for container in containers("containers") {
            for port in container["ports"].as_array().into_iter().flatten() {
                let port = port["containerPort"].as_u64().expect("port");
                let listener = netns.in_thread(move || {
                    std::net::TcpListener::bind(("0.0.0.0", port as u16)).expect("app port")
                });
                crate::apps::echo_heads(listener);
            }
        }
        let admin: SocketAddr = "127.0.0.1:15000".parse().expect("admin");
        let ns_name = netns.name.clone();
        eventually(
            Duration::from_secs(30),
            "the injected sidecar is ready",
            || {
                let name = ns_name.clone();
                let ready =
                    crate::netns::in_named(&name, move || crate::net::http_get(admin, "/ready"));
                (ready.map(|(s, _)| s) == Some(200)).then_some(())
            },
        );
        RunningPod {
            ns: netns,
            ip,
            name: name.to_owned(),
            sidecar,
            log,
        }
    }

    /// A namespace on the bridge with the next address, reported in the pod's status.
    fn attach(&mut self, cluster: &Cluster, ns: &str, name: &str) -> (Netns, Ipv4Addr) {
        let ip = Ipv4Addr::new(
            self.host.octets()[0],
            self.host.octets()[1],
            self.host.octets()[2],
            self.next,
        );
        self.next += 1;
        let netns = Netns::create();
        let veth = format!("wv{}-{}", std::process::id() % 10_000, self.next);
        run(&[
            "ip",
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns.name,
        ]);
        run(&["ip", "link", "set", &veth, "master", &self.bridge, "up"]);
        netns
            .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .expect("pod address");
        netns.ip(&["link", "set", "eth0", "up"]).expect("pod link");
        // As a node gives its pods: everything else through the node (ClusterIPs too).
        netns
            .ip(&["route", "add", "default", "via", &self.host.to_string()])
            .expect("pod default route");
        let status = serde_json::json!({ "status": {
            "phase": "Running", "podIP": ip.to_string(), "podIPs": [{ "ip": ip.to_string() }] } });
        cluster
            .kubectl([
                "patch",
                "pod",
                name,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ])
            .ok();
        (netns, ip)
    }

    /// Where the pod's volumes would mount: its token (TokenRequest, bound to the pod,
    /// audience ward) and the trust bundle (the ConfigMap), readable by UID 1337.
    fn mounts(&self, cluster: &Cluster, pod: &Value, ns: &str, name: &str) -> PathBuf {
        let files = self.dir.join(format!("{ns}-{name}"));
        std::fs::create_dir_all(&files).expect("pod dir");
        let account = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let token = cluster
            .kubectl([
                "create",
                "token",
                account,
                "-n",
                ns,
                "--audience",
                "ward",
                "--duration",
                "10m",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                name,
            ])
            .ok()
            .trim()
            .to_owned();
        std::fs::write(files.join("token"), token).expect("token");
        let bundle = cluster.trust_bundle(ns);
        std::fs::write(files.join("bundle.pem"), bundle).expect("bundle");
        run(&["chown", "-R", "1337:1337", &files.to_string_lossy()]);
        run(&["chmod", "755", &files.to_string_lossy()]);
        files
    }

    /// `ward-proxy sidecar` with the container's environment (fieldRefs resolved, the
    /// mounted files and the control plane's Service mapped to where they are here).
    fn start_sidecar(
        &self,
        netns: &Netns,
        spec: &Value,
        pod: &Value,
        files: &Path,
        cp: SocketAddr,
        log: &Path,
    ) -> Child {
        let prefix = netns.proxy_prefix();
        let mut command = Command::new(&prefix[0]);
        command.args(&prefix[1..]);
        command.arg(crate::bin::path("ward-proxy"));
        for a in spec["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            command.arg(a);
        }
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("WARD_LOG", "info,ward_proxy=debug");
        for var in spec["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().expect("env name");
            let value = match (
                name,
                var["value"].as_str(),
                var["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                ("WARD_IDENTITY_TOKEN_FILE", _, _) => files.join("token").display().to_string(),
                ("WARD_IDENTITY_BUNDLE", _, _) => files.join("bundle.pem").display().to_string(),
                ("WARD_IDENTITY_CONTROL_PLANE", _, _) => format!("https://{cp}"),
                (_, Some(v), _) => v.to_owned(),
                (_, None, Some("metadata.name")) => pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                (_, None, Some("metadata.namespace")) => pod["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                _ => continue,
            };
            command.env(name, value);
        }
        let out = std::fs::File::create(log).expect("sidecar log");
        command
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("ward-proxy sidecar")
    }
}

/// Runs the `ward-init` container: the real `ward-proxy init` with its arguments, as root
/// in the pod's namespace.
fn run_init(netns: &Netns, init_containers: &[Value]) {
    for init in init_containers {
        if init["name"] == "ward-init" {
            let args: Vec<String> = init["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            let mut argv = vec![crate::bin::path("ward-proxy").display().to_string()];
            argv.extend(args);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = netns.exec(&argv);
            assert!(out.status.success(), "ward-init: {out:?}");
        }
    }
}

/// Plays kube-proxy for a Service: accepts on `listen` and carries each connection to the
/// first of `backends` that accepts one (so a dead replica is passed over), until the
/// test process ends.
pub fn service(listen: SocketAddr, backends: Vec<SocketAddr>) {
    let listener = std::net::TcpListener::bind(listen).expect("service address");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = backends.iter().find_map(|b| {
                std::net::TcpStream::connect_timeout(b, Duration::from_millis(300)).ok()
            });
            let Some(upstream) = upstream else { continue };
            for (mut from, mut to) in [
                (client.try_clone(), upstream.try_clone()),
                (upstream.try_clone(), client.try_clone()),
            ]
            .into_iter()
            .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
            {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

impl RunningPod {
    /// The serial of the sidecar's current SVID (its admin `/certs`).
    pub fn serial(&self) -> String {
        let admin: SocketAddr = "127.0.0.1:15000".parse().expect("admin");
        let body =
            crate::netns::in_named(&self.ns.name, move || crate::net::http_get(admin, "/certs"))
                .map(|(_, body)| body)
                .unwrap_or_default();
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["serial"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}
