//! FROZEN SNAPSHOT of a hypothetical `fedmsg-plugin-api` 0.2.0: the next
//! breaking version, where `RawMessage` gained a `headers_json` field (a
//! plain struct, so adding a field breaks the layout; hence the minor bump).
//! A hub implementing 0.1.x must refuse plugins built against it, naming
//! the file and what differs. Do not edit.

// The names abi_stable generates for trait objects, and the impls its
// `#[sabi_trait]` expansion places inside a const block.
#![allow(non_camel_case_types, non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RStr, RString, RVec},
    StableAbi,
};

/// The version of this crate, which is the version of the plugin ABI.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of the package the ABI types belong to (abi_stable checks it).
pub const API_PACKAGE: &str = env!("CARGO_PKG_NAME");

/// The root module every plugin exports (a prefix type: fields can be
/// appended after `instantiate` without breaking older plugins or hubs).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// The plugin crate's `CARGO_PKG_NAME`.
    pub plugin_name: RStr<'static>,
    /// The plugin crate's `CARGO_PKG_VERSION`.
    pub plugin_version: RStr<'static>,
    /// The dotted config key that must be true for the plugin to run.
    pub config_key: RStr<'static>,
    /// Computes the plugin's static description from the configuration:
    /// `config_json` is the whole merged hub config as JSON text,
    /// `section_path` the dotted path of the plugin's own table.
    pub describe: extern "C" fn(
        config_json: RStr<'_>,
        section_path: RStr<'_>,
    ) -> RResult<Description, CallError>,
    /// Builds an instance.
    #[sabi(last_prefix_field)]
    pub instantiate: extern "C" fn(args: InstantiateArgs<'_>) -> RResult<PluginBox, CallError>,
    /// Changes the most verbose level the plugin forwards to the hub's log
    /// (a [`level`] constant). Appended in 0.1.1.
    pub set_max_level: extern "C" fn(max_level: u8),
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "fedmsg_plugin";
    const NAME: &'static str = "fedmsg consumer plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// What the hub needs to know about a plugin before instantiating it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Description {
    /// Topic globs (`*` matches any run of characters, dots included).
    pub topics: RVec<RString>,
    /// fedmsg's `replay_name`.
    pub replay_name: ROption<RString>,
    /// `None`: follow the hub's `validate_signatures`; `Some(v)`: override it.
    pub validate_signatures: ROption<bool>,
}

/// The arguments of [`PluginMod::instantiate`].
#[repr(C)]
#[derive(StableAbi)]
pub struct InstantiateArgs<'a> {
    /// The whole merged hub configuration as JSON text.
    pub config_json: RStr<'a>,
    /// The dotted path of the plugin's table (its config key minus the last
    /// component, e.g. `tally` for `tally.enabled`).
    pub section_path: RStr<'a>,
    /// The name the hub knows the plugin by.
    pub plugin_name: RStr<'a>,
    /// A per-plugin writable directory (UTF-8).
    pub state_dir: RStr<'a>,
    /// The most verbose [`level`] the hub would log; the plugin does not
    /// even format events above it.
    pub max_level: u8,
    /// The hub's services.
    pub hub: HubBox,
}

/// One message as it crosses into a plugin: borrowed from the hub's
/// `Delivery`, valid for the duration of the call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct RawMessage<'a> {
    /// The zmq topic frame.
    pub topic: RStr<'a>,
    /// The envelope as JSON text, exactly as received.
    pub body: RStr<'a>,
    /// STOMP-style headers as a JSON object text (new in 0.2.0).
    pub headers_json: RStr<'a>,
    /// The envelope's `msg_id`.
    pub msg_id: ROption<RStr<'a>>,
    /// The envelope's `timestamp` in epoch seconds.
    pub timestamp: ROption<f64>,
    /// The configured endpoint name the message arrived from.
    pub endpoint_name: RStr<'a>,
    /// The URL the hub's socket was connected to.
    pub endpoint_url: RStr<'a>,
    /// True when the signature, chain and routing policy were verified.
    pub validated: bool,
    /// The signer's certificate CN, when validated.
    pub signer: ROption<RStr<'a>>,
}

/// Why a call into a plugin failed. A non-exhaustive integer rather than a
/// Rust enum so that kinds can be added without breaking the ABI; unknown
/// kinds are treated as [`ErrorKind::FAILED`].
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKind(pub u8);

impl ErrorKind {
    /// The plugin returned an error.
    pub const FAILED: ErrorKind = ErrorKind(0);
    /// The plugin panicked (caught on the plugin side).
    pub const PANICKED: ErrorKind = ErrorKind(1);
}

/// An error returned across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct CallError {
    /// Failure or panic.
    pub kind: ErrorKind,
    /// Human-readable text (the error chain, or the panic message and location).
    pub message: RString,
}

/// Log levels as they cross the boundary (`tracing` levels, most severe first).
pub mod level {
    /// Nothing is logged.
    pub const OFF: u8 = 0;
    /// `tracing::Level::ERROR`.
    pub const ERROR: u8 = 1;
    /// `tracing::Level::WARN`.
    pub const WARN: u8 = 2;
    /// `tracing::Level::INFO`.
    pub const INFO: u8 = 3;
    /// `tracing::Level::DEBUG`.
    pub const DEBUG: u8 = 4;
    /// `tracing::Level::TRACE`.
    pub const TRACE: u8 = 5;
}

/// A plugin instance, implemented on the plugin side.
#[sabi_trait]
pub trait PluginObject: Send {
    /// Handles one message.
    fn consume(&mut self, msg: &RawMessage<'_>) -> RResult<(), CallError>;

    /// Runs the plugin's shutdown hook (at most once; later calls do nothing).
    #[sabi(last_prefix_field)]
    fn shutdown(&mut self) -> RResult<(), CallError>;
}

/// The owned trait object of a plugin instance.
pub type PluginBox = PluginObject_TO<'static, RBox<()>>;

/// The hub's services, implemented on the hub side.
#[sabi_trait]
pub trait HubCallbacks: Send + Sync {
    /// Publishes `body_json` (a JSON value as text) on `topic`.
    fn publish(&self, topic: RStr<'_>, body_json: RStr<'_>) -> RResult<(), RString>;

    /// Re-emits one of the plugin's log events in the hub's log.
    /// `fields` holds the event's fields other than `message`, as `k=v` pairs.
    #[sabi(last_prefix_field)]
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>, fields: RStr<'_>);
}

/// The owned trait object of the hub's services.
pub type HubBox = HubCallbacks_TO<'static, RBox<()>>;
