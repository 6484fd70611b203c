//! Our signer's output must be accepted by the real Python fedmsg 1.1.7
//! (`fedmsg.crypto.validate`) and rejected once tampered with, and our
//! verifier must agree with Python on the same messages.
//!
//! Needs the venv made by `shared/pyfedmsg/setup.sh` (`$VENV`, default
//! `~/.cache/pyfedmsg-venv`). Without it the test fails, unless
//! `FEDMSG_SKIP_PYTHON=1` is set.

use std::path::PathBuf;
use std::process::Command;

use crate::support_shared::*;
use fedmsg_wire::crypto::{Signer, Verifier};
use fedmsg_wire::envelope;
use serde_json::{json, Value};

const VALIDATE: &str = r#"
import json, logging, sys, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.CRITICAL)
import fedmsg.crypto
import fedmsg.crypto.x509 as x509, fedmsg.crypto.x509_ng as x509_ng
assert x509.validate is x509_ng.validate, "fedmsg x509 crypto is disabled in this venv"
with open(sys.argv[1]) as f:
    config = json.load(f)
with open(sys.argv[2]) as f:
    bodies = json.load(f)
print(json.dumps([bool(fedmsg.crypto.validate(json.loads(b), **config)) for b in bodies]))
"#;

fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("VENV").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/pyfedmsg-venv"))
    })?;
    let python = venv.join("bin/python");
    python.is_file().then_some(python)
}

/// Runs Python fedmsg's `validate` over wire bodies with the ssl.py config.
fn python_verdicts(python: &PathBuf, bodies: &[String]) -> Vec<bool> {
    let settings = pyfedmsg_settings();
    let config = json!({
        "crypto_backend": "x509",
        "crypto_validate_backends": ["x509"],
        "ca_cert_location": settings.ca_cert_location,
        "crl_location": settings.crl_location,
        "routing_policy": settings.routing_policy,
        "routing_nitpicky": false,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    let bodies_path = dir.path().join("bodies.json");
    std::fs::write(&config_path, config.to_string()).expect("write config");
    std::fs::write(&bodies_path, serde_json::to_string(bodies).expect("encode"))
        .expect("write bodies");
    let output = Command::new(python)
        .args(["-c", VALIDATE])
        .arg(&config_path)
        .arg(&bodies_path)
        .output()
        .expect("run the venv python");
    assert!(
        output.status.success(),
        "python fedmsg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python prints a JSON list")
}

fn pki_signer(stem: &str) -> Signer {
    let pki = pyfedmsg_dir().join("pki");
    Signer::from_files(
        pki.join(format!("{stem}.crt")),
        pki.join(format!("{stem}.key")),
    )
    .expect("signer loads")
}

fn envelope_for(topic: &str, msg: Value, i: u64) -> Value {
    json!({
        "topic": topic,
        "msg": msg,
        "timestamp": 1_795_312_648u64 + i,
        "msg_id": format!("2026-4af33b7e-a413-4a09-bb3b-{i:012}"),
        "i": i,
        "username": "root"
    })
}

fn sign(signer: &Signer, mut envelope: Value) -> Value {
    signer.sign_value(&mut envelope).expect("signs");
    envelope
}

/// (description, wire body, Python's expected verdict, ours).
fn cases() -> Vec<(&'static str, String, bool, bool)> {
    let shell = pki_signer("shell-app01");
    let evil = pki_signer("evil-app02");
    let log = "org.fedoraproject.dev.logger.log";
    let free = "org.fedoraproject.dev.bench.free";
    let simple = sign(&shell, envelope_for(log, json!({"log": "Hello world"}), 1));
    let unicode = sign(
        &shell,
        envelope_for(
            "org.fedoraproject.dev.bench.msg",
            serde_json::from_str(
                r#"{"":"empty","text":"h\u00e9llo \u2603 \ud834\udd1e \"q\" \\ / \n\t \u0001 \u007f","big":12345678901234567890123,
                    "floats":[0.1,1e-07,1e+22,2.0,-0.0,1504642719.23539],"nested":{"z":[{"b":null,"a":true}]}}"#,
            )
            .expect("payload"),
            2,
        ),
    );
    let unlisted = sign(&evil, envelope_for(free, json!({"n": 3}), 3));
    let reserved = sign(
        &evil,
        envelope_for("org.fedoraproject.dev.reserved.topic", json!({"n": 4}), 4),
    );
    let mut tampered_body = simple.clone();
    tampered_body["msg"]["log"] = json!("Hello mars");
    let mut tampered_topic = unicode.clone();
    tampered_topic["topic"] = json!(free);
    let mut replayed = simple.clone();
    replayed["seq_id"] = json!(17);

    let wire = |v: &Value| envelope::to_canonical(v);
    vec![
        ("simple", wire(&simple), true, true),
        ("unicode payload", wire(&unicode), true, true),
        ("unlisted topic", wire(&unlisted), true, true),
        ("policy violation", wire(&reserved), false, false),
        ("tampered body", wire(&tampered_body), false, false),
        ("tampered topic", wire(&tampered_topic), false, false),
        // Relay-style re-encoding (spaces, no key sorting) must not matter.
        (
            "relayed",
            serde_json::to_string_pretty(&simple).expect("json"),
            true,
            true,
        ),
        // Deliberate difference: Python rejects seq_id added after signing.
        ("seq_id after signing", wire(&replayed), false, true),
    ]
}

#[test]
fn python_fedmsg_accepts_our_signatures() {
    let Some(python) = venv_python() else {
        if std::env::var("FEDMSG_SKIP_PYTHON").as_deref() == Ok("1") {
            eprintln!("SKIPPED: python fedmsg venv not found and FEDMSG_SKIP_PYTHON=1");
            return;
        }
        panic!(
            "python fedmsg venv not found ($VENV or ~/.cache/pyfedmsg-venv): run shared/pyfedmsg/setup.sh, \
             or set FEDMSG_SKIP_PYTHON=1 to skip this test"
        );
    };
    let cases = cases();
    let bodies: Vec<String> = cases.iter().map(|(_, body, _, _)| body.clone()).collect();
    let python = python_verdicts(&python, &bodies);
    let verifier = Verifier::new(pyfedmsg_settings());
    let mut mismatches = Vec::new();
    for ((name, body, python_expected, ours_expected), python_got) in cases.iter().zip(&python) {
        let ours_got = verifier.verify(&envelope::parse(body.as_bytes()).expect("parses"));
        if python_got != python_expected {
            mismatches.push(format!(
                "{name}: python said {python_got}, expected {python_expected}"
            ));
        }
        if ours_got.is_valid() != *ours_expected {
            mismatches.push(format!(
                "{name}: we said {ours_got:?}, expected valid={ours_expected}"
            ));
        }
    }
    assert_eq!(python.len(), cases.len());
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
