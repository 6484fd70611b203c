//! Receive path, step 6, on the plugin's side of the `.so` boundary: the
//! FFI shims that `export_plugin!` instantiates for a `ConsumerPlugin` type.
//! Every entry point catches panics and turns them into [`CallError`]s.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Once};

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString, RVec};

use crate::abi::{
    CallError, Description, ErrorKind, InstantiateArgs, PluginBox, PluginMod, PluginModRef,
    PluginObject, PluginObject_TO, RawMessage,
};
use crate::{logging, ConsumerPlugin, HubContext, Message, PluginConfig};

thread_local! {
    /// Set while a guarded call runs on this thread; tells the panic hook
    /// to record the panic instead of printing it.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The last panic's message and location, recorded by the hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs (once per library) a panic hook that records panics happening
/// inside guarded calls, with their location, so the error sent to the hub
/// says where the plugin panicked. Panics elsewhere (threads the plugin
/// spawned itself) still go to the previous hook.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let text = match info.location() {
                    Some(loc) => format!(
                        "{} (at {}:{})",
                        payload_text(info.payload()),
                        loc.file(),
                        loc.line()
                    ),
                    None => payload_text(info.payload()),
                };
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

/// The text of a panic payload (`panic!` with a literal or a format string).
pub fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs `f`, converting an `Err(text)` into a failure and a panic into a
/// [`ErrorKind::PANICKED`] error carrying the panic message (and location
/// when the hook saw it). Never unwinds.
pub fn guarded<R>(f: impl FnOnce() -> Result<R, String>) -> RResult<R, CallError> {
    install_panic_hook();
    let was_guarded = GUARDED.with(|g| g.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was_guarded));
    match outcome {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(message)) => RResult::RErr(CallError {
            kind: ErrorKind::FAILED,
            message: message.into(),
        }),
        Err(payload) => {
            let recorded = LAST_PANIC.with(|last| last.borrow_mut().take());
            let message = recorded.unwrap_or_else(|| payload_text(&*payload));
            // Dropping a payload can itself panic (a payload with a panicking
            // Drop); never let that escape.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            RResult::RErr(CallError {
                kind: ErrorKind::PANICKED,
                message: message.into(),
            })
        }
    }
}

/// Builds the root module for `P` (called once per library load).
pub fn root_module<P: ConsumerPlugin>(name: &'static str, version: &'static str) -> PluginModRef {
    PluginMod {
        plugin_name: RStr::from_str(name),
        plugin_version: RStr::from_str(version),
        config_key: RStr::from_str(P::CONFIG_KEY),
        describe: describe::<P>,
        instantiate: instantiate::<P>,
        set_max_level,
    }
    .leak_into_prefix()
}

extern "C" fn describe<P: ConsumerPlugin>(
    config_json: RStr<'_>,
    section_path: RStr<'_>,
) -> RResult<Description, CallError> {
    guarded(|| {
        let config = PluginConfig::from_json(config_json.as_str(), section_path.as_str())
            .map_err(|e| e.to_string())?;
        let topics = P::topics(&config).map_err(|e| e.render())?;
        let replay_name = P::replay_name(&config).map_err(|e| e.render())?;
        let validate_signatures = P::validate_signatures(&config).map_err(|e| e.render())?;
        Ok(Description {
            topics: topics.into_iter().map(RString::from).collect::<RVec<_>>(),
            replay_name: replay_name.map(RString::from).into(),
            validate_signatures: validate_signatures.into(),
        })
    })
}

extern "C" fn instantiate<P: ConsumerPlugin>(
    args: InstantiateArgs<'_>,
) -> RResult<PluginBox, CallError> {
    guarded(move || {
        let InstantiateArgs {
            config_json,
            section_path,
            plugin_name,
            state_dir,
            max_level,
            hub,
        } = args;
        let hub = Arc::new(hub);
        logging::connect(hub.clone(), max_level);
        let config = PluginConfig::from_json(config_json.as_str(), section_path.as_str())
            .map_err(|e| e.to_string())?;
        let ctx =
            HubContext::connected(hub, plugin_name.as_str(), PathBuf::from(state_dir.as_str()));
        let plugin = P::new(&config, ctx).map_err(|e| e.render())?;
        Ok(PluginObject_TO::from_value(
            Adapter {
                plugin: Some(plugin),
                shut_down: false,
            },
            TD_Opaque,
        ))
    })
}

extern "C" fn set_max_level(max_level: u8) {
    // Cannot fail, but stay within the rule: nothing unwinds out of a plugin.
    let _ = guarded(|| {
        logging::set_max_level(max_level);
        Ok(())
    });
}

/// Owns the author's plugin inside the trait object.
struct Adapter<P: ConsumerPlugin> {
    // `Option` so that `drop` can move the plugin into a panic guard.
    plugin: Option<P>,
    shut_down: bool,
}

impl<P: ConsumerPlugin> PluginObject for Adapter<P> {
    fn consume(&mut self, msg: &RawMessage<'_>) -> RResult<(), CallError> {
        let plugin = &mut self.plugin;
        let msg = Message::from_raw(*msg);
        guarded(move || match plugin {
            Some(plugin) => plugin.consume(&msg).map_err(|e| e.render()),
            None => Err("the plugin has been dropped".into()),
        })
    }

    fn shutdown(&mut self) -> RResult<(), CallError> {
        if std::mem::replace(&mut self.shut_down, true) {
            return RResult::ROk(());
        }
        let plugin = &mut self.plugin;
        guarded(move || {
            if let Some(plugin) = plugin {
                plugin.shutdown();
            }
            Ok(())
        })
    }
}

impl<P: ConsumerPlugin> Drop for Adapter<P> {
    fn drop(&mut self) {
        // The plugin's own Drop runs in plugin code too: guard it, because
        // abi_stable aborts the process if anything unwinds out of the
        // vtable's destructor.
        if let Some(plugin) = self.plugin.take() {
            let _ = guarded(move || {
                drop(plugin);
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_converts_results_and_panics() {
        assert_eq!(guarded(|| Ok::<_, String>(5)), RResult::ROk(5));
        match guarded(|| Err::<(), _>("nope".to_string())) {
            RResult::RErr(e) => {
                assert_eq!((e.kind, e.message.as_str()), (ErrorKind::FAILED, "nope"))
            }
            other => panic!("{other:?}"),
        }
        match guarded(|| -> Result<(), String> { panic!("boom {}", 7) }) {
            RResult::RErr(e) => {
                assert_eq!(e.kind, ErrorKind::PANICKED);
                assert!(e.message.starts_with("boom 7 (at "), "{}", e.message);
                assert!(e.message.contains("shim.rs"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
        match guarded(|| -> Result<(), String> { std::panic::panic_any(42u32) }) {
            RResult::RErr(e) => assert!(e.message.starts_with("panic with a non-string payload")),
            other => panic!("{other:?}"),
        }
        // The guard flag is restored: an unguarded panic is not recorded.
        assert!(!GUARDED.with(Cell::get));
        assert!(LAST_PANIC.with(|l| l.borrow().is_none()));
    }

    #[test]
    fn payload_texts() {
        assert_eq!(payload_text(&"lit"), "lit");
        assert_eq!(payload_text(&String::from("owned")), "owned");
        assert_eq!(payload_text(&1u8), "panic with a non-string payload");
    }
}
