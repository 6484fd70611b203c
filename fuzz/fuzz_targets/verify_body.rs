//! Signature verification of arbitrary bodies against an empty trust
//! store: never panics, never says valid.
#![no_main]

use std::sync::OnceLock;

use fedmsg_wire::crypto::{Verifier, VerifierSettings};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        Verifier::new(VerifierSettings {
            ca_cert_location: "/nonexistent/ca.crt".into(),
            ..VerifierSettings::default()
        })
    })
}

fuzz_target!(|data: &[u8]| {
    assert!(!verifier().verify_body(data).is_valid());
});
