//! Which users and packages a message is about.
//!
//! datanommer asked `fedmsg.meta` (one processor per application, hundreds
//! of rules). We implement a small fixed rule over the message payload
//! (`msg`) instead, covering the fields the main Fedora applications use.
//! A field counts when it is a string, an object with a string `name`
//! (users also: `username`), or a list of those.
//!
//! Users, from `msg.`:
//! `agent`, `user`, `owner`, `username`, `submitter`,
//! `update.user`, `update.submitter`, `build.owner`, `comment.user`,
//! `commit.username`, `override.submitter`.
//!
//! Packages, from `msg.`:
//! `package`, `packages`, `pkg` (copr), `build.name`, `build.package`,
//! `commit.repo` (dist-git), `update.builds[].nvr` and `build.nvr` (the
//! name part of name-version-release), and `name` when the category is
//! `buildsys` (koji's build and tag messages name the package there).
//!
//! Names are trimmed; empty names and names longer than
//! [`MAX_NAME_LEN`] bytes are ignored; at most [`MAX_NAMES`] of each kind
//! are kept per message (sorted, without duplicates).

use std::collections::BTreeSet;

use serde_json::Value;

/// Longest user or package name kept.
pub const MAX_NAME_LEN: usize = 255;
/// Most users (and most packages) kept per message.
pub const MAX_NAMES: usize = 64;

const USER_PATHS: &[&[&str]] = &[
    &["agent"],
    &["user"],
    &["owner"],
    &["username"],
    &["submitter"],
    &["update", "user"],
    &["update", "submitter"],
    &["build", "owner"],
    &["comment", "user"],
    &["commit", "username"],
    &["override", "submitter"],
];

const PACKAGE_PATHS: &[&[&str]] = &[
    &["package"],
    &["packages"],
    &["pkg"],
    &["build", "name"],
    &["build", "package"],
    &["commit", "repo"],
];

const NVR_PATHS: &[&[&str]] = &[&["build", "nvr"]];

/// The users and the packages named by a message payload (`msg`).
pub fn users_and_packages(category: &str, msg: &Value) -> (Vec<String>, Vec<String>) {
    let mut users = BTreeSet::new();
    for path in USER_PATHS {
        names(at(msg, path), &["name", "username"], &mut users);
    }
    let mut packages = BTreeSet::new();
    for path in PACKAGE_PATHS {
        names(at(msg, path), &["name"], &mut packages);
    }
    if category == "buildsys" {
        names(msg.get("name"), &[], &mut packages);
    }
    let mut nvrs = BTreeSet::new();
    for path in NVR_PATHS {
        names(at(msg, path), &[], &mut nvrs);
    }
    if let Some(builds) = at(msg, &["update", "builds"]).and_then(Value::as_array) {
        for build in builds {
            names(build.get("nvr"), &[], &mut nvrs);
        }
    }
    packages.extend(nvrs.iter().filter_map(|nvr| package_of_nvr(nvr)));
    (capped(users), capped(packages))
}

/// The name part of `name-version-release` (`python-foo-1.0-1.fc40` →
/// `python-foo`); `None` when there are not three parts.
pub fn package_of_nvr(nvr: &str) -> Option<String> {
    let mut parts = nvr.rsplitn(3, '-');
    let (_release, _version, name) = (parts.next()?, parts.next()?, parts.next()?);
    (!name.is_empty()).then(|| name.to_owned())
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Adds the names in `value`: a string, an object with one of `keys`, or
/// a list of those (one level deep).
fn names(value: Option<&Value>, keys: &[&str], out: &mut BTreeSet<String>) {
    let mut add_one = |v: &Value| {
        let name = match v {
            Value::String(s) => Some(s.as_str()),
            Value::Object(map) => keys
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str)),
            _ => None,
        };
        if let Some(name) = name.map(str::trim) {
            if !name.is_empty() && name.len() <= MAX_NAME_LEN {
                out.insert(name.to_owned());
            }
        }
    };
    match value {
        Some(Value::Array(items)) => items.iter().for_each(add_one),
        Some(v) => add_one(v),
        None => {}
    }
}

fn capped(set: BTreeSet<String>) -> Vec<String> {
    set.into_iter().take(MAX_NAMES).collect()
}

/// `names` and `more` together, with the limits of this module: trimmed,
/// no empty or over-long names, at most [`MAX_NAMES`], sorted.
pub fn merged(names: Vec<String>, more: impl IntoIterator<Item = String>) -> Vec<String> {
    let set: BTreeSet<String> = names
        .into_iter()
        .chain(more)
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty() && n.len() <= MAX_NAME_LEN)
        .collect();
    capped(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(category: &str, msg: Value) -> (Vec<String>, Vec<String>) {
        users_and_packages(category, &msg)
    }

    #[test]
    fn merging_keeps_the_limits() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let both = merged(
            vec!["b".into()],
            [" a ".to_owned(), String::new(), long, "b".into()],
        );
        assert_eq!(both, ["a", "b"]);
        let many = merged(Vec::new(), (0..200).map(|n| format!("u{n:03}")));
        assert_eq!(many.len(), MAX_NAMES);
    }

    #[test]
    fn copr_build() {
        let msg = json!({"build": 598701, "copr": "minsh", "owner": "dvdmuckle", "pkg": "minsh",
                         "user": "dvdmuckle", "what": "build start"});
        assert_eq!(
            run("copr", msg),
            (vec!["dvdmuckle".into()], vec!["minsh".into()])
        );
    }

    #[test]
    fn koji_build_names_its_package_only_under_buildsys() {
        let msg =
            json!({"name": "kernel", "version": "6.1", "release": "1.fc40", "owner": "jforbes"});
        assert_eq!(
            run("buildsys", msg.clone()),
            (vec!["jforbes".into()], vec!["kernel".into()])
        );
        assert_eq!(run("fas", msg), (vec!["jforbes".into()], vec![]));
    }

    #[test]
    fn bodhi_update() {
        let msg = json!({
            "agent": "bowlofeggs",
            "update": {
                "user": {"name": "bowlofeggs"},
                "builds": [{"nvr": "python-foo-1.0-1.fc40"}, {"nvr": "bar-2-3"}, {"nvr": "noversion"}, {"nvr": 7}],
            },
            "comment": {"user": {"name": "bodhi"}},
        });
        assert_eq!(
            run("bodhi", msg),
            (
                vec!["bodhi".into(), "bowlofeggs".into()],
                vec!["bar".into(), "python-foo".into()]
            )
        );
    }

    #[test]
    fn shapes_and_limits() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let many: Vec<String> = (0..100).map(|i| format!("p{i:03}")).collect();
        let msg = json!({
            "username": "  spaced  ",
            "user": {"username": "objuser"},
            "owner": ["", long, 5, null, "listed"],
            "packages": many,
            "package": {"name": "objpkg"},
            "build": {"name": "buildpkg", "owner": {"name": "builder"}, "nvr": "nvrpkg-1-2"},
            "commit": {"repo": "gitpkg", "username": "committer"},
        });
        let (users, packages) = run("git", msg);
        assert_eq!(
            users,
            ["builder", "committer", "listed", "objuser", "spaced"]
        );
        assert_eq!(packages.len(), MAX_NAMES);
        assert_eq!(packages[0], "buildpkg");
        assert!(packages.contains(&"gitpkg".to_string()));
        assert!(packages.contains(&"nvrpkg".to_string()));
        assert!(packages.contains(&"objpkg".to_string()));
    }

    #[test]
    fn nothing_in_non_objects() {
        assert_eq!(run("x", json!("just a string")), (vec![], vec![]));
        assert_eq!(run("x", json!([1, 2])), (vec![], vec![]));
        assert_eq!(run("x", Value::Null), (vec![], vec![]));
    }

    #[test]
    fn nvr() {
        assert_eq!(package_of_nvr("a-b-c-1.0-1.fc40").as_deref(), Some("a-b-c"));
        assert_eq!(package_of_nvr("x-1"), None);
        assert_eq!(package_of_nvr("-1-2"), None);
    }
}
