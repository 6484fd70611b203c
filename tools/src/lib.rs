//! What fedmsg's commands (`fedmsg-logger`, `-relay`, `-tail`, `-config`,
//! `-check`, in `src/bin/`) share besides `fedmsg-wire`: fedmsg's common
//! command-line flags.

#![warn(missing_docs)]

pub mod cli;
