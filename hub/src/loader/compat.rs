//! Deciding whether a plugin's ABI is one this hub can run, and saying
//! what differs when it is not.

use abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility, AbiInstability, AbiInstabilityErrors,
};
use abi_stable::sabi_types::{VersionNumber, VersionStrings};
use abi_stable::type_layout::{TLFieldOrFunction, TypeLayout};

/// How many differing types the one-line summary names…
const SUMMARY_GROUPS: usize = 2;
/// …and how many differences per type.
const SUMMARY_ITEMS: usize = 2;

/// The outcome of comparing a plugin's root-module layout with the hub's.
#[derive(Debug)]
pub(crate) enum LayoutVerdict {
    /// Same API, or the plugin's is newer (it may have appended fields).
    SameOrNewer,
    /// The plugin was built against an older compatible API (fewer
    /// appended fields); accessors of missing fields return `None`.
    Older,
    /// Incompatible: a one-or-two-line summary and abi_stable's full report.
    Incompatible { summary: String, full: String },
}

/// Checks the layouts both ways (see `fedmsg_plugin_api::abi`, "What
/// abi_stable checks"): abi_stable accepts an implementation with *more*
/// prefix fields than the interface, so `hub ⊆ plugin` covers newer
/// plugins and `plugin ⊆ hub` covers older ones.
pub(crate) fn check_layouts(
    hub: &'static TypeLayout,
    plugin: &'static TypeLayout,
) -> LayoutVerdict {
    let forward = match check_layout_compatibility(hub, plugin) {
        Ok(()) => return LayoutVerdict::SameOrNewer,
        Err(errors) => errors,
    };
    if check_layout_compatibility(plugin, hub).is_ok() {
        return LayoutVerdict::Older;
    }
    LayoutVerdict::Incompatible {
        summary: summarize(&forward),
        full: forward.to_string(),
    }
}

/// Whether a plugin built against API `plugin` may run in a hub
/// implementing `hub`: the cargo semver rule (same major; same minor while
/// the major is 0). Unparsable versions are incompatible.
pub(crate) fn versions_compatible(hub: VersionStrings, plugin: VersionStrings) -> bool {
    match (VersionNumber::new(hub), VersionNumber::new(plugin)) {
        (Ok(h), Ok(p)) => h.major == p.major && (h.major != 0 || h.minor == p.minor),
        _ => false,
    }
}

/// Summarizes abi_stable's (very long) report in one line: the types that
/// differ, how each is reached from the root module, and what differs, e.g.
/// ``RawMessage (via instantiate → consume): 8 fields in the hub, 9 in the
/// plugin; field `msg_id` in the hub, `headers_json` in the plugin``.
/// Package-version differences are left out: the caller states the versions.
pub(crate) fn summarize(errors: &AbiInstabilityErrors) -> String {
    // (where, what) in report order, grouped by where.
    let mut groups: Vec<(String, Vec<(u8, String)>)> = Vec::new();
    for error in errors.errors.iter() {
        let place = match error.stack_trace.last() {
            Some(step) => {
                let route = route(error.stack_trace.iter().map(|step| step_name(&step.found)));
                match route.is_empty() {
                    true => place_name(&step.found),
                    false => format!("{} (via {route})", place_name(&step.found)),
                }
            }
            None => format!("`{}`", errors.interface.name()),
        };
        for instability in error.errs.iter() {
            let Some(what) = describe(instability) else {
                continue;
            };
            match groups.iter_mut().find(|(p, _)| *p == place) {
                Some((_, whats)) if whats.contains(&what) => {}
                Some((_, whats)) => whats.push(what),
                None => groups.push((place.clone(), vec![what])),
            }
        }
    }
    if groups.is_empty() {
        return "the type layouts differ (abi_stable's full report is logged at debug level)"
            .into();
    }
    let total: usize = groups.iter().map(|(_, whats)| whats.len()).sum();
    let mut shown = 0;
    let mut parts = Vec::new();
    for (place, mut whats) in groups.into_iter().take(SUMMARY_GROUPS) {
        // Field-level differences say more than the sizes they cause.
        whats.sort_by_key(|(rank, _)| *rank);
        let whats: Vec<String> = whats
            .into_iter()
            .take(SUMMARY_ITEMS)
            .map(|(_, w)| w)
            .collect();
        shown += whats.len();
        parts.push(format!("{place}: {}", whats.join("; ")));
    }
    let mut text = parts.join(" | ");
    if total > shown {
        text.push_str(&format!(" (and {} more difference(s))", total - shown));
    }
    text
}

/// The meaningful names on the way to a type: the fields and methods an
/// author would recognize, without abi_stable's plumbing (`__returns`,
/// `field_0`, `obj`, `vtable`, `param_1`, tuple indices) and repeats.
fn route<'a>(steps: impl Iterator<Item = &'a str>) -> String {
    let plumbing = |name: &str| {
        name.is_empty()
            || name.chars().all(|c| c.is_ascii_digit())
            || name.starts_with("__")
            || name.starts_with("field_")
            || name.starts_with("param_")
            || matches!(name, "obj" | "vtable")
    };
    let mut names: Vec<&str> = Vec::new();
    for name in steps.filter(|name| !plumbing(name)) {
        if names.last() != Some(&name) {
            names.push(name);
        }
    }
    names.join(" → ")
}

fn step_name(step: &TLFieldOrFunction) -> &'static str {
    match step {
        TLFieldOrFunction::Field(field) => field.name(),
        TLFieldOrFunction::Function(function) => function.name.as_str(),
    }
}

fn place_name(step: &TLFieldOrFunction) -> String {
    match step {
        TLFieldOrFunction::Field(field) => format!("`{}`", field.layout().name()),
        TLFieldOrFunction::Function(function) => format!("function `{}`", function.name.as_str()),
    }
}

/// One short phrase (and a rank, field-level first) per kind of
/// difference; `None` for the ones the summary leaves out. "hub" is the
/// expected side, "plugin" the found side.
fn describe(instability: &AbiInstability) -> Option<(u8, String)> {
    use AbiInstability as AI;
    let pair = |what: &str, hub: &dyn std::fmt::Display, plugin: &dyn std::fmt::Display| {
        format!("{what} {hub} in the hub, {plugin} in the plugin")
    };
    Some(match instability {
        AI::PackageVersion(_) | AI::PackageVersionParseError(_) => return None,
        AI::Name(v) => (
            0,
            pair(
                "type",
                &format_args!("`{}`", v.expected),
                &format_args!("`{}`", v.found),
            ),
        ),
        AI::Package(v) => (
            0,
            pair(
                "package",
                &format_args!("`{}`", v.expected),
                &format_args!("`{}`", v.found),
            ),
        ),
        AI::FieldCountMismatch(v) => (
            0,
            format!(
                "{} fields in the hub, {} in the plugin",
                v.expected, v.found
            ),
        ),
        AI::UnexpectedField(v) => (
            0,
            pair(
                "field",
                &format_args!("`{}`", v.expected.name()),
                &format_args!("`{}`", v.found.name()),
            ),
        ),
        AI::MismatchedPrefixSize(v) => (
            0,
            format!(
                "{} fields up to `last_prefix_field` in the hub, {} in the plugin",
                v.expected, v.found
            ),
        ),
        AI::UnexpectedVariant(v) => (
            0,
            pair(
                "variant",
                &format_args!("`{}`", v.expected),
                &format_args!("`{}`", v.found),
            ),
        ),
        AI::TooManyVariants(v) => (
            0,
            format!(
                "{} variants in the hub, {} in the plugin",
                v.expected, v.found
            ),
        ),
        AI::Size(v) => (
            1,
            format!("{} bytes in the hub, {} in the plugin", v.expected, v.found),
        ),
        AI::Alignment(v) => (1, pair("alignment", &v.expected, &v.found)),
        AI::MismatchedPrimitive(v) => (
            1,
            pair(
                "primitive",
                &format_args!("{:?}", v.expected),
                &format_args!("{:?}", v.found),
            ),
        ),
        AI::ReprAttr(v) => (
            1,
            pair(
                "repr",
                &format_args!("{:?}", v.expected),
                &format_args!("{:?}", v.found),
            ),
        ),
        AI::TLDataDiscriminant(v) => (
            1,
            pair(
                "kind",
                &format_args!("{:?}", v.expected),
                &format_args!("{:?}", v.found),
            ),
        ),
        AI::FieldLifetimeMismatch(_) | AI::FnLifetimeMismatch(_) => (1, "lifetimes differ".into()),
        AI::FnQualifierMismatch(_) => (1, "function qualifiers differ".into()),
        AI::GenericParamCount(_) | AI::MismatchedConstParam(_) => {
            (1, "generic parameters differ".into())
        }
        AI::NonZeroness(_) => (1, "non-zeroness differs".into()),
        AI::MismatchedPrefixConditionality(_) => (1, "conditional prefix fields differ".into()),
        AI::MismatchedExhaustiveness(_) | AI::IncompatibleWithNonExhaustive(_) => {
            (1, "enum exhaustiveness differs".into())
        }
        AI::EnumDiscriminant(_) => (1, "enum discriminants differ".into()),
        AI::TagError { .. } | AI::NoneExtraChecks | AI::ExtraCheckError(_) => {
            (1, "extra layout checks differ".into())
        }
        AI::ReentrantLayoutCheckingCall | AI::CyclicTypeChecking { .. } => {
            (1, "layout checking failed".into())
        }
    })
}

#[cfg(test)]
#[allow(dead_code)] // accessors generated for the test prefix type are not called
mod tests {
    use super::*;
    use abi_stable::StableAbi;

    // Two versions of "the same" type, as two plugin-api builds would have
    // it: same name, same package and version, different fields.
    mod v1 {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        pub struct Msg {
            pub topic: u32,
            pub body: u64,
        }
    }
    mod v2 {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        pub struct Msg {
            pub topic: u32,
            pub headers: u32,
            pub body: u64,
        }
    }

    #[repr(C)]
    #[derive(abi_stable::StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = ModV1Ref)))]
    #[sabi(missing_field(option))]
    pub struct ModV1 {
        #[sabi(last_prefix_field)]
        pub a: extern "C" fn(),
    }

    #[test]
    fn route_drops_plumbing() {
        let steps = [
            "0",
            "instantiate",
            "instantiate",
            "__returns",
            "field_0",
            "obj",
            "vtable",
            "0",
            "consume",
            "param_1",
            "0",
        ];
        assert_eq!(route(steps.into_iter()), "instantiate → consume");
    }

    #[test]
    fn summary_names_the_difference() {
        let verdict = check_layouts(
            <v1::Msg as StableAbi>::LAYOUT,
            <v2::Msg as StableAbi>::LAYOUT,
        );
        let LayoutVerdict::Incompatible { summary, full } = verdict else {
            panic!("{verdict:?}")
        };
        assert!(summary.starts_with("`Msg`"), "{summary}");
        assert!(
            summary.contains("2 fields in the hub, 3 in the plugin"),
            "{summary}"
        );
        assert!(
            summary.contains("field `body` in the hub, `headers` in the plugin"),
            "{summary}"
        );
        assert!(full.len() > summary.len());
    }

    #[test]
    fn same_layout_is_compatible() {
        let verdict = check_layouts(
            <v1::Msg as StableAbi>::LAYOUT,
            <v1::Msg as StableAbi>::LAYOUT,
        );
        assert!(matches!(verdict, LayoutVerdict::SameOrNewer), "{verdict:?}");
        let verdict = check_layouts(
            <ModV1Ref as StableAbi>::LAYOUT,
            <ModV1Ref as StableAbi>::LAYOUT,
        );
        assert!(matches!(verdict, LayoutVerdict::SameOrNewer), "{verdict:?}");
    }

    #[test]
    fn version_rule() {
        let v = VersionStrings::new;
        assert!(versions_compatible(v("0.1.1"), v("0.1.0")));
        assert!(versions_compatible(v("0.1.0"), v("0.1.9")));
        assert!(!versions_compatible(v("0.1.1"), v("0.2.0")));
        assert!(versions_compatible(v("1.2.0"), v("1.0.3")));
        assert!(!versions_compatible(v("1.2.0"), v("2.0.0")));
        assert!(!versions_compatible(v("0.1.0"), v("not a version")));
    }
}
