//! Behaviour of the signer/verifier beyond the interop vectors: seq_id rule,
//! bounded caches, reload rate limiting, unavailable trust material, expiry
//! and concurrency. Uses a PKI generated on the fly (RSA-1024 for speed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedmsg_wire::crypto::{
    CryptoError, Fetcher, Rejection, Signer, Verdict, Verifier, VerifierSettings,
};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Name, X509};
use serde_json::{json, Value};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(1024).expect("rsa")).expect("pkey")
}

fn name(cn: &str) -> X509Name {
    let mut builder = X509Name::builder().expect("name");
    builder.append_entry_by_text("CN", cn).expect("cn");
    builder.build()
}

/// A test certificate authority.
struct Ca {
    key: PKey<Private>,
    cert: X509,
}

impl Ca {
    fn new(cn: &str) -> Self {
        let key = rsa_key();
        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("v3");
        b.set_serial_number(&serial(1)).expect("serial");
        b.set_subject_name(&name(cn)).expect("subject");
        b.set_issuer_name(&name(cn)).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::from_unix(now() - 3600).expect("time"))
            .expect("nb");
        b.set_not_after(&Asn1Time::from_unix(now() + 86_400 * 365).expect("time"))
            .expect("na");
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("ext");
        b.append_extension(
            KeyUsage::new()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ext");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        Self {
            key,
            cert: b.build(),
        }
    }

    /// Issues a leaf for `key` valid until `not_after` (epoch seconds).
    fn issue(&self, cn: &str, serial_no: u32, key: &PKey<Private>, not_after: i64) -> X509 {
        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("v3");
        b.set_serial_number(&serial(serial_no)).expect("serial");
        b.set_subject_name(&name(cn)).expect("subject");
        b.set_issuer_name(self.cert.subject_name()).expect("issuer");
        b.set_pubkey(key).expect("pubkey");
        b.set_not_before(&Asn1Time::from_unix(now() - 3600).expect("time"))
            .expect("nb");
        b.set_not_after(&Asn1Time::from_unix(not_after).expect("time"))
            .expect("na");
        b.sign(&self.key, MessageDigest::sha256()).expect("sign");
        b.build()
    }

    fn signer(&self, cn: &str, serial_no: u32, key: &PKey<Private>) -> Signer {
        self.signer_until(cn, serial_no, key, now() + 86_400 * 30)
    }

    fn signer_until(
        &self,
        cn: &str,
        serial_no: u32,
        key: &PKey<Private>,
        not_after: i64,
    ) -> Signer {
        let cert = self.issue(cn, serial_no, key, not_after);
        Signer::from_pem(
            &cert.to_pem().expect("pem"),
            &key.private_key_to_pem_pkcs8().expect("pem"),
            cn,
            cn,
        )
        .expect("signer")
    }

    fn write(&self, path: &Path) {
        std::fs::write(path, self.cert.to_pem().expect("pem")).expect("write CA");
    }
}

fn serial(n: u32) -> Asn1Integer {
    BigNum::from_u32(n)
        .and_then(|bn| bn.to_asn1_integer())
        .expect("serial")
}

/// A CA written to a temporary directory plus matching settings.
struct Setup {
    _dir: tempfile::TempDir,
    ca_path: PathBuf,
    ca: Ca,
    settings: VerifierSettings,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.crt");
    let ca = Ca::new("test CA");
    ca.write(&ca_path);
    let settings = VerifierSettings {
        ca_cert_location: ca_path.display().to_string(),
        ..VerifierSettings::default()
    };
    Setup {
        _dir: dir,
        ca_path,
        ca,
        settings,
    }
}

fn message(n: u64) -> Value {
    json!({
        "topic": "org.fedoraproject.dev.test.msg",
        "msg": {"n": n, "text": "caf\u{e9} \u{1f600}", "f": 1.5},
        "timestamp": 1_700_000_000 + n,
        "msg_id": format!("2026-{n:08}"),
        "i": n,
        "username": "tester"
    })
}

fn signed(signer: &Signer, mut value: Value) -> Value {
    signer.sign_value(&mut value).expect("signs");
    value
}

fn rejection(verdict: Verdict) -> Rejection {
    match verdict {
        Verdict::Invalid(r) => r,
        Verdict::Valid { signer } => panic!("unexpectedly valid (signer {signer})"),
    }
}

#[test]
fn sign_verify_round_trip_and_tampering() {
    let s = setup();
    let signer = s.ca.signer("app01", 10, &rsa_key());
    let verifier = Verifier::new(s.settings.clone());
    let good = signed(&signer, message(1));
    assert_eq!(good["crypto"], "x509");
    assert_eq!(
        verifier.verify(&good),
        Verdict::Valid {
            signer: "app01".into()
        }
    );

    for (field, value) in [
        ("topic", json!("org.fedoraproject.dev.other")),
        ("i", json!(2)),
        ("crypto", json!("x509 ")),
    ] {
        let mut tampered = good.clone();
        tampered[field] = value;
        let r = rejection(verifier.verify(&tampered));
        assert!(
            matches!(r, Rejection::BadSignature | Rejection::UnknownBackend(_)),
            "{field}: {r:?}"
        );
    }
    let mut nested = good.clone();
    nested["msg"]["f"] = json!(1.50000001);
    assert_eq!(rejection(verifier.verify(&nested)), Rejection::BadSignature);
    // int vs float matters: 1.5 -> 1.5 is fine, n: 1 -> 1.0 is not.
    let mut float = good.clone();
    float["msg"]["n"] = serde_json::from_str("1.0").expect("float");
    assert_eq!(rejection(verifier.verify(&float)), Rejection::BadSignature);
}

#[test]
fn base64_layout_does_not_matter() {
    let s = setup();
    let signer = s.ca.signer("app01", 10, &rsa_key());
    let verifier = Verifier::new(s.settings.clone());
    let good = signed(&signer, message(1));
    let mut flat = good.clone();
    for field in ["signature", "certificate"] {
        let text: String = good[field].as_str().expect("string").split('\n').collect();
        flat[field] = Value::String(text);
    }
    assert!(verifier.verify(&flat).is_valid());
    let mut garbage = good.clone();
    garbage["signature"] = Value::String("!!!".into());
    assert!(matches!(
        rejection(verifier.verify(&garbage)),
        Rejection::BadSignature
    ));
    garbage["signature"] = Value::String("abcde".into());
    assert!(matches!(
        rejection(verifier.verify(&garbage)),
        Rejection::BadEncoding(_)
    ));
    let mut bad_cert = good.clone();
    bad_cert["certificate"] = Value::String("aGVsbG8=".into());
    assert!(matches!(
        rejection(verifier.verify(&bad_cert)),
        Rejection::BadCertificate(_)
    ));
}

#[test]
fn seq_id_added_after_signing_is_tolerated_but_not_tampering() {
    let s = setup();
    let signer = s.ca.signer("app01", 10, &rsa_key());
    let verifier = Verifier::new(s.settings.clone());

    // A replaying publisher adds seq_id after signing.
    let mut replayed = signed(&signer, message(1));
    replayed["seq_id"] = json!(42);
    assert!(verifier.verify(&replayed).is_valid());

    // ... but the rest is still covered.
    let mut tampered = replayed.clone();
    tampered["msg"]["text"] = json!("evil");
    assert_eq!(
        rejection(verifier.verify(&tampered)),
        Rejection::BadSignature
    );

    // A seq_id that was part of the signed text is covered too.
    let mut with_seq = message(2);
    with_seq["seq_id"] = json!(7);
    let mut covered = signed(&signer, with_seq);
    assert!(verifier.verify(&covered).is_valid());
    covered["seq_id"] = json!(8);
    assert_eq!(
        rejection(verifier.verify(&covered)),
        Rejection::BadSignature
    );

    // The rule only drops a top-level seq_id.
    let mut nested = signed(&signer, message(3));
    nested["msg"]["seq_id"] = json!(1);
    assert_eq!(rejection(verifier.verify(&nested)), Rejection::BadSignature);
}

#[test]
fn forged_certificate_flood_keeps_the_cache_bounded() {
    let s = setup();
    let settings = VerifierSettings {
        cache_capacity: 16,
        negative_cache_capacity: 8,
        ..s.settings.clone()
    };
    let verifier = Verifier::new(settings);
    let legit = signed(&s.ca.signer("app01", 10, &rsa_key()), message(0));
    assert!(verifier.verify(&legit).is_valid());

    let rogue_ca = Ca::new("test CA"); // same name, different key
    let rogue_key = rsa_key();
    for n in 0..300u32 {
        let forged = signed(
            &rogue_ca.signer("app01", 1000 + n, &rogue_key),
            message(u64::from(n)),
        );
        assert!(matches!(
            rejection(verifier.verify(&forged)),
            Rejection::Chain(_)
        ));
        let stats = verifier.stats();
        assert!(stats.cached_invalid <= 8, "{stats:?}");
        assert!(stats.cached_valid <= 16, "{stats:?}");
    }
    let stats = verifier.stats();
    assert_eq!(stats.cache_misses, 301);
    // The failures did not trigger a CA reload (rate limit: the initial load
    // happened less than reload_min_interval_secs ago).
    assert_eq!(stats.trust_load_attempts, 1, "{stats:?}");
    // The legitimate certificate was not evicted by the flood.
    assert!(verifier.verify(&legit).is_valid());
    assert_eq!(verifier.stats().cache_hits, stats.cache_hits + 1);
}

#[test]
fn repeated_forged_certificate_is_answered_from_the_cache() {
    let s = setup();
    let verifier = Verifier::new(s.settings.clone());
    let rogue = Ca::new("rogue");
    let forged = signed(&rogue.signer("app01", 5, &rsa_key()), message(1));
    for _ in 0..50 {
        assert!(matches!(
            rejection(verifier.verify(&forged)),
            Rejection::Chain(_)
        ));
    }
    let stats = verifier.stats();
    assert_eq!((stats.cache_misses, stats.cache_hits), (1, 49), "{stats:?}");
}

#[test]
fn valid_certificate_flood_keeps_the_cache_bounded() {
    let s = setup();
    let settings = VerifierSettings {
        cache_capacity: 4,
        ..s.settings.clone()
    };
    let verifier = Verifier::new(settings);
    let key = rsa_key();
    for n in 0..40u32 {
        let m = signed(
            &s.ca.signer(&format!("app{n}"), 100 + n, &key),
            message(u64::from(n)),
        );
        assert!(verifier.verify(&m).is_valid());
        assert!(verifier.stats().cached_valid <= 4);
    }
}

#[test]
fn chain_failures_reload_at_most_once_per_interval_and_pick_up_new_material() {
    let s = setup();
    let settings = VerifierSettings {
        reload_min_interval_secs: 1,
        ..s.settings.clone()
    };
    let verifier = Verifier::new(settings);
    let new_ca = Ca::new("new CA");
    let key = rsa_key();
    let from_new_ca = signed(&new_ca.signer("app01", 3, &key), message(1));
    assert!(matches!(
        rejection(verifier.verify(&from_new_ca)),
        Rejection::Chain(_)
    ));
    for n in 0..20u32 {
        let other = signed(&new_ca.signer("app01", 10 + n, &key), message(2));
        assert!(matches!(
            rejection(verifier.verify(&other)),
            Rejection::Chain(_)
        ));
    }
    assert_eq!(verifier.stats().trust_load_attempts, 1);

    // The operator switches the CA file; after the interval one failing
    // message triggers one reload and validation succeeds with the new CA.
    new_ca.write(&s.ca_path);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(verifier.verify(&from_new_ca).is_valid());
    let stats = verifier.stats();
    assert_eq!(
        (stats.trust_load_attempts, stats.trust_loads),
        (2, 2),
        "{stats:?}"
    );

    // Certificates of the old CA now fail, without another reload.
    let old = signed(&s.ca.signer("app02", 4, &key), message(3));
    assert!(matches!(
        rejection(verifier.verify(&old)),
        Rejection::Chain(_)
    ));
    assert_eq!(verifier.stats().trust_load_attempts, 2);
}

#[test]
fn missing_ca_is_a_rejection_until_it_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.crt");
    let verifier = Verifier::new(VerifierSettings {
        ca_cert_location: ca_path.display().to_string(),
        reload_min_interval_secs: 1,
        ..VerifierSettings::default()
    });
    let ca = Ca::new("late CA");
    let m = signed(&ca.signer("app01", 3, &rsa_key()), message(1));
    let r = rejection(verifier.verify(&m));
    assert!(
        matches!(&r, Rejection::CaUnavailable(why) if why.contains("ca.crt")),
        "{r:?}"
    );
    assert_eq!(r.reason(), "ca_unavailable");
    assert!(verifier.trust_status().is_err());
    // Retried at most once per interval, not once per message.
    for _ in 0..50 {
        assert!(matches!(
            rejection(verifier.verify(&m)),
            Rejection::CaUnavailable(_)
        ));
    }
    assert_eq!(verifier.stats().trust_load_attempts, 1);

    ca.write(&ca_path);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(verifier.verify(&m).is_valid());
    assert!(verifier.trust_status().is_ok());
}

#[test]
fn expired_crl_is_a_clear_rejection() {
    // Upstream fixtures: revoke-test.pem is a CRL of ca.crt whose nextUpdate
    // was 2023-03-22.
    let keys = crate::support_shared::upstream_dir().join("keys");
    let signer = Signer::from_files(
        keys.join("shell-app01.phx2.fedoraproject.org.crt"),
        keys.join("shell-app01.phx2.fedoraproject.org.key"),
    )
    .expect("signer");
    let m = signed(&signer, message(1));
    let verifier = Verifier::new(crate::support_shared::upstream_settings(
        "ca.crt",
        Some("revoke-test.pem"),
    ));
    let r = rejection(verifier.verify(&m));
    assert_eq!(r.reason(), "crl_unavailable");
    let text = r.to_string();
    assert!(text.contains("CRL") && text.contains("expired"), "{text}");
    // With the time pinned before nextUpdate the same CRL is fine.
    let pinned = Verifier::new(VerifierSettings {
        pinned_time: Some(1_678_000_000), // 2023-03-05
        ..crate::support_shared::upstream_settings("ca.crt", Some("revoke-test.pem"))
    });
    assert!(pinned.verify(&m).is_valid());
    // A CRL file that is not a CRL at all.
    let broken = Verifier::new(crate::support_shared::upstream_settings(
        "ca.crt",
        Some("ca.crt"),
    ));
    assert_eq!(rejection(broken.verify(&m)).reason(), "crl_unavailable");
}

#[test]
fn cached_verdict_expires_with_the_certificate() {
    let s = setup();
    let verifier = Verifier::new(s.settings.clone());
    let short_lived = s.ca.signer_until("app01", 9, &rsa_key(), now() + 2);
    let m = signed(&short_lived, message(1));
    assert!(verifier.verify(&m).is_valid());
    assert!(verifier.verify(&m).is_valid());
    assert_eq!(verifier.stats().cache_hits, 1);
    std::thread::sleep(Duration::from_millis(3100));
    let r = rejection(verifier.verify(&m));
    assert!(
        matches!(&r, Rejection::Chain(why) if why.contains("expired")),
        "{r:?}"
    );
}

#[test]
fn verify_signed_by_requires_that_signer() {
    let s = setup();
    let verifier = Verifier::new(VerifierSettings {
        routing_nitpicky: true,
        ..s.settings.clone()
    });
    let m = signed(&s.ca.signer("app01", 10, &rsa_key()), message(1));
    assert!(matches!(
        rejection(verifier.verify(&m)),
        Rejection::PolicyUnderspecified { .. }
    ));
    assert!(verifier.verify_signed_by(&m, "app01").is_valid());
    assert_eq!(
        rejection(verifier.verify_signed_by(&m, "app02")),
        Rejection::Policy {
            topic: "org.fedoraproject.dev.test.msg".into(),
            signer: "app01".into()
        }
    );
}

#[test]
fn verifier_is_shared_by_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Verifier>();
    assert_send_sync::<Signer>();

    let s = setup();
    let verifier = Arc::new(Verifier::new(s.settings.clone()));
    let signer = Arc::new(s.ca.signer("app01", 10, &rsa_key()));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let verifier = Arc::clone(&verifier);
            let signer = Arc::clone(&signer);
            std::thread::spawn(move || {
                for n in 0..200u64 {
                    let mut m = signed(&signer, message(t * 1000 + n));
                    assert!(verifier.verify(&m).is_valid());
                    m["i"] = json!(-1);
                    assert!(!verifier.verify(&m).is_valid());
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    // Threads racing on the first message may each miss once.
    assert!(verifier.stats().cache_misses <= 4);
}

/// Serves one body for every URL (or fails), counting requests.
struct FakeFetcher {
    body: Option<Vec<u8>>,
    calls: std::sync::atomic::AtomicU64,
}

impl Fetcher for FakeFetcher {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, CryptoError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.body.clone().ok_or_else(|| CryptoError::Fetch {
            url: url.to_owned(),
            reason: "unreachable".to_owned(),
        })
    }
}

#[test]
fn https_ca_is_downloaded_into_the_disk_cache() {
    let s = setup();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let settings = VerifierSettings {
        ca_cert_location: "https://ca.example.invalid/fedmsg/ca.crt".to_owned(),
        ca_cert_cache: Some(cache_dir.path().join("ca.crt")),
        ..VerifierSettings::default()
    };
    let m = signed(&s.ca.signer("app01", 10, &rsa_key()), message(1));

    let online = Arc::new(FakeFetcher {
        body: Some(s.ca.cert.to_pem().expect("pem")),
        calls: Default::default(),
    });
    let verifier = Verifier::with_fetcher(settings.clone(), online.clone());
    assert!(verifier.verify(&m).is_valid());
    assert!(cache_dir.path().join("ca.crt").is_file());

    // Next start, network down: the cached copy is used (expiry 0 = the
    // cache never goes stale, so no download is even attempted).
    let offline = Arc::new(FakeFetcher {
        body: None,
        calls: Default::default(),
    });
    assert!(Verifier::with_fetcher(settings.clone(), offline.clone())
        .verify(&m)
        .is_valid());
    assert_eq!(offline.calls.load(std::sync::atomic::Ordering::Relaxed), 0);

    // No cache and no network: a clear rejection.
    let no_cache = VerifierSettings {
        ca_cert_cache: None,
        ..settings
    };
    let r = rejection(Verifier::with_fetcher(no_cache, offline).verify(&m));
    assert!(
        matches!(&r, Rejection::CaUnavailable(why) if why.contains("unreachable")),
        "{r:?}"
    );
}

#[test]
fn rewrapped_certificate_base64_is_the_same_cache_entry() {
    let s = setup();
    let signer = s.ca.signer("app01", 21, &rsa_key());
    let verifier = Verifier::new(s.settings.clone());
    let good = signed(&signer, message(1));
    assert!(verifier.verify(&good).is_valid());
    let misses = verifier.stats().cache_misses;
    // The same certificate, its base64 wrapped at 64 columns instead of 76
    // (and with a trailing space): still the one cached verdict.
    let flat: String = good["certificate"]
        .as_str()
        .expect("certificate")
        .split_whitespace()
        .collect();
    for width in [64, 60, 40] {
        let mut rewrapped = String::new();
        for chunk in flat.as_bytes().chunks(width) {
            rewrapped.push_str(std::str::from_utf8(chunk).expect("ascii"));
            rewrapped.push_str(" \n");
        }
        let mut message = good.clone();
        message["certificate"] = json!(rewrapped);
        assert!(verifier.verify(&message).is_valid(), "width {width}");
    }
    assert_eq!(verifier.stats().cache_misses, misses, "no new chain checks");
}

#[test]
fn oversized_certificate_fields_and_keys_are_refused_before_any_work() {
    let s = setup();
    let signer = s.ca.signer("app01", 22, &rsa_key());
    let verifier = Verifier::new(s.settings.clone());
    let mut huge = signed(&signer, message(1));
    let padded = format!(
        "{}{}",
        huge["certificate"].as_str().expect("certificate"),
        "A\n".repeat(120_000)
    );
    huge["certificate"] = json!(padded);
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let r = rejection(verifier.verify(&huge));
        assert!(
            matches!(&r, Rejection::BadCertificate(why) if why.contains("exceeds")),
            "{r:?}"
        );
    }
    // Before: ~5-8 ms each (decoding and parsing 240 kB); now a length
    // check. A loose bound, for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(verifier.stats().cache_misses, 0, "never reached the cache");

    // A key above 4,096 bits, from the right CA, is refused too.
    let big_key = PKey::from_rsa(Rsa::generate(4160).expect("rsa")).expect("pkey");
    let big = signed(&s.ca.signer("app01", 23, &big_key), message(2));
    let r = rejection(verifier.verify(&big));
    assert!(
        matches!(&r, Rejection::BadCertificate(why) if why.contains("4160-bit")),
        "{r:?}"
    );
}

#[test]
fn a_policy_key_guards_the_topics_it_prefixes() {
    let s = setup();
    let reserved = "org.fedoraproject.dev.reserved.topic";
    let settings = VerifierSettings {
        routing_policy: [(reserved.to_owned(), vec!["app01".to_owned()])]
            .into_iter()
            .collect(),
        ..s.settings.clone()
    };
    let verifier = Verifier::new(settings);
    let allowed = s.ca.signer("app01", 31, &rsa_key());
    let intruder = s.ca.signer("intruder", 32, &rsa_key());
    let on = |topic: &str, signer: &Signer| {
        let mut m = message(1);
        m["topic"] = json!(topic);
        verifier.verify(&signed(signer, m))
    };
    // A plugin subscribed to `reserved` also gets `reservedx` (prefix
    // match): the intruder must not reach it through the longer topic.
    let longer = format!("{reserved}x");
    assert!(matches!(
        rejection(on(&longer, &intruder)),
        Rejection::Policy { .. }
    ));
    assert!(matches!(
        rejection(on(&format!("{reserved}.sub"), &intruder)),
        Rejection::Policy { .. }
    ));
    assert!(on(&longer, &allowed).is_valid());
    assert!(matches!(
        rejection(on(reserved, &intruder)),
        Rejection::Policy { .. }
    ));
    // A topic the key does not prefix is not guarded by it.
    assert!(on("org.fedoraproject.dev.reserved.topi", &intruder).is_valid());
    assert!(on("org.fedoraproject.dev.other", &intruder).is_valid());
}

/// Serves `body` to one GET on a loopback port (a bare HTTP/1.0 answer:
/// enough for ureq, no dependency); join the thread to end it.
fn serve_http(body: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/ca.crt", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        // One connection is all the verifier makes here; waited for at
        // most 20 s, so a verifier that never asks cannot hang the test.
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let accepted = loop {
            match listener.accept() {
                Ok(pair) => break Some(pair),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => break None,
            }
        };
        if let Some((mut stream, _)) = accepted {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (url, handle)
}

#[test]
fn an_http_ca_location_is_downloaded_not_read_as_a_path() {
    let s = setup();
    let (url, server) = serve_http(s.ca.cert.to_pem().expect("pem"));
    let settings = VerifierSettings {
        ca_cert_location: url,
        ..s.settings.clone()
    };
    let verifier = Verifier::new(settings);
    let signer = s.ca.signer("app01", 41, &rsa_key());
    assert_eq!(
        verifier.verify(&signed(&signer, message(1))),
        Verdict::Valid {
            signer: "app01".into()
        }
    );
    server.join().expect("server");
}
