//! `ward-proxy init`: the rules that make a pod's traffic go through its sidecar without
//! the app knowing. Run as root (or with NET_ADMIN) in the pod's network namespace before
//! the app starts.
//!
//! Outbound TCP from the pod goes to the outbound capture port, inbound TCP to the inbound
//! capture port; the sidecar recovers each connection's original destination. Never
//! captured: the proxy's own traffic (by its UID and GID, so it cannot loop), loopback, the
//! capture and admin ports, and whatever ports and CIDRs are excluded.
//!
//! The rules are one nftables table, `inet ward`, written in one transaction (`nft -f`):
//! either all of it is in force or none of it, a rerun replaces it (never duplicates), and
//! `--undo` deletes it. `--dry-run` prints the transaction instead. A machine without
//! `nft` gets the same rules as two iptables chains ([`iptables`]), one
//! `iptables-restore` transaction per address family.

mod iptables;
mod nft;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::str::FromStr;

/// The table every rule lives in.
pub const TABLE: &str = "ward";

/// What to capture and what to leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub inbound_capture_port: u16,
    pub outbound_capture_port: u16,
    /// Where outbound connections to opaque ports go: carried as TCP, never sniffed (a
    /// protocol where the server speaks first would wait out detection).
    pub outbound_opaque_port: u16,
    pub admin_port: u16,
    /// Destination ports whose traffic is opaque TCP.
    pub opaque_ports: Vec<u16>,
    /// Inbound ports that reach the app directly (health checks from the node, say).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports that leave the pod uncaptured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Destinations that leave the pod uncaptured (the control plane's, the API server's).
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Sources whose inbound connections reach the app directly.
    pub exclude_inbound_cidrs: Vec<Cidr>,
    /// Single `IP:PORT` destinations left uncaptured (the control plane's).
    pub exclude_outbound_endpoints: Vec<SocketAddr>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            proxy_uid: 1337,
            proxy_gid: 1337,
            inbound_capture_port: 15006,
            outbound_capture_port: 15001,
            outbound_opaque_port: 15002,
            admin_port: 15000,
            opaque_ports: Vec::new(),
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            exclude_inbound_cidrs: Vec::new(),
            exclude_outbound_endpoints: Vec::new(),
        }
    }
}

impl Plan {
    /// Refuses a plan that cannot work: a capture or admin port of 0, or two of them alike.
    pub fn check(&self) -> Result<(), InitError> {
        let named = [
            ("--inbound-port", self.inbound_capture_port),
            ("--outbound-port", self.outbound_capture_port),
            ("--outbound-opaque-port", self.outbound_opaque_port),
            ("--admin-port", self.admin_port),
        ];
        for (i, (flag, port)) in named.iter().enumerate() {
            if *port == 0 {
                return Err(InitError::Invalid(format!("{flag} must be 1-65535")));
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, p)| p == port) {
                return Err(InitError::Invalid(format!("{flag} {port} is also {other}")));
            }
        }
        Ok(())
    }

    /// The nftables transaction that puts this plan in force (replacing any earlier one).
    pub fn apply_script(&self) -> String {
        nft::apply(self)
    }

    /// The transaction that removes the rules (none in force is fine).
    pub fn undo_script() -> String {
        nft::undo()
    }
}

/// An address range, `10.0.0.0/8` or `fd00::/8` (an address alone is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why the rules were not put in force. Nothing was changed in any case: `nft -f` applies
/// a whole transaction or none of it.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}; nothing was changed")]
    Invalid(String),
    #[error(
        "neither nft nor iptables-restore is installed (install nftables); nothing was changed"
    )]
    NoTool,
    #[error(
        "not permitted to change the network rules: run as root or with NET_ADMIN in the pod's network namespace; nothing was changed"
    )]
    NotPermitted,
    #[error("the rules were refused: {0}; nothing was changed")]
    Refused(String),
}

/// Which tool writes the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    /// nftables if the machine has `nft`, else iptables if it has `iptables-restore`.
    pub fn detect() -> Result<Self, InitError> {
        if found("nft") {
            Ok(Backend::Nftables)
        } else if found("iptables-restore") {
            Ok(Backend::Iptables)
        } else {
            Err(InitError::NoTool)
        }
    }

    /// What would be run, for `--dry-run`.
    pub fn script(self, plan: &Plan, undo: bool) -> String {
        match (self, undo) {
            (Backend::Nftables, false) => plan.apply_script(),
            (Backend::Nftables, true) => Plan::undo_script(),
            (Backend::Iptables, false) => format!(
                "# iptables-restore --noflush\n{}# ip6tables-restore --noflush\n{}",
                iptables::apply(plan, false, [true, true]),
                iptables::apply(plan, true, [true, true])
            ),
            (Backend::Iptables, true) => format!(
                "# iptables-restore --noflush\n{0}# ip6tables-restore --noflush\n{0}",
                iptables::undo([true, true])
            ),
        }
    }

    /// Puts the plan in force (or, with `undo`, removes the rules).
    pub fn run(self, plan: &Plan, undo: bool) -> Result<(), InitError> {
        match self {
            Backend::Nftables => run_nft(&self.script(plan, undo)),
            Backend::Iptables => {
                for (v6, tool, restore) in [
                    (false, "iptables", "iptables-restore"),
                    (true, "ip6tables", "ip6tables-restore"),
                ] {
                    let jumps = [
                        jump_present(tool, "OUTPUT", iptables::OUTBOUND),
                        jump_present(tool, "PREROUTING", iptables::INBOUND),
                    ];
                    if undo && !chain_present(tool, iptables::OUTBOUND) {
                        continue;
                    }
                    let script = if undo {
                        iptables::undo(jumps)
                    } else {
                        iptables::apply(plan, v6, jumps.map(|present| !present))
                    };
                    run_tool(restore, &["--noflush"], &script)?;
                }
                Ok(())
            }
        }
    }
}

fn found(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn jump_present(tool: &str, chain: &str, target: &str) -> bool {
    Command::new(tool)
        .args(["-t", "nat", "-C", chain, "-p", "tcp", "-j", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn chain_present(tool: &str, chain: &str) -> bool {
    Command::new(tool)
        .args(["-t", "nat", "-n", "-L", chain])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs an nftables transaction.
pub fn run_nft(script: &str) -> Result<(), InitError> {
    run_tool("nft", &["-f", "-"], script)
}

/// Runs `tool args` with `script` on its standard input.
fn run_tool(tool: &str, args: &[&str], script: &str) -> Result<(), InitError> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => InitError::NoTool,
            _ => InitError::Refused(e.to_string()),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| InitError::Refused(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| InitError::Refused(e.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Operation not permitted")
        || stderr.contains("Permission denied")
        || stderr.contains("you must be root")
    {
        return Err(InitError::NotPermitted);
    }
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("unknown error");
    Err(InitError::Refused(first.trim().to_owned()))
}

#[cfg(test)]
mod tests;
