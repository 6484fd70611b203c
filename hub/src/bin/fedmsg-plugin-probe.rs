//! `fedmsg-plugin-probe FILE`: loads a plugin file the way the hub does,
//! in a process of its own, so that a file that crashes whoever loads it
//! (truncated, or with a constructor that aborts) crashes this process and
//! not the hub. The hub runs it before loading any plugin file; it is not
//! meant to be run by hand. Exit status: 0 loaded, 3 refused cleanly, 2
//! usage; a signal means the file is dangerous.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(path), None) => fedmsg_hub::probe_main(&PathBuf::from(path)),
        _ => {
            eprintln!("usage: {} FILE", fedmsg_hub::PROBE_BINARY);
            ExitCode::from(2)
        }
    }
}
