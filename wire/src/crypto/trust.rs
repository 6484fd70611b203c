//! CA / CRL material: sources, on-disk caches, the OpenSSL trust store and
//! its rate-limited reloading.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder, X509StoreBuilderRef};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509Crl, X509Ref, X509StoreContext, X509VerifyResult, X509};

use super::codec::asn1_to_epoch;
use super::verifier::VerifierSettings;
use super::{lock, CryptoError, Rejection};
use crate::localtime::now_epoch as unix_now;

/// Where CA or CRL material comes from: an `https://` or `http://` URL is
/// downloaded (as fedmsg did; the shipped `ssl.toml` names URLs), anything
/// else is a file path. (Reading `http://…` as a path made the hub refuse
/// every signed message while `fedmsg-check` said OK.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file.
    File(PathBuf),
    /// An `https://` or `http://` URL.
    Url(String),
}

impl Location {
    /// Classifies a configured location string.
    pub fn parse(location: &str) -> Self {
        if location.starts_with("https://") || location.starts_with("http://") {
            Location::Url(location.to_owned())
        } else {
            Location::File(PathBuf::from(location))
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Url(url) => f.write_str(url),
        }
    }
}

/// Downloads CA/CRL material. A trait so that tests can stand in for the
/// network.
pub trait Fetcher: Send + Sync {
    /// Returns the body of a successful (2xx) GET of `url`.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Fetch`] when the download fails.
    fn fetch(&self, url: &str) -> Result<Vec<u8>, CryptoError>;
}

/// The real [`Fetcher`]: blocking HTTPS with the system's TLS library and
/// trust roots, a few retries, a timeout and a size cap.
#[derive(Debug, Clone)]
pub struct HttpsFetcher {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts before giving up (upstream uses 3).
    pub attempts: u32,
    /// Bodies larger than this are refused (a CRL is a few kB).
    pub max_body: u64,
}

impl Default for HttpsFetcher {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            attempts: 3,
            max_body: 16 * 1024 * 1024,
        }
    }
}

impl Fetcher for HttpsFetcher {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, CryptoError> {
        let fail = |reason: String| CryptoError::Fetch {
            url: url.to_owned(),
            reason,
        };
        let tls = native_tls::TlsConnector::new().map_err(|e| fail(e.to_string()))?;
        let agent = ureq::AgentBuilder::new()
            .timeout(self.timeout)
            .tls_connector(Arc::new(tls))
            .build();
        let mut last_error = String::from("no attempt made");
        for attempt in 1..=self.attempts.max(1) {
            match agent.get(url).call() {
                Ok(response) => return self.read_body(response).map_err(fail),
                Err(error) => {
                    tracing::warn!(url, attempt, %error, "fetching trust material failed");
                    last_error = error.to_string();
                }
            }
        }
        Err(fail(last_error))
    }
}

impl HttpsFetcher {
    fn read_body(&self, response: ureq::Response) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        response
            .into_reader()
            .take(self.max_body.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
        if body.len() as u64 > self.max_body {
            return Err(format!("body larger than {} bytes", self.max_body));
        }
        Ok(body)
    }
}

/// One source of trust material and its download cache.
struct MaterialSpec<'a> {
    location: Location,
    cache: Option<&'a Path>,
    /// Seconds after which a cached download is stale (0 = never).
    expiry: u64,
}

impl MaterialSpec<'_> {
    /// Reads the material: from the file, or from the fresh disk cache, or
    /// by downloading it (refreshing the cache; a stale cache is the
    /// fallback when the download fails).
    fn load(&self, fetcher: &dyn Fetcher) -> Result<Vec<u8>, String> {
        match &self.location {
            Location::File(path) => {
                fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
            Location::Url(url) => self.load_url(url, fetcher),
        }
    }

    fn load_url(&self, url: &str, fetcher: &dyn Fetcher) -> Result<Vec<u8>, String> {
        if let Some(cached) = self.cache.filter(|path| cache_is_fresh(path, self.expiry)) {
            if let Ok(bytes) = fs::read(cached) {
                return Ok(bytes);
            }
        }
        match fetcher.fetch(url) {
            Ok(bytes) => {
                if let Some(cache) = self.cache {
                    write_cache(cache, &bytes);
                }
                Ok(bytes)
            }
            Err(error) => self.stale_fallback(url, &error),
        }
    }

    fn stale_fallback(&self, url: &str, error: &CryptoError) -> Result<Vec<u8>, String> {
        let stale = self
            .cache
            .and_then(|path| fs::read(path).ok().map(|bytes| (path, bytes)));
        match stale {
            Some((path, bytes)) => {
                tracing::warn!(%url, cache = %path.display(), %error, "download failed, using the stale cached copy");
                Ok(bytes)
            }
            None => Err(error.to_string()),
        }
    }
}

/// A cache file is fresh when it exists and is younger than `expiry`
/// seconds (any age when `expiry` is 0).
fn cache_is_fresh(path: &Path, expiry: u64) -> bool {
    let Ok(modified) = fs::metadata(path).and_then(|m| m.modified()) else {
        return false;
    };
    if expiry == 0 {
        return true;
    }
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    age < Duration::from_secs(expiry)
}

/// Writes a cache file atomically (temporary file + rename); failures only
/// cost a warning since the material is held in memory anyway.
fn write_cache(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = path
        .parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|()| fs::write(&tmp, bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(error) = result {
        let _ = fs::remove_file(&tmp);
        tracing::warn!(cache = %path.display(), %error, "cannot write the trust material cache");
    }
}

/// An OpenSSL store holding the CA certificate(s) and, optionally, the CRL.
pub(crate) struct TrustStore {
    store: X509Store,
    /// Epoch seconds after which chain verdicts made with this store must be
    /// recomputed: the earliest of the CAs' notAfter and the CRL's nextUpdate.
    pub(crate) valid_until: i64,
}

impl TrustStore {
    /// Builds the store from PEM text (a CA file may begin with an OpenSSL
    /// text dump and may hold several certificates; all become anchors).
    fn build(
        ca_pem: &[u8],
        crl_pem: Option<&[u8]>,
        pinned_time: Option<i64>,
    ) -> Result<Self, Rejection> {
        let cas = X509::stack_from_pem(ca_pem)
            .ok()
            .filter(|cas| !cas.is_empty())
            .ok_or_else(|| {
                Rejection::CaUnavailable("no PEM certificate in the CA file".to_owned())
            })?;
        let crl = crl_pem
            .map(|pem| {
                X509Crl::from_pem(pem)
                    .map_err(|e| Rejection::CrlUnavailable(format!("not a PEM CRL: {e}")))
            })
            .transpose()?;
        let valid_until = validity_horizon(&cas, crl.as_ref());
        let store = assemble_store(cas, crl, pinned_time)
            .map_err(|e| Rejection::CaUnavailable(format!("cannot build the trust store: {e}")))?;
        Ok(Self { store, valid_until })
    }

    /// Verifies `leaf` against the store (CA signature, validity periods,
    /// CRL), mapping OpenSSL's verdict to a [`Rejection`].
    pub(crate) fn check(&self, leaf: &X509Ref) -> Result<(), Rejection> {
        let outcome = X509StoreContext::new().and_then(|mut context| {
            let untrusted = Stack::new()?;
            context.init(&self.store, leaf, &untrusted, |ctx| {
                let ok = ctx.verify_cert()?;
                Ok((ok, ctx.error(), ctx.error_depth()))
            })
        });
        match outcome {
            Ok((true, _, _)) => Ok(()),
            Ok((false, error, depth)) => Err(classify_chain_error(error, depth)),
            Err(stack) => Err(Rejection::Chain(format!("verification error: {stack}"))),
        }
    }
}

fn validity_horizon(cas: &[X509], crl: Option<&X509Crl>) -> i64 {
    let ca_ends = cas.iter().filter_map(|ca| asn1_to_epoch(ca.not_after()));
    let crl_end = crl
        .and_then(|crl| crl.next_update())
        .and_then(asn1_to_epoch);
    ca_ends.chain(crl_end).min().unwrap_or(i64::MAX)
}

fn assemble_store(
    cas: Vec<X509>,
    crl: Option<X509Crl>,
    pinned_time: Option<i64>,
) -> Result<X509Store, openssl::error::ErrorStack> {
    let mut builder = X509StoreBuilder::new()?;
    for ca in cas {
        builder.add_cert(ca)?;
    }
    let mut param = X509VerifyParam::new()?;
    // Level 0 keeps OpenSSL 3 from refusing RSA-1024 keys and SHA-1
    // signatures, which production fedmsg certificates use.
    param.set_auth_level(0);
    if let Some(time) = pinned_time {
        param.set_time(time);
    }
    if let Some(crl) = crl {
        add_crl(&mut builder, &crl)?;
        param.set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)?;
    }
    builder.set_param(&param)?;
    Ok(builder.build())
}

// The openssl crate has no wrapper for adding an in-memory CRL to a store
// (only via lookup files), so call the C function directly.
extern "C" {
    fn X509_STORE_add_crl(
        store: *mut openssl_sys::X509_STORE,
        crl: *mut openssl_sys::X509_CRL,
    ) -> std::ffi::c_int;
}

fn add_crl(
    builder: &mut X509StoreBuilderRef,
    crl: &X509Crl,
) -> Result<(), openssl::error::ErrorStack> {
    // SAFETY: both pointers are valid, owned by live Rust wrappers for the
    // duration of the call; X509_STORE_add_crl takes its own reference to
    // the CRL, so dropping `crl` afterwards is fine.
    let status = unsafe { X509_STORE_add_crl(builder.as_ptr(), crl.as_ptr()) };
    if status > 0 {
        Ok(())
    } else {
        Err(openssl::error::ErrorStack::get())
    }
}

/// Maps OpenSSL's verification error to a rejection: revocation and CRL
/// trouble get their own reasons, the rest is a chain failure.
fn classify_chain_error(error: X509VerifyResult, depth: u32) -> Rejection {
    use openssl_sys as ffi;
    let what = format!("{} (depth {depth})", error.error_string());
    match error.as_raw() {
        ffi::X509_V_ERR_CERT_REVOKED => Rejection::Revoked,
        ffi::X509_V_ERR_UNABLE_TO_GET_CRL
        | ffi::X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE
        | ffi::X509_V_ERR_CRL_SIGNATURE_FAILURE
        | ffi::X509_V_ERR_CRL_NOT_YET_VALID
        | ffi::X509_V_ERR_CRL_HAS_EXPIRED
        | ffi::X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD
        | ffi::X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD
        | ffi::X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER
        | ffi::X509_V_ERR_KEYUSAGE_NO_CRL_SIGN
        | ffi::X509_V_ERR_DIFFERENT_CRL_SCOPE => Rejection::CrlUnavailable(what),
        _ => Rejection::Chain(what),
    }
}

/// The trust material in force at one moment. Immutable; replaced as a
/// whole on reload.
pub(crate) struct TrustSnapshot {
    /// Bumped whenever different material is installed; cached verdicts of
    /// another generation are stale.
    pub(crate) generation: u64,
    pub(crate) state: Result<Arc<TrustStore>, Rejection>,
    /// Digest of the raw CA and CRL bytes, to notice unchanged reloads.
    fingerprint: [u8; 32],
    /// When to re-read the sources (`None` = only after failures).
    refresh_at: Option<Instant>,
}

/// Owns the current [`TrustSnapshot`] and reloads it, never more than once
/// per `reload_min_interval` because of failing messages.
pub(crate) struct TrustManager {
    settings: Arc<VerifierSettings>,
    fetcher: Arc<dyn Fetcher>,
    current: RwLock<Arc<TrustSnapshot>>,
    /// Held while reloading, so one thread reloads and the others carry on
    /// with the current snapshot.
    reload_gate: Mutex<Option<Instant>>,
    attempts: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl TrustManager {
    /// Loads the material for the first time. Failure is not fatal: the
    /// snapshot then holds the rejection and loading is retried later.
    pub(crate) fn new(settings: Arc<VerifierSettings>, fetcher: Arc<dyn Fetcher>) -> Self {
        let placeholder = TrustSnapshot {
            generation: 0,
            state: Err(Rejection::CaUnavailable("not loaded yet".to_owned())),
            fingerprint: [0; 32],
            refresh_at: None,
        };
        let manager = Self {
            settings,
            fetcher,
            current: RwLock::new(Arc::new(placeholder)),
            reload_gate: Mutex::new(None),
            attempts: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        };
        let mut gate = lock(&manager.reload_gate);
        manager.reload_locked(&mut gate);
        drop(gate);
        manager
    }

    /// The snapshot to verify with; re-reads the sources first when their
    /// refresh time has come (only one thread does, the others do not wait).
    pub(crate) fn snapshot(&self) -> Arc<TrustSnapshot> {
        let current = self.peek();
        if current.refresh_at.is_some_and(|at| Instant::now() >= at) {
            if let Ok(mut gate) = self.reload_gate.try_lock() {
                self.reload_locked(&mut gate);
                return self.peek();
            }
        }
        current
    }

    /// Called after a chain failure under snapshot `seen`: returns a newer
    /// snapshot to retry with, reloading if the rate limit allows. `None`
    /// means "no different material available: keep the verdict".
    pub(crate) fn after_failure(&self, seen: u64) -> Option<Arc<TrustSnapshot>> {
        let current = self.peek();
        if current.generation != seen {
            return Some(current);
        }
        let mut gate = self.reload_gate.try_lock().ok()?;
        let min_interval = Duration::from_secs(self.settings.reload_min_interval_secs);
        if gate.is_some_and(|last| last.elapsed() < min_interval) {
            return None;
        }
        self.reload_locked(&mut gate);
        drop(gate);
        let reloaded = self.peek();
        (reloaded.generation != seen).then_some(reloaded)
    }

    /// Reloads now, whatever the rate limit (e.g. on SIGHUP).
    pub(crate) fn force_reload(&self) -> Result<(), Rejection> {
        let mut gate = lock(&self.reload_gate);
        self.reload_locked(&mut gate);
        drop(gate);
        self.peek().state.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// (load attempts, loads that installed new material, failed loads) so
    /// far, the initial load included.
    pub(crate) fn counters(&self) -> (u64, u64, u64) {
        (
            self.attempts.load(Ordering::Relaxed),
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed),
        )
    }

    fn peek(&self) -> Arc<TrustSnapshot> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn install(&self, snapshot: TrustSnapshot) {
        let snapshot = Arc::new(snapshot);
        match self.current.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Reads and installs the material; `last_attempt` is the gate's content.
    fn reload_locked(&self, last_attempt: &mut Option<Instant>) {
        *last_attempt = Some(Instant::now());
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let previous = self.peek();
        match self.read_material() {
            Ok((ca, crl)) => self.install_material(&previous, &ca, crl.as_deref()),
            Err(rejection) => self.keep_after_failure(&previous, rejection),
        }
    }

    fn read_material(&self) -> Result<(Vec<u8>, Option<Vec<u8>>), Rejection> {
        let s = &self.settings;
        let ca = MaterialSpec {
            location: Location::parse(&s.ca_cert_location),
            cache: s.ca_cert_cache.as_deref(),
            expiry: s.ca_cert_cache_expiry,
        }
        .load(self.fetcher.as_ref())
        .map_err(Rejection::CaUnavailable)?;
        let crl = match s.crl_location.as_deref().filter(|l| !l.is_empty()) {
            None => None,
            Some(location) => Some(
                MaterialSpec {
                    location: Location::parse(location),
                    cache: s.crl_cache.as_deref(),
                    expiry: s.crl_cache_expiry,
                }
                .load(self.fetcher.as_ref())
                .map_err(Rejection::CrlUnavailable)?,
            ),
        };
        Ok((ca, crl))
    }

    fn install_material(&self, previous: &TrustSnapshot, ca: &[u8], crl: Option<&[u8]>) {
        let fingerprint = material_fingerprint(ca, crl);
        if previous.state.is_ok() && previous.fingerprint == fingerprint {
            // Same bytes: keep the store and, above all, the cached verdicts.
            self.install(TrustSnapshot {
                generation: previous.generation,
                state: previous.state.clone(),
                fingerprint,
                refresh_at: self.next_refresh(),
            });
            return;
        }
        match TrustStore::build(ca, crl, self.settings.pinned_time) {
            Ok(store) => {
                self.warn_if_expired(&store);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    ca = %self.settings.ca_cert_location,
                    crl = self.settings.crl_location.as_deref().unwrap_or("none"),
                    generation = previous.generation + 1,
                    "trust material loaded"
                );
                self.install(TrustSnapshot {
                    generation: previous.generation + 1,
                    state: Ok(Arc::new(store)),
                    fingerprint,
                    refresh_at: self.next_refresh(),
                });
            }
            Err(rejection) => self.keep_after_failure(previous, rejection),
        }
    }

    /// A failed (re)load keeps the last good store, if any, and schedules a
    /// retry after the minimum reload interval.
    fn keep_after_failure(&self, previous: &TrustSnapshot, rejection: Rejection) {
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
        let retry =
            Some(Instant::now() + Duration::from_secs(self.settings.reload_min_interval_secs));
        let state = match &previous.state {
            Ok(store) => {
                tracing::error!(%rejection, "reloading trust material failed; keeping the previous CA/CRL");
                Ok(Arc::clone(store))
            }
            Err(_) => {
                tracing::error!(%rejection, "trust material unavailable; x509 messages will be rejected");
                Err(rejection)
            }
        };
        self.install(TrustSnapshot {
            generation: previous.generation,
            state,
            fingerprint: previous.fingerprint,
            refresh_at: retry,
        });
    }

    fn next_refresh(&self) -> Option<Instant> {
        let s = &self.settings;
        let crl_expiry = s
            .crl_location
            .as_deref()
            .filter(|l| !l.is_empty())
            .map(|_| s.crl_cache_expiry);
        [Some(s.ca_cert_cache_expiry), crl_expiry]
            .into_iter()
            .flatten()
            .filter(|&secs| secs > 0)
            .min()
            .map(|secs| Instant::now() + Duration::from_secs(secs))
    }

    fn warn_if_expired(&self, store: &TrustStore) {
        let now = self.settings.pinned_time.unwrap_or_else(unix_now);
        if store.valid_until <= now {
            tracing::error!(
                ca = %self.settings.ca_cert_location,
                crl = self.settings.crl_location.as_deref().unwrap_or("none"),
                valid_until = store.valid_until,
                "the CA certificate or the CRL has expired; x509 messages will be rejected until it is replaced"
            );
        }
    }
}

fn material_fingerprint(ca: &[u8], crl: Option<&[u8]>) -> [u8; 32] {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(&(ca.len() as u64).to_le_bytes());
    hasher.update(ca);
    if let Some(crl) = crl {
        hasher.update(crl);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Serves canned bodies and counts requests.
    struct FakeFetcher {
        bodies: Mutex<HashMap<String, Vec<u8>>>,
        calls: AtomicU64,
    }

    impl FakeFetcher {
        fn new(url: &str, body: &[u8]) -> Self {
            Self {
                bodies: Mutex::new([(url.to_owned(), body.to_vec())].into_iter().collect()),
                calls: AtomicU64::new(0),
            }
        }
    }

    impl Fetcher for FakeFetcher {
        fn fetch(&self, url: &str) -> Result<Vec<u8>, CryptoError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            lock(&self.bodies)
                .get(url)
                .cloned()
                .ok_or_else(|| CryptoError::Fetch {
                    url: url.to_owned(),
                    reason: "404".to_owned(),
                })
        }
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("https://x/ca.crt"),
            Location::Url("https://x/ca.crt".into())
        );
        assert_eq!(
            Location::parse("http://x/ca.crt"),
            Location::Url("http://x/ca.crt".into())
        );
        assert_eq!(
            Location::parse("/etc/pki/fedmsg/ca.crt"),
            Location::File("/etc/pki/fedmsg/ca.crt".into())
        );
    }

    #[test]
    fn url_material_is_cached_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("sub/ca.crt");
        let fetcher = FakeFetcher::new("https://example.invalid/ca.crt", b"PEM");
        let spec = MaterialSpec {
            location: Location::parse("https://example.invalid/ca.crt"),
            cache: Some(&cache),
            expiry: 3600,
        };
        assert_eq!(spec.load(&fetcher).as_deref(), Ok(&b"PEM"[..]));
        assert_eq!(fs::read(&cache).ok().as_deref(), Some(&b"PEM"[..]));
        // Fresh cache: no second download.
        assert_eq!(spec.load(&fetcher).as_deref(), Ok(&b"PEM"[..]));
        assert_eq!(fetcher.calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stale_cache_is_refetched_and_used_as_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("crl.pem");
        fs::write(&cache, b"OLD").expect("write");
        let old = SystemTime::now() - Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(&cache)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        let fetcher = FakeFetcher::new("https://example.invalid/crl.pem", b"NEW");
        let spec = MaterialSpec {
            location: Location::parse("https://example.invalid/crl.pem"),
            cache: Some(&cache),
            expiry: 3600,
        };
        assert_eq!(spec.load(&fetcher).as_deref(), Ok(&b"NEW"[..]));
        assert_eq!(fs::read(&cache).ok().as_deref(), Some(&b"NEW"[..]));

        // Download failure with a cached copy: the copy is used.
        let broken = FakeFetcher::new("https://elsewhere.invalid/", b"");
        let spec = MaterialSpec { expiry: 1, ..spec };
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(spec.load(&broken).as_deref(), Ok(&b"NEW"[..]));
        assert_eq!(broken.calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn url_without_cache_or_network_fails_cleanly() {
        let fetcher = FakeFetcher::new("https://other.invalid/", b"");
        let spec = MaterialSpec {
            location: Location::parse("https://example.invalid/ca.crt"),
            cache: None,
            expiry: 0,
        };
        let error = spec.load(&fetcher).expect_err("no body");
        assert!(error.contains("https://example.invalid/ca.crt"), "{error}");
    }

    #[test]
    fn https_fetch_failure_is_an_error_not_a_panic() {
        let fetcher = HttpsFetcher {
            timeout: Duration::from_secs(2),
            attempts: 2,
            ..HttpsFetcher::default()
        };
        // Nothing listens on port 1 of the loopback interface.
        let error = fetcher
            .fetch("https://127.0.0.1:1/ca.crt")
            .expect_err("refused");
        assert!(
            matches!(&error, CryptoError::Fetch { url, .. } if url.contains("127.0.0.1")),
            "{error}"
        );
    }

    #[test]
    fn missing_file_is_reported() {
        let spec = MaterialSpec {
            location: Location::parse("/nonexistent/ca.crt"),
            cache: None,
            expiry: 0,
        };
        assert!(spec.load(&FakeFetcher::new("x", b"")).is_err());
    }
}
