//! X.509 message signing (reference §3.1).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::{X509Ref, X509};
use serde_json::{Map, Value};

use super::codec::encode_base64_wrapped;
use super::CryptoError;
use crate::envelope;

/// The fields a signer never covers: they carry the signature itself.
const CREDENTIALS: [&str; 2] = ["signature", "certificate"];

/// Where signing keys live and how a publisher name maps to a key pair
/// (fedmsg's `ssldir`, `certnames` and `cert_prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerSettings {
    /// Directory holding `<certname>.crt` and `<certname>.key`.
    pub ssldir: PathBuf,
    /// Publisher name → certname (file stem in `ssldir`).
    pub certnames: BTreeMap<String, String>,
    /// When set, the certname key is `<cert_prefix>.<short hostname>`
    /// whatever the publisher name.
    pub cert_prefix: Option<String>,
    /// Short hostname used in certname keys; `None` = this machine's
    /// hostname up to the first dot.
    pub hostname: Option<String>,
}

impl Default for SignerSettings {
    fn default() -> Self {
        Self {
            ssldir: PathBuf::from("/etc/pki/fedmsg"),
            certnames: BTreeMap::new(),
            cert_prefix: None,
            hostname: None,
        }
    }
}

impl SignerSettings {
    /// The short hostname used in certname keys.
    pub fn short_hostname(&self) -> String {
        match &self.hostname {
            Some(host) => host.clone(),
            None => {
                let full = gethostname::gethostname().to_string_lossy().into_owned();
                full.split('.').next().unwrap_or_default().to_owned()
            }
        }
    }

    /// The `certnames` key fedmsg looks up for publisher `name` (reference
    /// §1.3 step 7): `<cert_prefix>.<host>` when a prefix is configured,
    /// `shell.<host>` for the `relay_inbound` publisher, else `name` itself.
    pub fn certname_key(&self, name: &str) -> String {
        match (&self.cert_prefix, name) {
            (Some(prefix), _) => format!("{prefix}.{}", self.short_hostname()),
            (None, "relay_inbound") => format!("shell.{}", self.short_hostname()),
            (None, other) => other.to_owned(),
        }
    }

    /// The certname (file stem in `ssldir`) publisher `name` signs with.
    ///
    /// # Errors
    ///
    /// [`CryptoError::UnknownCertname`] when `certnames` lacks the key.
    pub fn certname_for(&self, name: &str) -> Result<&str, CryptoError> {
        let key = self.certname_key(name);
        self.certnames
            .get(&key)
            .map(String::as_str)
            .ok_or(CryptoError::UnknownCertname(key))
    }
}

/// Signs envelopes with one key pair. Build it once: the private key is
/// parsed here, never per message. `Send + Sync`, so it can be shared.
pub struct Signer {
    key: PKey<Private>,
    /// The ready-made `certificate` field (identical for every message).
    certificate_field: String,
    common_name: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Signer")
            .field("common_name", &self.common_name)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Reused canonical-JSON buffer, so signing allocates little.
    static SIGN_BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

impl Signer {
    /// Loads a certificate and its RSA private key from PEM files. Either file
    /// may start with an OpenSSL text dump before the PEM block.
    ///
    /// # Errors
    ///
    /// Unreadable files, invalid PEM, a non-RSA key or a key that does not
    /// match the certificate.
    pub fn from_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, CryptoError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = read_file(cert)?;
        let key_pem = read_file(key)?;
        Self::from_pem(
            &cert_pem,
            &key_pem,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// Builds the signer that publisher `name` uses according to `settings`
    /// (`<ssldir>/<certname>.crt` and `.key`, reference §1.3 step 7).
    ///
    /// # Errors
    ///
    /// As [`Signer::from_files`], plus [`CryptoError::UnknownCertname`].
    pub fn for_certname(settings: &SignerSettings, name: &str) -> Result<Self, CryptoError> {
        let certname = settings.certname_for(name)?;
        let cert = settings.ssldir.join(format!("{certname}.crt"));
        let key = settings.ssldir.join(format!("{certname}.key"));
        Self::from_files(cert, key)
    }

    /// Builds a signer from PEM text; `cert_label` / `key_label` name the
    /// sources in error messages.
    ///
    /// # Errors
    ///
    /// As [`Signer::from_files`], minus the I/O errors.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_label: &str,
        key_label: &str,
    ) -> Result<Self, CryptoError> {
        let cert = X509::from_pem(cert_pem).map_err(|source| CryptoError::Pem {
            what: cert_label.to_owned(),
            kind: "certificate",
            source,
        })?;
        let key = PKey::private_key_from_pem(key_pem).map_err(|source| CryptoError::Pem {
            what: key_label.to_owned(),
            kind: "private key",
            source,
        })?;
        if key.id() != Id::RSA {
            return Err(CryptoError::NotRsa(key_label.to_owned()));
        }
        if !cert.public_key()?.public_eq(&key) {
            return Err(CryptoError::KeyMismatch {
                cert: cert_label.to_owned(),
                key: key_label.to_owned(),
            });
        }
        let common_name = first_common_name(&cert)
            .ok_or_else(|| CryptoError::NoCommonName(cert_label.to_owned()))?;
        // Re-serialising drops any text dump and normalises the PEM layout,
        // which is what the other side hashes into its cache key.
        let certificate_field = encode_base64_wrapped(&cert.to_pem()?);
        Ok(Self {
            key,
            certificate_field,
            common_name,
        })
    }

    /// The certificate's first subject CN, i.e. the signer name validators
    /// see.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// Signs `envelope` in place: sets `crypto = "x509"` and adds
    /// `signature` and `certificate`. Existing `signature` / `certificate`
    /// fields are replaced and not covered (a validator drops them too).
    ///
    /// # Errors
    ///
    /// [`CryptoError::OpenSsl`] if OpenSSL fails to sign.
    pub fn sign(&self, envelope: &mut Map<String, Value>) -> Result<(), CryptoError> {
        envelope.insert("crypto".to_owned(), Value::String("x509".to_owned()));
        let signature = SIGN_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            envelope::write_canonical_object(envelope, &CREDENTIALS, &mut buffer);
            self.sign_bytes(&buffer)
        })?;
        envelope.insert(
            "signature".to_owned(),
            Value::String(encode_base64_wrapped(&signature)),
        );
        envelope.insert(
            "certificate".to_owned(),
            Value::String(self.certificate_field.clone()),
        );
        Ok(())
    }

    /// Like [`Signer::sign`] for a [`Value`], which must be an object.
    ///
    /// # Errors
    ///
    /// [`CryptoError::NotAnObject`], or as [`Signer::sign`].
    pub fn sign_value(&self, envelope: &mut Value) -> Result<(), CryptoError> {
        match envelope.as_object_mut() {
            Some(map) => self.sign(map),
            None => Err(CryptoError::NotAnObject),
        }
    }

    /// RSA PKCS#1 v1.5 / SHA-1 signature of `data`.
    fn sign_bytes(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha1(), &self.key)?;
        Ok(signer.sign_oneshot_to_vec(data)?)
    }
}

/// The first CN of a certificate's subject, as fedmsg uses it for policy.
pub(crate) fn first_common_name(cert: &X509Ref) -> Option<String> {
    let entry = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next()?;
    entry.data().to_string().ok()
}

fn read_file(path: &Path) -> Result<Vec<u8>, CryptoError> {
    std::fs::read(path).map_err(|source| CryptoError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SignerSettings {
        SignerSettings {
            ssldir: PathBuf::from("/nonexistent"),
            certnames: [
                ("shell.box".to_owned(), "shell-app01".to_owned()),
                ("web.box".to_owned(), "web-app".to_owned()),
            ]
            .into_iter()
            .collect(),
            cert_prefix: None,
            hostname: Some("box".to_owned()),
        }
    }

    #[test]
    fn certname_lookup_follows_fedmsg() {
        let mut s = settings();
        assert_eq!(s.certname_for("relay_inbound").ok(), Some("shell-app01"));
        assert_eq!(s.certname_for("web.box").ok(), Some("web-app"));
        assert!(
            matches!(s.certname_for("nope"), Err(CryptoError::UnknownCertname(k)) if k == "nope")
        );
        s.cert_prefix = Some("web".to_owned());
        assert_eq!(s.certname_for("anything").ok(), Some("web-app"));
    }

    #[test]
    fn missing_files_are_reported_with_their_path() {
        let err = Signer::for_certname(&settings(), "relay_inbound").expect_err("no such files");
        assert!(
            err.to_string().contains("/nonexistent/shell-app01.crt"),
            "{err}"
        );
    }
}
