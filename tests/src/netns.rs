//! Network namespaces as pods: each one gets loopback, an address on a veth pair to its
//! peer, and whatever runs in it (`ip netns exec`, or a thread that joins it). Needs root
//! (CI runs as root); [`unavailable`] says why a machine cannot, for the test to say so.

use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why network namespaces (with nftables) cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    for tool in ["ip", "nft", "iptables-restore"] {
        let found = Command::new(tool).arg("-V").output().is_ok();
        if !found {
            return Some(format!(
                "{tool} is not installed (scripts/install-deps.sh installs it)"
            ));
        }
    }
    let probe = Netns::try_new().err();
    probe.map(|e| format!("cannot create a network namespace: {e}"))
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// A fresh namespace with loopback up. Panics with the reason if it cannot be made.
    pub fn create() -> Self {
        Self::try_new().unwrap_or_else(|e| panic!("network namespace: {e}"))
    }

    fn try_new() -> Result<Self, String> {
        let name = format!(
            "ward-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// Runs `argv` inside the namespace and waits for it.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("ip netns exec")
    }

    /// A command that runs inside the namespace (to spawn and keep).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// The command prefix that runs a program in the namespace as the proxy's UID and GID
    /// (1337), as an injected sidecar runs.
    pub fn proxy_prefix(&self) -> Vec<String> {
        [
            "ip",
            "netns",
            "exec",
            &self.name,
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Runs `f` on a thread that joined the namespace: sockets it makes live there.
    pub fn in_thread<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        in_named(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Runs `f` on a thread that joined namespace `name`: sockets it makes live there.
pub fn in_named<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: setns with a namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// Joins two namespaces with a veth pair: `a` gets `a_addr` and `b` gets `b_addr` (both
/// `x.x.x.x/24`).
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let (va, vb) = (
        format!("wa{}-{n}", std::process::id() % 10_000),
        format!("wb{}-{n}", std::process::id() % 10_000),
    );
    run(&[
        "ip", "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns",
        &b.name,
    ])
    .expect("veth pair");
    for (ns, dev, addr) in [(a, &va, a_addr), (b, &vb, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", dev]).expect("address");
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
}

fn run(argv: &[&str]) -> Result<(), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
