//! `Verifier::verify_body` (the hub's hot path, which checks canonical wire
//! bodies in place) must give exactly the verdicts of parsing the body and
//! calling `Verifier::verify`, on the interop vectors and on variations
//! that push messages on and off its fast path.

use crate::support_shared::*;
use fedmsg_wire::crypto::{Signer, Verdict, Verifier};
use fedmsg_wire::envelope;
use serde_json::{json, Value};

fn general_path(verifier: &Verifier, body: &[u8]) -> Verdict {
    match envelope::parse(body) {
        Ok(value) => verifier.verify(&value),
        Err(_) => verifier.verify_body(body), // BadEncoding either way
    }
}

fn assert_same_verdict(verifier: &Verifier, label: &str, body: &[u8]) {
    // Twice: the second time the certificate comes from the per-thread list.
    for round in 0..2 {
        assert_eq!(
            verifier.verify_body(body),
            general_path(verifier, body),
            "{label} (round {round})"
        );
    }
}

fn signed_body(signer: &Signer, envelope: Value) -> Vec<u8> {
    let mut envelope = envelope;
    signer.sign_value(&mut envelope).expect("signs");
    envelope::to_canonical(&envelope).into_bytes()
}

fn pki_signer(stem: &str) -> Signer {
    let pki = pyfedmsg_dir().join("pki");
    Signer::from_files(
        pki.join(format!("{stem}.crt")),
        pki.join(format!("{stem}.key")),
    )
    .expect("signer loads")
}

#[test]
fn vectors_get_the_same_verdicts() {
    let dir = pyfedmsg_dir().join("vectors");
    let verifier = Verifier::new(pyfedmsg_settings());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("vectors dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".json") && n.as_bytes()[0].is_ascii_digit())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 13, "vectors missing in {}", dir.display());
    for file in files {
        assert_same_verdict(&verifier, &file.display().to_string(), &read(&file));
    }
}

#[test]
fn variations_on_and_off_the_fast_path() {
    let verifier = Verifier::new(pyfedmsg_settings());
    let shell = pki_signer("shell-app01");
    let evil = pki_signer("evil-app02");
    let base = json!({
        "topic": "org.fedoraproject.dev.bench.msg",
        "msg": {"seq": 1, "payload": "x", "f": 1.5, "u": "é😀\u{7f}", "n": [1, null, true]},
        "timestamp": 1_700_000_000,
        "msg_id": "2024-abc",
        "i": 1,
        "username": "bench",
    });
    let good = signed_body(&shell, base.clone());
    let text = String::from_utf8(good.clone()).expect("ascii");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("canonical and valid", good.clone()),
        (
            "whitespace (general path)",
            text.replace("\"i\":1", "\"i\": 1").into_bytes(),
        ),
        (
            "tampered payload",
            text.replace("\"seq\":1", "\"seq\":2").into_bytes(),
        ),
        (
            "tampered topic",
            text.replace("bench.msg", "bench.msh").into_bytes(),
        ),
        ("evil on a reserved topic", signed_body(&evil, base.clone())),
        (
            "evil on a topic without policy",
            signed_body(
                &evil,
                json!({"topic": "org.fedoraproject.dev.other", "msg": {}, "i": 1}),
            ),
        ),
        (
            "crypto not x509",
            text.replace("\"crypto\":\"x509\"", "\"crypto\":\"gpg\"")
                .into_bytes(),
        ),
        (
            "signature cut",
            text.replacen("\"signature\":\"", "\"signature\":\"AAAA", 1)
                .into_bytes(),
        ),
        (
            "signature escaped differently",
            text.replace("\\n\",\"timestamp\"", "\\u000a\",\"timestamp\"")
                .into_bytes(),
        ),
        (
            "no topic",
            signed_body(&shell, json!({"msg": {"a": 1}, "msg_id": "x"})),
        ),
    ];
    // seq_id added after signing (a publisher with a replay store).
    let mut with_seq: Value = envelope::parse(&good).expect("parses");
    with_seq["seq_id"] = json!(42);
    cases.push((
        "seq_id added after signing",
        envelope::to_canonical(&with_seq).into_bytes(),
    ));
    let mut seq_signed = base.clone();
    seq_signed["seq_id"] = json!(7);
    cases.push(("seq_id signed", signed_body(&shell, seq_signed)));
    for (label, body) in &cases {
        assert_same_verdict(&verifier, label, body);
    }
    assert!(verifier.verify_body(&good).is_valid());
    assert!(verifier.verify_body(&cases[1].1).is_valid());
    assert!(!verifier.verify_body(&cases[2].1).is_valid());
}

#[test]
fn verifiers_do_not_share_their_per_thread_entries() {
    // Same thread, same certificate, different trust: one verifier's cached
    // verdict must not leak into the other's.
    let trusting = Verifier::new(pyfedmsg_settings());
    let foreign = Verifier::new(fedmsg_wire::crypto::VerifierSettings {
        ca_cert_location: pyfedmsg_dir()
            .join("pki/shell-app01.crt")
            .display()
            .to_string(),
        ..pyfedmsg_settings()
    });
    let body = signed_body(
        &pki_signer("shell-app01"),
        json!({"topic": "org.fedoraproject.dev.bench.msg", "msg": {}, "i": 1}),
    );
    assert!(trusting.verify_body(&body).is_valid());
    assert!(!foreign.verify_body(&body).is_valid());
    assert!(trusting.verify_body(&body).is_valid());
    assert_eq!(trusting.stats().cache_misses, 1);
}
