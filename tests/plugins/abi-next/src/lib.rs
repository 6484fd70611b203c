//! Test fixture: a plugin built against the frozen, incompatible
//! fedmsg-plugin-api 0.2.0 ABI (`RawMessage` has an extra field). The hub
//! must refuse it with an error naming the file and what differs.
//! Config key `abi_next.enabled`.

use abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RStr, RString, RVec},
};
use fedmsg_plugin_api::abi::{
    CallError, Description, InstantiateArgs, PluginBox, PluginMod, PluginModRef, PluginObject,
    PluginObject_TO, RawMessage,
};

/// Exports the 0.2.0-shaped root module.
#[export_root_module]
pub fn root_module() -> PluginModRef {
    PluginMod {
        plugin_name: RStr::from_str(env!("CARGO_PKG_NAME")),
        plugin_version: RStr::from_str(env!("CARGO_PKG_VERSION")),
        config_key: RStr::from_str("abi_next.enabled"),
        describe,
        instantiate,
        set_max_level,
    }
    .leak_into_prefix()
}

extern "C" fn describe(_config: RStr<'_>, _section: RStr<'_>) -> RResult<Description, CallError> {
    RResult::ROk(Description {
        topics: RVec::from(vec![RString::from("*")]),
        replay_name: ROption::RNone,
        validate_signatures: ROption::RNone,
    })
}

extern "C" fn instantiate(_args: InstantiateArgs<'_>) -> RResult<PluginBox, CallError> {
    RResult::ROk(PluginObject_TO::from_value(Next, TD_Opaque))
}

extern "C" fn set_max_level(_level: u8) {}

struct Next;

impl PluginObject for Next {
    fn consume(&mut self, msg: &RawMessage<'_>) -> RResult<(), CallError> {
        // Reads the field a 0.1.x hub does not send: never reached, because
        // the hub refuses to load this library.
        let _ = msg.headers_json.len();
        RResult::ROk(())
    }

    fn shutdown(&mut self) -> RResult<(), CallError> {
        RResult::ROk(())
    }
}
