//! `ward ca init`, `ward cert issue` and `ward cert inspect` as a user runs them, with the
//! results checked by openssl — a tool we did not write.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ward_tests::bin::{Run, run, ward};
use ward_tests::pki::{TestPki, bad_leaves};

fn openssl<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run(Path::new("openssl"), args)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ca_init_writes_the_ca_and_refuses_to_overwrite_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let out = ward([
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        s(&dir),
    ]);
    let stdout = out.ok();
    assert!(
        stdout.contains("created CA for trust domain example.org"),
        "{stdout}"
    );
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let ca_before = std::fs::read(dir.join("ca.pem")).unwrap();

    // The root as openssl sees it: CA with a path length, keyCertSign + cRLSign, P-256.
    let text = openssl(["x509", "-noout", "-text", "-in", s(&dir.join("ca.pem"))]);
    let text = text.ok();
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    assert!(text.contains("URI:spiffe://example.org\n"), "{text}");
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        std::fs::read(dir.join("bundle.pem")).unwrap()
    );

    let again = ward([
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        s(&dir),
    ]);
    let line = again.fails_with(1);
    assert!(
        line.contains("already exists") && line.contains("--force"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        ca_before,
        "CA untouched"
    );

    let forced = ward([
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        s(&dir),
        "--force",
    ]);
    forced.ok();
    assert_ne!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        ca_before,
        "CA replaced"
    );
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
}

#[test]
fn issued_svid_passes_openssl_and_has_exactly_the_svid_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    ward([
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        s(&ca),
    ])
    .ok();
    let (cert, key) = (tmp.path().join("web.pem"), tmp.path().join("web.key"));
    let id = "spiffe://example.org/ns/default/sa/web";
    let out = ward([
        "cert",
        "issue",
        "--ca-dir",
        s(&ca),
        "--spiffe-id",
        id,
        "--ttl",
        "2h",
        "--cert",
        s(&cert),
        "--key",
        s(&key),
    ]);
    assert!(out.ok().contains(id));
    assert_eq!(mode(&key), 0o600);

    let verify = openssl(["verify", "-CAfile", s(&ca.join("bundle.pem")), s(&cert)]);
    assert!(verify.ok().contains(": OK"), "{verify:?}");

    let text = openssl(["x509", "-noout", "-text", "-in", s(&cert)]);
    let text = text.ok();
    assert_eq!(
        text.matches("URI:").count(),
        1,
        "exactly one URI SAN: {text}"
    );
    assert!(text.contains(&format!("URI:{id}")), "{text}");
    assert!(!text.contains("DNS:"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    // Lifetime as asked: still valid in 1h55m, expired by 2h05m.
    openssl(["x509", "-noout", "-in", s(&cert), "-checkend", "6900"]).ok();
    let past = openssl(["x509", "-noout", "-in", s(&cert), "-checkend", "7500"]);
    assert_eq!(past.code, 1, "must expire within 2h05m: {past:?}");
    // The key matches the certificate.
    let pubkey_cert = openssl(["x509", "-noout", "-pubkey", "-in", s(&cert)]);
    let pubkey_key = openssl(["pkey", "-pubout", "-in", s(&key)]);
    assert_eq!(pubkey_cert.ok(), pubkey_key.ok());
    // A foreign bundle does not verify it.
    let other = TestPki::new("example.org");
    let foreign = openssl(["verify", "-CAfile", s(&other.bundle_path()), s(&cert)]);
    assert_ne!(foreign.code, 0);
}

#[test]
fn intermediate_ca_chains_verify_in_openssl_and_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let out = ward([
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        s(&ca),
        "--intermediate",
    ]);
    assert!(out.ok().contains("intermediate"));
    assert_eq!(mode(&ca.join("root.key")), 0o600);
    let (cert, key) = (tmp.path().join("a.pem"), tmp.path().join("a.key"));
    ward([
        "cert",
        "issue",
        "--ca-dir",
        s(&ca),
        "--spiffe-id",
        "spiffe://example.org/ns/a/sa/b",
        "--cert",
        s(&cert),
        "--key",
        s(&key),
    ])
    .ok();
    // The chain file holds leaf then intermediate; openssl needs the intermediate as
    // untrusted and the root from the bundle.
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
    let verify = openssl([
        "verify",
        "-CAfile",
        s(&ca.join("bundle.pem")),
        "-untrusted",
        s(&cert),
        s(&cert),
    ]);
    assert!(verify.ok().contains(": OK"), "{verify:?}");
    let inspect = ward([
        "cert",
        "inspect",
        s(&cert),
        "--bundle",
        s(&ca.join("bundle.pem")),
    ]);
    assert!(inspect.ok().contains("valid:      yes"), "{inspect:?}");
}

#[test]
fn inspect_reports_identity_and_validity() {
    let pki = TestPki::new("example.org");
    let id = pki.id("payments", "api");
    let svid = pki.svid(&id);
    let path = pki.write_chain("api", svid.chain());

    let plain = ward(["cert", "inspect", s(&path)]);
    let out = plain.ok();
    for field in [
        "spiffe_id:",
        "serial:",
        "not_before:",
        "not_after:",
        "time_left:",
        "issuer:",
    ] {
        assert!(out.contains(field), "{field} missing: {out}");
    }
    assert!(out.contains(&format!("spiffe_id:  {id}")), "{out}");
    assert!(out.contains(&svid.leaf_info().unwrap().serial), "{out}");
    assert!(
        !out.contains("valid:"),
        "no verdict without --bundle: {out}"
    );

    let checked = ward([
        "cert",
        "inspect",
        s(&path),
        "--bundle",
        s(&pki.bundle_path()),
    ]);
    assert!(checked.ok().contains("valid:      yes"), "{checked:?}");

    let other_td = ward([
        "cert",
        "inspect",
        s(&path),
        "--bundle",
        s(&pki.bundle_path()),
        "--trust-domain",
        "other.org",
    ]);
    assert_eq!(other_td.code, 1, "{other_td:?}");
    assert!(
        other_td.stdout.contains("is not in trust domain other.org"),
        "{other_td:?}"
    );
}

#[test]
fn inspect_refuses_each_bad_certificate_naming_the_rule() {
    let pki = TestPki::new("example.org");
    let foreign = TestPki::new("example.org");
    for (case, leaf, rule) in bad_leaves(&pki, &foreign) {
        let path = pki.write_chain(&case.replace(' ', "_"), &leaf.chain);
        let out = ward([
            "cert",
            "inspect",
            s(&path),
            "--bundle",
            s(&pki.bundle_path()),
        ]);
        assert_eq!(out.code, 1, "{case}: {out:?}");
        let verdict = out
            .stdout
            .lines()
            .find(|l| l.starts_with("valid:"))
            .unwrap_or("");
        assert!(
            verdict.starts_with("valid:      no: ") && verdict.contains(rule),
            "{case}: {verdict:?} should name {rule:?}"
        );
    }
}

#[test]
fn bad_input_is_one_line_with_the_right_exit_code() {
    let pki = TestPki::new("example.org");
    let not_pem = pki.dir().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let ca = s(&pki.ca_dir()).to_owned();
    let out = |name: &str| s(&pki.dir().join(name)).to_owned();

    // Usage errors: exit 2.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["ca".into(), "init".into(), "--bogus".into()],
            "--bogus",
        ),
        (vec!["frobnicate".into()], "frobnicate"),
        (
            vec![
                "ca".into(),
                "init".into(),
                "--trust-domain".into(),
                "Example.ORG".into(),
                "--dir".into(),
                out("x"),
            ],
            "lower case",
        ),
        (
            vec![
                "cert".into(),
                "issue".into(),
                "--ca-dir".into(),
                ca.clone(),
                "--spiffe-id".into(),
                "spiffe://example.org/a/../b".into(),
                "--cert".into(),
                out("c.pem"),
                "--key".into(),
                out("c.key"),
            ],
            "dot segments",
        ),
        (
            vec![
                "cert".into(),
                "issue".into(),
                "--ca-dir".into(),
                ca.clone(),
                "--spiffe-id".into(),
                "https://example.org/a".into(),
                "--cert".into(),
                out("c.pem"),
                "--key".into(),
                out("c.key"),
            ],
            "spiffe://",
        ),
        (
            vec![
                "cert".into(),
                "issue".into(),
                "--ca-dir".into(),
                ca.clone(),
                "--spiffe-id".into(),
                "spiffe://example.org/a".into(),
                "--ttl".into(),
                "10".into(),
                "--cert".into(),
                out("c.pem"),
                "--key".into(),
                out("c.key"),
            ],
            "--ttl",
        ),
        (
            vec![
                "cert".into(),
                "issue".into(),
                "--ca-dir".into(),
                ca.clone(),
                "--spiffe-id".into(),
                "spiffe://example.org/a".into(),
                "--cert".into(),
                out("c.pem"),
            ],
            "--key",
        ),
    ];
    for (args, needle) in cases {
        let run = ward(&args);
        let line = run.fails_with(2);
        assert!(line.contains(needle), "{args:?}: {line}");
    }

    // Failures: exit 1.
    let failures: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["cert".into(), "inspect".into(), out("missing.pem")],
            "missing.pem",
        ),
        (
            vec!["cert".into(), "inspect".into(), s(&not_pem).into()],
            "not.pem",
        ),
        (
            vec![
                "cert".into(),
                "issue".into(),
                "--ca-dir".into(),
                out("nowhere"),
                "--spiffe-id".into(),
                "spiffe://example.org/a".into(),
                "--cert".into(),
                out("c.pem"),
                "--key".into(),
                out("c.key"),
            ],
            "nowhere",
        ),
        (
            vec![
                "cert".into(),
                "issue".into(),
                "--ca-dir".into(),
                ca.clone(),
                "--spiffe-id".into(),
                "spiffe://other.org/ns/a/sa/b".into(),
                "--cert".into(),
                out("c.pem"),
                "--key".into(),
                out("c.key"),
            ],
            "not in this CA's trust domain",
        ),
        (
            vec![
                "cert".into(),
                "inspect".into(),
                out("ca/ca.pem"),
                "--bundle".into(),
                s(&not_pem).into(),
            ],
            "not.pem",
        ),
    ];
    for (args, needle) in failures {
        let run = ward(&args);
        let line = run.fails_with(1);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    assert!(
        !pki.dir().join("c.pem").exists(),
        "nothing written on failure"
    );
}

#[test]
fn ttl_beyond_the_ca_is_capped_at_its_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    ward([
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        s(&ca),
        "--ttl",
        "1h",
    ])
    .ok();
    let cert = tmp.path().join("x.pem");
    let out = ward([
        "cert",
        "issue",
        "--ca-dir",
        s(&ca),
        "--spiffe-id",
        "spiffe://example.org/x",
        "--ttl",
        "48h",
        "--cert",
        s(&cert),
        "--key",
        s(&tmp.path().join("x.key")),
    ]);
    assert!(out.ok().contains("capped"), "{out:?}");
    let ca_end = openssl(["x509", "-noout", "-enddate", "-in", s(&ca.join("ca.pem"))]);
    let leaf_end = openssl(["x509", "-noout", "-enddate", "-in", s(&cert)]);
    assert_eq!(ca_end.ok(), leaf_end.ok());
}

/// CSRs made by openssl: the CA signs only the identity it is told, whatever the CSR asks,
/// and refuses weak keys, unknown curves and forged signatures.
#[test]
fn csr_signing_trusts_only_the_key_and_refuses_weak_ones() {
    let pki = TestPki::new("example.org");
    let dir = pki.dir();
    let ca = s(&pki.ca_dir()).to_owned();
    let make_csr = |name: &str, keyopts: &[&str]| {
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        let mut args = vec!["req", "-new", "-nodes", "-keyout", s(&key), "-out", s(&csr)];
        args.extend_from_slice(keyopts);
        args.extend_from_slice(&[
            "-subj",
            "/CN=admin",
            "-addext",
            "subjectAltName=URI:spiffe://example.org/ns/kube-system/sa/admin,DNS:evil.example",
        ]);
        openssl(&args).ok();
        csr
    };
    let sign = |csr: &Path| {
        ward([
            "cert",
            "issue",
            "--ca-dir",
            &ca,
            "--spiffe-id",
            "spiffe://example.org/ns/a/sa/b",
            "--csr",
            s(csr),
            "--cert",
            s(&dir.join("signed.pem")),
        ])
    };

    let good = make_csr(
        "p256",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    sign(&good).ok();
    let text = openssl(["x509", "-noout", "-text", "-in", s(&dir.join("signed.pem"))]);
    let text = text.ok();
    assert!(
        text.contains("URI:spiffe://example.org/ns/a/sa/b"),
        "{text}"
    );
    assert!(
        !text.contains("admin") && !text.contains("evil"),
        "CSR names ignored: {text}"
    );

    let rsa2048 = make_csr("rsa2048", &["-newkey", "rsa:2048"]);
    sign(&rsa2048).ok();

    let rsa1024 = make_csr("rsa1024", &["-newkey", "rsa:1024"]);
    let line = sign(&rsa1024).fails_with(1).to_owned();
    assert!(line.contains("too weak: RSA 1024 bits"), "{line}");

    let k1 = make_csr(
        "k1",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
    );
    let line = sign(&k1).fails_with(1).to_owned();
    assert!(line.contains("unsupported elliptic curve"), "{line}");

    // Flip a byte inside the signature: the requester no longer proves the key.
    let der = dir.join("forged.der");
    openssl(["req", "-in", s(&good), "-outform", "DER", "-out", s(&der)]).ok();
    let mut bytes = std::fs::read(&der).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    std::fs::write(&der, &bytes).unwrap();
    let line = sign(&der).fails_with(1).to_owned();
    assert!(line.contains("signature does not verify"), "{line}");
}
