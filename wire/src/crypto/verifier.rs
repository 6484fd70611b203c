//! X.509 message validation (reference §3.2–§3.5); see the module docs of
//! [`crate::crypto`] for the rules.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openssl::hash::MessageDigest;
use openssl::pkey::Public;
use openssl::rsa::{Padding, Rsa};
use openssl::x509::X509;
use serde_json::{Map, Value};

use super::cache::{CertCache, CertEntry, CertKey};
use super::codec::{asn1_to_epoch, decode_base64_lenient};
use super::signer::first_common_name;
use super::trust::{Fetcher, HttpsFetcher, TrustManager, TrustSnapshot};
use super::{Rejection, Verdict};
use crate::envelope::{self, scan};
use crate::localtime::now_epoch as unix_now;
use crate::ratelimit::LogLimiter;

/// The largest `certificate` field accepted (base64 text). Real fedmsg
/// certificates are about 2 kB; a chain of a few is under 8 kB.
pub const MAX_CERTIFICATE_FIELD: usize = 16 * 1024;

/// The largest public key accepted in a signing certificate, in bits.
pub const MAX_KEY_BITS: u32 = 4096;

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

impl VerifierSettings {
    /// The settings of the fedmsg configuration's keys.
    pub fn from_config(config: &crate::config::Config) -> VerifierSettings {
        VerifierSettings {
            ca_cert_location: config.ca_cert_location.clone(),
            crl_location: config.crl_location.clone().filter(|l| !l.is_empty()),
            ca_cert_cache: config.ca_cert_cache.as_ref().map(PathBuf::from),
            ca_cert_cache_expiry: config.ca_cert_cache_expiry,
            crl_cache: config.crl_cache.as_ref().map(PathBuf::from),
            crl_cache_expiry: config.crl_cache_expiry,
            routing_policy: config.routing_policy.clone(),
            routing_nitpicky: config.routing_nitpicky,
            crypto_validate_backends: config.crypto_validate_backends.clone(),
            crypto_backend: config.crypto_backend.clone(),
            ..VerifierSettings::default()
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
    /// Distinguishes verifiers in the per-thread certificate cache.
    id: u64,
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
    /// Reused member list of the wire fast path.
    static MEMBERS: RefCell<Vec<scan::Member>> = RefCell::new(Vec::with_capacity(16));
    /// The certificates this thread used last, by the raw JSON text of the
    /// `certificate` field: a hit costs one comparison of ~1.7 kB instead
    /// of a SHA-256 and a look-up under the shared cache's lock. Entries
    /// are checked for generation and expiry exactly like the shared ones.
    static RECENT_CERTS: RefCell<Vec<RecentCert>> = const { RefCell::new(Vec::new()) };
}

/// Entries of the per-thread certificate list.
const RECENT_CERTS_LEN: usize = 4;

/// One entry of the per-thread certificate list.
struct RecentCert {
    verifier: u64,
    raw: Box<[u8]>,
    entry: Arc<CertEntry>,
}

/// DER prefix of a PKCS#1 v1.5 `DigestInfo` for SHA-1 (RFC 8017 §9.2).
const SHA1_DIGEST_INFO: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];

/// Source of [`Verifier::id`].
static NEXT_VERIFIER_ID: AtomicU64 = AtomicU64::new(1);

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
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
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

    /// Validates an envelope as received: `body` is its JSON text. Same
    /// verdicts as parsing it with [`envelope::parse`] and calling
    /// [`Verifier::verify`] (a body that does not parse is
    /// [`Rejection::BadEncoding`]), but a body that is already canonical
    /// JSON (what fedmsg publishers send) is checked in place: the signed
    /// text is the body minus its `signature` and `certificate` members, so
    /// it is hashed piecewise without building a tree.
    #[must_use = "dropping a verdict means the message was not checked"]
    pub fn verify_body(&self, body: &[u8]) -> Verdict {
        let fast = MEMBERS.with(|members| {
            let mut members = members.borrow_mut();
            let view = WireView::new(body, &mut members)?;
            match self.check_wire(&view) {
                Some(Ok(signer)) => Some(Verdict::Valid { signer }),
                Some(Err(rejection)) => {
                    self.log_rejection_on(view.topic.unwrap_or_default(), &rejection);
                    Some(Verdict::Invalid(rejection))
                }
                None => None,
            }
        });
        if let Some(verdict) = fast {
            return verdict;
        }
        match envelope::parse(body) {
            Ok(value) => self.verify(&value),
            // Not representable (e.g. a lone surrogate escape): the signed
            // text cannot be rebuilt.
            Err(error) => Verdict::Invalid(Rejection::BadEncoding(error.to_string())),
        }
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

    /// Why no signed message can be valid right now (the CA or CRL could
    /// not be loaded), or `None` when the trust material is in place: what
    /// monitoring reports, since every signed message is rejected while it
    /// lasts.
    pub fn trust_problem(&self) -> Option<Rejection> {
        self.trust.snapshot().state.as_ref().err().cloned()
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

    /// The fast path's checks, in the general path's order with the same
    /// outcomes. `None`: this message needs the general path after all.
    fn check_wire(&self, view: &WireView<'_>) -> Option<Result<String, Rejection>> {
        if !self.backend_allowed("x509") {
            return Some(Err(Rejection::BackendNotAllowed("x509".to_owned())));
        }
        let signature = unescape_base64_field(view.signature)?;
        let signature = match decode_base64_lenient(&signature) {
            Ok(signature) => signature,
            Err(e) => return Some(Err(Rejection::BadEncoding(format!("signature: {e}")))),
        };
        let cert = match self.certificate_by_raw(view.certificate)? {
            Ok(cert) => cert,
            Err(rejection) => return Some(Err(rejection)),
        };
        if let Err(rejection) = cert.chain.clone() {
            return Some(Err(rejection));
        }
        let rsa = cert.rsa.as_ref()?;
        let mut verified =
            rsa_sha1_verify_digest(rsa, &signature, &view.digest_without(&CREDENTIALS));
        if !verified && view.has_seq_id {
            verified = rsa_sha1_verify_digest(
                rsa,
                &signature,
                &view.digest_without(&CREDENTIALS_AND_SEQ_ID),
            );
        }
        if !verified {
            return Some(Err(Rejection::BadSignature));
        }
        Some(
            self.check_policy_on(view.topic, &cert.signer, None)
                .map(|()| cert.signer.clone()),
        )
    }

    /// The certificate entry for a `certificate` field given as its raw
    /// JSON text: from this thread's recent list when possible, else through
    /// [`Verifier::certificate`]. `None` when the text holds escapes other
    /// than `\n` (general path).
    fn certificate_by_raw(&self, raw: &[u8]) -> Option<Result<Arc<CertEntry>, Rejection>> {
        let snapshot = self.trust.snapshot();
        if let Err(rejection) = &snapshot.state {
            return Some(Err(rejection.clone()));
        }
        let now = self.now();
        let hit = RECENT_CERTS.with(|recent| {
            let mut recent = recent.borrow_mut();
            let position = recent
                .iter()
                .position(|r| r.verifier == self.id && *r.raw == *raw)?;
            let found = recent.remove(position);
            if found.entry.generation != snapshot.generation || now >= found.entry.expires_at {
                return None; // stale: dropped, looked up again below
            }
            let entry = Arc::clone(&found.entry);
            recent.insert(0, found);
            Some(entry)
        });
        if let Some(entry) = hit {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Some(Ok(entry));
        }
        let field = String::from_utf8(unescape_base64_field(raw)?).ok()?;
        let looked_up = self.certificate(&field);
        if let Ok(entry) = &looked_up {
            RECENT_CERTS.with(|recent| {
                let mut recent = recent.borrow_mut();
                recent.truncate(RECENT_CERTS_LEN - 1);
                recent.insert(
                    0,
                    RecentCert {
                        verifier: self.id,
                        raw: raw.into(),
                        entry: Arc::clone(entry),
                    },
                );
            });
        }
        Some(looked_up)
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
        match (self.backend_allowed(backend), backend) {
            (false, _) => Err(Rejection::BackendNotAllowed(backend.to_owned())),
            (true, "gpg") => Err(Rejection::GpgUnsupported),
            (true, _) => Ok(()),
        }
    }

    /// True when messages of `backend` may be validated
    /// (`crypto_validate_backends`, or `crypto_backend` when that is empty).
    fn backend_allowed(&self, backend: &str) -> bool {
        let s = &self.settings;
        if s.crypto_validate_backends.is_empty() {
            s.crypto_backend == backend
        } else {
            s.crypto_validate_backends.iter().any(|b| b == backend)
        }
    }

    /// The cached or freshly computed entry for a `certificate` field.
    fn certificate(&self, field: &str) -> Result<Arc<CertEntry>, Rejection> {
        // Checked before any decoding: a field of hundreds of kB cost
        // milliseconds per message (base64, PEM, a huge key) before its
        // chain was refused, with no credentials needed.
        if field.len() > MAX_CERTIFICATE_FIELD {
            return Err(Rejection::BadCertificate(format!(
                "certificate field of {} bytes exceeds the limit of {MAX_CERTIFICATE_FIELD}",
                field.len()
            )));
        }
        let pem = decode_base64_lenient(field.as_bytes())
            .map_err(|e| Rejection::BadEncoding(format!("certificate: {e}")))?;
        // Keyed on the decoded certificate: the same certificate with its
        // base64 wrapped differently is the same entry, so re-wrapping
        // cannot force a chain check per message.
        let key: CertKey = openssl::sha::sha256(&pem);
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
        let entry = Arc::new(self.evaluate(&pem, snapshot, now)?);
        self.cache.insert(key, Arc::clone(&entry));
        Ok(entry)
    }

    /// Parses a decoded certificate field and checks its chain, retrying
    /// once with reloaded trust material if the rate limit allows.
    fn evaluate(
        &self,
        pem: &[u8],
        snapshot: Arc<TrustSnapshot>,
        now: i64,
    ) -> Result<CertEntry, Rejection> {
        let leaf = X509::from_pem(pem)
            .map_err(|e| Rejection::BadCertificate(format!("not a PEM certificate: {e}")))?;
        let signer = first_common_name(&leaf)
            .ok_or_else(|| Rejection::BadCertificate("no subject CN".to_owned()))?;
        let public_key = leaf
            .public_key()
            .map_err(|e| Rejection::BadCertificate(format!("unreadable public key: {e}")))?;
        // A verification costs the square of the key size: a 16,384-bit
        // key is sixty times a 2,048-bit one, per message.
        if public_key.bits() > MAX_KEY_BITS {
            return Err(Rejection::BadCertificate(format!(
                "a {}-bit key exceeds the limit of {MAX_KEY_BITS} bits",
                public_key.bits()
            )));
        }
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
            rsa: public_key.rsa().ok(),
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
        self.check_policy_on(
            map.get("topic").and_then(Value::as_str),
            signer,
            expected_signer,
        )
    }

    /// [`Verifier::check_policy`] given the envelope's string `topic`.
    fn check_policy_on(
        &self,
        topic: Option<&str>,
        signer: &str,
        expected_signer: Option<&str>,
    ) -> Result<(), Rejection> {
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
        let policy = &self.settings.routing_policy;
        let exact = topic.and_then(|t| policy.get(t));
        if exact.is_none() {
            // Subscriptions match by prefix (zmq's rule, and a plugin's
            // topic glob without `*`): a plugin that names the reserved
            // topic `a.b.reserved` also receives `a.b.reservedx`. So a
            // policy key guards the topics it prefixes too, where fedmsg
            // checked only the exact topic and let `...reservedx` from any
            // signer reach that plugin.
            let guarding = topic.into_iter().flat_map(|t| {
                policy
                    .iter()
                    .filter(move |(key, _)| t.starts_with(key.as_str()))
            });
            for (_, allowed) in guarding {
                if !allowed.iter().any(|cn| cn == signer) {
                    return Err(denied());
                }
            }
        }
        match exact {
            Some(allowed) if allowed.iter().any(|cn| cn == signer) => Ok(()),
            Some(_) => Err(denied()),
            None if self.settings.routing_nitpicky => Err(Rejection::PolicyUnderspecified {
                topic: topic.unwrap_or_default().to_owned(),
                signer: signer.to_owned(),
            }),
            None => {
                if let Some(suppressed) = self.policy_log.check() {
                    tracing::warn!(
                        topic = %crate::peer_text::for_log(topic.unwrap_or_default()),
                        signer = %crate::peer_text::for_log(signer),
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
        self.log_rejection_on(topic, rejection);
    }

    /// [`Verifier::log_rejection`] given the envelope's topic.
    fn log_rejection_on(&self, topic: &str, rejection: &Rejection) {
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
            let verified = match &cert.rsa {
                Some(rsa) => rsa_sha1_verify_digest(rsa, signature, &openssl::sha::sha1(&buffer)),
                None => evp_sha1_verify(cert, signature, &buffer),
            };
            if verified {
                return Ok(());
            }
        }
        Err(Rejection::BadSignature)
    })
}

/// PKCS#1 v1.5 verification of a SHA-1 `digest`, the way RFC 8017 §8.2.2
/// describes it (and OpenSSL's `RSA_verify` does it): recover the encoded
/// message with the public key, which checks the type-1 padding, and
/// compare it with the expected `DigestInfo`. This skips the algorithm
/// fetching of OpenSSL 3's EVP layer, which cost a third of a verification.
fn rsa_sha1_verify_digest(rsa: &Rsa<Public>, signature: &[u8], digest: &[u8; 20]) -> bool {
    // RSA_verify refuses signatures that are not exactly the modulus size.
    let size = rsa.size() as usize;
    if signature.len() != size {
        return false;
    }
    let mut recovered = [0u8; 2048];
    let Some(recovered) = recovered.get_mut(..size) else {
        return false; // keys above 16384 bits: not worth a special case
    };
    match rsa.public_decrypt(signature, recovered, Padding::PKCS1) {
        Ok(len) => {
            len == SHA1_DIGEST_INFO.len() + digest.len()
                && recovered[..SHA1_DIGEST_INFO.len()] == SHA1_DIGEST_INFO
                && recovered[SHA1_DIGEST_INFO.len()..len] == digest[..]
        }
        Err(_) => false,
    }
}

/// Verification through OpenSSL's generic interface, for certificates whose
/// key is not RSA (fedmsg never makes them; kept for identical verdicts).
fn evp_sha1_verify(cert: &CertEntry, signature: &[u8], data: &[u8]) -> bool {
    openssl::sign::Verifier::new(MessageDigest::sha1(), &cert.public_key)
        .and_then(|mut verifier| verifier.verify_oneshot(signature, data))
        .unwrap_or(false)
}

/// The members of a canonical wire body that validation looks at. Built
/// only when the fast path applies: canonical text, `crypto` exactly
/// `"x509"`, string `signature` and `certificate`, a `topic` that is an
/// unescaped string or absent. Anything else takes the general path.
struct WireView<'a> {
    body: &'a [u8],
    members: &'a [scan::Member],
    signature: &'a [u8],
    certificate: &'a [u8],
    topic: Option<&'a str>,
    has_seq_id: bool,
}

impl<'a> WireView<'a> {
    fn new(body: &'a [u8], members: &'a mut Vec<scan::Member>) -> Option<Self> {
        // Canonical text has no escaped keys (they are not judged), so
        // every key below is compared as it is.
        if scan::scan_object(body, members) != Some(true) {
            return None;
        }
        let members: &'a [scan::Member] = members;
        let find = |name: &[u8]| members.iter().find(|m| m.raw_key(body) == name);
        let crypto = find(b"crypto")?;
        if crypto.escaped_key || crypto.escaped_value || crypto.raw_string(body)? != b"x509" {
            return None;
        }
        let signature = find(b"signature")?.raw_string(body)?;
        let certificate = find(b"certificate")?.raw_string(body)?;
        let topic = match find(b"topic") {
            None => None,
            Some(m) if m.escaped_value => return None,
            Some(m) => Some(std::str::from_utf8(m.raw_string(body)?).ok()?),
        };
        Some(WireView {
            body,
            members,
            signature,
            certificate,
            topic,
            has_seq_id: find(b"seq_id").is_some(),
        })
    }

    /// SHA-1 of the canonical text minus the members named in `skip`: the
    /// remaining members' text, in order, between braces.
    fn digest_without(&self, skip: &[&str]) -> [u8; 20] {
        let mut hasher = openssl::sha::Sha1::new();
        hasher.update(b"{");
        let mut first = true;
        for member in self.members {
            let key = member.raw_key(self.body);
            if skip.iter().any(|s| s.as_bytes() == key) {
                continue;
            }
            if !first {
                hasher.update(b",");
            }
            first = false;
            hasher.update(&self.body[member.text.clone()]);
        }
        hasher.update(b"}");
        hasher.finish()
    }
}

/// Decodes the JSON escapes a base64 field can hold (`\n` from line
/// wrapping); `None` for any other escape, which the general path handles.
fn unescape_base64_field(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            match bytes.next()? {
                b'n' => out.push(b'\n'),
                _ => return None,
            }
        } else {
            out.push(b);
        }
    }
    Some(out)
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
