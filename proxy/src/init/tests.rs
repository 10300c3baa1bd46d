use super::*;

#[test]
fn the_rules_capture_everything_but_what_must_pass() {
    let plan = Plan {
        exclude_inbound_ports: vec![8081, 8081],
        exclude_outbound_ports: vec![5432],
        exclude_outbound_cidrs: vec!["10.96.0.1".parse().unwrap(), "fd00::/8".parse().unwrap()],
        exclude_inbound_cidrs: vec!["192.168.0.0/16".parse().unwrap()],
        opaque_ports: vec![3306, 6379],
        exclude_outbound_endpoints: vec!["10.0.0.5:15012".parse().unwrap()],
        ..Plan::default()
    };
    let script = plan.apply_script();
    for line in [
        "table inet ward\ndelete table inet ward\ntable inet ward {",
        "type nat hook output priority -100; policy accept;",
        "meta skuid 1337 return",
        "meta skgid 1337 return",
        "oifname \"lo\" return",
        "tcp dport { 5432 } return",
        "ip daddr { 10.96.0.1/32 } return",
        "ip6 daddr { fd00::/8 } return",
        "ip daddr 10.0.0.5 tcp dport 15012 return",
        "tcp dport { 3306, 6379 } redirect to :15002",
        "meta l4proto tcp redirect to :15001",
        "type nat hook prerouting priority -100; policy accept;",
        "tcp dport { 8081, 15000, 15001, 15002, 15006 } return",
        "ip saddr { 192.168.0.0/16 } return",
        "meta l4proto tcp redirect to :15006",
    ] {
        assert!(script.contains(line), "{line:?} missing:\n{script}");
    }
    // The exclusions come before the redirect in each chain.
    let out =
        &script[script.find("chain outbound").unwrap()..script.find("chain inbound").unwrap()];
    assert!(out.find("skuid").unwrap() < out.find("redirect").unwrap());
    assert!(Plan::undo_script().ends_with("delete table inet ward\n"));
}

#[test]
fn plans_that_cannot_work_are_refused() {
    assert!(Plan::default().check().is_ok());
    let zero = Plan {
        outbound_capture_port: 0,
        ..Plan::default()
    };
    assert!(
        zero.check()
            .unwrap_err()
            .to_string()
            .contains("--outbound-port must be")
    );
    let clash = Plan {
        admin_port: 15001,
        ..Plan::default()
    };
    assert!(
        clash
            .check()
            .unwrap_err()
            .to_string()
            .contains("--admin-port 15001 is also --outbound-port")
    );
}

#[test]
fn cidrs_are_checked() {
    assert_eq!(
        "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    for bad in [
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0",
        "host.example",
        "10.0.0.0/x",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
}

#[test]
fn iptables_rules_say_the_same_per_family() {
    let plan = Plan {
        exclude_outbound_ports: (1000..1020).collect(),
        exclude_outbound_cidrs: vec!["10.96.0.0/12".parse().unwrap(), "fd00::/8".parse().unwrap()],
        exclude_outbound_endpoints: vec!["10.0.0.5:15012".parse().unwrap()],
        opaque_ports: vec![3306],
        ..Plan::default()
    };
    let v4 = Backend::Iptables.script(&plan, false);
    for line in [
        "-A WARD_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A WARD_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A WARD_OUTPUT -p tcp -m multiport --dports 1000,1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012,1013,1014 -j RETURN",
        "-A WARD_OUTPUT -p tcp -m multiport --dports 1015,1016,1017,1018,1019 -j RETURN",
        "-A WARD_OUTPUT -d 10.96.0.0/12 -j RETURN",
        "-A WARD_OUTPUT -p tcp -d 10.0.0.5 --dport 15012 -j RETURN",
        "-A WARD_OUTPUT -p tcp -m multiport --dports 3306 -j REDIRECT --to-ports 15002",
        "-A WARD_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        "-A WARD_INBOUND -p tcp -m multiport --dports 15000,15001,15002,15006 -j RETURN",
        "-A WARD_INBOUND -p tcp -j REDIRECT --to-ports 15006",
        "-A OUTPUT -p tcp -j WARD_OUTPUT",
        "# ip6tables-restore --noflush",
        "-A WARD_OUTPUT -d ::1/128 -j RETURN",
        "-A WARD_OUTPUT -d fd00::/8 -j RETURN",
    ] {
        assert!(v4.contains(line), "{line:?} missing:\n{v4}");
    }
    let (v4_part, v6_part) = v4.split_once("# ip6tables-restore").unwrap();
    assert!(!v4_part.contains("fd00::/8") && !v6_part.contains("10.96.0.0/12"));
    assert!(
        Backend::Iptables
            .script(&plan, true)
            .contains("-X WARD_OUTPUT")
    );
}
