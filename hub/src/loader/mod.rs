//! Receive path, step 6: the plugin. Loads consumer plugins (`.so` files
//! built with `fedmsg-plugin-api`) and makes every call into them
//! ([`PluginInstance::consume`]); the plugin side of each call is
//! `fedmsg_plugin_api`'s shim, which catches its panics.
//!
//! Each file goes through its own abi_stable library header: dlopen (the
//! library is leaked, abi_stable never unloads), look up the root-module
//! symbol, check abi_stable's own header, compare the plugin's API version
//! and type layouts with the hub's, then run the plugin's module
//! constructor. abi_stable's `RootModule::load_from_file` is deliberately
//! not used: it caches the module per Rust type, and every plugin exports
//! the same type, so every file after the first would silently get the
//! first file's module.
//!
//! Compatibility rules (what abi_stable checks, and why the hub also
//! accepts plugins built against an *older* compatible API) are documented
//! in `fedmsg_plugin_api::abi`.

mod callbacks;
mod compat;
mod probe;

pub use probe::{probe_main, PROBE_BINARY};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::plugin_meta::PluginMeta;
use abi_stable::library::{abi_header_from_raw_library, LibraryError, RawLibrary, RootModule};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr};
use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;
use fedmsg_config_keys::section_path_of;
use fedmsg_plugin_api::abi::{
    CallError, ErrorKind, HubCallbacks_TO, InstantiateArgs, PluginBox, PluginModRef, RawMessage,
    API_PACKAGE, API_VERSION,
};

use fedmsg_wire::delivery::Delivery;

use callbacks::HubSide;
#[cfg(test)]
pub use callbacks::NoPublish;
#[cfg(test)]
pub use callbacks::PLUGIN_LOG_TARGET;
pub use callbacks::{plugin_max_level, PublishSink};
use compat::LayoutVerdict;

/// Why a file could not be loaded as a plugin. Displays as
/// `<file>: <reason>`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct LoadError {
    /// The file (or, for [`LoadErrorKind::Directory`], the directory).
    pub path: PathBuf,
    /// What went wrong.
    pub kind: LoadErrorKind,
}

/// The reasons a plugin file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadErrorKind {
    /// The plugin directory is missing or unreadable.
    #[error("cannot read the plugin directory: {0}")]
    Directory(String),
    /// dlopen failed (not an ELF shared library, wrong architecture,
    /// missing dependency, …).
    #[error("not a loadable shared library: {0}")]
    NotALibrary(String),
    /// A shared library without the abi_stable root-module symbol.
    #[error("not a fedmsg plugin (it exports no abi_stable root module)")]
    NotAPlugin,
    /// An abi_stable library, but not a fedmsg plugin.
    #[error("not a fedmsg plugin: {0}")]
    ForeignModule(String),
    /// Built with an abi_stable whose own ABI differs from the hub's.
    #[error("built with an incompatible abi_stable: {0}")]
    AbiStable(String),
    /// Built against an incompatible `fedmsg-plugin-api`.
    #[error("incompatible plugin ABI: {0}")]
    IncompatibleAbi(String),
    /// The plugin's module constructor failed.
    #[error("the plugin's root module failed to initialize: {0}")]
    Init(String),
    /// Loading the file in a probe process crashed or hung it
    /// ([`probe`]), so the hub did not load it.
    #[error("refused without loading it: {0}")]
    ProbeFailed(String),
    /// Another file in the directory already provides a plugin of this name
    /// (a copy, or a symlink to the same library).
    #[error("plugin {name} is already loaded from {}", first.display())]
    Duplicate {
        /// The plugin name.
        name: String,
        /// The file it was first loaded from.
        first: PathBuf,
    },
}

/// The static facts of a plugin, computed from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    /// Topic globs.
    pub topics: Vec<String>,
    /// fedmsg `replay_name`.
    pub replay_name: Option<String>,
    /// `None`: follow the hub's `validate_signatures`.
    pub validate_signatures: Option<bool>,
}

/// A loaded plugin library (not yet instantiated). Cheap to clone.
#[derive(Clone)]
pub struct PluginLibrary {
    path: PathBuf,
    name: String,
    version: String,
    config_key: String,
    api_version: String,
    module: PluginModRef,
}

impl fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("config_key", &self.config_key)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

/// Loads every `*.so` in `dir`, sorted by file name. One result per file,
/// so that one bad file does not stop the others; a missing or unreadable
/// directory is a single error. A second file providing a plugin name that
/// an earlier file already provided is refused ([`LoadErrorKind::Duplicate`]):
/// the two would share a config key, and the hub identifies plugins by name.
pub fn load_dir(dir: &Path) -> Vec<Result<PluginLibrary, LoadError>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return vec![Err(LoadError {
                path: dir.to_path_buf(),
                kind: LoadErrorKind::Directory(e.to_string()),
            })]
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "so") && path.is_file())
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut seen: Vec<(String, PathBuf)> = Vec::new();
    files
        .iter()
        .map(|path| {
            let library = load_file(path)?;
            if let Some((name, first)) = seen.iter().find(|(name, _)| name == library.name()) {
                return Err(LoadError {
                    path: path.clone(),
                    kind: LoadErrorKind::Duplicate {
                        name: name.clone(),
                        first: first.clone(),
                    },
                });
            }
            seen.push((library.name.clone(), path.clone()));
            Ok(library)
        })
        .collect()
}

/// Loads one plugin file, after a probe process loaded it without dying
/// ([`probe`]).
pub fn load_file(path: &Path) -> Result<PluginLibrary, LoadError> {
    probe::vet(path).map_err(|kind| LoadError {
        path: path.to_path_buf(),
        kind,
    })?;
    load_unvetted(path)
}

/// Loads one plugin file in this process (what the probe does).
fn load_unvetted(path: &Path) -> Result<PluginLibrary, LoadError> {
    let fail = |kind| LoadError {
        path: path.to_path_buf(),
        kind,
    };

    let raw = RawLibrary::load_at(path)
        .map_err(|e| fail(LoadErrorKind::NotALibrary(open_error_text(path, &e))))?;
    // Leaked on purpose: the module and everything it hands out point into
    // the library, and abi_stable never unloads.
    let raw: &'static RawLibrary = Box::leak(Box::new(raw));

    // SAFETY: the symbol, if present, is abi_stable's library header (the
    // name is abi_stable's mangled, versioned name); `upgrade` validates the
    // header before anything else is read through it.
    let header =
        unsafe { abi_header_from_raw_library(raw) }.map_err(|_| fail(LoadErrorKind::NotAPlugin))?;
    let lib_header = header
        .upgrade()
        .map_err(|e| fail(LoadErrorKind::AbiStable(abi_stable_error_text(&e))))?;

    let consts = lib_header.root_mod_consts();
    let Some(theirs) = consts.layout().into_option() else {
        return Err(fail(LoadErrorKind::ForeignModule(
            "its root module was exported without layout information".into(),
        )));
    };
    let ours = <PluginModRef as StableAbi>::LAYOUT;
    // The root module is a `PrefixRef<PluginMod>`; the `PluginMod` layout
    // (its phantom parameter) carries the name and package that identify a
    // fedmsg plugin among abi_stable libraries.
    let (our_root, their_root) = (root_type(ours), root_type(theirs));
    let identified = match (our_root, their_root) {
        (Some(o), Some(t)) => o.name() == t.name() && o.package() == t.package(),
        _ => false,
    };
    if !identified {
        let (name, package) = their_root.map_or((theirs.name(), theirs.package()), |t| {
            (t.name(), t.package())
        });
        return Err(fail(LoadErrorKind::ForeignModule(format!(
            "its root module is `{name}` from package `{package}`, not `PluginMod` from `{API_PACKAGE}`"
        ))));
    }

    let their_version = consts.version_strings();
    let versions_ok = compat::versions_compatible(PluginModRef::VERSION_STRINGS, their_version);
    let verdict = compat::check_layouts(ours, theirs);
    let incompatible = |detail: Option<&str>| {
        let mut text = format!(
            "built against {API_PACKAGE} {}, this hub implements {API_VERSION}",
            their_version.version
        );
        if !versions_ok {
            text.push_str(" (versions 0.y.z must share y)");
        }
        if let Some(detail) = detail {
            text.push_str("; differs in ");
            text.push_str(detail);
        }
        fail(LoadErrorKind::IncompatibleAbi(text))
    };
    match verdict {
        LayoutVerdict::Incompatible { summary, full } => {
            tracing::debug!(file = %path.display(), report = %full, "abi_stable layout report");
            return Err(incompatible(Some(&summary)));
        }
        _ if !versions_ok => return Err(incompatible(None)),
        LayoutVerdict::Older => {
            tracing::debug!(file = %path.display(), api = %their_version.version, "plugin built against an older compatible API");
        }
        LayoutVerdict::SameOrNewer => {}
    }

    // SAFETY: the layout was checked just above (in the direction that
    // matches, see `compat::check_layouts`); this runs the plugin's module
    // constructor, which catches its own panics.
    let module = unsafe { lib_header.unchecked_layout::<PluginModRef>() }
        .map_err(|e| fail(LoadErrorKind::Init(e.to_string())))?;

    Ok(PluginLibrary {
        path: path.to_path_buf(),
        name: module.plugin_name().as_str().to_owned(),
        version: module.plugin_version().as_str().to_owned(),
        config_key: module.config_key().as_str().to_owned(),
        api_version: their_version.version.as_str().to_owned(),
        module,
    })
}

/// The type a root-module layout points to (`PluginMod` for
/// `PrefixRef<PluginMod>`).
fn root_type(layout: &'static TypeLayout) -> Option<&'static TypeLayout> {
    layout
        .phantom_fields()
        .iter()
        .next()
        .map(|field| field.layout())
}

/// dlopen's message usually starts with the file name, which the
/// `LoadError` already shows; keep only the reason.
fn open_error_text(path: &Path, error: &LibraryError) -> String {
    let text = match error {
        LibraryError::OpenError { err, .. } => err.to_string(),
        other => other.to_string(),
    };
    let prefix = format!("{}: ", path.display());
    match text.find(&prefix) {
        Some(at) => text[at + prefix.len()..].to_owned(),
        None => text,
    }
}

fn abi_stable_error_text(error: &LibraryError) -> String {
    match error {
        LibraryError::InvalidAbiHeader(header) => format!(
            "abi_stable ABI {}.{}, this hub uses {}.{}",
            header.abi_major,
            header.abi_minor,
            abi_stable::library::AbiHeader::VALUE.abi_major,
            abi_stable::library::AbiHeader::VALUE.abi_minor
        ),
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Renders a plugin-side error; panics say so.
fn call_error_text(error: CallError) -> String {
    if error.kind == ErrorKind::PANICKED {
        format!("panicked: {}", error.message)
    } else {
        error.message.into_string()
    }
}

impl PluginLibrary {
    /// The `.so` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plugin crate's name (`CARGO_PKG_NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin crate's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The dotted config key that enables the plugin.
    pub fn config_key(&self) -> &str {
        &self.config_key
    }

    /// The `fedmsg-plugin-api` version the plugin was built against.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The dotted path of the plugin's config table (`tally` for `tally.enabled`).
    pub fn section_path(&self) -> &str {
        section_path_of(&self.config_key)
    }

    /// Asks the plugin for its topics, `replay_name` and
    /// `validate_signatures` under `config` (the whole merged configuration).
    pub fn describe(&self, config: &serde_json::Value) -> Result<PluginDescription, String> {
        let json = serde_json::to_string(config)
            .map_err(|e| format!("cannot serialize the configuration: {e}"))?;
        match (self.module.describe())(RStr::from_str(&json), RStr::from_str(self.section_path())) {
            RResult::ROk(description) => Ok(PluginDescription {
                topics: description
                    .topics
                    .into_iter()
                    .map(|t| t.into_string())
                    .collect(),
                replay_name: description
                    .replay_name
                    .into_option()
                    .map(|r| r.into_string()),
                validate_signatures: description.validate_signatures.into_option(),
            }),
            RResult::RErr(error) => Err(call_error_text(error)),
        }
    }

    /// Constructs an instance. Does not check the plugin's config key (the
    /// caller decides what is enabled). `state_dir` is created if possible;
    /// a plugin that needs it reports its own error when it is not usable.
    pub fn instantiate(
        &self,
        config: &serde_json::Value,
        sink: Arc<dyn PublishSink>,
        meta: Arc<PluginMeta>,
        state_dir: &Path,
    ) -> Result<PluginInstance, String> {
        let json = serde_json::to_string(config)
            .map_err(|e| format!("cannot serialize the configuration: {e}"))?;
        let state = state_dir.to_str().ok_or_else(|| {
            format!(
                "the state directory {} is not valid UTF-8",
                state_dir.display()
            )
        })?;
        if let Err(e) = std::fs::create_dir_all(state_dir) {
            tracing::warn!(plugin = %self.name, dir = %state_dir.display(), error = %e, "cannot create the plugin's state directory");
        }
        let hub = HubCallbacks_TO::from_value(
            HubSide {
                plugin: self.name.clone(),
                sink,
                meta,
            },
            TD_Opaque,
        );
        let args = InstantiateArgs {
            config_json: RStr::from_str(&json),
            section_path: RStr::from_str(self.section_path()),
            plugin_name: RStr::from_str(&self.name),
            state_dir: RStr::from_str(state),
            max_level: plugin_max_level(),
            hub,
        };
        match (self.module.instantiate())(args) {
            RResult::ROk(object) => Ok(PluginInstance {
                object,
                name: self.name.clone(),
            }),
            RResult::RErr(error) => Err(call_error_text(error)),
        }
    }

    /// Whether the plugin's root module has `set_max_level` (appended in
    /// plugin-api 0.1.1), through which a hub that changes its log filter
    /// at run time (reload) passes the new level on. Nothing changes the
    /// filter yet, so only the ABI test asks.
    #[cfg(test)]
    fn can_update_log_level(&self) -> bool {
        self.module.set_max_level().is_some()
    }
}

/// What became of one message handed to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// `consume` returned `Ok`.
    Consumed,
    /// `consume` returned an error (its text).
    Failed(String),
    /// `consume` panicked (the panic message and location); the panic was
    /// caught inside the plugin.
    Panicked(String),
}

/// A live plugin instance. `Send`: it moves to its worker thread.
pub struct PluginInstance {
    object: PluginBox,
    name: String,
}

impl fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginInstance")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PluginInstance {
    /// Hands one message to the plugin. Borrows every string from the
    /// delivery: nothing is allocated unless the plugin reports an error.
    pub fn consume(&mut self, d: &Delivery) -> ConsumeOutcome {
        let msg = RawMessage {
            topic: RStr::from_str(&d.topic),
            body: RStr::from_str(&d.body),
            msg_id: d.msg_id.as_deref().map(RStr::from_str).into(),
            timestamp: d.timestamp.into(),
            endpoint_name: RStr::from_str(&d.source.name),
            endpoint_url: RStr::from_str(&d.source.url),
            validated: d.validated,
            signer: d.signer.as_deref().map(RStr::from_str).into(),
        };
        match self.object.consume(&msg) {
            RResult::ROk(()) => ConsumeOutcome::Consumed,
            RResult::RErr(error) if error.kind == ErrorKind::PANICKED => {
                ConsumeOutcome::Panicked(error.message.into_string())
            }
            RResult::RErr(error) => ConsumeOutcome::Failed(error.message.into_string()),
        }
    }

    /// Runs the plugin's shutdown hook (once; later calls do nothing).
    pub fn shutdown(&mut self) -> Result<(), String> {
        match self.object.shutdown() {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(error) => Err(call_error_text(error)),
        }
    }
}

#[cfg(test)]
mod plugin_files;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directory_is_one_clear_error() {
        let results = load_dir(Path::new("/nonexistent/fedmsg/plugins"));
        assert_eq!(results.len(), 1);
        let error = results
            .into_iter()
            .next()
            .and_then(Result::err)
            .expect("an error");
        assert!(matches!(error.kind, LoadErrorKind::Directory(_)));
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/fedmsg/plugins: cannot read the plugin directory"),
            "{error}"
        );
    }

    #[test]
    fn garbage_file_is_not_a_library() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("garbage.so");
        std::fs::write(&path, b"not an ELF file").expect("write");
        let error = load_file(&path).expect_err("garbage must be refused");
        assert!(
            matches!(error.kind, LoadErrorKind::NotALibrary(_)),
            "{error}"
        );
        assert!(
            error.to_string().starts_with(&format!(
                "{}: not a loadable shared library",
                path.display()
            )),
            "{error}"
        );
    }

    #[test]
    fn instance_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<PluginInstance>();
        assert_send::<PluginLibrary>();
    }
}
