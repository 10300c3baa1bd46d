//! The CA's unit tests.
use super::*;
use crate::id::parse_spiffe_id;
use crate::verify::{Purpose, unix_time, verify_svid};

const HOUR: Duration = Duration::from_secs(3600);

fn td() -> TrustDomain {
    parse_trust_domain("example.org").unwrap()
}

fn id(s: &str) -> SpiffeId {
    parse_spiffe_id(s).unwrap()
}

fn csr() -> Vec<u8> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/ns/admin/sa/root".try_into().unwrap(),
    ));
    params.serialize_request(&key).unwrap().der().to_vec()
}

#[test]
fn saved_ca_loads_back_and_its_svids_verify() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let created = CertificateAuthority::create(td(), &CaOptions::default(), now).unwrap();
    created.save(dir.path(), false).unwrap();
    let loaded = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(loaded.trust_domain(), &td());
    assert_eq!(loaded.root(), created.root());
    assert_eq!(loaded.not_after(), created.not_after());

    let bundle = TrustBundle::read(td(), &dir.path().join(BUNDLE_FILE)).unwrap();
    let svid = loaded
        .issue(&id("spiffe://example.org/ns/a/sa/b"), HOUR, now)
        .unwrap();
    let got = verify_svid(svid.chain(), &bundle, unix_time(now), Purpose::Both).unwrap();
    assert_eq!(got.to_string(), "spiffe://example.org/ns/a/sa/b");
}

#[test]
fn save_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let first = CertificateAuthority::create(td(), &CaOptions::default(), now).unwrap();
    first.save(dir.path(), false).unwrap();
    let second = CertificateAuthority::create(td(), &CaOptions::default(), now).unwrap();
    let err = second.save(dir.path(), false).unwrap_err();
    assert!(matches!(err, CaError::Exists { .. }), "{err}");
    assert_eq!(
        CertificateAuthority::load(dir.path()).unwrap().root(),
        first.root()
    );
    second.save(dir.path(), true).unwrap();
    assert_eq!(
        CertificateAuthority::load(dir.path()).unwrap().root(),
        second.root()
    );
}

#[test]
fn load_refuses_a_key_that_is_not_the_certificates() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let now = SystemTime::now();
    CertificateAuthority::create(td(), &CaOptions::default(), now)
        .unwrap()
        .save(a.path(), false)
        .unwrap();
    CertificateAuthority::create(td(), &CaOptions::default(), now)
        .unwrap()
        .save(b.path(), false)
        .unwrap();
    fs::copy(b.path().join(CA_KEY_FILE), a.path().join(CA_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load(a.path()).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
}

#[test]
fn leaves_carry_only_the_authorized_identity_with_random_serials() {
    let now = SystemTime::now();
    let ca = CertificateAuthority::create(td(), &CaOptions::default(), now).unwrap();
    let want = id("spiffe://example.org/ns/web/sa/frontend");
    let mut serials = std::collections::HashSet::new();
    for _ in 0..20 {
        let chain = ca.sign_csr(&csr(), &want, HOUR, now).unwrap();
        let info = CertInfo::parse(&chain[0]).unwrap();
        assert_eq!(
            info.uri_sans,
            vec![want.to_string()],
            "CSR SANs are ignored"
        );
        assert_eq!(info.spiffe_id.as_ref(), Some(&want));
        // 16 octets, positive, most significant octet 0x40..0x7f.
        assert_eq!(info.serial.len(), 32, "{}", info.serial);
        assert!(
            matches!(info.serial.as_bytes()[0], b'4'..=b'7'),
            "{}",
            info.serial
        );
        assert!(serials.insert(info.serial));
        let back = now.duration_since(info.not_before).unwrap();
        assert!(
            back >= CLOCK_SKEW - Duration::from_secs(1)
                && back <= CLOCK_SKEW + Duration::from_secs(1)
        );
        let life = info.not_after.duration_since(now).unwrap();
        assert!(
            life <= HOUR && life >= HOUR - Duration::from_secs(1),
            "{life:?}"
        );
    }
}

#[test]
fn short_lived_leaves_are_backdated_by_a_tenth_of_their_life_at_most() {
    let now = SystemTime::now();
    let ca = CertificateAuthority::create(td(), &CaOptions::default(), now).unwrap();
    let ttl = Duration::from_secs(20);
    let info = ca
        .issue(&id("spiffe://example.org/x"), ttl, now)
        .unwrap()
        .leaf_info()
        .unwrap();
    let back = now.duration_since(info.not_before).unwrap();
    assert!(back <= Duration::from_secs(3), "{back:?}");
    // Renewal then falls after issuance, not before it.
    let renew = crate::rotation::renew_at(info.not_before, info.not_after, 0.0);
    assert!(renew > now, "renewal due at birth");
}

#[test]
fn lifetime_never_exceeds_the_ca() {
    let now = SystemTime::now();
    let options = CaOptions {
        ttl: HOUR,
        intermediate: true,
    };
    let ca = CertificateAuthority::create(td(), &options, now).unwrap();
    let svid = ca
        .issue(&id("spiffe://example.org/x"), 48 * HOUR, now)
        .unwrap();
    assert_eq!(svid.leaf_info().unwrap().not_after, ca.not_after());
    let late = ca.not_after() + Duration::from_secs(1);
    let err = ca
        .issue(&id("spiffe://example.org/x"), HOUR, late)
        .unwrap_err();
    assert!(matches!(err, CaError::CaExpired { .. }), "{err}");
}

#[test]
fn refuses_what_it_must_not_sign() {
    let now = SystemTime::now();
    let ca = CertificateAuthority::create(td(), &CaOptions::default(), now).unwrap();
    let sign = |csr: &[u8], who: &str, ttl| ca.sign_csr(csr, &id(who), ttl, now);
    assert!(matches!(
        sign(&csr(), "spiffe://other.org/ns/a/sa/b", HOUR),
        Err(CaError::ForeignIdentity { .. })
    ));
    assert!(matches!(
        sign(&csr(), "spiffe://example.org", HOUR),
        Err(CaError::IdWithoutPath { .. })
    ));
    assert!(matches!(
        sign(&csr(), "spiffe://example.org/a", Duration::ZERO),
        Err(CaError::ZeroTtl)
    ));
    assert!(matches!(
        sign(b"not a csr", "spiffe://example.org/a", HOUR),
        Err(CaError::CsrMalformed(_))
    ));
    let mut forged = csr();
    let last = forged.len() - 2;
    forged[last] ^= 0x01;
    assert!(matches!(
        sign(&forged, "spiffe://example.org/a", HOUR),
        Err(CaError::CsrSignature)
    ));
}

#[test]
fn keys_never_print() {
    let ca = CertificateAuthority::create(td(), &CaOptions::default(), SystemTime::now()).unwrap();
    let debug = format!("{ca:?}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    let svid = ca
        .issue(&id("spiffe://example.org/a"), HOUR, SystemTime::now())
        .unwrap();
    let debug = format!("{svid:?}");
    assert!(
        debug.contains("[redacted]") && !debug.contains("secret"),
        "{debug}"
    );
}

#[test]
fn a_server_certificate_names_its_hosts_and_never_passes_as_an_svid() {
    let now = SystemTime::now();
    let ca = CertificateAuthority::create(td(), &CaOptions::default(), now).unwrap();
    let names = [
        "ward-control-plane.ward-system.svc".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let (chain, _key) = ca.issue_server(&names, HOUR, now).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    let text = format!("{:?}", san.general_names);
    assert!(
        text.contains("DNSName(\"ward-control-plane.ward-system.svc\")"),
        "{text}"
    );
    assert!(text.contains("IPAddress([127, 0, 0, 1])"), "{text}");
    assert!(!text.contains("URI"), "{text}");
    let bundle = ca.bundle().unwrap();
    assert!(verify_svid(&chain, &bundle, unix_time(now), Purpose::Both).is_err());
    assert!(
        ca.issue_server(&["not a name!".to_owned()], HOUR, now)
            .is_err()
    );
}
