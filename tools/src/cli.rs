//! fedmsg's flags common to every command (reference §5.5).

use fedmsg_wire::config::{self, ConfigArgs, ConfigError, Loaded};

pub use fedmsg_wire::config::CommonArgs;

/// Loads the configuration with the common flags applied.
///
/// # Errors
///
/// As [`config::load`].
pub fn load(config: &ConfigArgs, common: &CommonArgs) -> Result<Loaded, ConfigError> {
    let loaded = config::load(&common.apply(config))?;
    for notice in loaded.notices() {
        tracing::warn!("{notice}");
    }
    Ok(loaded)
}

/// The fedmsg.meta processors of `config`: the bundled rule set plus the
/// files of `meta_rules_dir`, matched with `topic_prefix_re` (or fedmsg's
/// derivation from `topic_prefix`). Rule files that do not load are
/// returned beside the set, which works without them.
///
/// # Errors
///
/// A bundled rule file does not load (a bug).
pub fn meta_set(
    config: &fedmsg_wire::config::Config,
) -> Result<(fedmsg_meta::MetaSet, Vec<fedmsg_meta::RuleError>), fedmsg_meta::RuleError> {
    fedmsg_meta::MetaSet::for_config(
        &config.topic_prefix,
        config.topic_prefix_re.as_deref(),
        config.meta_rules_dir.as_deref(),
        &config.meta_fas_users,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_reach_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let common = CommonArgs {
            topic_prefix: Some("org.example".into()),
            timeout: Some(7.5),
            ..CommonArgs::default()
        };
        let config = ConfigArgs {
            config_dir: vec![dir.path().to_path_buf()],
            set: vec![],
        };
        let loaded = load(&config, &common).expect("loads");
        assert_eq!(loaded.config.topic_prefix, "org.example");
        assert!((loaded.config.timeout - 7.5).abs() < f64::EPSILON);
    }
}
