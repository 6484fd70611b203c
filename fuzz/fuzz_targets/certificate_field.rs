//! The `certificate` field of a signed message, against a real trust store:
//! whatever the field holds (base64 noise, PEM of any shape, huge keys,
//! chains), verification never panics, never says valid (nothing here is
//! signed by the CA's key), and refuses oversized fields without parsing.
#![no_main]

use std::sync::OnceLock;

use fedmsg_wire::crypto::{Verifier, VerifierSettings};
use libfuzzer_sys::fuzz_target;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509Name, X509};

/// A verifier trusting a throwaway CA written to a temporary file.
fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<(tempfile::TempDir, Verifier)> = OnceLock::new();
    &VERIFIER
        .get_or_init(|| {
            let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
            let mut name = X509Name::builder().expect("name");
            name.append_entry_by_text("CN", "fuzz CA").expect("cn");
            let name = name.build();
            let mut ca = X509::builder().expect("builder");
            ca.set_version(2).expect("version");
            ca.set_subject_name(&name).expect("subject");
            ca.set_issuer_name(&name).expect("issuer");
            ca.set_pubkey(&key).expect("pubkey");
            ca.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
                .expect("not before");
            ca.set_not_after(&Asn1Time::days_from_now(365).expect("time"))
                .expect("not after");
            ca.sign(&key, MessageDigest::sha256()).expect("sign");
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("ca.crt");
            std::fs::write(&path, ca.build().to_pem().expect("pem")).expect("write");
            let verifier = Verifier::new(VerifierSettings {
                ca_cert_location: path.display().to_string(),
                ..VerifierSettings::default()
            });
            (dir, verifier)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let Ok(field) = std::str::from_utf8(data) else {
        return;
    };
    let envelope = serde_json::json!({
        "topic": "org.fedoraproject.dev.fuzz.msg",
        "msg": {},
        "i": 1,
        "timestamp": 1,
        "msg_id": "2026-fuzz",
        "crypto": "x509",
        "signature": "c2lnbmF0dXJl",
        "certificate": field,
    });
    assert!(!verifier().verify(&envelope).is_valid());
});
