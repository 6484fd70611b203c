//! Filters the rule templates need beyond minijinja's built-ins.

use std::collections::{BTreeMap, BTreeSet};

use md5::Md5;
use minijinja::{Environment, State};
use sha2::{Digest, Sha256};

/// Avatars with a fixed image instead of a libravatar hash (fedmsg_meta's
/// `hardcoded_avatars`), at the size every rendering uses (64).
const HARDCODED: &[(&str, &str)] = &[
    (
        "bodhi",
        "https://apps.fedoraproject.org/img/icons/bodhi-64.png",
    ),
    (
        "koschei",
        "https://apps.fedoraproject.org/img/icons/koschei-64.png",
    ),
    (
        "taskotron",
        "https://apps.fedoraproject.org/img/icons/taskotron-64.png",
    ),
];

/// The libravatar URL of a FAS username: the SHA-256 of its OpenID URL,
/// size 64, `retro` default. Computed offline.
pub(crate) fn avatar_url(username: &str) -> String {
    if let Some((_, url)) = HARDCODED.iter().find(|(name, _)| *name == username) {
        return (*url).to_owned();
    }
    let openid = format!("http://{username}.id.fedoraproject.org/");
    let hash = Sha256::digest(openid.as_bytes());
    format!("https://seccdn.libravatar.org/avatar/{hash:x}?s=64&d=retro")
}

/// The libravatar URL of an OpenID as given: the SHA-256 of the text
/// itself. fedmsg_meta's mailman processor passes a bare username here
/// (not `http://<user>.id.fedoraproject.org/`), so its avatars are hashes
/// of the username; matching them needs this.
pub(crate) fn avatar_url_from_openid(openid: &str) -> String {
    let hash = Sha256::digest(openid.as_bytes());
    format!("https://seccdn.libravatar.org/avatar/{hash:x}?s=64&d=retro")
}

/// The libravatar URL of an e-mail address: its MD5, size 64, `retro`.
pub(crate) fn avatar_url_from_email(email: &str) -> String {
    let hash = Md5::digest(email.as_bytes());
    format!("https://seccdn.libravatar.org/avatar/{hash:x}?s=64&d=retro")
}

/// The first line of a text.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// A list as prose, as fedmsg.meta's `list_to_series` (N = 3, Oxford
/// comma): sorted and without repeats; `(nothing)`, `a`, `a and b`,
/// `a, b, and c`; past three the last ones become a count: `a, b, and 2
/// others`.
fn series(items: Vec<String>) -> String {
    const N: usize = 3;
    let sorted: BTreeSet<String> = items.into_iter().collect();
    let mut items: Vec<String> = sorted.into_iter().collect();
    match items.len() {
        0 => return "(nothing)".to_owned(),
        1 => return items.remove(0),
        n if n > N => {
            items.truncate(N - 1);
            items.push(format!("{} others", n - N + 1));
        }
        _ => {}
    }
    let last = items.pop().unwrap_or_default();
    let comma = if items.len() > 1 { "," } else { "" };
    format!("{}{comma} and {last}", items.join(", "))
}

/// The table of e-mail addresses and IRC nicks → FAS usernames
/// (`meta_fas_users`), a global of every processor's environment.
pub(crate) const FAS_USERS: &str = "fas_users";

fn fas_user_of(state: &State, key: &str) -> Option<String> {
    state
        .lookup(FAS_USERS)
        .and_then(|table| table.get_attr(key).ok())
        .filter(|v| !v.is_undefined() && !v.is_none())
        .map(|v| v.to_string())
}

/// fedmsg.meta's `email2fas`: the local part of a `@fedoraproject.org`
/// address, else the table's username for it, else the address.
fn email2fas(state: &State, email: &str) -> String {
    if let Some(user) = email.strip_suffix("@fedoraproject.org") {
        return user.to_owned();
    }
    fas_user_of(state, email).unwrap_or_else(|| email.to_owned())
}

/// fedmsg.meta's `nick2fas`: the table's username for an IRC nick, else the
/// nick.
fn nick2fas(state: &State, nick: &str) -> String {
    fas_user_of(state, nick).unwrap_or_else(|| nick.to_owned())
}

/// Adds the filters to `env`.
pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("avatar", |u: &str| avatar_url(u));
    env.add_filter("avatar_email", |e: &str| avatar_url_from_email(e));
    env.add_filter("avatar_openid", |o: &str| avatar_url_from_openid(o));
    env.add_filter("first_line", |t: &str| first_line(t));
    env.add_filter("series", series);
    env.add_filter("email2fas", email2fas);
    env.add_filter("nick2fas", nick2fas);
    env.add_global(
        FAS_USERS,
        minijinja::Value::from(BTreeMap::<String, String>::new()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fas_usernames_from_the_table() {
        let mut env = Environment::new();
        register(&mut env);
        let table = BTreeMap::from([("rbean@redhat.com", "ralph"), ("threebean", "ralph")]);
        env.add_global(FAS_USERS, minijinja::Value::from(table));
        let render = |t: &str| env.render_str(t, ()).expect("renders");
        assert_eq!(render("{{ 'rbean@redhat.com' | email2fas }}"), "ralph");
        assert_eq!(render("{{ 'x@fedoraproject.org' | email2fas }}"), "x");
        assert_eq!(
            render("{{ 'who@example.org' | email2fas }}"),
            "who@example.org"
        );
        assert_eq!(render("{{ 'threebean' | nick2fas }}"), "ralph");
        assert_eq!(render("{{ 'stranger' | nick2fas }}"), "stranger");
    }

    #[test]
    fn avatars_as_fedmsg_meta_computes_them() {
        // From fedmsg_meta_fedora_infrastructure's scm test (email variant).
        assert_eq!(
            avatar_url_from_email("rbean@redhat.com"),
            "https://seccdn.libravatar.org/avatar/1a0d2acfddb1911ecf55da42cfa34710?s=64&d=retro"
        );
        assert_eq!(
            avatar_url("bodhi"),
            "https://apps.fedoraproject.org/img/icons/bodhi-64.png"
        );
        assert!(avatar_url("ralph").starts_with("https://seccdn.libravatar.org/avatar/"));
        assert_eq!(first_line("a\nb"), "a");
        let s = |items: &[&str]| series(items.iter().map(|i| (*i).to_owned()).collect());
        assert_eq!(s(&[]), "(nothing)");
        assert_eq!(s(&["a"]), "a");
        assert_eq!(s(&["b", "a", "b"]), "a and b");
        assert_eq!(s(&["c", "a", "b"]), "a, b, and c");
        assert_eq!(s(&["a", "b", "c", "d"]), "a, b, and 2 others");
    }
}
