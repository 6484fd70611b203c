//! fedmsg-meta against upstream: the hand-picked examples of
//! `shared/vectors` and the whole upstream test suite (downloaded at test
//! time, never committed). One test binary.

mod conformance;
mod examples;
