//! Filters the rule templates need beyond minijinja's built-ins.

use md5::Md5;
use minijinja::Environment;
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

/// The libravatar URL of an e-mail address: its MD5, size 64, `retro`.
pub(crate) fn avatar_url_from_email(email: &str) -> String {
    let hash = Md5::digest(email.as_bytes());
    format!("https://seccdn.libravatar.org/avatar/{hash:x}?s=64&d=retro")
}

/// The first line of a text.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Adds the filters to `env`.
pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("avatar", |u: &str| avatar_url(u));
    env.add_filter("avatar_email", |e: &str| avatar_url_from_email(e));
    env.add_filter("first_line", |t: &str| first_line(t));
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
