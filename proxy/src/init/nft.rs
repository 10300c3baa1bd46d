//! The capture rules as an nftables transaction.

use std::fmt::Write as _;

use super::{Cidr, Plan, TABLE};

/// Replaces the table with the plan's rules: creating it first makes the delete succeed
/// whether or not an earlier run left one, and the whole transaction applies or nothing.
pub(super) fn apply(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# ward-proxy init: capture rules (replaces any earlier ones)"
    );
    let _ = writeln!(s, "table inet {TABLE}");
    let _ = writeln!(s, "delete table inet {TABLE}");
    let _ = writeln!(s, "table inet {TABLE} {{");
    outbound(&mut s, plan);
    inbound(&mut s, plan);
    let _ = writeln!(s, "}}");
    s
}

/// Removes the table, whether or not one is there.
pub(super) fn undo() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Connections the pod opens: the proxy's own and loopback leave as they are, and the
/// excluded ports and destinations; every other TCP connection goes to the outbound port.
fn outbound(s: &mut String, plan: &Plan) {
    let _ = writeln!(s, "  chain outbound {{");
    let _ = writeln!(s, "    type nat hook output priority -100; policy accept;");
    let _ = writeln!(s, "    meta skuid {} return", plan.proxy_uid);
    let _ = writeln!(s, "    meta skgid {} return", plan.proxy_gid);
    let _ = writeln!(s, "    oifname \"lo\" return");
    let _ = writeln!(s, "    ip daddr 127.0.0.0/8 return");
    let _ = writeln!(s, "    ip6 daddr ::1 return");
    ports(s, "tcp dport", &plan.exclude_outbound_ports);
    cidrs(s, "daddr", &plan.exclude_outbound_cidrs);
    for e in &plan.exclude_outbound_endpoints {
        let family = if e.is_ipv4() { "ip" } else { "ip6" };
        let _ = writeln!(
            s,
            "    {family} daddr {} tcp dport {} return",
            e.ip(),
            e.port()
        );
    }
    if let Some(opaque) = list(&plan.opaque_ports) {
        let _ = writeln!(
            s,
            "    tcp dport {{ {opaque} }} redirect to :{}",
            plan.outbound_opaque_port
        );
    }
    let _ = writeln!(
        s,
        "    meta l4proto tcp redirect to :{}",
        plan.outbound_capture_port
    );
    let _ = writeln!(s, "  }}");
}

/// Connections into the pod: the capture ports themselves (a peer sidecar dialling them),
/// the admin port, excluded ports and sources reach their port directly; every other TCP
/// connection goes to the inbound port.
fn inbound(s: &mut String, plan: &Plan) {
    let _ = writeln!(s, "  chain inbound {{");
    let _ = writeln!(
        s,
        "    type nat hook prerouting priority -100; policy accept;"
    );
    let _ = writeln!(s, "    iifname \"lo\" return");
    let mut direct = vec![
        plan.inbound_capture_port,
        plan.outbound_capture_port,
        plan.outbound_opaque_port,
        plan.admin_port,
    ];
    direct.extend(&plan.exclude_inbound_ports);
    ports(s, "tcp dport", &direct);
    cidrs(s, "saddr", &plan.exclude_inbound_cidrs);
    let _ = writeln!(
        s,
        "    meta l4proto tcp redirect to :{}",
        plan.inbound_capture_port
    );
    let _ = writeln!(s, "  }}");
}

fn ports(s: &mut String, what: &str, ports: &[u16]) {
    if let Some(list) = list(ports) {
        let _ = writeln!(s, "    {what} {{ {list} }} return");
    }
}

/// Ports as an nftables set body, sorted and without repeats; `None` if there are none.
fn list(ports: &[u16]) -> Option<String> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    (!list.is_empty()).then(|| list.join(", "))
}

fn cidrs(s: &mut String, dir: &str, cidrs: &[Cidr]) {
    for (family, v4) in [("ip", true), ("ip6", false)] {
        let list: Vec<String> = cidrs
            .iter()
            .filter(|c| c.addr.is_ipv4() == v4)
            .map(ToString::to_string)
            .collect();
        if !list.is_empty() {
            let _ = writeln!(s, "    {family} {dir} {{ {} }} return", list.join(", "));
        }
    }
}
