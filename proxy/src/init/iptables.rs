//! The capture rules for machines without nftables: two chains in the `nat` table
//! (`WARD_OUTPUT`, `WARD_INBOUND`) written with `iptables-restore --noflush` (one
//! transaction per address family), and the jumps to them from `OUTPUT` and `PREROUTING`,
//! added only when missing so a rerun never duplicates them.

use std::fmt::Write as _;

use super::{Cidr, Plan};

pub(super) const OUTBOUND: &str = "WARD_OUTPUT";
pub(super) const INBOUND: &str = "WARD_INBOUND";

/// The restore input for one family (`v6`: ip6tables), replacing the chains' rules.
/// `jumps_missing` says which of the two jumps must still be added.
pub(super) fn apply(plan: &Plan, v6: bool, jumps_missing: [bool; 2]) -> String {
    let mut s = String::from("*nat\n");
    let _ = writeln!(s, ":{OUTBOUND} - [0:0]\n:{INBOUND} - [0:0]");
    let _ = writeln!(s, "-F {OUTBOUND}\n-F {INBOUND}");
    let out = |s: &mut String, rule: &str| {
        let _ = writeln!(s, "-A {OUTBOUND} {rule}");
    };
    out(
        &mut s,
        &format!("-m owner --uid-owner {} -j RETURN", plan.proxy_uid),
    );
    out(
        &mut s,
        &format!("-m owner --gid-owner {} -j RETURN", plan.proxy_gid),
    );
    out(&mut s, "-o lo -j RETURN");
    out(
        &mut s,
        if v6 {
            "-d ::1/128 -j RETURN"
        } else {
            "-d 127.0.0.0/8 -j RETURN"
        },
    );
    for ports in chunks(&plan.exclude_outbound_ports) {
        out(
            &mut s,
            &format!("-p tcp -m multiport --dports {ports} -j RETURN"),
        );
    }
    for c in family(&plan.exclude_outbound_cidrs, v6) {
        out(&mut s, &format!("-d {c} -j RETURN"));
    }
    for e in plan
        .exclude_outbound_endpoints
        .iter()
        .filter(|e| e.is_ipv6() == v6)
    {
        out(
            &mut s,
            &format!("-p tcp -d {} --dport {} -j RETURN", e.ip(), e.port()),
        );
    }
    for ports in chunks(&plan.opaque_ports) {
        let to = plan.outbound_opaque_port;
        out(
            &mut s,
            &format!("-p tcp -m multiport --dports {ports} -j REDIRECT --to-ports {to}"),
        );
    }
    out(
        &mut s,
        &format!(
            "-p tcp -j REDIRECT --to-ports {}",
            plan.outbound_capture_port
        ),
    );

    let inb = |s: &mut String, rule: &str| {
        let _ = writeln!(s, "-A {INBOUND} {rule}");
    };
    inb(&mut s, "-i lo -j RETURN");
    let mut direct = vec![
        plan.inbound_capture_port,
        plan.outbound_capture_port,
        plan.outbound_opaque_port,
        plan.admin_port,
    ];
    direct.extend(&plan.exclude_inbound_ports);
    for ports in chunks(&direct) {
        inb(
            &mut s,
            &format!("-p tcp -m multiport --dports {ports} -j RETURN"),
        );
    }
    for c in family(&plan.exclude_inbound_cidrs, v6) {
        inb(&mut s, &format!("-s {c} -j RETURN"));
    }
    inb(
        &mut s,
        &format!(
            "-p tcp -j REDIRECT --to-ports {}",
            plan.inbound_capture_port
        ),
    );
    if jumps_missing[0] {
        let _ = writeln!(s, "-A OUTPUT -p tcp -j {OUTBOUND}");
    }
    if jumps_missing[1] {
        let _ = writeln!(s, "-A PREROUTING -p tcp -j {INBOUND}");
    }
    s.push_str("COMMIT\n");
    s
}

/// The restore input that removes the chains and the jumps present (`jumps_present`).
pub(super) fn undo(jumps_present: [bool; 2]) -> String {
    let mut s = String::from("*nat\n");
    if jumps_present[0] {
        let _ = writeln!(s, "-D OUTPUT -p tcp -j {OUTBOUND}");
    }
    if jumps_present[1] {
        let _ = writeln!(s, "-D PREROUTING -p tcp -j {INBOUND}");
    }
    let _ = writeln!(s, ":{OUTBOUND} - [0:0]\n:{INBOUND} - [0:0]");
    let _ = writeln!(
        s,
        "-F {OUTBOUND}\n-F {INBOUND}\n-X {OUTBOUND}\n-X {INBOUND}"
    );
    s.push_str("COMMIT\n");
    s
}

fn family(cidrs: &[Cidr], v6: bool) -> impl Iterator<Item = &Cidr> {
    cidrs.iter().filter(move |c| c.addr.is_ipv6() == v6)
}

/// Ports in `multiport` lists of at most 15, sorted, without repeats.
fn chunks(ports: &[u16]) -> Vec<String> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    ports
        .chunks(15)
        .map(|c| c.iter().map(u16::to_string).collect::<Vec<_>>().join(","))
        .collect()
}
