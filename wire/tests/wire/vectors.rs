//! Interop vectors: our verifier must give Python fedmsg's verdicts, our
//! canonical encoding must reproduce the signed bytes, and our signer must
//! reproduce the upstream known-answer tests.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support_shared::*;
use fedmsg_wire::crypto::{Rejection, Signer, Verdict, Verifier, VerifierSettings};
use fedmsg_wire::envelope;
use serde_json::Value;

const CREDENTIALS: [&str; 2] = ["signature", "certificate"];

/// The rejection reason we expect where Python says "invalid" (from the
/// reason column of EXPECTED.md).
fn expected_reason(file: &str) -> Option<&'static str> {
    Some(match file.get(..2)? {
        "04" => "policy",
        "05" | "06" | "10" => "bad_signature",
        "07" => "no_signature",
        "08" => "revoked",
        "09" => "bad_chain",
        _ => return None,
    })
}

fn canonical_without_credentials(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    envelope::write_canonical_without(value, &CREDENTIALS, &mut out);
    out
}

#[test]
fn pyfedmsg_vectors_get_pythons_validate_verdict() {
    let dir = pyfedmsg_dir().join("vectors");
    let manifest = read_json(&dir.join("MANIFEST.json"));
    let entries = manifest.as_array().expect("MANIFEST.json is a list");
    let verifier = Verifier::new(pyfedmsg_settings());
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for entry in entries {
        let file = entry["file"].as_str().expect("file");
        let expect = entry["expect_validate"].as_str().expect("expect_validate");
        seen.insert(file.to_owned());
        let body = envelope::parse(&read(&dir.join(file))).expect("vector parses");
        let verdict = verifier.verify(&body);
        let got = if verdict.is_valid() {
            "valid"
        } else {
            "invalid"
        };
        if got != expect {
            failures.push(format!("{file}: expected {expect}, got {verdict:?}"));
            continue;
        }
        if let (Some(reason), Some(rejection)) = (expected_reason(file), verdict.rejection()) {
            if rejection.reason() != reason {
                failures.push(format!(
                    "{file}: expected reason {reason}, got {rejection:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "verdict mismatches:\n{}",
        failures.join("\n")
    );
    // Every vector on disk must be covered by the manifest (none skipped).
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("vectors dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name.ends_with(".json") && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
        })
        .collect();
    assert_eq!(on_disk, seen);
    assert_eq!(seen.len(), 13);
}

#[test]
fn valid_vectors_canonicalise_to_the_signed_bytes() {
    let dir = pyfedmsg_dir().join("vectors");
    let mut checked = 0;
    for entry in read_json(&dir.join("MANIFEST.json"))
        .as_array()
        .expect("list")
    {
        let file = entry["file"].as_str().expect("file");
        let signed = dir.join(file.replace(".json", ".signed.txt"));
        if !signed.is_file() {
            continue;
        }
        let body = envelope::parse(&read(&dir.join(file))).expect("vector parses");
        let ours = canonical_without_credentials(&body);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&read(&signed)),
            "canonical form of {file}"
        );
        checked += 1;
    }
    assert_eq!(checked, 6, "six vectors come with their signed text");
}

#[test]
fn topic_frame_mismatch_vector_is_valid_for_validate() {
    // 12_hub_invalid_topic_mismatch: the body is fine; only the hub's frame
    // check rejects it, so the verifier must say valid and expose the topic.
    let dir = pyfedmsg_dir().join("vectors");
    let body =
        envelope::parse(&read(&dir.join("12_hub_invalid_topic_mismatch.json"))).expect("parses");
    let verifier = Verifier::new(pyfedmsg_settings());
    assert_eq!(
        verifier.verify(&body),
        Verdict::Valid {
            signer: "shell-app01".to_owned()
        }
    );
    assert_eq!(body["topic"], "org.fedoraproject.dev.bench.msg");
}

fn datanommer_messages() -> Vec<Value> {
    let page = read_json(&upstream_dir().join("sample_datanommer_response.json"));
    let messages = page["raw_messages"]
        .as_array()
        .expect("raw_messages")
        .clone();
    assert_eq!(messages.len(), 25);
    messages
}

fn fedora_ca_settings(pinned: Option<i64>) -> VerifierSettings {
    VerifierSettings {
        pinned_time: pinned,
        ..upstream_settings("fedora_ca.crt", None)
    }
}

#[test]
fn production_messages_verify_after_the_datagrepper_fix() {
    let verifier = Verifier::new(fedora_ca_settings(Some(PINNED_2023_06_01)));
    let mut signers = BTreeSet::new();
    for (index, mut message) in datanommer_messages().into_iter().enumerate() {
        assert!(
            envelope::fix_datagrepper_message(&mut message),
            "message {index} has datagrepper fields"
        );
        match verifier.verify(&message) {
            Verdict::Valid { signer } => {
                signers.insert(signer);
            }
            Verdict::Invalid(rejection) => panic!(
                "message {index} ({}) rejected: {rejection}",
                message["topic"]
            ),
        }
    }
    let expected: BTreeSet<String> = [
        "copr-copr-be.cloud.fedoraproject.org",
        "koji-koji01.phx2.fedoraproject.org",
        "github2fedmsg-github2fedmsg01.phx2.fedoraproject.org",
        "mailman-mailman01.phx2.fedoraproject.org",
        "bugzilla2fedmsg-bugzilla2fedmsg01.phx2.fedoraproject.org",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(signers, expected);
}

#[test]
fn production_messages_fail_without_the_fix_or_the_pinned_time() {
    let pinned = Verifier::new(fedora_ca_settings(Some(PINNED_2023_06_01)));
    let unfixed = &datanommer_messages()[0];
    assert_eq!(
        pinned.verify(unfixed),
        Verdict::Invalid(Rejection::BadSignature)
    );

    let mut fixed = unfixed.clone();
    envelope::fix_datagrepper_message(&mut fixed);
    let today = Verifier::new(fedora_ca_settings(None));
    match today.verify(&fixed) {
        Verdict::Invalid(Rejection::Chain(why)) => assert!(why.contains("expired"), "{why}"),
        other => panic!("expected an expired chain today, got {other:?}"),
    }
    // Before the re-issued CA existed (the signing time, 2017) it is "not yet valid".
    let then = Verifier::new(fedora_ca_settings(Some(1_504_643_075)));
    assert!(matches!(
        then.verify(&fixed),
        Verdict::Invalid(Rejection::Chain(_))
    ));
}

fn upstream_signer(stem: &str) -> Signer {
    let keys = upstream_dir().join("keys");
    Signer::from_files(
        keys.join(format!("{stem}.crt")),
        keys.join(format!("{stem}.key")),
    )
    .expect("signer loads")
}

#[test]
fn kat_signing_relay_is_reproduced_byte_for_byte() {
    let kat = read_json(&upstream_dir().join("kat_signing_relay.json"));
    let keys_base = upstream_dir();
    let signer = Signer::from_files(
        keys_base.join(kat["cert"].as_str().expect("cert")),
        keys_base.join(kat["key"].as_str().expect("key")),
    )
    .expect("signer loads");
    let mut message = kat["input"].clone();
    signer.sign_value(&mut message).expect("signs");
    let expected = &kat["expected"];
    assert_eq!(message["signature"], expected["signature"]);
    assert_eq!(message["certificate"], expected["certificate"]);
    assert_eq!(&message, expected);
    assert_eq!(
        canonical_without_credentials(&message),
        br#"{"crypto":"x509","my":"msg"}"#
    );
}

#[test]
fn kat_b_from_the_reference_is_reproduced() {
    let signer = upstream_signer("shell-app01.phx2.fedoraproject.org");
    let mut message = serde_json::json!({
        "topic": "org.fedoraproject.dev.logger.log",
        "msg": {"log": "Hello world \u{2014} \u{fc}n\u{ef}code", "n": 1.5, "list": [1, 2.0, null, true]},
        "timestamp": 1393878837,
        "msg_id": "2014-f1c49f0b-5caf-49e6-b79a-cc54bcfac602",
        "i": 1,
        "username": "root"
    });
    signer.sign_value(&mut message).expect("signs");
    let canonical = canonical_without_credentials(&message);
    assert_eq!(
        String::from_utf8_lossy(&canonical),
        r#"{"crypto":"x509","i":1,"msg":{"list":[1,2.0,null,true],"log":"Hello world \u2014 \u00fcn\u00efcode","n":1.5},"msg_id":"2014-f1c49f0b-5caf-49e6-b79a-cc54bcfac602","timestamp":1393878837,"topic":"org.fedoraproject.dev.logger.log","username":"root"}"#
    );
    let digest: String = openssl::sha::sha1(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, "4a3f4f57dd1571526382d7a0cac2755b7ead13e6");
    assert_eq!(
        message["signature"],
        "XXLBXT/ZTOPGyv0CSqAs1Ibp0HBIXu+r7s8atP1Xtb9vQh7BWMvIupbOkYaqRUSb93u862LMLGcK\nMTNpdtSMfGcyCOcAdoapO+G3Z/4uclcSh+MsHiGpu0MKMg1DWBkTa+K1jfS9JUrt52n8wkkOloGX\nHDybwObv8DD4gEQjPMk=\n"
    );
    let certificate = message["certificate"].as_str().expect("string");
    assert_eq!(certificate.len(), 2112);
    assert!(certificate.starts_with(
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUVWRENDQTcyZ0F3SUJBZ0lCQXpBTkJna3Fo\n"
    ));
}

/// Signs `{"topic": topic, "msg": ...}` with an upstream leaf.
fn signed_by(stem: &str, topic: &str) -> Value {
    let mut message = serde_json::json!({"topic": topic, "msg": {"hello": "world"}, "i": 1});
    upstream_signer(stem)
        .sign_value(&mut message)
        .expect("signs");
    message
}

fn verdict_with(settings: VerifierSettings, message: &Value) -> Verdict {
    Verifier::new(settings).verify(message)
}

/// The expectations of upstream's `test_x509.py` (reference §12.3), checked
/// with the upstream fixtures.
#[test]
fn upstream_chain_and_crl_fixtures() {
    let good = signed_by("shell-app01.phx2.fedoraproject.org", "mytopic");
    let with_crl = upstream_settings("ca.crt", Some("crl.pem"));
    assert!(verdict_with(with_crl.clone(), &good).is_valid());
    assert!(verdict_with(upstream_settings("ca.crt", None), &good).is_valid());

    let revoked = signed_by("dummy-revoked", "mytopic");
    assert_eq!(
        verdict_with(with_crl.clone(), &revoked),
        Verdict::Invalid(Rejection::Revoked)
    );

    let wrong_ca = verdict_with(upstream_settings("badca.crt", None), &good);
    assert!(
        matches!(wrong_ca, Verdict::Invalid(Rejection::Chain(_))),
        "{wrong_ca:?}"
    );

    let old_ca = signed_by("signed_by_expired_ca", "mytopic");
    let expired = verdict_with(upstream_settings("expired_ca.crt", None), &old_ca);
    assert!(
        matches!(&expired, Verdict::Invalid(Rejection::Chain(why)) if why.contains("expired")),
        "{expired:?}"
    );

    for old_crl in ["expired_crl.pem", "revoke-test.pem"] {
        let verdict = verdict_with(upstream_settings("ca.crt", Some(old_crl)), &good);
        assert!(
            matches!(verdict, Verdict::Invalid(Rejection::CrlUnavailable(_))),
            "{old_crl}: {verdict:?}"
        );
    }

    let mut swapped = good.clone();
    swapped["certificate"] =
        signed_by("shell-app02.phx2.fedoraproject.org", "mytopic")["certificate"].clone();
    assert_eq!(
        verdict_with(with_crl.clone(), &swapped),
        Verdict::Invalid(Rejection::BadSignature)
    );

    let mut tampered = good.clone();
    tampered["msg"]["hello"] = Value::from("mars");
    assert_eq!(
        verdict_with(with_crl, &tampered),
        Verdict::Invalid(Rejection::BadSignature)
    );
}

#[test]
fn upstream_routing_policy_expectations() {
    let message = signed_by("shell-app01.phx2.fedoraproject.org", "mytopic");
    let mut settings = upstream_settings("ca.crt", Some("crl.pem"));
    settings.routing_nitpicky = true;
    settings.routing_policy = [(
        "mytopic".to_owned(),
        vec!["Not shell-app01.phx2.fedoraproject.org".to_owned()],
    )]
    .into_iter()
    .collect();
    let denied = verdict_with(settings.clone(), &message);
    assert!(
        matches!(denied, Verdict::Invalid(Rejection::Policy { .. })),
        "{denied:?}"
    );
    settings.routing_policy = [(
        "mytopic".to_owned(),
        vec!["shell-app01.phx2.fedoraproject.org".to_owned()],
    )]
    .into_iter()
    .collect();
    assert!(verdict_with(settings.clone(), &message).is_valid());
    settings.routing_policy.clear();
    let underspecified = verdict_with(settings, &message);
    assert!(
        matches!(
            underspecified,
            Verdict::Invalid(Rejection::PolicyUnderspecified { .. })
        ),
        "{underspecified:?}"
    );
}

#[test]
fn signer_loads_text_dump_certificates_and_pkcs1_keys() {
    // The upstream .crt files start with an OpenSSL text dump; the key of
    // signed_by_expired_ca is "BEGIN RSA PRIVATE KEY" (PKCS#1).
    let keys = upstream_dir().join("keys");
    assert!(read(&keys.join("shell-app01.phx2.fedoraproject.org.crt")).starts_with(b"Certificate:"));
    assert_eq!(
        upstream_signer("shell-app01.phx2.fedoraproject.org").common_name(),
        "shell-app01.phx2.fedoraproject.org"
    );
    assert_eq!(
        upstream_signer("signed_by_expired_ca").common_name(),
        "myoldca.example.com"
    );
    // A key that does not belong to the certificate is refused.
    let mismatch = Signer::from_files(
        keys.join("shell-app01.phx2.fedoraproject.org.crt"),
        keys.join("shell-app02.phx2.fedoraproject.org.key"),
    );
    assert!(mismatch.is_err());
    assert!(
        Signer::from_files(Path::new("/nonexistent.crt"), Path::new("/nonexistent.key")).is_err()
    );
}
