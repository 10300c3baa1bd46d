//! Policy on the verified end user: `requestPrincipals`, `request.auth.claims[...]`
//! conditions and claim-bound path templates, for each action, with and without an end
//! user, and on TCP (fail closed).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ward_policy::compile::namespace_of;
use ward_policy::{Call, HttpCall, PolicySet, RequestAuth};

const GATEWAY: &str = "spiffe://bank.example/ns/edge/sa/gateway";
const IDP: &str = "https://idp.bank.example";

fn load(yaml: &str) -> PolicySet {
    ward_policy::load_sources(&[(PathBuf::from("p.yaml"), yaml.to_owned())])
        .unwrap_or_else(|e| panic!("{e}"))
}

type Claims = Vec<(Vec<String>, String)>;

fn claims(pairs: &[(&str, &str)]) -> Claims {
    pairs
        .iter()
        .map(|(k, v)| (k.split('.').map(str::to_owned).collect(), (*v).to_owned()))
        .collect()
}

/// A user: principal and claims.
struct User(String, Claims);

fn user(sub: &str, more: &[(&str, &str)]) -> User {
    let mut c = claims(&[("sub", sub)]);
    c.extend(claims(more));
    User(format!("{IDP}/{sub}"), c)
}

fn decide(set: &PolicySet, method: &str, path: &str, who: Option<&User>) -> bool {
    let wl = set.for_workload("bank", &BTreeMap::new());
    let headers: Vec<(String, String)> = vec![];
    let call = Call {
        principal: GATEWAY,
        namespace: namespace_of(GATEWAY),
        port: 8080,
        http: Some(HttpCall {
            method,
            path,
            authority: None,
            headers: &headers,
            auth: who.map(|u| RequestAuth {
                principal: &u.0,
                claims: &u.1,
            }),
        }),
    };
    wl.decide(&call).allowed
}

fn tcp(set: &PolicySet) -> bool {
    let wl = set.for_workload("bank", &BTreeMap::new());
    wl.decide(&Call {
        principal: GATEWAY,
        namespace: namespace_of(GATEWAY),
        port: 8080,
        http: None,
    })
    .allowed
}

const HEAD: &str = "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n";

#[test]
fn bola_a_user_reaches_only_their_own_objects() {
    let set = load(&format!(
        "{HEAD}metadata: {{ name: own-accounts, namespace: bank }}\nspec:\n  action: ALLOW\n  rules:\n  - from: [ {{ requestPrincipals: [\"{IDP}/*\"] }} ]\n    to: [ {{ methods: [GET], paths: [\"/accounts/{{request.auth.claims[sub]}}/*\"] }} ]\n"
    ));
    let (alice, bob) = (user("alice", &[]), user("bob", &[]));
    assert!(decide(&set, "GET", "/accounts/alice/balance", Some(&alice)));
    assert!(
        !decide(&set, "GET", "/accounts/alice/balance", Some(&bob)),
        "BOLA"
    );
    assert!(
        !decide(&set, "GET", "/accounts/alice/balance", None),
        "anonymous"
    );
    assert!(!decide(
        &set,
        "GET",
        "/accounts/alicex/balance",
        Some(&alice)
    ));
    assert!(!decide(&set, "GET", "/accounts/bob/balance", Some(&alice)));
    assert!(!tcp(&set));
    let other = User(
        "https://evil.example/alice".into(),
        claims(&[("sub", "alice")]),
    );
    assert!(
        !decide(&set, "GET", "/accounts/alice/balance", Some(&other)),
        "another issuer's alice"
    );
}

#[test]
fn bola_as_a_deny_rule_fails_closed_for_anonymous_callers() {
    // Deny every account path that is not the caller's own.
    let set = load(&format!(
        "{HEAD}metadata: {{ name: not-yours, namespace: bank }}\nspec:\n  action: DENY\n  rules:\n  - to: [ {{ paths: [\"/accounts/*\"], notPaths: [\"/accounts/{{request.auth.claims[sub]}}/*\"] }} ]\n---\n{HEAD}metadata: {{ name: rest, namespace: bank }}\nspec: {{ action: ALLOW, rules: [ {{}} ] }}\n"
    ));
    let (alice, bob) = (user("alice", &[]), user("bob", &[]));
    assert!(decide(&set, "GET", "/accounts/alice/x", Some(&alice)));
    assert!(!decide(&set, "GET", "/accounts/alice/x", Some(&bob)));
    assert!(
        !decide(&set, "GET", "/accounts/alice/x", None),
        "no end user: denied"
    );
    assert!(decide(&set, "GET", "/public", None), "outside the rule");
    assert!(!tcp(&set), "TCP: the DENY holds");
}

#[test]
fn request_principals_need_a_verified_end_user() {
    let set = load(&format!(
        "{HEAD}metadata: {{ name: users, namespace: bank }}\nspec:\n  action: ALLOW\n  rules:\n  - from: [ {{ requestPrincipals: [\"*\"], notRequestPrincipals: [\"{IDP}/mallory\"] }} ]\n"
    ));
    assert!(decide(&set, "GET", "/", Some(&user("alice", &[]))));
    let nosub = User(format!("{IDP}/"), claims(&[("azp", "batch")]));
    assert!(
        decide(&set, "GET", "/", Some(&nosub)),
        "'*' takes a token without sub"
    );
    assert!(!decide(&set, "GET", "/", None), "'*' is not anonymous");
    assert!(!decide(&set, "GET", "/", Some(&user("mallory", &[]))));
    assert!(!tcp(&set));

    let deny_anonymous = load(&format!(
        "{HEAD}metadata: {{ name: need-user, namespace: bank }}\nspec:\n  action: DENY\n  rules:\n  - from: [ {{ notRequestPrincipals: [\"*\"] }} ]\n---\n{HEAD}metadata: {{ name: rest, namespace: bank }}\nspec: {{ action: ALLOW, rules: [ {{}} ] }}\n"
    ));
    assert!(!decide(&deny_anonymous, "GET", "/", None));
    assert!(decide(
        &deny_anonymous,
        "GET",
        "/",
        Some(&user("alice", &[]))
    ));
}

#[test]
fn claim_conditions_match_nested_and_list_claims() {
    let set = load(&format!(
        "{HEAD}metadata: {{ name: tellers, namespace: bank }}\nspec:\n  action: ALLOW\n  rules:\n  - when:\n    - {{ key: \"request.auth.claims[realm][roles]\", values: [\"teller\"] }}\n    - {{ key: \"request.auth.claims[scope]\", values: [\"accounts:*\"] }}\n    - {{ key: \"request.auth.claims[acr]\", values: [\"mfa\"] }}\n"
    ));
    let good = user(
        "t",
        &[
            ("realm.roles", "clerk"),
            ("realm.roles", "teller"),
            ("scope", "openid"),
            ("scope", "accounts:read"),
            ("acr", "mfa"),
        ],
    );
    assert!(decide(&set, "GET", "/", Some(&good)));
    let no_step_up = user(
        "t",
        &[
            ("realm.roles", "teller"),
            ("scope", "accounts:read"),
            ("acr", "pwd"),
        ],
    );
    assert!(!decide(&set, "GET", "/", Some(&no_step_up)), "acr");
    let clerk = user(
        "t",
        &[
            ("realm.roles", "clerk"),
            ("scope", "accounts:read"),
            ("acr", "mfa"),
        ],
    );
    assert!(!decide(&set, "GET", "/", Some(&clerk)), "roles");
    assert!(!decide(&set, "GET", "/", None));

    let present = load(&format!(
        "{HEAD}metadata: {{ name: no-impersonation, namespace: bank }}\nspec:\n  action: DENY\n  rules:\n  - when: [ {{ key: \"request.auth.claims[act]\", present: true }} ]\n---\n{HEAD}metadata: {{ name: rest, namespace: bank }}\nspec: {{ action: ALLOW, rules: [ {{}} ] }}\n"
    ));
    assert!(decide(&present, "GET", "/", Some(&user("a", &[]))));
    assert!(!decide(
        &present,
        "GET",
        "/",
        Some(&user("a", &[("act", "admin")]))
    ));
}

#[test]
fn mistakes_in_end_user_rules_are_refused_at_their_line() {
    for (rule, want) in [
        (
            "  - from: [ { requestPrincipals: [alice] } ]\n",
            "must be ISSUER/SUBJECT",
        ),
        (
            "  - to: [ { paths: [\"/a/{request.auth.claims[sub]}.json\"] } ]\n",
            "a placeholder must be a whole segment",
        ),
        (
            "  - to: [ { paths: [\"/a/{request.auth.sub}\"] } ]\n",
            "is not {request.auth.claims[NAME]}",
        ),
        (
            "  - when: [ { key: \"request.auth.claim[x]\", values: [a] } ]\n",
            "not request.auth.claims[NAME]",
        ),
    ] {
        let yaml = format!(
            "{HEAD}metadata: {{ name: x, namespace: bank }}\nspec:\n  action: ALLOW\n  rules:\n{rule}"
        );
        let err = ward_policy::load_sources(&[(PathBuf::from("p.yaml"), yaml)])
            .err()
            .unwrap_or_else(|| panic!("{want}: accepted"))
            .to_string();
        assert!(
            err.contains(want) && err.contains("p.yaml:7:"),
            "{want}: {err}"
        );
    }
}

/// A call from outside the mesh (no SPIFFE ID, as at the gateway), with or without an
/// end user.
fn from_outside(set: &PolicySet, auth: Option<RequestAuth<'_>>) -> bool {
    let headers: Vec<(String, String)> = vec![];
    set.for_workload("bank", &BTreeMap::new())
        .decide(&Call {
            principal: "",
            namespace: None,
            port: 8443,
            http: Some(HttpCall {
                method: "GET",
                path: "/",
                authority: None,
                headers: &headers,
                auth,
            }),
        })
        .allowed
}

#[test]
fn callers_from_outside_the_mesh_match_no_principal_and_need_an_end_user_for_the_default() {
    let set = load(&format!(
        "{HEAD}metadata: {{ name: any-peer, namespace: bank }}\nspec:\n  action: ALLOW\n  rules:\n  - from: [ {{ principals: [\"*\"] }} ]\n"
    ));
    assert!(
        !from_outside(&set, None),
        "principals: [*] is any mesh peer, not anyone"
    );
    let authn = load(
        "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: { name: default, namespace: ward-system }\nspec: { default: allow-authenticated }\n",
    );
    assert!(
        !from_outside(&authn, None),
        "allow-authenticated: an anonymous outsider is not"
    );
    let alice = user("alice", &[]);
    assert!(from_outside(
        &authn,
        Some(RequestAuth {
            principal: &alice.0,
            claims: &alice.1,
        })
    ));
}
