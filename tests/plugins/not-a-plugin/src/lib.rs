//! Test fixture: an ordinary shared library (no abi_stable root module),
//! which the hub must refuse as "not a fedmsg plugin".

/// Adds two numbers; exported only so that the library has a C symbol.
#[no_mangle]
pub extern "C" fn fedmsg_test_not_a_plugin_add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}
