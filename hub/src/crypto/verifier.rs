//! X.509 message validation (reference §3.2–§3.5); see the module docs of
//! [`crate::crypto`] for the rules.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openssl::hash::MessageDigest;
use openssl::x509::X509;
use serde_json::{Map, Value};

use super::cache::{CertCache, CertEntry, CertKey};
use super::codec::{asn1_to_epoch, decode_base64_lenient};
use super::signer::first_common_name;
use super::trust::{Fetcher, HttpsFetcher, TrustManager, TrustSnapshot};
use super::{unix_now, Rejection, Verdict};
use crate::envelope;
use crate::ratelimit::LogLimiter;

/// Everything validation depends on. Field names follow fedmsg's config
/// keys; the hub maps its configuration onto this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierSettings {
    /// CA certificate: file path or `https://` URL.
    pub ca_cert_location: String,
    /// CRL: file path or `https://` URL; `None` or empty disables CRL checks.
    pub crl_location: Option<String>,
    /// On-disk cache for a downloaded CA certificate.
    pub ca_cert_cache: Option<PathBuf>,
    /// Seconds before the CA is fetched / re-read again (0 = never).
    pub ca_cert_cache_expiry: u64,
    /// On-disk cache for a downloaded CRL.
    pub crl_cache: Option<PathBuf>,
    /// Seconds before the CRL is fetched / re-read again (0 = never).
    pub crl_cache_expiry: u64,
    /// Topic → certificate CNs allowed to publish on it.
    pub routing_policy: BTreeMap<String, Vec<String>>,
    /// Reject topics absent from `routing_policy`.
    pub routing_nitpicky: bool,
    /// Backends accepted on input; empty = just `crypto_backend`.
    pub crypto_validate_backends: Vec<String>,
    /// The signing backend (`x509`).
    pub crypto_backend: String,
    /// Verify certificates at this epoch second instead of now (tests).
    pub pinned_time: Option<i64>,
    /// Maximum number of cached certificates with a valid chain.
    pub cache_capacity: usize,
    /// Maximum number of cached certificates whose chain failed.
    pub negative_cache_capacity: usize,
    /// Minimum seconds between two reloads caused by failing certificates
    /// (also how long a failed chain verdict is cached).
    pub reload_min_interval_secs: u64,
    /// Timeout of one download of CA/CRL material.
    pub fetch_timeout_secs: u64,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        Self {
            ca_cert_location: "/etc/pki/fedmsg/ca.crt".to_owned(),
            crl_location: None,
            ca_cert_cache: None,
            ca_cert_cache_expiry: 0,
            crl_cache: None,
            crl_cache_expiry: 3600,
            routing_policy: BTreeMap::new(),
            routing_nitpicky: false,
            crypto_validate_backends: vec!["x509".to_owned()],
            crypto_backend: "x509".to_owned(),
            pinned_time: None,
            cache_capacity: 1024,
            negative_cache_capacity: 256,
            reload_min_interval_secs: 60,
            fetch_timeout_secs: 30,
        }
    }
}

/// Counters describing a [`Verifier`]'s work so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifierStats {
    /// Certificate lookups answered from the cache.
    pub cache_hits: u64,
    /// Certificate lookups that parsed and chain-checked a certificate.
    pub cache_misses: u64,
    /// Cached certificates with a valid chain.
    pub cached_valid: usize,
    /// Cached certificates whose chain failed.
    pub cached_invalid: usize,
    /// Attempts to read the CA/CRL material (initial load included).
    pub trust_load_attempts: u64,
    /// Trust material loads that installed new material (initial included).
    pub trust_loads: u64,
    /// Trust material loads that failed.
    pub trust_load_failures: u64,
}

/// Validates signed envelopes. `Send + Sync`: share one through an `Arc`.
/// Shared state (trust store, certificate cache) sits behind short-lived
/// locks; the RSA work itself runs without any lock held.
pub struct Verifier {
    settings: Arc<VerifierSettings>,
    trust: TrustManager,
    cache: CertCache,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    trouble_log: LogLimiter,
    policy_log: LogLimiter,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Reused canonical-JSON buffer: no allocation per message once warm.
    static VERIFY_BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

const CREDENTIALS: [&str; 2] = ["signature", "certificate"];
const CREDENTIALS_AND_SEQ_ID: [&str; 3] = ["signature", "certificate", "seq_id"];
const LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Verifier {
    /// Builds a verifier that downloads `https://` material with
    /// [`HttpsFetcher`]. Never fails: unavailable CA/CRL material is logged
    /// and turns into rejections until it can be loaded.
    pub fn new(settings: VerifierSettings) -> Self {
        let fetcher = HttpsFetcher {
            timeout: Duration::from_secs(settings.fetch_timeout_secs.max(1)),
            ..HttpsFetcher::default()
        };
        Self::with_fetcher(settings, Arc::new(fetcher))
    }

    /// Like [`Verifier::new`] with a custom downloader (tests, proxies).
    pub fn with_fetcher(settings: VerifierSettings, fetcher: Arc<dyn Fetcher>) -> Self {
        let settings = Arc::new(settings);
        Self {
            trust: TrustManager::new(Arc::clone(&settings), fetcher),
            cache: CertCache::new(settings.cache_capacity, settings.negative_cache_capacity),
            settings,
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            trouble_log: LogLimiter::new(LOG_INTERVAL),
            policy_log: LogLimiter::new(LOG_INTERVAL),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &VerifierSettings {
        &self.settings
    }

    /// Validates `envelope` (fedmsg's `validate`).
    #[must_use = "dropping a verdict means the message was not checked"]
    pub fn verify(&self, envelope: &Value) -> Verdict {
        self.verdict(envelope, None)
    }

    /// Validates `envelope` and requires it to be signed by `signer` (the
    /// certificate's first CN), whatever the routing policy says (fedmsg's
    /// `validate_signed_by`).
    #[must_use = "dropping a verdict means the message was not checked"]
    pub fn verify_signed_by(&self, envelope: &Value, signer: &str) -> Verdict {
        self.verdict(envelope, Some(signer))
    }

    /// Re-reads the CA and CRL now, bypassing the rate limit (e.g. on
    /// SIGHUP). On failure the previous material stays in use.
    ///
    /// # Errors
    ///
    /// The reason the CA/CRL material is unusable after the reload.
    pub fn reload(&self) -> Result<(), Rejection> {
        self.trust.force_reload()
    }

    /// Whether the CA/CRL material is usable right now.
    ///
    /// # Errors
    ///
    /// [`Rejection::CaUnavailable`] / [`Rejection::CrlUnavailable`] with the
    /// reason when it is not.
    pub fn trust_status(&self) -> Result<(), Rejection> {
        self.trust
            .snapshot()
            .state
            .as_ref()
            .map(|_| ())
            .map_err(Clone::clone)
    }

    /// Cache and reload counters.
    pub fn stats(&self) -> VerifierStats {
        let (cached_valid, cached_invalid) = self.cache.len();
        let (trust_load_attempts, trust_loads, trust_load_failures) = self.trust.counters();
        VerifierStats {
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
            cached_valid,
            cached_invalid,
            trust_load_attempts,
            trust_loads,
            trust_load_failures,
        }
    }

    fn verdict(&self, envelope: &Value, expected_signer: Option<&str>) -> Verdict {
        match self.check(envelope, expected_signer) {
            Ok(signer) => Verdict::Valid { signer },
            Err(rejection) => {
                self.log_rejection(envelope, &rejection);
                Verdict::Invalid(rejection)
            }
        }
    }

    fn check(&self, envelope: &Value, expected_signer: Option<&str>) -> Result<String, Rejection> {
        let map = envelope.as_object().ok_or(Rejection::NotAnObject)?;
        self.check_backend(map)?;
        let (signature, certificate) = credentials(map)?;
        let signature = decode_base64_lenient(signature.as_bytes())
            .map_err(|e| Rejection::BadEncoding(format!("signature: {e}")))?;
        let cert = self.certificate(certificate)?;
        cert.chain.clone()?;
        check_signature(&cert, &signature, envelope, map)?;
        self.check_policy(map, &cert.signer, expected_signer)?;
        Ok(cert.signer.clone())
    }

    /// Backend selection of reference §3.5.
    fn check_backend(&self, map: &Map<String, Value>) -> Result<(), Rejection> {
        let backend = match map.get("crypto") {
            Some(Value::String(name)) if name == "x509" || name == "gpg" => name.as_str(),
            Some(other) => return Err(Rejection::UnknownBackend(describe(other))),
            None if map.contains_key("certificate") => "x509",
            None if map.contains_key("signature") => "gpg",
            None => return Err(Rejection::Unsigned),
        };
        let s = &self.settings;
        let allowed = if s.crypto_validate_backends.is_empty() {
            s.crypto_backend == backend
        } else {
            s.crypto_validate_backends.iter().any(|b| b == backend)
        };
        match (allowed, backend) {
            (false, _) => Err(Rejection::BackendNotAllowed(backend.to_owned())),
            (true, "gpg") => Err(Rejection::GpgUnsupported),
            (true, _) => Ok(()),
        }
    }

    /// The cached or freshly computed entry for a `certificate` field.
    fn certificate(&self, field: &str) -> Result<Arc<CertEntry>, Rejection> {
        let key: CertKey = openssl::sha::sha256(field.as_bytes());
        let snapshot = self.trust.snapshot();
        if let Err(rejection) = &snapshot.state {
            return Err(rejection.clone());
        }
        let now = self.now();
        if let Some(entry) = self.cache.get(&key, snapshot.generation, now) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(entry);
        }
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(self.evaluate(field, snapshot, now)?);
        self.cache.insert(key, Arc::clone(&entry));
        Ok(entry)
    }

    /// Parses a certificate field and checks its chain, retrying once with
    /// reloaded trust material if the rate limit allows.
    fn evaluate(
        &self,
        field: &str,
        snapshot: Arc<TrustSnapshot>,
        now: i64,
    ) -> Result<CertEntry, Rejection> {
        let pem = decode_base64_lenient(field.as_bytes())
            .map_err(|e| Rejection::BadEncoding(format!("certificate: {e}")))?;
        let leaf = X509::from_pem(&pem)
            .map_err(|e| Rejection::BadCertificate(format!("not a PEM certificate: {e}")))?;
        let signer = first_common_name(&leaf)
            .ok_or_else(|| Rejection::BadCertificate("no subject CN".to_owned()))?;
        let public_key = leaf
            .public_key()
            .map_err(|e| Rejection::BadCertificate(format!("unreadable public key: {e}")))?;
        let (snapshot, chain) = self.chain_verdict(snapshot, &leaf);
        let expires_at = match (&chain, &snapshot.state) {
            (Ok(()), Ok(store)) => asn1_to_epoch(leaf.not_after())
                .unwrap_or(now)
                .min(store.valid_until),
            _ => now.saturating_add(
                i64::try_from(self.settings.reload_min_interval_secs).unwrap_or(i64::MAX),
            ),
        };
        Ok(CertEntry {
            public_key,
            signer,
            chain,
            generation: snapshot.generation,
            expires_at,
        })
    }

    fn chain_verdict(
        &self,
        snapshot: Arc<TrustSnapshot>,
        leaf: &X509,
    ) -> (Arc<TrustSnapshot>, Result<(), Rejection>) {
        let first = check_chain(&snapshot, leaf);
        if first.is_ok() {
            return (snapshot, first);
        }
        match self.trust.after_failure(snapshot.generation) {
            Some(newer) => {
                let retry = check_chain(&newer, leaf);
                (newer, retry)
            }
            None => (snapshot, first),
        }
    }

    /// Routing policy of reference §3.4.
    fn check_policy(
        &self,
        map: &Map<String, Value>,
        signer: &str,
        expected_signer: Option<&str>,
    ) -> Result<(), Rejection> {
        let topic = map.get("topic").and_then(Value::as_str);
        let denied = || Rejection::Policy {
            topic: topic.unwrap_or_default().to_owned(),
            signer: signer.to_owned(),
        };
        if let Some(expected) = expected_signer {
            return if signer == expected {
                Ok(())
            } else {
                Err(denied())
            };
        }
        match topic.and_then(|t| self.settings.routing_policy.get(t)) {
            Some(allowed) if allowed.iter().any(|cn| cn == signer) => Ok(()),
            Some(_) => Err(denied()),
            None if self.settings.routing_nitpicky => Err(Rejection::PolicyUnderspecified {
                topic: topic.unwrap_or_default().to_owned(),
                signer: signer.to_owned(),
            }),
            None => {
                if let Some(suppressed) = self.policy_log.check() {
                    tracing::warn!(
                        topic = topic.unwrap_or_default(),
                        signer,
                        suppressed,
                        "no routing policy for topic; accepted because routing_nitpicky is false"
                    );
                }
                Ok(())
            }
        }
    }

    fn now(&self) -> i64 {
        self.settings.pinned_time.unwrap_or_else(unix_now)
    }

    /// Per-message rejections are the sender's problem (debug level), CA/CRL
    /// trouble is ours: an error, repeated at most once a minute.
    fn log_rejection(&self, envelope: &Value, rejection: &Rejection) {
        let topic = envelope
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if rejection.is_local_trouble() {
            if let Some(suppressed) = self.trouble_log.check() {
                tracing::error!(%rejection, topic, suppressed, "cannot validate x509 messages");
            }
        } else {
            tracing::debug!(reason = rejection.reason(), %rejection, topic, "message rejected");
        }
    }
}

fn check_chain(snapshot: &TrustSnapshot, leaf: &X509) -> Result<(), Rejection> {
    match &snapshot.state {
        Ok(store) => store.check(leaf),
        Err(rejection) => Err(rejection.clone()),
    }
}

/// The `signature` and `certificate` strings.
fn credentials(map: &Map<String, Value>) -> Result<(&str, &str), Rejection> {
    let field = |name: &'static str| match map.get(name) {
        None => Err(Rejection::MissingField(name)),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(Rejection::BadEncoding(format!("{name} is not a string"))),
    };
    Ok((field("signature")?, field("certificate")?))
}

/// Checks the RSA/SHA-1 signature over the canonical envelope minus the
/// credentials, then (seq_id rule) minus `seq_id` as well.
fn check_signature(
    cert: &CertEntry,
    signature: &[u8],
    envelope: &Value,
    map: &Map<String, Value>,
) -> Result<(), Rejection> {
    let mut attempts: &[&[&str]] = &[&CREDENTIALS, &CREDENTIALS_AND_SEQ_ID];
    if !map.contains_key("seq_id") {
        attempts = &attempts[..1];
    }
    VERIFY_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        for skip in attempts {
            buffer.clear();
            envelope::write_canonical_without(envelope, skip, &mut buffer);
            if rsa_sha1_verify(cert, signature, &buffer) {
                return Ok(());
            }
        }
        Err(Rejection::BadSignature)
    })
}

fn rsa_sha1_verify(cert: &CertEntry, signature: &[u8], data: &[u8]) -> bool {
    openssl::sign::Verifier::new(MessageDigest::sha1(), &cert.public_key)
        .and_then(|mut verifier| verifier.verify_oneshot(signature, data))
        .unwrap_or(false)
}

/// Short rendering of an unexpected `crypto` value for the rejection text.
fn describe(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 64 {
        let cut = (0..=64)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(validate_backends: &[&str]) -> Verifier {
        Verifier::new(VerifierSettings {
            ca_cert_location: "/nonexistent/ca.crt".to_owned(),
            crypto_validate_backends: validate_backends.iter().map(|s| (*s).to_owned()).collect(),
            ..VerifierSettings::default()
        })
    }

    fn reject(v: &Verifier, json: &str) -> Rejection {
        let value: Value = serde_json::from_str(json).expect("json");
        match v.verify(&value) {
            Verdict::Invalid(r) => r,
            Verdict::Valid { signer } => panic!("unexpectedly valid, signer {signer}"),
        }
    }

    #[test]
    fn backend_selection() {
        let v = verifier(&["x509"]);
        assert_eq!(reject(&v, "[]"), Rejection::NotAnObject);
        assert_eq!(reject(&v, r#"{"topic":"t"}"#), Rejection::Unsigned);
        assert_eq!(
            reject(&v, r#"{"crypto":"rot13"}"#),
            Rejection::UnknownBackend("\"rot13\"".into())
        );
        assert_eq!(
            reject(&v, r#"{"crypto":5}"#),
            Rejection::UnknownBackend("5".into())
        );
        assert_eq!(
            reject(&v, r#"{"signature":"x"}"#),
            Rejection::BackendNotAllowed("gpg".into())
        );
        assert_eq!(
            reject(&v, r#"{"crypto":"gpg","signature":"x"}"#),
            Rejection::BackendNotAllowed("gpg".into())
        );
        let with_gpg = verifier(&["x509", "gpg"]);
        assert_eq!(
            reject(&with_gpg, r#"{"crypto":"gpg","signature":"x"}"#),
            Rejection::GpgUnsupported
        );
    }

    #[test]
    fn empty_backend_list_means_the_signing_backend() {
        let v = verifier(&[]);
        assert_eq!(
            reject(&v, r#"{"signature":"x"}"#),
            Rejection::BackendNotAllowed("gpg".into())
        );
        assert!(matches!(
            reject(&v, r#"{"certificate":"x"}"#),
            Rejection::MissingField("signature")
        ));
    }

    #[test]
    fn credentials_are_required() {
        let v = verifier(&["x509"]);
        assert_eq!(
            reject(&v, r#"{"crypto":"x509"}"#),
            Rejection::MissingField("signature")
        );
        assert_eq!(
            reject(&v, r#"{"crypto":"x509","signature":"x"}"#),
            Rejection::MissingField("certificate")
        );
        assert!(matches!(
            reject(&v, r#"{"crypto":"x509","signature":1,"certificate":"x"}"#),
            Rejection::BadEncoding(_)
        ));
    }

    #[test]
    fn missing_ca_is_a_rejection() {
        let v = verifier(&["x509"]);
        let r = reject(
            &v,
            r#"{"crypto":"x509","signature":"eA==","certificate":"eA=="}"#,
        );
        assert!(
            matches!(&r, Rejection::CaUnavailable(why) if why.contains("/nonexistent/ca.crt")),
            "{r:?}"
        );
        assert!(v.trust_status().is_err());
    }

    #[test]
    fn describe_truncates_on_char_boundaries() {
        let long = Value::String("é".repeat(100));
        let text = describe(&long);
        assert!(text.ends_with('…'));
        assert!(text.len() <= 64 + '…'.len_utf8());
    }
}
