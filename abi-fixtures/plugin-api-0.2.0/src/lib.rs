//! Frozen fedmsg-plugin-api 0.2.0 ABI types (test fixture); see `abi.rs`.
pub mod abi;
