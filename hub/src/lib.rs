//! fedmsg-hub: a wire-compatible, crash-proof re-implementation of the
//! Federated Message Bus hub. The binary (`main.rs`) is a thin shell around
//! [`activate`] and [`run`]; ARCHITECTURE.md has the whole picture.
//!
//! The receive path, one file a step:
//!
//! 1. transport: `fedmsg_wire::transport` (SUB sockets, one per endpoint)
//! 2. ingest: `fedmsg_wire::ingest`, called by `pipeline` (frames →
//!    `Delivery` or a counted rejection)
//! 3. verify: `pipeline` (verifier pool, arrival order restored)
//! 4. dispatch: `dispatch` (one queue per matching plugin)
//! 5. worker: `worker` (one thread per plugin: catch-up, dedup, status,
//!    panic policy, drain)
//! 6. plugin: `loader` (the guarded call into the `.so`), and on the
//!    plugin's side `fedmsg_plugin_api`'s shim

// The receive path.
mod dispatch;
mod pipeline;
mod worker;

// The plugin side.
mod activate;
mod loader;
mod plugin_meta;

// Delivery guarantees: never lose a message, never deliver it twice.
mod catchup;
mod dedup;
mod replay;
mod status;

// Running the hub.
mod monitor;
mod publisher;
mod run;
mod single;
mod stats;

#[cfg(test)]
mod testing;

pub use activate::{activate, activate_files, Activation, ActivePlugin, PluginFile, PluginState};
pub use loader::{probe_main, PROBE_BINARY};
pub use plugin_meta::PluginMeta;
pub use publisher::HubPublisher;
pub use run::{run, RunOptions};
pub use single::{run_single, SingleArgs, SingleError, SinglePlugin};

/// Entry points of the fuzz targets (`fuzz/`); not part of the hub's API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::status::fuzz_status_file as status_file;
}
