//! Publishing (reference §1.2, §1.3): build the envelope, sign it when
//! `sign_messages` is on, send `[topic, canonical JSON]` on a publisher
//! socket that binds its endpoint name or connects to `relay_inbound`.
//!
//! * [`EnvelopeBuilder`]: the topic rule, `msg_id`, `timestamp`, `i`,
//!   `username`.
//! * [`PubSocket`]: the socket, and waiting until a peer has subscribed
//!   instead of fedmsg's blind `post_init_sleep` (see [`socket`]).
//! * [`Publisher`]: the two together with the [`Signer`], which is loaded
//!   once (fedmsg re-reads the key for every message).
//!
//! The hub's own publisher (a queue fed by plugins, one sending thread) is
//! `fedmsg-hub`'s `publisher` module.

mod message;
pub mod socket;

use serde_json::{Map, Value};

pub use message::{new_msg_id, short_hostname, username, EnvelopeBuilder};
pub use socket::{bind_address, Attach, PubSocket, SocketOptions};

use crate::config::Config;
use crate::crypto::{CryptoError, Signer, SignerSettings};
use crate::envelope;
use crate::replay::store::{ReplayStore, StoreError};

/// Why a message could not be published, or a publisher not set up.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// There is no URL for the publisher's endpoint name.
    #[error("no endpoint is configured for {0:?} (add it to [endpoints])")]
    NotConfigured(String),
    /// Every URL of the endpoint name failed to bind.
    #[error("couldn't find an available endpoint for name {name:?}: {attempts}")]
    NoFreeEndpoint {
        /// The endpoint name.
        name: String,
        /// Each URL tried and why it failed.
        attempts: String,
    },
    /// zmq refused a URL to connect to.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// zmq's reason.
        source: zmq::Error,
    },
    /// The socket could not be created or configured.
    #[error("cannot set up the publisher socket: {0}")]
    Socket(zmq::Error),
    /// Nobody subscribed in time (see [`PubSocket::wait_ready`]).
    #[error("{0}")]
    NotReady(String),
    /// Signing is on but the key pair cannot be used.
    #[error("sign_messages is on, but {0}")]
    SignerSetup(String),
    /// Signing one message failed.
    #[error("cannot sign the message: {0}")]
    Sign(#[source] CryptoError),
    /// zmq refused to send.
    #[error("cannot send: {0}")]
    Send(zmq::Error),
    /// The replay store could not stamp or keep the message (not sent).
    #[error("cannot store the message for replay: {0}")]
    Store(#[source] StoreError),
}

/// Loads the signer a publisher named `name` uses when `sign_messages` is
/// on (reference §1.3 step 7): `certname` when the configuration sets it,
/// else `certnames[<cert_prefix>.<short host>]` when `cert_prefix` is set,
/// else `certnames["shell.<short host>"]` for `relay_inbound`, else
/// `certnames[name]`. `Ok(None)` when signing is off.
///
/// # Errors
///
/// [`PublishError::SignerSetup`] naming the missing certnames key or the
/// unreadable/mismatched file, or a non-x509 `crypto_backend`.
pub fn signer_for(config: &Config, name: &str) -> Result<Option<Signer>, PublishError> {
    if !config.sign_messages {
        return Ok(None);
    }
    if config.crypto_backend != "x509" {
        return Err(PublishError::SignerSetup(format!(
            "crypto_backend {:?} is not supported for signing (only x509)",
            config.crypto_backend
        )));
    }
    let settings = SignerSettings {
        ssldir: config.ssldir.clone(),
        certnames: config.certnames.clone(),
        cert_prefix: config.cert_prefix.clone(),
        hostname: None,
    };
    let certname = match &config.certname {
        Some(certname) => certname.clone(),
        None => settings
            .certname_for(name)
            .map_err(|e| match e {
                CryptoError::UnknownCertname(key) => PublishError::SignerSetup(format!(
                    "certnames has no entry {key:?} (the certificate to sign with)"
                )),
                other => PublishError::SignerSetup(other.to_string()),
            })?
            .to_owned(),
    };
    let cert = settings.ssldir.join(format!("{certname}.crt"));
    let key = settings.ssldir.join(format!("{certname}.key"));
    Signer::from_files(&cert, &key)
        .map(Some)
        .map_err(|e| PublishError::SignerSetup(e.to_string()))
}

/// A publisher: socket, envelope builder and optional signer. Not `Sync`
/// (a zmq socket belongs to one thread at a time); move it to the thread
/// that publishes.
#[derive(Debug)]
pub struct Publisher {
    socket: PubSocket,
    builder: EnvelopeBuilder,
    signer: Option<Signer>,
    body: Vec<u8>,
    /// The replay store and the sender name whose `seq_id`s it stamps.
    store: Option<(ReplayStore, String)>,
}

impl Publisher {
    /// Puts the parts together.
    pub fn new(socket: PubSocket, builder: EnvelopeBuilder, signer: Option<Signer>) -> Self {
        Publisher {
            socket,
            builder,
            signer,
            body: Vec::with_capacity(4096),
            store: None,
        }
    }

    /// Stamps every message published from now on with the next `seq_id`
    /// of sender `name` and keeps it in `store` (after signing: `seq_id` is
    /// not covered by the signature, see [`crate::replay`]).
    pub fn with_store(mut self, store: ReplayStore, name: &str) -> Self {
        self.store = Some((store, name.to_owned()));
        self
    }

    /// The envelope builder (for composing topics).
    pub fn builder(&self) -> &EnvelopeBuilder {
        &self.builder
    }

    /// The socket (to wait for readiness, drain subscriptions).
    pub fn socket(&self) -> &PubSocket {
        &self.socket
    }

    /// The socket, to poll subscriptions or send raw frames.
    pub fn socket_mut(&mut self) -> &mut PubSocket {
        &mut self.socket
    }

    /// The certificate CN messages are signed as, when signing.
    pub fn signer_name(&self) -> Option<&str> {
        self.signer.as_ref().map(Signer::common_name)
    }

    /// Builds the envelope of `msg` on `full_topic` (see
    /// [`EnvelopeBuilder::full_topic`]), signs it when configured and sends
    /// it. Returns the envelope's `msg_id`.
    ///
    /// # Errors
    ///
    /// [`PublishError::Sign`] or [`PublishError::Send`].
    pub fn publish(&mut self, full_topic: String, msg: Value) -> Result<String, PublishError> {
        let mut envelope = self.builder.build(full_topic, msg);
        let msg_id = envelope
            .get("msg_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(signer) = &self.signer {
            signer.sign(&mut envelope).map_err(PublishError::Sign)?;
        }
        if let Some((store, name)) = self.store.as_mut() {
            let mut value = Value::Object(envelope);
            let stored = store.add(name, &mut value).map_err(PublishError::Store)?;
            self.socket
                .send(stored.topic.as_bytes(), stored.body.as_bytes())?;
            return Ok(msg_id);
        }
        self.send_envelope(&envelope)?;
        Ok(msg_id)
    }

    /// Sends a ready envelope as `[topic, canonical JSON]`.
    ///
    /// # Errors
    ///
    /// [`PublishError::Send`].
    pub fn send_envelope(&mut self, envelope: &Map<String, Value>) -> Result<(), PublishError> {
        self.body.clear();
        envelope::write_canonical_object(envelope, &[], &mut self.body);
        let topic = envelope
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.socket.send(topic.as_bytes(), &self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pki() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pyfedmsg/pki")
    }

    fn signing_config(certnames: &[(&str, &str)]) -> Config {
        let mut config = Config::default();
        config.sign_messages = true;
        config.ssldir = pki();
        config.certnames = certnames
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        config
    }

    #[test]
    fn no_signer_when_signing_is_off() {
        assert!(signer_for(&Config::default(), "x").expect("ok").is_none());
    }

    #[test]
    fn a_missing_certname_is_named() {
        let config = signing_config(&[]);
        let err = signer_for(&config, "relay_inbound").expect_err("no certnames");
        let text = err.to_string();
        assert!(text.contains("sign_messages is on"), "{text}");
        assert!(
            text.contains(&format!("shell.{}", short_hostname())),
            "{text}"
        );
    }

    #[test]
    fn a_missing_key_file_is_named() {
        let config = signing_config(&[("svc", "no-such-cert")]);
        let err = signer_for(&config, "svc").expect_err("no file");
        assert!(err.to_string().contains("no-such-cert.crt"), "{err}");
    }

    #[test]
    fn cert_prefix_and_certname_choose_the_key() {
        if !pki().join("shell-app01.crt").exists() {
            return; // the shared PKI is not checked out here
        }
        let host = short_hostname();
        let mut config = signing_config(&[(&format!("evil.{host}"), "evil-app02")]);
        config.cert_prefix = Some("evil".into());
        let signer = signer_for(&config, "relay_inbound")
            .expect("ok")
            .expect("on");
        assert_eq!(signer.common_name(), "evil-app02");
        config.certname = Some("shell-app01".into());
        let signer = signer_for(&config, "relay_inbound")
            .expect("ok")
            .expect("on");
        assert_eq!(signer.common_name(), "shell-app01");
    }

    #[test]
    fn published_messages_are_canonical_and_signed() {
        if !pki().join("shell-app01.crt").exists() {
            return;
        }
        let ctx = zmq::Context::new();
        let (url, received) = socket::tests::relay_stub(&ctx);
        let options = SocketOptions {
            high_water_mark: 0,
            linger_ms: 0,
            tcp_keepalive: None,
        };
        let mut socket =
            PubSocket::open(&ctx, &Attach::Connect { urls: vec![url] }, &options).expect("open");
        socket
            .wait_ready(std::time::Duration::from_secs(20))
            .expect("ready");
        let signer =
            Signer::from_files(pki().join("shell-app01.crt"), pki().join("shell-app01.key"))
                .expect("signer");
        let builder = EnvelopeBuilder::with_username("org.fedoraproject", "dev", "bob");
        let mut publisher = Publisher::new(socket, builder, Some(signer));
        let topic = publisher.builder().full_topic("logger", "log");
        let msg_id = publisher
            .publish(topic, serde_json::json!({"log": "héllo"}))
            .expect("publish");
        let frames = received
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("received");
        assert_eq!(frames[0], b"org.fedoraproject.dev.logger.log");
        let body = std::str::from_utf8(&frames[1]).expect("ascii");
        assert!(body.is_ascii(), "canonical JSON escapes non-ASCII");
        let value = envelope::parse(body.as_bytes()).expect("json");
        assert_eq!(envelope::to_canonical(&value), body);
        assert_eq!(value["msg_id"], msg_id);
        assert_eq!(value["crypto"], "x509");
        let settings = crate::crypto::VerifierSettings {
            ca_cert_location: pki().join("ca.crt").display().to_string(),
            crl_location: Some(pki().join("crl.pem").display().to_string()),
            ..Default::default()
        };
        let verdict = crate::crypto::Verifier::new(settings).verify(&value);
        assert_eq!(
            verdict,
            crate::crypto::Verdict::Valid {
                signer: "shell-app01".into()
            }
        );
    }
}
