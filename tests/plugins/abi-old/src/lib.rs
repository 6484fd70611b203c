//! Test fixture: a plugin built against the frozen fedmsg-plugin-api 0.1.0
//! ABI (its root module lacks `set_max_level`, appended in 0.1.1). The hub
//! must load it and run it.
//!
//! Written directly against the ABI types, as the 0.1.0 `export_plugin!`
//! generated it, because the frozen copy keeps only the ABI layer.
//! Config: `abi_old.enabled`; each consumed topic is appended as a line to
//! `abi_old.output`.

use std::io::Write;

use abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr, RString, RVec},
};
use fedmsg_plugin_api::abi::{
    CallError, Description, ErrorKind, InstantiateArgs, PluginBox, PluginMod, PluginModRef,
    PluginObject, PluginObject_TO, RawMessage,
};

/// Exports the 0.1.0-shaped root module.
#[export_root_module]
pub fn root_module() -> PluginModRef {
    PluginMod {
        plugin_name: RStr::from_str(env!("CARGO_PKG_NAME")),
        plugin_version: RStr::from_str(env!("CARGO_PKG_VERSION")),
        config_key: RStr::from_str("abi_old.enabled"),
        describe,
        instantiate,
    }
    .leak_into_prefix()
}

fn failed(message: String) -> CallError {
    CallError {
        kind: ErrorKind::FAILED,
        message: RString::from(message),
    }
}

fn output_of(config_json: &str) -> Option<String> {
    // A fixture: a crude lookup of `"output":"…"` is enough and keeps the
    // frozen dependency set minimal (no serde_json).
    let start = config_json.find("\"output\":\"")? + "\"output\":\"".len();
    let end = config_json[start..].find('"')? + start;
    Some(config_json[start..end].to_owned())
}

extern "C" fn describe(_config: RStr<'_>, _section: RStr<'_>) -> RResult<Description, CallError> {
    RResult::ROk(Description {
        topics: RVec::from(vec![RString::from("*")]),
        replay_name: abi_stable::std_types::ROption::RNone,
        validate_signatures: abi_stable::std_types::ROption::RNone,
    })
}

extern "C" fn instantiate(args: InstantiateArgs<'_>) -> RResult<PluginBox, CallError> {
    let Some(path) = output_of(args.config_json.as_str()) else {
        return RResult::RErr(failed("abi_old.output is required".into()));
    };
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(file) => RResult::ROk(PluginObject_TO::from_value(Old { file }, TD_Opaque)),
        Err(e) => RResult::RErr(failed(format!("cannot open {path}: {e}"))),
    }
}

struct Old {
    file: std::fs::File,
}

impl PluginObject for Old {
    fn consume(&mut self, msg: &RawMessage<'_>) -> RResult<(), CallError> {
        let line = format!("{}\n", msg.topic);
        match self.file.write_all(line.as_bytes()) {
            Ok(()) => RResult::ROk(()),
            Err(e) => RResult::RErr(failed(e.to_string())),
        }
    }

    fn shutdown(&mut self) -> RResult<(), CallError> {
        RResult::ROk(())
    }
}
