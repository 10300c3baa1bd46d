//! Every X.509-SVID rule of `verify_svid`, one crafted certificate per rule: the good chain
//! passes, and each bad one is refused with the error for exactly its rule.

use std::time::{Duration, SystemTime};

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use ward_certs::verify::{Purpose, unix_time};
use ward_certs::{SvidError, verify_svid};
use ward_tests::pki::{LeafSpec, TestPki};

fn check(
    pki: &TestPki,
    chain: &[CertificateDer<'_>],
    purpose: Purpose,
) -> Result<String, SvidError> {
    verify_svid(chain, &pki.bundle(), unix_time(SystemTime::now()), purpose)
        .map(|id| id.to_string())
}

fn leaf(pki: &TestPki, f: impl Fn(&mut LeafSpec)) -> Vec<CertificateDer<'static>> {
    let mut spec = LeafSpec::svid(&pki.id("default", "web"));
    f(&mut spec);
    pki.craft(&spec).chain
}

fn ca_spec(pki: &TestPki) -> LeafSpec {
    let mut spec = LeafSpec::svid(&format!("spiffe://{}", pki.trust_domain));
    spec.is_ca = true;
    spec.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    spec.extended_key_usages.clear();
    spec
}

#[test]
fn a_well_formed_svid_passes_for_every_purpose() {
    let pki = TestPki::new("example.org");
    let chain = leaf(&pki, |_| {});
    for purpose in [Purpose::Client, Purpose::Server, Purpose::Both] {
        assert_eq!(check(&pki, &chain, purpose), Ok(pki.id("default", "web")));
    }
    // The SVIDs ward's CA issues pass too, directly and through an intermediate.
    let svid = pki.svid(&pki.id("a", "b"));
    assert!(check(&pki, svid.chain(), Purpose::Both).is_ok());
    let deep = TestPki::with_intermediate("example.org");
    let svid = deep.svid(&deep.id("a", "b"));
    assert_eq!(svid.chain().len(), 2);
    assert!(check(&deep, svid.chain(), Purpose::Both).is_ok());
    // Without its intermediate the leaf no longer reaches the root.
    assert!(matches!(
        check(&deep, &svid.chain()[..1], Purpose::Both),
        Err(SvidError::UnknownIssuer { .. })
    ));
}

#[test]
fn leaf_key_usage_rules() {
    let pki = TestPki::new("example.org");
    let cases: Vec<(&str, Vec<KeyUsagePurpose>, SvidError)> = vec![
        ("no keyUsage", vec![], SvidError::NoDigitalSignature),
        (
            "keyEncipherment only",
            vec![KeyUsagePurpose::KeyEncipherment],
            SvidError::NoDigitalSignature,
        ),
        (
            "keyCertSign",
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            SvidError::LeafCertSign,
        ),
        (
            "cRLSign",
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
            SvidError::LeafCrlSign,
        ),
    ];
    for (case, usages, want) in cases {
        let chain = leaf(&pki, |s| s.key_usages = usages.clone());
        assert_eq!(check(&pki, &chain, Purpose::Both), Err(want), "{case}");
    }
    // keyEncipherment beside digitalSignature is allowed (RSA key exchange).
    let chain = leaf(&pki, |s| {
        s.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    });
    assert!(check(&pki, &chain, Purpose::Both).is_ok());
}

#[test]
fn extended_key_usage_must_allow_the_role() {
    let pki = TestPki::new("example.org");
    let server_only = leaf(&pki, |s| {
        s.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    assert!(check(&pki, &server_only, Purpose::Server).is_ok());
    assert_eq!(
        check(&pki, &server_only, Purpose::Client),
        Err(SvidError::MissingExtendedKeyUsage("clientAuth"))
    );
    assert_eq!(
        check(&pki, &server_only, Purpose::Both),
        Err(SvidError::MissingExtendedKeyUsage("clientAuth"))
    );
    let client_only = leaf(&pki, |s| {
        s.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
    });
    assert_eq!(
        check(&pki, &client_only, Purpose::Server),
        Err(SvidError::MissingExtendedKeyUsage("serverAuth"))
    );
    // No extension at all means no restriction (RFC 5280 §4.2.1.12).
    let none = leaf(&pki, |s| s.extended_key_usages.clear());
    assert!(check(&pki, &none, Purpose::Both).is_ok());
}

#[test]
fn uri_san_rules() {
    let pki = TestPki::new("example.org");
    let with_uris = |uris: &[&str]| {
        leaf(&pki, |s| {
            s.uris = uris.iter().map(|u| u.to_string()).collect()
        })
    };

    assert_eq!(
        check(&pki, &with_uris(&["spiffe://example.org"]), Purpose::Both),
        Err(SvidError::LeafIdWithoutPath {
            id: "spiffe://example.org".into()
        })
    );
    for bad in [
        "https://example.org/ns/a/sa/b",
        "spiffe://EXAMPLE.org/ns/a/sa/b",
        "spiffe://example.org/ns/../sa/b",
        "spiffe://example.org/ns/a?x=1",
    ] {
        let got = check(&pki, &with_uris(&[bad]), Purpose::Both);
        assert!(
            matches!(&got, Err(SvidError::InvalidSpiffeId { uri, .. }) if uri == bad),
            "{bad}: {got:?}"
        );
    }
    // A DNS SAN beside the one URI SAN is allowed by the spec.
    let chain = leaf(&pki, |s| s.dns = vec!["web.default.svc".into()]);
    assert!(check(&pki, &chain, Purpose::Both).is_ok());
    assert_eq!(
        check(
            &pki,
            &with_uris(&["spiffe://example.org/a", "spiffe://example.org/a"]),
            Purpose::Both
        ),
        Err(SvidError::MultipleUriSans { count: 2 })
    );
}

#[test]
fn signing_certificates_must_be_cas_that_may_sign() {
    // A root that allows one CA below it (pathLenConstraint 1); signers sit under it.
    let pki = TestPki::with_intermediate("example.org");
    let web = LeafSpec::svid(&pki.id("default", "web"));

    let good = pki.root_signer(&ca_spec(&pki));
    assert!(check(&pki, &pki.craft_under(&web, &good).chain, Purpose::Both).is_ok());

    let mut not_ca = ca_spec(&pki);
    not_ca.is_ca = false;
    let got = check(
        &pki,
        &pki.craft_under(&web, &pki.root_signer(&not_ca)).chain,
        Purpose::Both,
    );
    assert!(
        matches!(got, Err(SvidError::SignerNotCa { index: 1, .. })),
        "{got:?}"
    );

    let mut no_cert_sign = ca_spec(&pki);
    no_cert_sign.key_usages = vec![KeyUsagePurpose::CrlSign];
    let got = check(
        &pki,
        &pki.craft_under(&web, &pki.root_signer(&no_cert_sign)).chain,
        Purpose::Both,
    );
    assert!(
        matches!(got, Err(SvidError::SignerNoCertSign { index: 1, .. })),
        "{got:?}"
    );

    let mut expired = ca_spec(&pki);
    expired.not_before = SystemTime::now() - Duration::from_secs(7200);
    expired.not_after = SystemTime::now() - Duration::from_secs(3600);
    let got = check(
        &pki,
        &pki.craft_under(&web, &pki.root_signer(&expired)).chain,
        Purpose::Both,
    );
    assert!(
        matches!(got, Err(SvidError::Expired { index: 1, .. })),
        "{got:?}"
    );
}

#[test]
fn validity_is_checked_against_the_given_time() {
    let pki = TestPki::new("example.org");
    let chain = leaf(&pki, |_| {});
    let bundle = pki.bundle();
    let at = |offset: i64| {
        let now = SystemTime::now();
        let t = if offset >= 0 {
            now + Duration::from_secs(offset as u64)
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        };
        verify_svid(&chain, &bundle, unix_time(t), Purpose::Both)
    };
    assert!(at(0).is_ok());
    assert!(matches!(
        at(2 * 3600),
        Err(SvidError::Expired { index: 0, .. })
    ));
    assert!(matches!(
        at(-3600),
        Err(SvidError::NotYetValid { index: 0, .. })
    ));
}

#[test]
fn garbage_and_empty_chains_are_refused() {
    let pki = TestPki::new("example.org");
    assert_eq!(check(&pki, &[], Purpose::Both), Err(SvidError::EmptyChain));
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(matches!(
        check(&pki, std::slice::from_ref(&junk), Purpose::Both),
        Err(SvidError::Malformed { index: 0, .. })
    ));
    let mut chain = leaf(&pki, |_| {});
    chain.push(junk);
    assert!(matches!(
        check(&pki, &chain, Purpose::Both),
        Err(SvidError::Malformed { index: 1, .. })
    ));
}

#[test]
fn the_memo_of_verified_chains_rechecks_time_and_is_dropped_with_the_bundle() {
    use ward_certs::tls::BundleStore;
    let pki = TestPki::new("example.org");
    let chain = leaf(&pki, |_| {});
    let store = BundleStore::new(pki.bundle());
    let now = SystemTime::now();
    let verify =
        |t: SystemTime| store.verify(&chain[0], &chain[1..], unix_time(t), Purpose::Client);

    let want = pki.id("default", "web");
    assert_eq!(verify(now).map(|id| id.to_string()), Ok(want.clone()));
    assert_eq!(
        verify(now).map(|id| id.to_string()),
        Ok(want),
        "repeat answered alike"
    );
    // Remembered or not, an expired chain is refused.
    assert!(matches!(
        verify(now + Duration::from_secs(2 * 3600)),
        Err(SvidError::Expired { index: 0, .. })
    ));
    // A purpose the chain was not verified for is checked afresh.
    let server_only = leaf(&pki, |s| {
        s.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    assert!(
        store
            .verify(&server_only[0], &[], unix_time(now), Purpose::Server)
            .is_ok()
    );
    assert!(
        store
            .verify(&server_only[0], &[], unix_time(now), Purpose::Client)
            .is_err()
    );
    // After a swap to a bundle without our root, nothing remembered helps.
    store.swap(TestPki::new("example.org").bundle());
    assert!(matches!(verify(now), Err(SvidError::UnknownIssuer { .. })));
}

#[test]
fn bundle_roots_must_be_signing_cas() {
    use ward_certs::bundle::BundleError;
    let pki = TestPki::new("example.org");
    let leaf = pki.svid(&pki.id("a", "b"));
    let err =
        ward_certs::TrustBundle::new(pki.trust_domain.clone(), [leaf.leaf().clone()]).unwrap_err();
    assert!(matches!(err, BundleError::NotCa { index: 0, .. }), "{err}");
    let err = ward_certs::TrustBundle::new(pki.trust_domain.clone(), []).unwrap_err();
    assert!(matches!(err, BundleError::Empty), "{err}");
    let pem = pki.bundle().to_pem();
    let back = ward_certs::TrustBundle::from_pem(
        pki.trust_domain.clone(),
        pem.as_bytes(),
        std::path::Path::new("bundle.pem"),
    )
    .unwrap();
    assert_eq!(back.roots().len(), 1);
    assert!(back.contains(pki.ca.root()));
}
