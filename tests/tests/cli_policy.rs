//! `ward policy lint | check | test | who-can`: the sidecar's engine, offline, with the
//! outputs and exit codes scripts rely on.

use std::path::Path;

use ward_tests::bin::ward;

const POLICIES: &str = "\
apiVersion: ward.dev/v1alpha1
kind: MeshPolicy
metadata: { name: mesh, namespace: ward-system }
spec: { default: deny }
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: accounts-read, namespace: bank }
spec:
  selector: { matchLabels: { app: accounts } }
  action: ALLOW
  rules:
  - from: [ { principals: [\"spiffe://bank.example/ns/web/sa/frontend\"] } ]
    to: [ { ports: [8080], methods: [GET], paths: [\"/accounts/*\"] } ]
  - from: [ { namespaces: [ledger] } ]
    to: [ { grpc: { service: bank.v1.Accounts, methods: [\"Get*\"] } } ]
  - from: [ { namespaces: [batch] } ]
    to: [ { ports: [5432] } ]
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: ward-system }
spec:
  action: DENY
  rules: [ { to: [ { ports: [8080], paths: [\"/accounts/admin*\"] } ] } ]
";

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn lint_lists_every_error_at_its_place_and_warns() {
    let dir = dir_with(&[
        (
            "a.yaml",
            "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: a, namespace: n }\nspec:\n  action: ALOW\n",
        ),
        (
            "b.yaml",
            "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: b, namespace: n }\nspec:\n  action: ALLOW\n  rules:\n  - from: [ { principals: [\"spiffe://x/a/../b\"] } ]\n",
        ),
    ]);
    let out = ward(["policy", "lint", s(dir.path())]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{}:5:11: spec.action: unknown variant `ALOW`",
            s(&dir.path().join("a.yaml"))
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!("{}:7:", s(&dir.path().join("b.yaml")))),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("bad SPIFFE ID"), "{}", lines[1]);

    let warn = dir_with(&[(
        "w.yaml",
        "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: w, namespace: n }\nspec:\n  action: DENY\n  rules: [ {} ]\n",
    )]);
    let out = ward(["policy", "lint", s(warn.path())]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("warning: n/w: rule 0 denies every call"),
        "{}",
        out.stdout
    );

    let good = dir_with(&[("p.yaml", POLICIES)]);
    let out = ward(["policy", "lint", s(good.path())]);
    assert!(
        out.ok().contains("2 policies, mesh default deny"),
        "{out:?}"
    );
}

#[test]
fn check_prints_the_decision_and_who_made_it() {
    let dir = dir_with(&[("p.yaml", POLICIES)]);
    let base = [
        "policy",
        "check",
        "--dir",
        s(dir.path()),
        "--to-namespace",
        "bank",
        "--to-labels",
        "app=accounts",
    ];
    let check = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        ward(&args)
    };
    let web = "spiffe://bank.example/ns/web/sa/frontend";

    let out = check(&[
        "--from",
        web,
        "--port",
        "8080",
        "--method",
        "GET",
        "--path",
        "/accounts/42?x=1",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "ALLOW\n  decided by bank/accounts-read rule 0\n"
    );

    let out = check(&[
        "--from",
        web,
        "--port",
        "8080",
        "--method",
        "DELETE",
        "--path",
        "/accounts/42",
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(
        out.stdout,
        "DENY\n  decided by default:deny (no ALLOW policy matched)\n"
    );

    let out = check(&[
        "--from",
        web,
        "--port",
        "8080",
        "--path",
        "/accounts/x/../admin",
    ]);
    assert_eq!(out.code, 3);
    assert!(
        out.stdout
            .contains("decided by ward-system/no-admin rule 0"),
        "{}",
        out.stdout
    );

    let out = check(&[
        "--from",
        web,
        "--port",
        "8080",
        "--path",
        "/accounts%2Fadmin",
    ]);
    assert_eq!(out.code, 3);
    assert!(
        out.stdout.contains("refused before authorization (400)"),
        "{}",
        out.stdout
    );

    // What the sidecar refuses before authorization, the CLI refuses too (one admission).
    for refused in [
        &["--method", "CONNECT"][..],
        &["--method", "delete"],
        &["--host", "a.example", "--header", "host=b.example"],
        &["--header", "x_role=admin"],
        &["--host", "user@a.example"],
    ] {
        let mut args = vec!["--from", web, "--port", "8080", "--path", "/accounts/1"];
        args.extend_from_slice(refused);
        let out = check(&args);
        assert_eq!(out.code, 3, "{refused:?}: {out:?}");
        assert!(
            out.stdout.contains("refused before authorization (400)"),
            "{refused:?}: {}",
            out.stdout
        );
    }

    let ledger = "spiffe://bank.example/ns/ledger/sa/api";
    let out = check(&[
        "--from",
        ledger,
        "--port",
        "9090",
        "--grpc",
        "bank.v1.Accounts/GetBalance",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("rule 1"));
    let out = check(&[
        "--from",
        ledger,
        "--port",
        "9090",
        "--grpc",
        "bank.v1.Accounts/Close",
    ]);
    assert_eq!(out.code, 3);

    // The DENY rule's L4 part is port 8080: a TCP connection to 5432 is not caught by it
    // (one to 8080 would be, its path notwithstanding: fail closed).
    let batch = "spiffe://bank.example/ns/batch/sa/etl";
    assert_eq!(check(&["--from", batch, "--port", "5432", "--tcp"]).code, 0);
    let out = check(&["--from", web, "--port", "8080", "--tcp"]);
    assert_eq!(out.code, 3);
    assert!(
        out.stdout.contains("ward-system/no-admin"),
        "{}",
        out.stdout
    );
    assert_eq!(check(&["--from", batch, "--port", "22", "--tcp"]).code, 3);

    // Usage errors stay exit 2.
    let out = check(&["--from", "not-an-id", "--port", "1"]);
    out.fails_with(2);
    let out = check(&["--from", web, "--port", "1", "--tcp", "--method", "GET"]);
    out.fails_with(2);
}

#[test]
fn test_runs_cases_and_names_the_deciding_policy_on_mismatch() {
    let cases = "\
cases:
- name: web reads accounts
  from: spiffe://bank.example/ns/web/sa/frontend
  to: { namespace: bank, labels: { app: accounts }, port: 8080 }
  request: { method: GET, path: /accounts/1 }
  expect: ALLOW
- name: admin is closed
  from: spiffe://bank.example/ns/web/sa/frontend
  to: { namespace: bank, labels: { app: accounts }, port: 8080 }
  request: { method: GET, path: /accounts/admin }
  expect: DENY
- name: batch reaches the database port
  from: spiffe://bank.example/ns/batch/sa/etl
  to: { namespace: bank, labels: { app: accounts }, port: 5432 }
  request: { tcp: true }
  expect: ALLOW
";
    let dir = dir_with(&[("p.yaml", POLICIES), ("cases.yaml", "")]);
    let policies = dir_with(&[("p.yaml", POLICIES)]);
    let cases_path = dir.path().join("cases.yaml");
    std::fs::write(&cases_path, cases).unwrap();
    let out = ward([
        "policy",
        "test",
        s(&cases_path),
        "--dir",
        s(policies.path()),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("policy cases: 3 passed, 0 failed"),
        "{}",
        out.stdout
    );

    // Someone "opens a path nobody intended": the suite catches it.
    let opened = POLICIES.replace("/accounts/admin*", "/nothing");
    assert_ne!(opened, POLICIES);
    std::fs::write(policies.path().join("p.yaml"), opened).unwrap();
    let out = ward([
        "policy",
        "test",
        s(&cases_path),
        "--dir",
        s(policies.path()),
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "FAIL admin is closed: expected DENY, got ALLOW — decided by bank/accounts-read rule 0"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn who_can_reviews_access_to_a_workload() {
    let dir = dir_with(&[("p.yaml", POLICIES)]);
    let out = ward([
        "policy",
        "who-can",
        "--dir",
        s(dir.path()),
        "--to-namespace",
        "bank",
        "--to-labels",
        "app=accounts",
    ]);
    let text = out.ok();
    assert!(text.contains("ALLOW policies apply"), "{text}");
    assert!(text.contains("ALLOW bank/accounts-read"), "{text}");
    assert!(
        text.contains("from: principals [spiffe://bank.example/ns/web/sa/frontend]"),
        "{text}"
    );
    assert!(
        text.contains("to:   ports [8080]; methods [GET]; paths [/accounts/*]"),
        "{text}"
    );
    assert!(
        text.contains("gRPC bank.v1.Accounts methods [Get*]"),
        "{text}"
    );
    assert!(text.contains("DENY ward-system/no-admin"), "{text}");

    let out = ward([
        "policy",
        "who-can",
        "--dir",
        s(dir.path()),
        "--to-namespace",
        "shop",
        "--to-labels",
        "app=cart",
    ]);
    let text = out.ok();
    assert!(text.contains("no ALLOW policy applies"), "{text}");
    assert!(text.contains("mesh default (deny)"), "{text}");
}

const EDGE_POLICY: &str = "\
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: own-accounts, namespace: edge }
spec:
  selector: { matchLabels: { app: gateway } }
  action: ALLOW
  rules:
  - from: [ { requestPrincipals: [\"https://idp.bank.test/*\"] } ]
    to: [ { methods: [GET], paths: [\"/accounts/{request.auth.claims[sub]}/*\"] } ]
    when: [ { key: \"request.auth.claims[org][tier]\", values: [gold] } ]
";

#[test]
fn end_users_are_checked_and_tested_as_the_gateway_judges_them() {
    let dir = dir_with(&[("p.yaml", EDGE_POLICY)]);
    let check = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "check",
            "--dir",
            s(dir.path()),
            "--to-namespace",
            "edge",
            "--to-labels",
            "app=gateway",
            "--port",
            "8443",
            "--method",
            "GET",
        ];
        args.extend_from_slice(extra);
        ward(args)
    };
    let alice = [
        "--request-principal",
        "https://idp.bank.test/alice",
        "--claim",
        "sub=alice",
        "--claim",
        "request.auth.claims[org][tier]=gold",
    ];
    // A call from outside the mesh (no --from): Alice's own account, then Bob's.
    let own = check(&[&["--path", "/accounts/alice/balance"][..], &alice[..]].concat());
    assert_eq!(own.code, 0, "{own:?}");
    assert!(own.stdout.starts_with("ALLOW"), "{}", own.stdout);
    let other = check(&[&["--path", "/accounts/bob/balance"][..], &alice[..]].concat());
    assert_eq!(other.code, 3, "{other:?}");
    assert!(other.stdout.starts_with("DENY"), "{}", other.stdout);
    // Without the nested claim the condition fails; without an end user nothing matches.
    let silver = check(&[
        "--path",
        "/accounts/alice/balance",
        "--request-principal",
        "https://idp.bank.test/alice",
        "--claim",
        "sub=alice",
    ]);
    assert!(silver.stdout.starts_with("DENY"), "{}", silver.stdout);
    // Neither a caller nor an end user: clap refuses.
    assert_eq!(check(&["--path", "/accounts/alice/x"]).code, 2);
    // A claim without an end user is refused too.
    assert_eq!(
        check(&["--from", "spiffe://bank.test/ns/a/sa/b", "--claim", "sub=x"]).code,
        2
    );

    let cases = "\
cases:
- name: alice reads her account through the gateway
  from: \"\"
  to: { namespace: edge, labels: { app: gateway }, port: 8443 }
  request:
    method: GET
    path: /accounts/alice/balance
    end_user: { principal: \"https://idp.bank.test/alice\", claims: { sub: alice, \"request.auth.claims[org][tier]\": gold } }
  expect: ALLOW
- name: alice cannot read bob's
  from: \"\"
  to: { namespace: edge, labels: { app: gateway }, port: 8443 }
  request:
    method: GET
    path: /accounts/bob/balance
    end_user: { principal: \"https://idp.bank.test/alice\", claims: { sub: alice, \"request.auth.claims[org][tier]\": gold } }
  expect: DENY
";
    let cases_path = dir.path().join("cases.yaml");
    std::fs::write(&cases_path, cases).unwrap();
    let policies = dir_with(&[("p.yaml", EDGE_POLICY)]);
    let out = ward([
        "policy",
        "test",
        s(&cases_path),
        "--dir",
        s(policies.path()),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("policy cases: 2 passed, 0 failed"),
        "{}",
        out.stdout
    );
}
