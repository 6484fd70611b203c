//! The unit of work that flows from ingest to the plugin workers.

use std::sync::Arc;

use crate::crypto::{Rejection, Verdict, Verifier};

/// One message, parsed (and, when configured, verified) once by ingest and
/// shared by every plugin whose topic globs match it through an `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The zmq topic frame (always equal to the envelope's `topic`).
    pub topic: String,
    /// The envelope exactly as it arrived on the wire (valid UTF-8 JSON object).
    pub body: String,
    /// The envelope's `msg_id`, when it has one.
    pub msg_id: Option<String>,
    /// The envelope's `timestamp` in epoch seconds (integer or float on the wire).
    pub timestamp: Option<f64>,
    /// The envelope's `seq_id`, stamped by a publisher with a replay store.
    pub seq_id: Option<u64>,
    /// Where the message came from.
    pub source: Arc<Source>,
    /// True when the signature, chain and routing policy were verified.
    pub validated: bool,
    /// The first CN of the signing certificate, when validated.
    pub signer: Option<String>,
}

/// A configured endpoint: a name of `endpoints` and one of its URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// The endpoint name (the key in `endpoints`), e.g. `relay_outbound`.
    pub name: String,
    /// The URL the SUB socket connected to, e.g. `tcp://127.0.0.1:4001`.
    pub url: String,
}

impl Delivery {
    /// Verifies the body with `verifier` and records the verdict: a valid
    /// message is marked `validated` with its `signer`; an invalid one is
    /// left unvalidated and the rejection returned, for the caller to count
    /// (a plugin that needs validation then skips it, the others take it).
    pub fn verify_with(&mut self, verifier: &Verifier) -> Result<(), Rejection> {
        match verifier.verify_body(self.body.as_bytes()) {
            Verdict::Valid { signer } => {
                self.validated = true;
                self.signer = Some(signer);
                Ok(())
            }
            Verdict::Invalid(rejection) => Err(rejection),
        }
    }
}
