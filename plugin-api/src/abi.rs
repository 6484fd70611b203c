//! The binary interface between the hub and a plugin `.so`.
//!
//! Plugin authors never touch this module: [`export_plugin!`](crate::export_plugin)
//! generates everything in it for them. The hub's loader and the generated
//! shims are its only users.
//!
//! # What crosses the boundary
//!
//! Every plugin exports one abi_stable root module, [`PluginModRef`] (a
//! prefix type, [`PluginMod`]). The hub reads the plugin's name, version and
//! config key from it, calls [`PluginMod::describe`] to learn its topics, and
//! [`PluginMod::instantiate`] to build an instance, which comes back as a
//! [`PluginBox`] (a `#[sabi_trait]` object). Messages cross as [`RawMessage`]
//! (borrowed strings plus metadata), results as `RResult<_, CallError>`, the
//! hub's callbacks (publish, log) as a [`HubBox`].
//!
//! Panics never cross: every function and method a plugin exports catches
//! unwinding on the plugin side and returns a [`CallError`] of kind
//! [`ErrorKind::PANICKED`] instead. (abi_stable itself aborts the process
//! when a panic reaches an `extern "C"` boundary, so this is not optional.)
//!
//! # What abi_stable checks at load time
//!
//! Read from abi_stable 0.11's `library/lib_header.rs` and
//! `abi_stability/abi_checking.rs`:
//!
//! 1. The exported symbol exists (`_as.lib_header.root module loader`, mangled).
//! 2. The abi_stable header: same magic string and the same abi_stable 0.11
//!    ABI (`abi_major`/`abi_minor`), then a few C-ABI self tests.
//! 3. The layout of [`PluginModRef`] and of everything reachable from it, type
//!    by type: type name, **package name** (`fedmsg-plugin-api`), **package
//!    version** ("loosely compatible": same `y` while at `0.y.z`, same major
//!    from 1.0 on), `repr`, size, alignment, generic parameters, and field by
//!    field: field names, field types, function-pointer signatures and
//!    lifetimes. For prefix types (this root module and the vtables of the
//!    trait objects) the fields up to `last_prefix_field` must match exactly;
//!    the fields after it may differ in number.
//!
//! abi_stable's own check only accepts a library whose prefix types have at
//! least as many fields as the loader's (a *newer* library in an older
//! program). A hub must also run plugins built against an *older* API, so the
//! hub's loader checks the layouts in both directions and accepts the plugin
//! when either direction is compatible (all of the plugin's prefix types are
//! a superset, or all a subset, of the hub's); the accessors of appended
//! fields and the default bodies of appended trait methods then cover the
//! missing parts at run time.
//!
//! # What may change compatibly (bump the patch version while at 0.1.z)
//!
//! - Append a field at the end of [`PluginMod`] (after the
//!   `#[sabi(last_prefix_field)]` one). Hubs read it through the generated
//!   accessor, which returns `None` for plugins built before it existed.
//!   Example: [`PluginMod::set_max_level`] was appended in 0.1.1.
//! - Append a method at the end of [`PluginObject`] or [`HubCallbacks`], with
//!   a default body (used when the other side predates it). Example:
//!   [`HubCallbacks::meta`] was appended in 0.1.2.
//! - Add new types, add new functions to the author-facing API, change
//!   anything that does not cross the boundary.
//!
//! # What breaks (bump the minor version while at 0.y, the major after 1.0)
//!
//! - Removing, renaming, reordering or retyping any field, parameter or method.
//! - Adding a field to a plain struct ([`RawMessage`], [`Description`],
//!   [`InstantiateArgs`], [`CallError`]): they are not prefix types. New
//!   message metadata therefore arrives through a new appended method (for
//!   example a `consume_v2` taking a new message type) rather than a new field.
//! - Moving `#[sabi(last_prefix_field)]`.
//! - Adding a marker supertrait (`Sync`, …) to a trait object.
//! - Changing the abi_stable minor version (0.11 → 0.12).
//!
//! A plugin built against a breaking version is refused at load time with an
//! error that names the file and what differs; the other plugins load.
//!
//! # Fixtures that hold these rules in place
//!
//! `abi-fixtures/plugin-api-0.1.0` (this ABI before `set_max_level`) and
//! `abi-fixtures/plugin-api-0.2.0` (a breaking change to [`RawMessage`]) are
//! frozen snapshots of this module under the same package name, built into
//! the fixture plugins `tests/plugins/abi-old` (must load and run) and
//! `tests/plugins/abi-next` (must be refused); see `hub/tests/loader.rs`.
//! Never edit a snapshot: when a release changes this module compatibly,
//! keep the 0.1.0 one (the oldest plugins must still load) and, optionally,
//! add a snapshot of the release.

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
    /// The hub's callbacks.
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

/// The hub's callbacks, implemented on the hub side.
#[sabi_trait]
pub trait HubCallbacks: Send + Sync {
    /// Publishes `body_json` (a JSON value as text) on `topic`.
    fn publish(&self, topic: RStr<'_>, body_json: RStr<'_>) -> RResult<(), RString>;

    /// Re-emits one of the plugin's log events in the hub's log.
    /// `fields` holds the event's fields other than `message`, as `k=v` pairs.
    #[sabi(last_prefix_field)]
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>, fields: RStr<'_>);

    /// Renders the envelope `envelope_json` with the hub's fedmsg.meta
    /// processors (the bundled ones and the operator's `meta_rules_dir`):
    /// the rendering as a JSON object (the fields of
    /// [`MetaRendering`](crate::MetaRendering)), or why not. Appended in
    /// 0.1.2: against a hub from before, this default body answers.
    fn meta(&self, envelope_json: RStr<'_>) -> RResult<RString, RString> {
        let _ = envelope_json;
        RResult::RErr(RString::from(
            "this hub has no fedmsg.meta for plugins (it predates plugin API 0.1.2)",
        ))
    }
}

/// The owned trait object of the hub's callbacks.
pub type HubBox = HubCallbacks_TO<'static, RBox<()>>;
