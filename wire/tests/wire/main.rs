//! The wire crate's integration tests, linked into one test binary (each
//! file a module) so that OpenSSL and zmq are linked once.

mod canonical_python;
mod crypto_behaviour;
mod python_interop;
mod support_shared;
mod vectors;
mod verify_body;
