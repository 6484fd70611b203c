//! The fedmsg bus contract: what every program on the bus has to agree on,
//! shared by `fedmsg-hub`, the commands (`fedmsg-tools`), the fuzz targets
//! and the benchmarks.
//!
//! Wire compatibility with Python fedmsg (`shared/fedmsg-reference.md`) is
//! decided here: the configuration keys and how they layer, the envelope
//! and its canonical JSON, X.509 signatures and their verdicts, topic
//! globs, the zmq sockets with fedmsg's options, the checks every received
//! message passes, `seq_id` replay, and the monitoring report. What only the
//! hub does with messages (verifier pool, dispatch, plugins) is in
//! `fedmsg-hub`.

#![warn(missing_docs)]

// Receiving: the first two steps of the hub's receive path (see
// ARCHITECTURE.md), also what `fedmsg-tail` runs.
pub mod delivery;
pub mod ingest;
pub mod transport;

// The wire format.
pub mod crypto;
pub mod envelope;
pub mod topic;

// Sending and replay.
pub mod publish;
pub mod replay;

// Operating.
pub mod config;
pub mod report;

// Support.
pub mod localtime;
pub mod logging;
pub mod peer_text;
pub mod ratelimit;
pub mod shutdown;
