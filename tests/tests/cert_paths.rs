//! Certificate paths as a careful validator judges them (the x509-limbo classes the outside
//! team re-cut as SPIFFE chains): trust anchors are checked like any certificate on the
//! path, URI name constraints are applied to SPIFFE IDs, only the certificates on the path
//! count, and one key and EKU policy holds for `ward cert inspect` and the wire.

use std::time::{Duration, SystemTime};

use rcgen::{CustomExtension, ExtendedKeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use ward_certs::verify::{Purpose, unix_time};
use ward_certs::{SvidError, TrustBundle, parse_trust_domain, verify_svid};
use ward_tests::pki::{CaSpec, CustomCa, LeafSpec, uri_name_constraints};

const TD: &str = "example.org";
const WEB: &str = "spiffe://example.org/ns/default/sa/web";

fn check(
    root: &CustomCa,
    chain: &[CertificateDer<'_>],
    purpose: Purpose,
) -> Result<String, SvidError> {
    ward_tests::init();
    let bundle = TrustBundle::new(
        parse_trust_domain(TD).expect("trust domain"),
        [root.cert.clone()],
    )
    .expect("bundle");
    verify_svid(chain, &bundle, unix_time(SystemTime::now()), purpose).map(|id| id.to_string())
}

fn web() -> LeafSpec {
    LeafSpec::svid(WEB)
}

#[test]
fn a_root_is_judged_like_any_certificate_on_the_path() {
    let good = CustomCa::root(&CaSpec::new(TD, "good root"));
    assert_eq!(
        check(&good, &good.leaf(&web()).chain, Purpose::Both),
        Ok(WEB.into())
    );

    let mut expired = CaSpec::new(TD, "expired root");
    expired.not_before = SystemTime::now() - Duration::from_secs(7200);
    expired.not_after = SystemTime::now() - Duration::from_secs(3600);
    let root = CustomCa::root(&expired);
    let got = check(&root, &root.leaf(&web()).chain, Purpose::Both);
    assert!(
        matches!(&got, Err(SvidError::Expired { index: 1, subject, .. }) if subject.contains("expired root")),
        "{got:?}"
    );

    let mut critical = CaSpec::new(TD, "odd root");
    let mut unknown = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![5, 0]);
    unknown.set_criticality(true);
    critical.extensions = vec![unknown];
    let root = CustomCa::root(&critical);
    let got = check(&root, &root.leaf(&web()).chain, Purpose::Both);
    assert!(
        matches!(&got, Err(SvidError::UnknownCriticalExtension { index: 1, oid, .. }) if oid == "1.3.6.1.4.1.55555.1"),
        "{got:?}"
    );

    let mut strict = CaSpec::new(TD, "root allowing no CA below");
    strict.path_len = Some(0);
    let root = CustomCa::root(&strict);
    let sub = root.sub(&CaSpec::new(TD, "intermediate"));
    let got = check(&root, &sub.leaf(&web()).chain, Purpose::Both);
    assert!(
        matches!(
            got,
            Err(SvidError::PathLenExceeded {
                index: 2,
                limit: 0,
                below: 1,
                ..
            })
        ),
        "{got:?}"
    );
    assert!(
        got.unwrap_err().to_string().contains("pathLenConstraint"),
        "the rule is named, not a bad signature"
    );

    let mut server_only = CaSpec::new(TD, "server-only root");
    server_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let root = CustomCa::root(&server_only);
    let chain = root.leaf(&web()).chain;
    assert_eq!(check(&root, &chain, Purpose::Server), Ok(WEB.into()));
    let got = check(&root, &chain, Purpose::Client);
    assert!(
        matches!(
            got,
            Err(SvidError::SignerEkuExcludes {
                purpose: "clientAuth",
                ..
            })
        ),
        "{got:?}"
    );
}

#[test]
fn uri_name_constraints_are_applied_to_spiffe_ids() {
    let root = CustomCa::root(&CaSpec::new(TD, "root"));
    let constrained = |permitted: &[&str], excluded: &[&str]| {
        let mut spec = CaSpec::new(TD, "constrained intermediate");
        spec.extensions = vec![uri_name_constraints(permitted, excluded)];
        root.sub(&spec)
    };
    for permitted in [
        "spiffe://example.org",
        "spiffe://example.org/ns/default",
        "example.org",
    ] {
        let sub = constrained(&[permitted], &[]);
        assert_eq!(
            check(&root, &sub.leaf(&web()).chain, Purpose::Both),
            Ok(WEB.into()),
            "permitted {permitted}"
        );
    }
    for (permitted, excluded) in [
        (&["spiffe://other.org"][..], &[][..]),
        (&["spiffe://example.org/ns/prod"], &[]),
        (&[".example.org"], &[]),
        (
            &["spiffe://example.org"],
            &["spiffe://example.org/ns/default"],
        ),
        (&[], &["example.org"]),
    ] {
        let sub = constrained(permitted, excluded);
        let got = check(&root, &sub.leaf(&web()).chain, Purpose::Both);
        assert!(
            matches!(&got, Err(SvidError::NameConstraint { index: 1, name, .. }) if name.contains(WEB)),
            "permitted {permitted:?} excluded {excluded:?}: {got:?}"
        );
    }
}

#[test]
fn only_the_certificates_on_the_path_count() {
    let root = CustomCa::root(&CaSpec::new(TD, "root"));
    let mut chain = root.leaf(&web()).chain;
    // An unrelated expired CA sent along.
    let mut stale = CaSpec::new(TD, "stale");
    stale.not_before = SystemTime::now() - Duration::from_secs(7200);
    stale.not_after = SystemTime::now() - Duration::from_secs(3600);
    chain.push(CustomCa::root(&stale).cert);
    assert_eq!(check(&root, &chain, Purpose::Both), Ok(WEB.into()));
}

#[test]
fn any_eku_alone_does_not_make_an_svid() {
    let root = CustomCa::root(&CaSpec::new(TD, "root"));
    let mut spec = web();
    spec.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any];
    let chain = root.leaf(&spec).chain;
    for purpose in [Purpose::Client, Purpose::Server, Purpose::Both] {
        assert!(
            matches!(
                check(&root, &chain, purpose),
                Err(SvidError::MissingExtendedKeyUsage(_))
            ),
            "{purpose:?}"
        );
    }
}

/// Leaves with keys the mesh does not accept, made by openssl (rcgen cannot make them) and
/// signed by a ward CA: `ward cert inspect` names the rule, as the wire would refuse them.
#[test]
fn inspect_refuses_weak_leaf_keys_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = d.join("ca");
    ward_tests::bin::ward([
        "ca",
        "init",
        "--trust-domain",
        TD,
        "--dir",
        ca.to_str().expect("path"),
    ])
    .ok();
    let ext = d.join("ext.cnf");
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=URI:{WEB}\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n"
        ),
    )
    .expect("ext");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let cases: [(&str, &[&[&str]], &str); 3] = [
        (
            "p192",
            &[&[
                "ecparam",
                "-name",
                "prime192v1",
                "-genkey",
                "-noout",
                "-out",
                "p192.key",
            ]],
            "ECDSA on P-192",
        ),
        (
            "rsa1024",
            &[&["genrsa", "-out", "rsa1024.key", "1024"]],
            "RSA of 1024 bits",
        ),
        (
            "dsa",
            &[&["dsaparam", "-genkey", "-out", "dsa.key", "2048"]],
            "DSA",
        ),
    ];
    for (name, keygen, what) in cases {
        for args in keygen {
            openssl(args);
        }
        let (key, csr, cert) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(&[
            "req", "-new", "-key", &key, "-subj", "/CN=weak", "-out", &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca/ca.pem",
            "-CAkey",
            "ca/ca.key",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            &cert,
        ]);
        let run = ward_tests::bin::ward([
            "cert",
            "inspect",
            d.join(&cert).to_str().expect("path"),
            "--bundle",
            ca.join("bundle.pem").to_str().expect("path"),
        ]);
        assert_eq!(run.code, 1, "{name}: {run:#?}");
        assert!(
            run.stdout.contains(&format!("valid:      no: certificate #0 (CN=weak) has a key the mesh does not accept: {what}")),
            "{name}: {run:#?}"
        );
    }
}

/// A root near its end is reported where bundles are loaded: `ward ca status`, and the
/// sidecar's log and `ward_bundle_root_warnings`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_near_expiry_are_reported_where_bundles_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("ca");
    let data = data.to_str().expect("path");
    ward_tests::bin::ward([
        "ca",
        "init",
        "--trust-domain",
        TD,
        "--ttl",
        "240h",
        "--dir",
        data,
    ])
    .ok();
    let status = ward_tests::bin::ward(["ca", "status", "--data-dir", data]);
    let text = status.ok();
    assert!(
        text.contains("warning: root") && text.contains("(within 30 days)"),
        "{text}"
    );

    // The test PKI's CA lives a day: every sidecar on it reports its root.
    let app = ward_tests::apps::http_echo().await;
    let pair = ward_tests::mesh::Pair::launch(app.addr, Default::default()).await;
    let metrics = pair.orders.admin_get("/metrics").1;
    assert!(metrics.contains("ward_bundle_root_warnings 1"), "{metrics}");
    assert!(
        pair.orders.logs().contains("within 30 days"),
        "{}",
        pair.orders.logs()
    );
}

/// Many CA certificates that all sign each other cost a bounded number of signature
/// checks: the search gives up instead of trying every ordering.
#[test]
fn a_tangle_of_cross_signed_cas_is_refused_within_a_budget() {
    let root = CustomCa::root(&CaSpec::new(TD, "root"));
    let chain = ward_tests::pki::tangled_chain(&web(), 12);
    let got = check(&root, &chain, Purpose::Both);
    assert!(
        matches!(&got, Err(SvidError::Chain(why)) if why.contains("signature checks")),
        "{got:?}"
    );
    let too_many = ward_tests::pki::tangled_chain(&web(), 17);
    let got = check(&root, &too_many, Purpose::Both);
    assert!(
        matches!(&got, Err(SvidError::Chain(why)) if why.contains("at most 16")),
        "{got:?}"
    );
}
