//! Hot-path costs of envelope handling: parsing, canonical encoding,
//! verification (certificate cache hit and miss) and signing.
//!
//! `cargo bench -p fedmsg-hub --bench crypto -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fedmsg_wire::crypto::{Signer, Verifier, VerifierSettings};
use fedmsg_wire::envelope;

#[path = "../tests/wire/support_shared.rs"]
#[allow(dead_code)] // the bench uses a few of the test helpers
mod support_shared;

/// A typical signed envelope: vector 01 (shell-app01, RSA-2048, ~2.3 kB).
fn wire_body() -> Vec<u8> {
    support_shared::read(&support_shared::pyfedmsg_dir().join("vectors/01_valid_shell.json"))
}

fn bench_envelope(c: &mut Criterion) {
    let body = wire_body();
    let value = envelope::parse(&body).expect("vector parses");
    c.bench_function("envelope/parse_signed", |b| {
        b.iter(|| envelope::parse(black_box(&body)))
    });
    let mut out = Vec::with_capacity(4096);
    c.bench_function("envelope/canonical_signed_text", |b| {
        b.iter(|| {
            out.clear();
            envelope::write_canonical_without(
                black_box(&value),
                &["signature", "certificate"],
                &mut out,
            );
            out.len()
        })
    });
    c.bench_function("envelope/canonical_full", |b| {
        b.iter(|| {
            out.clear();
            envelope::write_canonical(black_box(&value), &mut out);
            out.len()
        })
    });
}

fn bench_verify(c: &mut Criterion) {
    let value = envelope::parse(&wire_body()).expect("vector parses");
    let hit = Verifier::new(support_shared::pyfedmsg_settings());
    assert!(hit.verify(&value).is_valid());
    c.bench_function("verify/cache_hit", |b| {
        b.iter(|| hit.verify(black_box(&value)))
    });

    // Capacity 0: every message parses its certificate and checks the chain
    // (and the CRL) again.
    let miss = Verifier::new(VerifierSettings {
        cache_capacity: 0,
        negative_cache_capacity: 0,
        ..support_shared::pyfedmsg_settings()
    });
    assert!(miss.verify(&value).is_valid());
    c.bench_function("verify/cache_miss", |b| {
        b.iter(|| miss.verify(black_box(&value)))
    });

    let body = wire_body();
    c.bench_function("verify/parse_and_verify_hit", |b| {
        b.iter(|| hit.verify(&envelope::parse(black_box(&body)).expect("parses")))
    });
}

fn bench_sign(c: &mut Criterion) {
    let pki = support_shared::pyfedmsg_dir().join("pki");
    let signer = Signer::from_files(pki.join("shell-app01.crt"), pki.join("shell-app01.key"))
        .expect("signer");
    let template = serde_json::json!({
        "topic": "org.fedoraproject.dev.bench.msg",
        "msg": {"seq": 1, "payload": "xxxxxxxxxxxxxxxx"},
        "timestamp": 1_795_312_648u64,
        "msg_id": "2026-4af33b7e-a413-4a09-bb3b-327b370e1662",
        "i": 1,
        "username": "root"
    });
    let template = template.as_object().expect("object").clone();
    c.bench_function("sign/rsa2048_sha1", |b| {
        b.iter_batched(
            || template.clone(),
            |mut envelope| signer.sign(&mut envelope).map(|()| envelope),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench_envelope, bench_verify, bench_sign);
criterion_main!(benches);
