//! fedmsg-hub: a wire-compatible, crash-proof re-implementation of the
//! Federated Message Bus hub.
//!
//! The data path is `transport` → `ingest` → `dispatch` → plugin workers;
//! see `ARCHITECTURE.md` at the repository root for the whole picture.

pub mod backlog;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dedup;
pub mod delivery;
pub mod dispatch;
pub mod envelope;
pub mod ingest;
pub mod loader;
pub mod localtime;
pub mod monitor;
pub mod pipeline;
pub mod publish;
pub mod ratelimit;
pub mod replay;
pub mod service;
pub mod status;
pub mod topic;
pub mod transport;
