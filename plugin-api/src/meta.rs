//! What [`HubContext::meta`](crate::HubContext::meta) returns.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// A message as fedmsg.meta renders it (the hub's `fedmsg-meta` crate;
/// `fedmsg-meta render` prints the same fields). Crosses the `.so` boundary
/// as JSON, so fields can be added without breaking the ABI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MetaRendering {
    /// The processor that rendered it, lower-cased (`unhandled` for none).
    pub processor: String,
    /// `msg2title`.
    pub title: String,
    /// `msg2subtitle`.
    pub subtitle: String,
    /// `msg2link` (`None`: the processor says there is none).
    pub link: Option<String>,
    /// `msg2icon`.
    pub icon: Option<String>,
    /// `msg2secondary_icon`.
    pub secondary_icon: Option<String>,
    /// `msg2usernames`.
    pub usernames: BTreeSet<String>,
    /// `msg2packages`.
    pub packages: BTreeSet<String>,
    /// `msg2objects`.
    pub objects: BTreeSet<String>,
    /// `msg2emails`: e-mail → username.
    pub emails: BTreeMap<String, String>,
    /// `msg2avatars`: username → URL.
    pub avatars: BTreeMap<String, String>,
    /// `msg2agent`: who did it, when known.
    pub agent: Option<String>,
    /// The terse line, `msg2repr`: `"{title} -- {subtitle} {link}"`.
    pub repr: String,
}
