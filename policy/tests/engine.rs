//! The engine's decisions, table by table, from YAML as operators write it; and the loader's
//! errors, each at the file, line and column of the mistake.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ward_policy::compile::{grpc_route, namespace_of};
use ward_policy::{Authority, Call, Decider, HttpCall, MeshDefault, PolicySet, load_sources};

fn load(yaml: &str) -> PolicySet {
    load_sources(&[(PathBuf::from("p.yaml"), yaml.to_owned())])
        .unwrap_or_else(|e| panic!("policy must load:\n{e}"))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A call described in one line for tables.
struct Req {
    from: &'static str,
    port: u16,
    http: Option<(&'static str, &'static str)>,
    headers: Vec<(String, String)>,
    host: Option<&'static str>,
}

fn http(from: &'static str, method: &'static str, path: &'static str) -> Req {
    Req {
        from,
        port: 8080,
        http: Some((method, path)),
        headers: vec![],
        host: None,
    }
}

fn tcp(from: &'static str, port: u16) -> Req {
    Req {
        from,
        port,
        http: None,
        headers: vec![],
        host: None,
    }
}

fn decide(set: &PolicySet, ns: &str, lbls: &[(&str, &str)], r: &Req) -> ward_policy::Decision {
    let wl = set.for_workload(ns, &labels(lbls));
    let authority = r
        .host
        .map(|h| Authority::parse(h, 80).expect("test hosts are valid"));
    let http = r.http.map(|(method, path)| HttpCall {
        method,
        path,
        authority: authority.as_ref(),
        headers: &r.headers,
        auth: None,
    });
    wl.decide(&Call {
        principal: r.from,
        namespace: namespace_of(r.from),
        port: r.port,
        http,
    })
}

const WEB: &str = "spiffe://bank.example/ns/web/sa/frontend";
const BATCH: &str = "spiffe://bank.example/ns/batch/sa/report";
const EVIL: &str = "spiffe://bank.example/ns/web/sa/evil";

const ACCOUNTS: &str = "\
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: accounts-read, namespace: bank }
spec:
  selector: { matchLabels: { app: accounts } }
  action: ALLOW
  rules:
  - from:
    - principals: [\"spiffe://bank.example/ns/web/sa/frontend\"]
    to:
    - ports: [8080]
      methods: [GET]
      paths: [\"/accounts/*\"]
";

#[test]
fn allow_rule_fields_must_all_match() {
    let set = load(ACCOUNTS);
    let ns = "bank";
    let app = [("app", "accounts")];
    let cases = [
        (http(WEB, "GET", "/accounts/42"), true),
        (http(WEB, "POST", "/accounts/42"), false),
        (http(WEB, "GET", "/admin"), false),
        (http(EVIL, "GET", "/accounts/42"), false),
        (
            Req {
                port: 9090,
                ..http(WEB, "GET", "/accounts/42")
            },
            false,
        ),
    ];
    for (req, allowed) in cases {
        let d = decide(&set, ns, &app, &req);
        assert_eq!(d.allowed, allowed, "{:?}", req.http);
    }
    let d = decide(&set, ns, &app, &http(WEB, "GET", "/accounts/1"));
    assert_eq!(
        d.decider,
        Decider::Rule {
            policy: "bank/accounts-read".into(),
            rule: 0
        }
    );
    let d = decide(&set, ns, &app, &http(WEB, "DELETE", "/accounts/1"));
    assert_eq!(d.decider, Decider::NoAllowMatched);
    assert_eq!(d.decider.policy_label(), "default:deny");
}

#[test]
fn every_match_kind_and_negation() {
    let set = load(
        "\
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: kinds, namespace: bank }
spec:
  action: ALLOW
  rules:
  - from: [ { principals: [\"spiffe://bank.example/ns/web/*\"], notPrincipals: [\"*/sa/evil\"] } ]
    to: [ { paths: [\"*.json\"], notPaths: [\"/private/*\"], notMethods: [DELETE] } ]
  - from: [ { namespaces: [\"bat*\"], notNamespaces: [batch-old] } ]
    to: [ { notPorts: [22], hosts: [\"*.bank.example\"] } ]
  - to: [ { grpc: { service: bank.v1.Ledger, methods: [\"Get*\"] } } ]
  - when:
    - { key: \"request.headers[x-tenant]\", values: [\"eu-*\"] }
    - { key: \"request.headers[x-debug]\", present: false }
",
    );
    let ns = "bank";
    let h = |name: &str, v: &str| (name.to_owned(), v.to_owned());
    let cases: Vec<(Req, bool, &str)> = vec![
        (
            http(WEB, "GET", "/x/a.json"),
            true,
            "prefix principal + suffix path",
        ),
        (
            http(EVIL, "GET", "/x/a.json"),
            false,
            "notPrincipals suffix",
        ),
        (http(WEB, "GET", "/private/a.json"), false, "notPaths"),
        (http(WEB, "DELETE", "/x/a.json"), false, "notMethods"),
        (http(WEB, "GET", "/x/a.xml"), false, "paths suffix"),
        (
            Req {
                host: Some("api.BANK.example"),
                ..http(BATCH, "GET", "/")
            },
            true,
            "namespace prefix + host suffix",
        ),
        (
            Req {
                host: Some("api.bank.example"),
                port: 22,
                ..http(BATCH, "GET", "/")
            },
            false,
            "notPorts",
        ),
        (
            Req {
                host: Some("evil.com"),
                ..http(BATCH, "GET", "/")
            },
            false,
            "hosts",
        ),
        (
            http(EVIL, "POST", "/bank.v1.Ledger/GetBalance"),
            true,
            "grpc",
        ),
        (
            http(EVIL, "POST", "/bank.v1.Ledger/Transfer"),
            false,
            "grpc method",
        ),
        (
            http(EVIL, "POST", "/bank.v1.Ledger/GetBalance/x"),
            false,
            "grpc needs /service/method",
        ),
        (
            Req {
                headers: vec![h("X-Tenant", "eu-west")],
                ..http(EVIL, "GET", "/")
            },
            true,
            "header value prefix",
        ),
        (
            Req {
                headers: vec![h("x-tenant", "us-east")],
                ..http(EVIL, "GET", "/")
            },
            false,
            "header value",
        ),
        (
            Req {
                headers: vec![h("x-tenant", "eu-west"), h("x-debug", "1")],
                ..http(EVIL, "GET", "/")
            },
            false,
            "present: false",
        ),
        (http(EVIL, "GET", "/"), false, "header absent"),
    ];
    for (req, allowed, why) in cases {
        assert_eq!(decide(&set, ns, &[], &req).allowed, allowed, "{why}");
    }
    // namespaces only match callers whose ID has one.
    let no_ns = "spiffe://bank.example/batch-job";
    let req = Req {
        host: Some("a.bank.example"),
        ..http(no_ns, "GET", "/")
    };
    assert!(!decide(&set, ns, &[], &req).allowed);
}

#[test]
fn deny_beats_allow_beats_default_and_audit_changes_nothing() {
    let base = format!(
        "{ACCOUNTS}---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{ name: no-admin, namespace: ward-system }}
spec:
  action: DENY
  rules: [ {{ to: [ {{ paths: [\"/accounts/admin*\"] }} ] }} ]
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{ name: watch, namespace: bank }}
spec:
  action: AUDIT
  rules: [ {{ to: [ {{ methods: [GET] }} ] }} ]
"
    );
    let set = load(&base);
    let app = [("app", "accounts")];
    let d = decide(&set, "bank", &app, &http(WEB, "GET", "/accounts/admin"));
    assert!(!d.allowed);
    assert_eq!(
        d.decider,
        Decider::Rule {
            policy: "ward-system/no-admin".into(),
            rule: 0
        }
    );
    assert_eq!(d.verdict(), "AUDIT+DENY");
    let d = decide(&set, "bank", &app, &http(WEB, "GET", "/accounts/1"));
    assert!(d.allowed);
    assert_eq!(d.verdict(), "AUDIT+ALLOW");
    assert_eq!(
        d.audit,
        Some(Decider::Rule {
            policy: "bank/watch".into(),
            rule: 0
        })
    );
    let d = decide(&set, "bank", &app, &http(WEB, "POST", "/accounts/1"));
    assert_eq!(d.verdict(), "DENY", "AUDIT did not match and did not allow");

    // Without ALLOW policies for the workload, the mesh default decides; AUDIT alone
    // allows nothing.
    let d = decide(&set, "bank", &[("app", "ledger")], &http(WEB, "GET", "/x"));
    assert_eq!(
        (d.allowed, d.decider),
        (false, Decider::Default(MeshDefault::Deny))
    );
    assert!(d.audit.is_some());
}

#[test]
fn mesh_defaults_by_name() {
    for (name, allowed) in [
        ("deny", false),
        ("allow-authenticated", true),
        ("allow", true),
    ] {
        let set = load(&format!(
            "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{ name: mesh, namespace: ward-system }}\nspec: {{ default: {name} }}\n"
        ));
        let d = decide(&set, "any", &[], &http(WEB, "GET", "/"));
        assert_eq!(d.allowed, allowed, "{name}");
        assert_eq!(d.decider.to_string(), format!("default:{name}"));
    }
}

#[test]
fn namespace_scoping_and_selectors() {
    let set = load(ACCOUNTS);
    // Other namespace, or labels that do not match: the policy does not apply.
    let d = decide(
        &set,
        "other",
        &[("app", "accounts")],
        &http(WEB, "GET", "/accounts/1"),
    );
    assert_eq!(d.decider, Decider::Default(MeshDefault::Deny));
    let d = decide(
        &set,
        "bank",
        &[("app", "ledger")],
        &http(WEB, "GET", "/accounts/1"),
    );
    assert_eq!(d.decider, Decider::Default(MeshDefault::Deny));
    assert_eq!(
        set.for_workload("bank", &labels(&[("app", "accounts"), ("v", "2")]))
            .len(),
        1
    );
}

#[test]
fn tcp_connections_and_l7_rules() {
    let set = load(
        "\
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: allow, namespace: db }
spec:
  action: ALLOW
  rules:
  - from: [ { namespaces: [web] } ]
    to: [ { ports: [5432] } ]
  - from: [ { namespaces: [batch] } ]
    to: [ { ports: [5432], methods: [GET] } ]
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: deny, namespace: db }
spec:
  action: DENY
  rules:
  - from: [ { principals: [\"*/sa/evil\"] } ]
    to: [ { ports: [5432], paths: [\"/never\"] } ]
  - from: [ { principals: [\"*/sa/evil\"] } ]
    to: [ { ports: [6000], paths: [\"/never\"] } ]
",
    );
    // A pure L4 ALLOW matches a TCP connection.
    assert!(decide(&set, "db", &[], &tcp(WEB, 5432)).allowed);
    // An ALLOW rule that needs HTTP facts never matches a TCP connection.
    let d = decide(&set, "db", &[], &tcp(BATCH, 5432));
    assert_eq!((d.allowed, d.decider), (false, Decider::NoAllowMatched));
    // A DENY rule with HTTP fields matches on its L4 part alone: fail closed.
    let d = decide(&set, "db", &[], &tcp(EVIL, 5432));
    assert!(!d.allowed);
    assert_eq!(
        d.decider,
        Decider::Rule {
            policy: "db/deny".into(),
            rule: 0
        }
    );
    // ...but its L4 part must still match: the port 6000 rule does not apply on 5432.
    assert_eq!(d.decider.rule(), Some(0));
    // Over HTTP the DENY rule needs its path.
    assert!(
        decide(
            &set,
            "db",
            &[],
            &Req {
                port: 5432,
                ..http(EVIL, "GET", "/x")
            }
        )
        .allowed
    );
}

#[test]
fn helpers_read_ids_and_grpc_paths() {
    assert_eq!(namespace_of(WEB), Some("web"));
    assert_eq!(namespace_of("spiffe://td/x/y"), None);
    assert_eq!(
        grpc_route("/bank.v1.Ledger/Get"),
        Some(("bank.v1.Ledger", "Get"))
    );
    assert_eq!(grpc_route("/a/b/c"), None);
    assert_eq!(grpc_route("/a"), None);
}

/// Each error kind reports the file, line and column of the mistake.
#[test]
fn load_errors_point_at_the_mistake() {
    let head = "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: p, namespace: n }\n";
    let cases: Vec<(String, usize, usize, &str)> = vec![
        (format!("{head}spec:\n  action: ALLOW\n  rules:\n  - from:\n    - principals: [\"spiffe://Bad/x\"]\n"), 8, 19, "bad SPIFFE ID"),
        (format!("{head}spec:\n  action: PERMIT\n"), 5, 11, "unknown variant `PERMIT`"),
        (format!("{head}spec:\n  action: ALLOW\n  rulez: []\n"), 6, 3, "unknown field `rulez`"),
        (format!("{head}spec:\n  action: ALLOW\n  rules:\n  - to:\n    - paths: [\"/a/*/b\"]\n"), 8, 14, "'*' may only stand"),
        (format!("{head}spec:\n  action: ALLOW\n  rules:\n  - to:\n    - methods: [get]\n"), 8, 16, "upper-case"),
        (format!("{head}spec:\n  action: ALLOW\n  rules:\n  - when:\n    - {{ key: \"headers.x\" }}\n"), 8, 7, "request.headers[NAME]"),
        (format!("{head}spec: [unclosed\n"), 5, 1, "did not find expected"),
        ("apiVersion: v1\nkind: AuthorizationPolicy\nmetadata: { name: p, namespace: n }\nspec: { action: ALLOW }\n".into(), 1, 1, "apiVersion"),
        ("apiVersion: ward.dev/v1alpha1\nkind: Route\n".into(), 1, 1, "unknown kind"),
        ("apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: p }\nspec: { action: ALLOW }\n".into(), 1, 1, "metadata.namespace is required"),
    ];
    for (yaml, line, column, reason) in cases {
        let text = format!("# leading comment\n---\n{yaml}");
        let err = load_sources(&[(PathBuf::from("policies/a.yaml"), text)]).expect_err(reason);
        assert_eq!(err.0.len(), 1, "{err}");
        let e = &err.0[0];
        assert_eq!(e.file, PathBuf::from("policies/a.yaml"));
        assert_eq!((e.line, e.column), (line + 2, column), "{reason}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("policies/a.yaml:{}:{}: ", line + 2, column))
        );
        assert!(e.reason.contains(reason), "{reason}: {e}");
    }
}

#[test]
fn duplicates_and_misplaced_mesh_policies_are_refused() {
    let doc = "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: p, namespace: n }\nspec: { action: ALLOW }\n";
    let err = load_sources(&[
        (PathBuf::from("a.yaml"), doc.into()),
        (PathBuf::from("b.yaml"), doc.into()),
    ])
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("b.yaml:1:1: policy n/p is already defined at a.yaml:1"),
        "{err}"
    );
    let mesh = "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: { name: m, namespace: bank }\nspec: { default: allow }\n";
    let err = load_sources(&[(PathBuf::from("m.yaml"), mesh.into())]).unwrap_err();
    assert!(
        err.to_string()
            .contains("MeshPolicy belongs in namespace ward-system"),
        "{err}"
    );
}

#[test]
fn the_first_match_in_policy_order_wins_across_the_principal_index() {
    let doc = |name: &str, from: &str, to: &str| {
        format!(
            "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name}, namespace: bank }}\nspec:\n  action: ALLOW\n  rules:\n  - from: [ {from} ]\n    to: [ {to} ]\n---\n"
        )
    };
    let yaml = [
        doc("a-general", "{ namespaces: [web] }", "{ paths: [\"/x\"] }"),
        doc(
            "b-exact",
            &format!("{{ principals: [\"{WEB}\"] }}"),
            "{ ports: [8080] }",
        ),
        doc(
            "c-exact-later",
            &format!("{{ principals: [\"{WEB}\", \"{BATCH}\"] }}"),
            "{ paths: [\"/z\"] }",
        ),
    ]
    .concat();
    let set = load(&yaml);
    let rule = |name: &str| Decider::Rule {
        policy: format!("bank/{name}").as_str().into(),
        rule: 0,
    };
    assert_eq!(
        decide(&set, "bank", &[], &http(WEB, "GET", "/x")).decider,
        rule("a-general")
    );
    assert_eq!(
        decide(&set, "bank", &[], &http(WEB, "GET", "/y")).decider,
        rule("b-exact")
    );
    assert_eq!(
        decide(&set, "bank", &[], &http(BATCH, "GET", "/z")).decider,
        rule("c-exact-later")
    );
    assert_eq!(
        decide(&set, "bank", &[], &http(BATCH, "GET", "/x")).decider,
        Decider::NoAllowMatched
    );
}

/// Header conditions see every value, as bytes: a DENY matches if any value (or any element
/// of a comma-separated value) matches; an ALLOW needs every value and element to match;
/// `present` sees any value; bytes 0x80-0xFF are compared, never dropped.
#[test]
fn header_conditions_judge_every_value() {
    let set = load(
        "\
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: bank }
spec:
  action: DENY
  rules:
  - when: [ { key: \"request.headers[x-role]\", values: [admin] } ]
  - when: [ { key: \"request.headers[x-debug]\", present: true } ]
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: eu-only, namespace: bank }
spec:
  action: ALLOW
  rules:
  - when: [ { key: \"request.headers[x-tenant]\", values: [\"eu-*\"] } ]
",
    );
    let bytes = |pairs: &[(&str, &[u8])]| -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    };
    type Headers = Vec<(String, Vec<u8>)>;
    let cases: Vec<(Headers, bool, &str)> = vec![
        (bytes(&[("x-tenant", b"eu-1")]), true, "one good value"),
        (
            bytes(&[("x-tenant", b"eu-1"), ("x-tenant", b"eu-2")]),
            true,
            "every value good",
        ),
        (
            bytes(&[("x-tenant", b"eu-1"), ("x-tenant", b"us-1")]),
            false,
            "ALLOW needs every value",
        ),
        (
            bytes(&[("x-tenant", b"eu-1, us-1")]),
            false,
            "ALLOW needs every list element",
        ),
        (
            bytes(&[("x-tenant", b"eu-1,eu-2")]),
            true,
            "a list of good elements",
        ),
        (
            bytes(&[
                ("x-tenant", b"eu-1"),
                ("x-role", b"user"),
                ("x-role", b"admin"),
            ]),
            false,
            "DENY on the second value",
        ),
        (
            bytes(&[("x-tenant", b"eu-1"), ("x-role", b"user, admin")]),
            false,
            "DENY on a list element",
        ),
        (
            bytes(&[("x-tenant", b"eu-1"), ("x-role", b"administrator")]),
            true,
            "exact pattern is exact",
        ),
        (
            bytes(&[("x-tenant", b"eu-1"), ("x-debug", b"\xe9t\xe9")]),
            false,
            "a latin-1 value is present",
        ),
        (
            bytes(&[("x-tenant", b"eu-1"), ("x-debug", b"")]),
            false,
            "an empty value is present",
        ),
        (
            bytes(&[("x-tenant", b"eu-\xff")]),
            true,
            "a latin-1 value is matched as bytes",
        ),
        (
            bytes(&[("x-tenant", b"\xffeu-1")]),
            false,
            "and not as absent",
        ),
        (
            bytes(&[("X-Tenant", b"eu-1"), ("x-tenant", b"us-1")]),
            false,
            "names are case-insensitive",
        ),
    ];
    let wl = set.for_workload("bank", &BTreeMap::new());
    for (headers, allowed, why) in cases {
        let call = Call {
            principal: WEB,
            namespace: namespace_of(WEB),
            port: 8080,
            http: Some(HttpCall {
                method: "GET",
                path: "/",
                authority: None,
                headers: &headers,
                auth: None,
            }),
        };
        assert_eq!(wl.decide(&call).allowed, allowed, "{why}");
    }
}

/// A DENY on a host holds for every spelling of it; a host with a port only for that port.
#[test]
fn host_rules_hold_for_every_spelling() {
    let set = load(
        "\
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: no-internal, namespace: bank }
spec:
  action: DENY
  rules:
  - to: [ { hosts: [\"internal.example.org\", \"*.corp.example:8443\"] } ]
---
apiVersion: ward.dev/v1alpha1
kind: MeshPolicy
metadata: { name: mesh, namespace: ward-system }
spec: { default: allow }
",
    );
    for (host, allowed) in [
        ("internal.example.org", false),
        ("internal.example.org:80", false),
        ("internal.example.org:443", false),
        ("internal.example.org.", false),
        ("INTERNAL.EXAMPLE.ORG", false),
        ("Internal.Example.Org.:8080", false),
        ("public.example.org", true),
        ("a.corp.example:8443", false),
        ("A.CORP.EXAMPLE.:8443", false),
        ("a.corp.example", true),
    ] {
        let r = Req {
            host: Some(host),
            ..http(WEB, "GET", "/")
        };
        assert_eq!(decide(&set, "bank", &[], &r).allowed, allowed, "{host}");
    }
}

#[test]
fn only_our_trust_domains_ids_have_namespaces() {
    use ward_policy::compile::namespace_in;
    let ours = "spiffe://example.org/ns/shop/sa/web";
    assert_eq!(namespace_in(ours, "example.org"), Some("shop"));
    // A federated domain's `ns/shop` is not our namespace `shop`.
    assert_eq!(
        namespace_in("spiffe://partner.org/ns/shop/sa/x", "example.org"),
        None
    );
    // Nor is a domain whose name merely starts with ours.
    assert_eq!(
        namespace_in("spiffe://example.org.evil/ns/shop/sa/x", "example.org"),
        None
    );
    assert_eq!(
        namespace_in("spiffe://example.org/sa/x", "example.org"),
        None
    );
}
