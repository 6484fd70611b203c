//! End-to-end tests on real processes, linked into one test binary (each
//! file a module) so that the test harness is linked once.

mod busmon;
mod busmon_browser;
mod busmon_load;
mod catchup;
mod commands;
mod datanommer;
mod gateway;
mod hub_core;
mod interop_python;
mod irc;
mod replay;
mod validation;
