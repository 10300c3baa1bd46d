//! CSR signing and SVID verification: the two costs the CA and every handshake pay.
//! Targets (issue 2): signing >= 5,000 SVIDs/s on one core; verification <= 50 µs.

use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use ward_certs::verify::{Purpose, unix_time};
use ward_certs::{CaOptions, CertificateAuthority, parse_spiffe_id, parse_trust_domain};

fn authority(intermediate: bool) -> CertificateAuthority {
    let td = parse_trust_domain("bench.example").expect("trust domain");
    let options = CaOptions {
        intermediate,
        ..CaOptions::default()
    };
    CertificateAuthority::create(td, &options, SystemTime::now()).expect("CA")
}

fn sign_csr(c: &mut Criterion) {
    let ca = authority(false);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr");
    let id = parse_spiffe_id("spiffe://bench.example/ns/default/sa/web").expect("id");
    let ttl = Duration::from_secs(3600);

    let mut group = c.benchmark_group("ca");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_csr_p256", |b| {
        b.iter(|| {
            ca.sign_csr(csr.der(), &id, ttl, SystemTime::now())
                .expect("sign")
        })
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_svid");
    for (name, intermediate) in [("root_signed", false), ("via_intermediate", true)] {
        let ca = authority(intermediate);
        let bundle = ca.bundle().expect("bundle");
        let id = parse_spiffe_id("spiffe://bench.example/ns/default/sa/web").expect("id");
        let svid = ca
            .issue(&id, Duration::from_secs(3600), SystemTime::now())
            .expect("issue");
        let now = unix_time(SystemTime::now());
        group.bench_function(name, |b| {
            b.iter(|| {
                ward_certs::verify_svid(svid.chain(), &bundle, now, Purpose::Client).expect("valid")
            })
        });
        // What a TLS handshake pays when the same peer chain comes again under the same
        // bundle: the memo of verified chains in `BundleStore`.
        let store = ward_certs::tls::BundleStore::new(bundle.clone());
        let (leaf, intermediates) = svid.chain().split_first().expect("leaf");
        group.bench_function(format!("{name}_repeat_peer"), |b| {
            b.iter(|| {
                store
                    .verify(leaf, intermediates, now, Purpose::Client)
                    .expect("valid")
            })
        });
    }
    group.finish();
}

/// The floor under `verify_svid`: one bare ECDSA P-256/SHA-256 signature check, which a
/// root-signed chain cannot avoid.
fn ecdsa_floor(c: &mut Criterion) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
        UnparsedPublicKey,
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("key");
    let msg = [7u8; 400];
    let sig = key.sign(&rng, &msg).expect("sign");
    let public =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref().to_vec());
    c.bench_function("floor/ecdsa_p256_verify", |b| {
        b.iter(|| public.verify(&msg, sig.as_ref()).expect("valid"))
    });
}

criterion_group!(benches, sign_csr, verify, ecdsa_floor);
criterion_main!(benches);
