//! Helpers shared by the crypto/envelope integration tests: locating the
//! project's `shared/` directory and the verifier settings of its fixtures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedmsg_wire::crypto::VerifierSettings;
use serde_json::Value;

/// The `shared/` directory: `$FEDMSG_SHARED_DIR` if set, else `shared/`
/// beside the checkout (`<checkout>/../shared`, i.e. `../../shared` from
/// `hub/`), which holds both for the development tree and for CI.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FEDMSG_SHARED_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [manifest.join("../../shared"), manifest.join("../shared")];
    for candidate in &candidates {
        if candidate.join("pyfedmsg/vectors/MANIFEST.json").is_file() {
            return candidate.clone();
        }
    }
    panic!(
        "cannot find the shared/ test data (tried {:?}); set FEDMSG_SHARED_DIR",
        candidates
    );
}

/// `shared/pyfedmsg`.
pub fn pyfedmsg_dir() -> PathBuf {
    shared_dir().join("pyfedmsg")
}

/// `shared/vectors/upstream`.
pub fn upstream_dir() -> PathBuf {
    shared_dir().join("vectors/upstream")
}

/// Reads a file, panicking with its path.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The validation config of `pyfedmsg/fedmsg.d/ssl.py`.
pub fn pyfedmsg_settings() -> VerifierSettings {
    let pki = pyfedmsg_dir().join("pki");
    let policy: BTreeMap<String, Vec<String>> = [
        "org.fedoraproject.dev.logger.log",
        "org.fedoraproject.dev.bench.msg",
        "org.fedoraproject.dev.reserved.topic",
    ]
    .into_iter()
    .map(|topic| (topic.to_owned(), vec!["shell-app01".to_owned()]))
    .collect();
    VerifierSettings {
        ca_cert_location: pki.join("ca.crt").display().to_string(),
        crl_location: Some(pki.join("crl.pem").display().to_string()),
        routing_policy: policy,
        routing_nitpicky: false,
        crypto_validate_backends: vec!["x509".to_owned()],
        crypto_backend: "x509".to_owned(),
        ..VerifierSettings::default()
    }
}

/// Settings for the upstream test CA in `vectors/upstream/keys`.
pub fn upstream_settings(ca: &str, crl: Option<&str>) -> VerifierSettings {
    let keys = upstream_dir().join("keys");
    VerifierSettings {
        ca_cert_location: keys.join(ca).display().to_string(),
        crl_location: crl.map(|c| keys.join(c).display().to_string()),
        ..VerifierSettings::default()
    }
}

/// 2023-06-01T00:00:00Z: inside the window where the upstream production
/// fixtures verify (reference §12.2).
pub const PINNED_2023_06_01: i64 = 1_685_577_600;
