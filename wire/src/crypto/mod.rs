//! fedmsg X.509 message signing and validation.
//!
//! This is a re-implementation, from the behaviour described in the project's
//! fedmsg reference (§3), of what Python fedmsg 1.1 does with
//! `crypto_backend = "x509"`.
//!
//! # Signing ([`Signer`])
//!
//! 1. `crypto = "x509"` is added to the envelope first, so it is covered.
//! 2. The canonical JSON ([`crate::envelope`]) of the envelope without
//!    `signature` / `certificate` is signed with RSA PKCS#1 v1.5 over SHA-1.
//! 3. `signature` = base64 of the signature; `certificate` = base64 of the
//!    signer's certificate re-serialised as clean PEM (base64 inside base64).
//!    Both are wrapped like Python 2's `str.encode('base64')`: 76-character
//!    lines, each followed by `\n`.
//!
//! The private key is parsed once when the [`Signer`] is built.
//!
//! # Validation ([`Verifier`])
//!
//! In this order, the first failure deciding the [`Rejection`]:
//!
//! 1. The envelope must be a JSON object.
//! 2. Backend: the `crypto` field if present (`x509` or `gpg`, anything else
//!    is an impossible backend); otherwise `certificate` ⇒ x509, else
//!    `signature` ⇒ gpg, else the message is unsigned. The backend must be in
//!    `crypto_validate_backends` (or be `crypto_backend` when that list is
//!    empty). gpg is not implemented: an allowed gpg message is rejected with
//!    [`Rejection::GpgUnsupported`].
//! 3. `signature` and `certificate` must both be present (and be strings).
//!    Base64 decoding skips every character outside the alphabet, like
//!    Python's `base64.b64decode`, so wrapped and unwrapped forms both work.
//! 4. The certificate must chain to the configured CA (the store holds only
//!    the CA file's certificates, no intermediates), with the CRL checked for
//!    every certificate of the chain when one is configured; OpenSSL checks
//!    validity periods, CRL signature and nextUpdate. RSA-1024 and
//!    sha1WithRSA are accepted, as Python accepts them (verification
//!    auth level 0).
//! 5. The signature must verify (PKCS#1 v1.5, SHA-1) over the canonical JSON
//!    of the envelope minus `signature` and `certificate`.
//!
//!    **seq_id rule**: a publisher with a replay store adds `seq_id` *after*
//!    signing, so upstream rejects its messages. When the check above fails
//!    and the envelope has a top-level `seq_id`, the signature is tried once
//!    more over the envelope minus `signature`, `certificate` and `seq_id`.
//!    Messages whose signed text genuinely contained `seq_id` still verify
//!    on the first try; a tampered message fails both tries.
//! 6. Routing policy: `routing_policy[topic]` (exact match on the envelope's
//!    `topic`) must list the certificate's first subject CN; a topic absent
//!    from the policy is accepted unless `routing_nitpicky` is set.
//!    [`Verifier::verify_signed_by`] instead requires the CN to equal the
//!    given signer.
//!
//! The zmq topic frame is not looked at here: comparing it with the
//! envelope's `topic` is the hub's job.
//!
//! # CA and CRL
//!
//! `ca_cert_location` / `crl_location` are either `https://` URLs or file
//! paths (anything else, `http://` included, is taken as a path, like
//! upstream). URL material is kept in the on-disk caches `ca_cert_cache` /
//! `crl_cache` when configured and fetched again once the cached file is
//! older than `*_cache_expiry` seconds (0 = never). The material is re-read
//! from its source every `*_cache_expiry` seconds, and when a certificate
//! fails its chain check, at most once per `reload_min_interval_secs` (upstream
//! reloads for every failing message, which lets anybody force downloads).
//! A missing CA or an unusable/expired CRL makes messages fail with
//! [`Rejection::CaUnavailable`] / [`Rejection::CrlUnavailable`] and a
//! rate-limited error log, never a panic. A reload that fails keeps the last
//! good material.
//!
//! # Caching
//!
//! Parsed certificates and their chain verdicts are cached by the SHA-256 of
//! the `certificate` field, in two bounded LRU maps (valid chains, failed
//! chains) so that a flood of distinct forged certificates neither grows
//! memory nor evicts the good entries. An entry is dropped when the trust
//! material is reloaded, when the certificate (or CA, or CRL) expires, and,
//! for failed chains, after `reload_min_interval_secs`.

mod cache;
mod codec;
mod signer;
mod trust;
mod verifier;

pub use signer::{Signer, SignerSettings};
pub use trust::{Fetcher, HttpsFetcher, Location};
pub use verifier::{Verifier, VerifierSettings, VerifierStats};

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Outcome of validating one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Signature, chain and policy are fine; `signer` is the certificate's
    /// first subject CN.
    Valid {
        /// First CN of the signing certificate's subject.
        signer: String,
    },
    /// The message must be dropped, for the given reason.
    Invalid(Rejection),
}

impl Verdict {
    /// True for [`Verdict::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid { .. })
    }

    /// The rejection, if any.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Verdict::Valid { .. } => None,
            Verdict::Invalid(rejection) => Some(rejection),
        }
    }
}

/// Why a message was found invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The body is not a JSON object.
    #[error("the envelope is not a JSON object")]
    NotAnObject,
    /// No `crypto`, `certificate` or `signature` field: no backend can be
    /// determined.
    #[error("could not determine crypto backend: message unsigned?")]
    Unsigned,
    /// `crypto` names a backend that does not exist.
    #[error("message specified an impossible crypto backend {0:?}")]
    UnknownBackend(String),
    /// The backend exists but is not in `crypto_validate_backends`.
    #[error("crypto backend {0:?} is disallowed by crypto_validate_backends")]
    BackendNotAllowed(String),
    /// gpg-signed messages cannot be validated by this hub.
    #[error("gpg-signed messages are not supported by this hub")]
    GpgUnsupported,
    /// `signature` or `certificate` is absent.
    #[error("no {0} field found")]
    MissingField(&'static str),
    /// A credential field is not a string, not base64, or holds no PEM.
    #[error("undecodable credentials: {0}")]
    BadEncoding(String),
    /// The certificate could not be parsed or is unusable (no CN, ...).
    #[error("unusable certificate: {0}")]
    BadCertificate(String),
    /// The certificate does not chain to the CA (foreign CA, expired, not
    /// yet valid, ...); holds OpenSSL's reason.
    #[error("certificate chain check failed: {0}")]
    Chain(String),
    /// The certificate (or its CA) is listed in the CRL.
    #[error("certificate revoked")]
    Revoked,
    /// The CA certificate could not be loaded.
    #[error("CA certificate unavailable: {0}")]
    CaUnavailable(String),
    /// The CRL could not be loaded or cannot be used (expired, bad
    /// signature, not from the CA, ...).
    #[error("CRL unavailable: {0}")]
    CrlUnavailable(String),
    /// The RSA signature does not match the canonical envelope.
    #[error("invalid signature")]
    BadSignature,
    /// `routing_policy` lists the topic and the signer is not allowed on it
    /// (`topic` is empty when the envelope has none).
    #[error("routing_policy forbids signer {signer:?} on topic {topic:?}")]
    Policy {
        /// The envelope's `topic`.
        topic: String,
        /// The certificate's first CN.
        signer: String,
    },
    /// `routing_nitpicky` is set and the topic is absent from the policy.
    #[error("routing_policy has no entry for topic {topic:?} (signer {signer:?}) and routing_nitpicky is set")]
    PolicyUnderspecified {
        /// The envelope's `topic`.
        topic: String,
        /// The certificate's first CN.
        signer: String,
    },
}

impl Rejection {
    /// Every label [`Rejection::reason`] can return, e.g. to pre-register
    /// counters.
    pub const REASONS: &'static [&'static str] = &[
        "not_an_object",
        "no_signature",
        "unknown_backend",
        "backend_not_allowed",
        "gpg_unsupported",
        "missing_field",
        "bad_encoding",
        "bad_certificate",
        "bad_chain",
        "revoked",
        "ca_unavailable",
        "crl_unavailable",
        "bad_signature",
        "policy",
    ];

    /// A stable snake_case label, suitable as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::NotAnObject => "not_an_object",
            Rejection::Unsigned => "no_signature",
            Rejection::UnknownBackend(_) => "unknown_backend",
            Rejection::BackendNotAllowed(_) => "backend_not_allowed",
            Rejection::GpgUnsupported => "gpg_unsupported",
            Rejection::MissingField(_) => "missing_field",
            Rejection::BadEncoding(_) => "bad_encoding",
            Rejection::BadCertificate(_) => "bad_certificate",
            Rejection::Chain(_) => "bad_chain",
            Rejection::Revoked => "revoked",
            Rejection::CaUnavailable(_) => "ca_unavailable",
            Rejection::CrlUnavailable(_) => "crl_unavailable",
            Rejection::BadSignature => "bad_signature",
            Rejection::Policy { .. } | Rejection::PolicyUnderspecified { .. } => "policy",
        }
    }

    /// True for problems of the local trust configuration (CA/CRL) rather
    /// than of the message.
    pub fn is_local_trouble(&self) -> bool {
        matches!(
            self,
            Rejection::CaUnavailable(_) | Rejection::CrlUnavailable(_)
        )
    }
}

/// Errors of signing and of loading key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A key, certificate or cache file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file does not hold the expected PEM object.
    #[error("{what} is not a valid PEM {kind}: {source}")]
    Pem {
        /// Which file or field.
        what: String,
        /// "certificate", "private key", ...
        kind: &'static str,
        /// OpenSSL's reason.
        source: openssl::error::ErrorStack,
    },
    /// fedmsg signatures are RSA only.
    #[error("{0} is not an RSA key")]
    NotRsa(String),
    /// The private key does not belong to the certificate.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// Certificate file.
        cert: String,
        /// Key file.
        key: String,
    },
    /// The certificate has no subject CN.
    #[error("certificate {0} has no subject CN")]
    NoCommonName(String),
    /// `certnames` has no entry for the looked-up name.
    #[error("no certnames entry for {0:?}")]
    UnknownCertname(String),
    /// Only JSON objects can be signed.
    #[error("only a JSON object can be signed")]
    NotAnObject,
    /// Downloading CA or CRL material failed.
    #[error("cannot fetch {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Trust material could not be (re)loaded.
    #[error("trust material unavailable: {0}")]
    Trust(Rejection),
    /// Any other OpenSSL failure.
    #[error("OpenSSL error: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// Locks a mutex, recovering the data if a thread panicked while holding it
/// (every critical section here leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed() {
        let samples = [
            Rejection::NotAnObject,
            Rejection::Unsigned,
            Rejection::UnknownBackend("x".into()),
            Rejection::BackendNotAllowed("gpg".into()),
            Rejection::GpgUnsupported,
            Rejection::MissingField("signature"),
            Rejection::BadEncoding("x".into()),
            Rejection::BadCertificate("x".into()),
            Rejection::Chain("x".into()),
            Rejection::Revoked,
            Rejection::CaUnavailable("x".into()),
            Rejection::CrlUnavailable("x".into()),
            Rejection::BadSignature,
            Rejection::Policy {
                topic: "t".into(),
                signer: "s".into(),
            },
        ];
        for rejection in samples {
            assert!(
                Rejection::REASONS.contains(&rejection.reason()),
                "{rejection:?}"
            );
            assert!(!rejection.to_string().is_empty());
        }
    }
}
