//! The API for writing fedmsg-hub consumer plugins.
//!
//! A plugin is a `cdylib` crate that depends on this crate only, implements
//! [`ConsumerPlugin`] for one type and exports it with [`export_plugin!`]:
//!
//! ```
//! use fedmsg_plugin_api::{export_plugin, ConsumeError, ConsumerPlugin, HubContext, Message, PluginConfig, PluginError};
//!
//! pub struct Counter {
//!     seen: u64,
//! }
//!
//! impl ConsumerPlugin for Counter {
//!     const CONFIG_KEY: &'static str = "counter.enabled";
//!
//!     fn topics(config: &PluginConfig) -> Result<Vec<String>, PluginError> {
//!         Ok(config.get_string_list("topic")?.unwrap_or_else(|| vec!["*".into()]))
//!     }
//!
//!     fn new(_config: &PluginConfig, _ctx: HubContext) -> Result<Self, PluginError> {
//!         Ok(Counter { seen: 0 })
//!     }
//!
//!     fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError> {
//!         self.seen += 1;
//!         tracing::debug!(topic = msg.topic(), seen = self.seen, "counted");
//!         Ok(())
//!     }
//! }
//!
//! export_plugin!(Counter);
//! # fn main() {}
//! ```
//!
//! Everything that crosses the `.so` boundary lives in [`abi`]; plugin
//! code never needs it. Panics in plugin code are caught on the plugin side
//! and reported to the hub as errors; `tracing` events are forwarded to the
//! hub's log (with a `plugin` field naming the plugin).

#![warn(missing_docs)]

pub mod abi;
mod config;
mod context;
mod error;
mod logging;
mod message;
mod meta;
mod shim;

pub use config::PluginConfig;
pub use context::HubContext;
pub use error::{ConfigError, ConsumeError, MetaError, PluginError, PublishError};
pub use message::Message;
pub use meta::MetaRendering;

/// Re-exported so that a plugin needs no other dependency to log
/// (`fedmsg_plugin_api::tracing::info!`); events reach the hub's log.
pub use tracing;

/// Re-exported for [`Message::json`] and [`HubContext::publish`] values.
pub use serde_json;

/// A fedmsg consumer: the Rust counterpart of a Python
/// `fedmsg.consumers.FedmsgConsumer` subclass.
///
/// The hub instantiates a plugin only when its [`CONFIG_KEY`](Self::CONFIG_KEY)
/// is true, then calls [`consume`](Self::consume) for every message whose
/// topic matches one of its [`topics`](Self::topics), one message at a time,
/// on a worker thread of its own. An error or a panic in `consume` drops that
/// message (logged and counted); a plugin that keeps panicking is disabled.
pub trait ConsumerPlugin: Send + Sized + 'static {
    /// Dotted config key that must be true for the hub to instantiate the
    /// plugin, e.g. `"tally.enabled"`. Everything before the last dot names
    /// the plugin's own config table (`[tally]`).
    const CONFIG_KEY: &'static str;

    /// Topic globs (`*` matches any run of characters, dots included).
    /// Computed from the configuration before construction, so that
    /// `fedmsg-hub --list-plugins` can show them. Default: everything.
    ///
    /// This and the other describing functions run before the plugin's log
    /// is connected to the hub: report problems as errors, not log events.
    fn topics(config: &PluginConfig) -> Result<Vec<String>, PluginError> {
        let _ = config;
        Ok(vec!["*".into()])
    }

    /// fedmsg's `replay_name` (the endpoint name whose replay server fills
    /// gaps for this consumer). Default: none.
    fn replay_name(config: &PluginConfig) -> Result<Option<String>, PluginError> {
        let _ = config;
        Ok(None)
    }

    /// `None` (the default) follows the hub's `validate_signatures`;
    /// `Some(false)` opts out (as fedmsg's relay and IRC bot do).
    fn validate_signatures(config: &PluginConfig) -> Result<Option<bool>, PluginError> {
        let _ = config;
        Ok(None)
    }

    /// Builds the plugin. An error here is reported with the plugin's name
    /// and the plugin stays disabled; the hub goes on.
    fn new(config: &PluginConfig, ctx: HubContext) -> Result<Self, PluginError>;

    /// Handles one message.
    fn consume(&mut self, msg: &Message<'_>) -> Result<(), ConsumeError>;

    /// Called once when the hub stops (after the queue is drained or the
    /// drain deadline passed), not after the hub disabled the plugin for
    /// repeated panics. Flush and close here.
    fn shutdown(&mut self) {}
}

/// Exports a [`ConsumerPlugin`] type as the plugin of this `cdylib`.
///
/// Use it exactly once per crate, at the top level. The plugin's name and
/// version are the crate's `CARGO_PKG_NAME` and `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        // Every call into a plugin runs inside `catch_unwind`, so that a
        // panicking plugin is reported and, if it keeps panicking, disabled,
        // while the hub goes on. Under `panic = "abort"` a panic would end
        // the whole hub process instead, so such a build is refused here.
        #[cfg(panic = "abort")]
        ::core::compile_error!(
            "fedmsg-hub plugins must be built with `panic = \"unwind\"` (the default): \
             the hub catches a plugin's panics, and `panic = \"abort\"` would make any \
             panic in this plugin kill the whole hub. Remove `panic = \"abort\"` from the \
             profile that builds this plugin."
        );
        /// The abi_stable library header of this plugin (generated by
        /// `fedmsg_plugin_api::export_plugin!`).
        #[doc(hidden)]
        // The symbol abi_stable looks up; see `__root_symbol!`.
        #[export_name = $crate::__root_symbol!()]
        pub static __FEDMSG_PLUGIN_LIB_HEADER: $crate::__private::LibHeader = {
            fn __fedmsg_root_module() -> $crate::abi::PluginModRef {
                $crate::__private::root_module::<$plugin>(
                    ::core::env!("CARGO_PKG_NAME"),
                    ::core::env!("CARGO_PKG_VERSION"),
                )
            }
            extern "C" fn __fedmsg_root_module_ctor() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(__fedmsg_root_module)
            }
            // SAFETY: the constructor returns the module type named here
            // (abi_stable's `#[export_root_module]` expands to the same).
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::abi::PluginModRef>(
                    __fedmsg_root_module_ctor,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

/// What the hub itself needs of this crate besides [`abi`]. Not part of the
/// plugin API and not covered by its compatibility promise.
#[doc(hidden)]
pub mod __host {
    pub use crate::logging::u8_to_level;
}

/// Items used by the code `export_plugin!` generates. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::shim::{guarded, payload_text, root_module};
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, CheckTypeLayout, LibHeader,
        RootModuleResult,
    };
}

/// The name of the symbol abi_stable 0.11 looks up in a library
/// (`_as.lib_header.root module loader`, mangled). A macro because
/// `#[export_name]` needs a literal, and written out because plugin crates do
/// not depend on abi_stable (whose `#[export_root_module]` would compute
/// it); a unit test pins it to abi_stable's own constant.
#[doc(hidden)]
#[macro_export]
macro_rules! __root_symbol {
    () => {
        "_1as_0lib_1header_0root_bmodule_bloader"
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_name_matches_abi_stable() {
        assert_eq!(
            crate::__root_symbol!(),
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }
}
