//! Tests of configuration loading.

use std::path::{Path, PathBuf};

use super::*;

/// A temporary directory holding config directories.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Writes `text` to `<sub>/<name>` and returns the directory `<sub>`.
    fn write(&self, sub: &str, name: &str, text: &str) -> PathBuf {
        let dir = self.dir.path().join(sub);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), text).expect("write");
        dir
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }
}

fn sources(dirs: &[&Path]) -> Sources {
    Sources {
        dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        ..Sources::default()
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sets(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn load(sources: &Sources) -> Loaded {
    match Config::load_from(sources) {
        Ok(loaded) => loaded,
        Err(e) => panic!("load failed: {e}"),
    }
}

fn load_err(sources: &Sources) -> String {
    match Config::load_from(sources) {
        Ok(_) => panic!("load unexpectedly succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_fedmsgs_effective_defaults() {
    let c = Config::default();
    assert_eq!(c.topic_prefix, "org.fedoraproject");
    assert_eq!(c.environment, "dev");
    assert_eq!(c.relay_inbound, vec!["tcp://127.0.0.1:2003"]);
    assert!(c.endpoints.is_empty());
    assert_eq!(c.high_water_mark, 0);
    assert_eq!(c.io_threads, 1);
    assert_eq!(c.post_init_sleep, 0.5);
    assert_eq!(c.timeout, 2.0);
    assert_eq!(c.zmq_linger, 1000);
    assert!(c.zmq_enabled);
    assert!(!c.zmq_strict);
    assert_eq!(
        (
            c.zmq_tcp_keepalive,
            c.zmq_tcp_keepalive_cnt,
            c.zmq_tcp_keepalive_idle,
            c.zmq_tcp_keepalive_intvl
        ),
        (1, 3, 60, 5)
    );
    assert_eq!((c.zmq_reconnect_ivl, c.zmq_reconnect_ivl_max), (100, 1000));
    assert!(!c.sign_messages);
    assert!(c.validate_signatures);
    assert_eq!(c.crypto_backend, "x509");
    assert_eq!(c.crypto_validate_backends, vec!["x509"]);
    assert_eq!(c.ssldir, PathBuf::from("/etc/pki/fedmsg"));
    assert_eq!(c.ca_cert_location, "/etc/pki/fedmsg/ca.crt");
    assert_eq!(c.crl_location, None);
    assert_eq!((c.ca_cert_cache_expiry, c.crl_cache_expiry), (0, 3600));
    assert!(!c.routing_nitpicky);
    assert!(!c.active);
    assert_eq!(c.plugin_dir, PathBuf::from("/usr/lib/fedmsg-hub/plugins"));
    assert_eq!(c.plugin_queue_capacity, 10_000);
    assert_eq!(c.plugin_max_consecutive_panics, 5);
    assert_eq!(c.shutdown_timeout, 10.0);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/fedmsg-hub"));
    assert_eq!((c.verify_threads, c.dedup_window), (0, 4096));
    assert_eq!(c.hub_name, None);
    assert_eq!(c.moksha.monitoring, MonitoringConfig::default());
    // The raw tree of the defaults has the typed keys but no nulls.
    assert_eq!(c.raw()["topic_prefix"], "org.fedoraproject");
    assert!(c.raw().get("crl_location").is_none());
}

#[test]
fn no_sources_gives_the_defaults() {
    let scratch = Scratch::new();
    let loaded = load(&sources(&[&scratch.path("missing")]));
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.unknown_keys.is_empty());
    assert!(loaded.files.is_empty());
    assert_eq!(loaded.origin_of("topic_prefix"), Some("built-in defaults"));
}

#[test]
fn layers_apply_in_order_defaults_etc_local_env_set() {
    let scratch = Scratch::new();
    let etc = scratch.write(
        "etc",
        "base.toml",
        "topic_prefix = \"from.etc\"\nenvironment = \"etc\"\nhigh_water_mark = 1\nio_threads = 1\n",
    );
    let local = scratch.write(
        "local",
        "base.toml",
        "environment = \"local\"\nhigh_water_mark = 2\nio_threads = 2\n",
    );
    let mut src = sources(&[&etc, &local]);
    src.env = env(&[("FEDMSG_HIGH_WATER_MARK", "3"), ("FEDMSG_IO_THREADS", "3")]);
    src.sets = sets(&["io_threads=4"]);
    let loaded = load(&src);
    let c = &loaded.config;
    assert_eq!(c.zmq_linger, 1000, "default kept");
    assert_eq!(c.topic_prefix, "from.etc", "etc over defaults");
    assert_eq!(c.environment, "local", "local over etc");
    assert_eq!(c.high_water_mark, 3, "env over files");
    assert_eq!(c.io_threads, 4, "--set over env");
    assert_eq!(
        loaded.files,
        vec![etc.join("base.toml"), local.join("base.toml")]
    );
    assert_eq!(
        loaded.origin_of("environment"),
        Some(local.join("base.toml").display().to_string().as_str())
    );
    assert_eq!(
        loaded.origin_of("high_water_mark"),
        Some("environment variable FEDMSG_HIGH_WATER_MARK")
    );
    assert_eq!(loaded.origin_of("io_threads"), Some("--set io_threads=4"));
}

#[test]
fn files_in_a_directory_are_read_sorted_and_filtered() {
    let scratch = Scratch::new();
    let dir = scratch.write("d", "20-b.toml", "environment = \"b\"\n");
    scratch.write("d", "10-a.toml", "environment = \"a\"\nname = \"a\"\n");
    scratch.write("d", ".30-hidden.toml", "environment = \"hidden\"\n");
    scratch.write("d", "40-not-toml.conf", "environment = \"conf\"\n");
    scratch.write("d", "base.py", "config = dict()\n");
    let loaded = load(&sources(&[&dir]));
    assert_eq!(loaded.config.environment, "b");
    assert_eq!(loaded.config.name.as_deref(), Some("a"));
    assert_eq!(
        loaded.files,
        vec![dir.join("10-a.toml"), dir.join("20-b.toml")]
    );
    assert_eq!(loaded.python_files, vec![dir.join("base.py")]);
}

#[test]
fn endpoints_merge_recursively_and_normalize_to_lists() {
    let scratch = Scratch::new();
    let etc = scratch.write(
        "etc",
        "endpoints.toml",
        r#"
[endpoints]
"fedora-infrastructure" = ["tcp://hub.fedoraproject.org:9940"]
"bodhi.app01" = "tcp://app01:3000"
"#,
    );
    let local = scratch.write(
        "local",
        "relay.toml",
        r#"
[endpoints]
relay_outbound = "tcp://127.0.0.1:4001"
"bodhi.app01" = ["tcp://app01:3000", "tcp://app01:3001"]
"#,
    );
    let loaded = load(&sources(&[&etc, &local]));
    let c = &loaded.config;
    assert_eq!(c.endpoints.len(), 3);
    assert_eq!(
        c.endpoints["fedora-infrastructure"],
        vec!["tcp://hub.fedoraproject.org:9940"]
    );
    assert_eq!(c.endpoints["relay_outbound"], vec!["tcp://127.0.0.1:4001"]);
    assert_eq!(
        c.endpoints["bodhi.app01"],
        vec!["tcp://app01:3000", "tcp://app01:3001"],
        "a later list replaces an earlier value"
    );
    // The raw tree lists every endpoint, as fedmsg's merged config does.
    assert_eq!(
        c.raw()["endpoints"]["relay_outbound"],
        serde_json::json!(["tcp://127.0.0.1:4001"])
    );
    assert_eq!(
        c.subtree("endpoints.bodhi.app01"),
        serde_json::json!(["tcp://app01:3000", "tcp://app01:3001"])
    );
    assert!(loaded.unknown_keys.is_empty());
}

#[test]
fn string_or_list_keys_normalize() {
    let scratch = Scratch::new();
    let one = scratch.write(
        "one",
        "a.toml",
        "relay_inbound = \"tcp://127.0.0.1:9999\"\ncrypto_validate_backends = \"gpg\"\n",
    );
    let c = load(&sources(&[&one])).config;
    assert_eq!(c.relay_inbound, vec!["tcp://127.0.0.1:9999"]);
    assert_eq!(c.crypto_validate_backends, vec!["gpg"]);

    let many = scratch.write(
        "many",
        "a.toml",
        "relay_inbound = [\"tcp://a:1\", \"tcp://b:2\"]\n[routing_policy]\n\"org.x.announce\" = \"announce-lockbox\"\n",
    );
    let c = load(&sources(&[&many])).config;
    assert_eq!(c.relay_inbound, vec!["tcp://a:1", "tcp://b:2"]);
    assert_eq!(c.routing_policy["org.x.announce"], vec!["announce-lockbox"]);
}

#[test]
fn endpoint_urls_lists_every_url_and_rewrites_wildcard_hosts() {
    let mut c = Config::default();
    c.endpoints.insert(
        "b".into(),
        vec!["tcp://*:3000".into(), "tcp://host:3001".into()],
    );
    c.endpoints
        .insert("a".into(), vec!["ipc:///tmp/*.sock".into()]);
    assert_eq!(
        c.endpoint_urls(),
        vec![
            ("a".to_string(), "ipc:///tmp/*.sock".to_string()),
            ("b".to_string(), "tcp://127.0.0.1:3000".to_string()),
            ("b".to_string(), "tcp://host:3001".to_string()),
        ]
    );
}

#[test]
fn type_error_in_a_file_names_file_and_key() {
    let scratch = Scratch::new();
    let dir = scratch.write("fedmsg.d", "base.toml", "high_water_mark = \"lots\"\n");
    let file = dir.join("base.toml");
    assert_eq!(
        load_err(&sources(&[&dir])),
        format!(
            "{}: key \"high_water_mark\": expected an unsigned integer, found string \"lots\"",
            file.display()
        )
    );
}

#[test]
fn type_error_from_the_environment_names_the_variable() {
    let src = Sources {
        env: env(&[("FEDMSG_HIGH_WATER_MARK", "lots")]),
        ..Sources::default()
    };
    assert_eq!(
        load_err(&src),
        "environment variable FEDMSG_HIGH_WATER_MARK: key \"high_water_mark\": \
         expected an unsigned integer, found string \"lots\""
    );
}

#[test]
fn type_error_from_set_names_the_argument() {
    let src = Sources {
        sets: sets(&["zmq_linger=-5"]),
        ..Sources::default()
    };
    assert_eq!(
        load_err(&src),
        "--set zmq_linger=-5: key \"zmq_linger\": expected an unsigned integer, \
         found integer -5"
    );
}

#[test]
fn type_errors_in_nested_and_list_values_name_the_full_key() {
    let scratch = Scratch::new();
    let dir = scratch.write("d", "e.toml", "[endpoints]\n\"bodhi.app01\" = 5\n");
    let err = load_err(&sources(&[&dir]));
    let file = dir.join("e.toml").display().to_string();
    assert!(
        err.starts_with(&format!("{file}: key \"endpoints.bodhi.app01\": ")),
        "{err}"
    );
    assert!(err.contains("a string or a list of strings"), "{err}");

    let dir = scratch.write("d2", "e.toml", "relay_inbound = [\"tcp://a:1\", {x = 1}]\n");
    let err = load_err(&sources(&[&dir]));
    let file = dir.join("e.toml").display().to_string();
    assert!(
        err.starts_with(&format!("{file}: key \"relay_inbound")),
        "{err}"
    );

    let dir = scratch.write(
        "d3",
        "e.toml",
        "[moksha.monitoring]\nsocket_mode = \"rwx\"\n",
    );
    let err = load_err(&sources(&[&dir]));
    let file = dir.join("e.toml").display().to_string();
    assert!(
        err.starts_with(&format!("{file}: key \"moksha.monitoring.socket_mode\": ")),
        "{err}"
    );
}

#[test]
fn out_of_range_values_name_their_origin() {
    let scratch = Scratch::new();
    let dir = scratch.write("d", "a.toml", "shutdown_timeout = -1\n");
    let err = load_err(&sources(&[&dir]));
    let file = dir.join("a.toml").display().to_string();
    assert!(
        err.starts_with(&format!("{file}: key \"shutdown_timeout\": ")),
        "{err}"
    );

    let src = Sources {
        sets: sets(&["plugin_queue_capacity=0"]),
        ..Sources::default()
    };
    assert_eq!(
        load_err(&src),
        "--set plugin_queue_capacity=0: key \"plugin_queue_capacity\": must be at least 1"
    );

    // `nan` stays a string, so it is a type error, not a NaN timeout.
    let src = Sources {
        env: env(&[("FEDMSG_SHUTDOWN_TIMEOUT", "nan")]),
        ..Sources::default()
    };
    let err = load_err(&src);
    assert!(
        err.starts_with("environment variable FEDMSG_SHUTDOWN_TIMEOUT: key \"shutdown_timeout\""),
        "{err}"
    );
}

#[test]
fn invalid_toml_names_file_line_and_column() {
    let scratch = Scratch::new();
    let dir = scratch.write("d", "bad.toml", "a = 1\nb = \"unterminated\n");
    let err = Config::load_from(&sources(&[&dir])).err();
    match err {
        Some(ConfigError::Parse {
            path, line, column, ..
        }) => {
            assert_eq!(path, dir.join("bad.toml"));
            assert_eq!(line, Some(2));
            assert!(column.is_some());
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let msg = load_err(&sources(&[&dir]));
    assert!(
        msg.starts_with(&format!(
            "{}: invalid TOML at line 2, column ",
            dir.join("bad.toml").display()
        )),
        "{msg}"
    );
}

#[test]
fn unknown_keys_are_reported_but_fedmsg_keys_are_not() {
    let scratch = Scratch::new();
    let dir = scratch.write(
        "d",
        "a.toml",
        r#"
hig_water_mark = 5
irc_method = "notice"
irc_default_color = "light grey"
stomp_uri = "localhost:59597"
print_config = false
topic_prefix_re = "x"
zmq_subscribe_endpoints = "tcp://a:1"

[[irc]]
network = "irc.libera.chat"
channel = "fedora-fedmsg"

[logging]
version = 1

[fedmsg.consumers.gateway]
port = 9940
[fedmsg.other]
x = 1

[moksha]
blocking_mode = false
[moksha.monitoring]
socket = "ipc:///tmp/m.sock"
sockte_mode = "0770"

[tally]
enabled = true
output = "x"
[tally.deeper]
y = 1
"#,
    );
    let loaded = load(&sources(&[&dir]));
    assert_eq!(
        loaded.unknown_keys,
        vec![
            "fedmsg.other",
            "hig_water_mark",
            "moksha.monitoring.sockte_mode",
            "tally"
        ]
    );
    assert_eq!(
        loaded.config.moksha.monitoring.socket.as_deref(),
        Some("ipc:///tmp/m.sock")
    );
    assert_eq!(loaded.config.subtree("tally.output"), "x");
    assert_eq!(loaded.config.subtree("fedmsg.consumers.gateway.port"), 9940);
}

#[test]
fn fedmsg_config_env_replaces_the_default_directories() {
    let scratch = Scratch::new();
    let default = scratch.write("default", "a.toml", "environment = \"default\"\n");
    let named = scratch.write("named", "a.toml", "environment = \"named-dir\"\n");
    let file = scratch.write("file", "one.toml", "environment = \"named-file\"\n");

    let mut src = sources(&[&default]);
    assert_eq!(load(&src).config.environment, "default");

    src.env = env(&[("FEDMSG_CONFIG", named.to_str().expect("utf-8"))]);
    let loaded = load(&src);
    assert_eq!(loaded.config.environment, "named-dir");
    assert!(loaded.ignored_env.is_empty(), "FEDMSG_CONFIG is not a key");
    assert!(loaded.unknown_keys.is_empty());

    src.env = env(&[(
        "FEDMSG_CONFIG",
        file.join("one.toml").to_str().expect("utf-8"),
    )]);
    assert_eq!(load(&src).config.environment, "named-file");

    // --config-dir wins over FEDMSG_CONFIG.
    src.config_dirs = vec![default.clone()];
    assert_eq!(load(&src).config.environment, "default");

    // Explicitly named locations must exist.
    src.config_dirs.clear();
    src.env = env(&[("FEDMSG_CONFIG", "/nonexistent/fedmsg.d")]);
    assert_eq!(
        load_err(&src),
        "/nonexistent/fedmsg.d: no such file or directory (named by environment variable FEDMSG_CONFIG)"
    );
    src.env.clear();
    src.config_dirs = vec![scratch.path("typo")];
    assert!(load_err(&src).ends_with("(named by --config-dir)"));
}

#[test]
fn config_dir_is_repeatable_and_replaces_the_defaults() {
    let scratch = Scratch::new();
    let default = scratch.write(
        "default",
        "a.toml",
        "environment = \"default\"\nname = \"d\"\n",
    );
    let one = scratch.write("one", "a.toml", "environment = \"one\"\n");
    let two = scratch.write("two", "a.toml", "environment = \"two\"\n");
    let mut src = sources(&[&default]);
    src.config_dirs = vec![one, two];
    let c = load(&src).config;
    assert_eq!(c.environment, "two");
    assert_eq!(c.name, None, "default directories not read");
}

#[test]
fn env_vars_are_config_only_for_known_keys_and_existing_tables() {
    let scratch = Scratch::new();
    let mut src = Sources {
        env: env(&[
            ("FEDMSG_SKIP_PYTHON", "1"),
            ("FEDMSG_NETWORK", "1"),
            ("FEDMSG_DATANOMMER__ENABLED", "true"),
            ("FEDMSG_SIGN_MESSAGES", "true"),
            ("FEDMSG_ENDPOINTS__LOCAL_HUB", "tcp://127.0.0.1:3001"),
            ("FEDMSG_MOKSHA__MONITORING__SOCKET", "ipc:///tmp/x"),
            ("HOME", "/root"),
        ]),
        ..Sources::default()
    };
    let loaded = load(&src);
    assert_eq!(
        loaded.ignored_env,
        vec![
            "FEDMSG_DATANOMMER__ENABLED",
            "FEDMSG_NETWORK",
            "FEDMSG_SKIP_PYTHON"
        ]
    );
    assert!(!fedmsg_config_keys::is_enabled(
        loaded.config.raw(),
        "datanommer.enabled"
    ));
    assert!(loaded.config.sign_messages);
    assert_eq!(
        loaded.config.endpoints["local_hub"],
        vec!["tcp://127.0.0.1:3001"]
    );
    assert_eq!(
        loaded.config.moksha.monitoring.socket.as_deref(),
        Some("ipc:///tmp/x")
    );
    assert!(loaded.unknown_keys.is_empty());

    // Once a file has a [datanommer] table, the variable applies.
    let dir = scratch.write("d", "dn.toml", "[datanommer]\nenabled = false\n");
    src.dirs = vec![dir];
    let loaded = load(&src);
    assert!(fedmsg_config_keys::is_enabled(
        loaded.config.raw(),
        "datanommer.enabled"
    ));
    assert_eq!(
        loaded.ignored_env,
        vec!["FEDMSG_NETWORK", "FEDMSG_SKIP_PYTHON"]
    );
    assert_eq!(loaded.unknown_keys, vec!["datanommer"]);
}

#[test]
fn env_values_are_toml_when_they_parse() {
    let src = Sources {
        env: env(&[
            ("FEDMSG_POST_INIT_SLEEP", "1.5"),
            ("FEDMSG_ZMQ_STRICT", "true"),
            ("FEDMSG_TOPIC_PREFIX", "org.example"),
            ("FEDMSG_ENVIRONMENT", "\"quoted\""),
            ("FEDMSG_CRYPTO_VALIDATE_BACKENDS", "[\"x509\", \"gpg\"]"),
            ("FEDMSG_NAME", "12"),
        ]),
        ..Sources::default()
    };
    let c = load(&src).config;
    assert_eq!(c.post_init_sleep, 1.5);
    assert!(c.zmq_strict);
    assert_eq!(c.topic_prefix, "org.example");
    assert_eq!(c.environment, "quoted");
    assert_eq!(c.crypto_validate_backends, vec!["x509", "gpg"]);
    // A number where a string is expected is accepted as its text.
    assert_eq!(c.name.as_deref(), Some("12"));
}

#[test]
fn set_accepts_toml_values_dotted_and_quoted_keys() {
    let src = Sources {
        sets: sets(&[
            "sign_messages=true",
            "high_water_mark = 10",
            "relay_inbound=tcp://127.0.0.1:2999",
            "crypto_validate_backends=[\"x509\", \"gpg\"]",
            "datanommer.enabled=true",
            "\"tally.enabled\"=yes",
            "endpoints.\"bodhi.app01\"=tcp://app01:3000",
            "certnames={ \"shell.host\" = \"shell-host\" }",
            "ca_cert_location=https://example.org/ca.crt?a=b",
            "crl_location=https://example.org/crl.pem",
            "crl_location=",
        ]),
        ..Sources::default()
    };
    let loaded = load(&src);
    let c = &loaded.config;
    assert!(c.sign_messages);
    assert_eq!(c.high_water_mark, 10);
    assert_eq!(c.relay_inbound, vec!["tcp://127.0.0.1:2999"]);
    assert_eq!(c.crypto_validate_backends, vec!["x509", "gpg"]);
    assert!(fedmsg_config_keys::is_enabled(
        c.raw(),
        "datanommer.enabled"
    ));
    assert!(fedmsg_config_keys::is_enabled(c.raw(), "tally.enabled"));
    assert_eq!(c.endpoints["bodhi.app01"], vec!["tcp://app01:3000"]);
    assert_eq!(c.certnames["shell.host"], "shell-host");
    assert_eq!(c.ca_cert_location, "https://example.org/ca.crt?a=b");
    assert_eq!(c.crl_location, None, "an empty string unsets");
    assert_eq!(loaded.unknown_keys, vec!["datanommer", "tally"]);
}

#[test]
fn malformed_set_arguments_are_rejected() {
    for (arg, reason) in [
        ("no-equals-sign", "expected KEY=VALUE"),
        ("=5", "the key is empty"),
        ("a b=5", "the key is not a TOML key"),
        ("a=1\nb=2", "must be a single line"),
    ] {
        let src = Sources {
            sets: sets(&[arg]),
            ..Sources::default()
        };
        let err = load_err(&src);
        assert!(err.starts_with(&format!("--set {arg}: {reason}")), "{err}");
    }
}

#[test]
fn is_enabled_accepts_tables_and_quoted_dotted_keys() {
    let scratch = Scratch::new();
    let dir = scratch.write(
        "d",
        "a.toml",
        r#"
"datanommer.enabled" = true
"fedmsg.consumers.ircbot.enabled" = false
"busmon.enabled" = "yes"

[tally]
enabled = true

[echo]
enabled = 0
"#,
    );
    let c = load(&sources(&[&dir])).config;
    assert!(fedmsg_config_keys::is_enabled(
        c.raw(),
        "datanommer.enabled"
    ));
    assert!(fedmsg_config_keys::is_enabled(c.raw(), "tally.enabled"));
    assert!(fedmsg_config_keys::is_enabled(c.raw(), "busmon.enabled"));
    assert!(!fedmsg_config_keys::is_enabled(c.raw(), "echo.enabled"));
    assert!(!fedmsg_config_keys::is_enabled(
        c.raw(),
        "fedmsg.consumers.ircbot.enabled"
    ));
    assert!(!fedmsg_config_keys::is_enabled(c.raw(), "missing.enabled"));
    assert!(
        !fedmsg_config_keys::is_enabled(c.raw(), "tally"),
        "a table is not a flag"
    );
    assert_eq!(
        c.subtree("datanommer"),
        serde_json::json!({"enabled": true})
    );
    assert_eq!(c.subtree("nope"), serde_json::Value::Null);
}

#[test]
fn monitoring_socket_accepts_fedmsg_spellings() {
    let scratch = Scratch::new();
    let dir = scratch.write(
        "d",
        "a.toml",
        "\"moksha.monitoring.socket\" = \"ipc:///tmp/mon\"\n\"moksha.monitoring.socket.mode\" = \"0770\"\n",
    );
    let loaded = load(&sources(&[&dir]));
    let m = &loaded.config.moksha.monitoring;
    assert_eq!(m.socket.as_deref(), Some("ipc:///tmp/mon"));
    assert_eq!(m.socket_mode, Some(0o770));
    assert!(loaded.unknown_keys.is_empty());

    let dir = scratch.write(
        "e",
        "a.toml",
        "[moksha.monitoring]\nsocket = \"ipc:///tmp/mon\"\nsocket_mode = 0o660\n",
    );
    let m = load(&sources(&[&dir])).config.moksha.monitoring;
    assert_eq!(m.socket_mode, Some(0o660));
}

#[test]
fn merged_config_round_trips_through_toml_and_json() {
    let scratch = Scratch::new();
    let dir = scratch.write(
        "d",
        "a.toml",
        r#"
topic_prefix = "org.example"
post_init_sleep = 0.25
[endpoints]
"a.b" = "tcp://a:1"
[moksha.monitoring]
socket_mode = "0770"
[tally]
enabled = true
"#,
    );
    let first = load(&sources(&[&dir])).config;
    let text = first.to_toml_string().expect("toml");
    let again = scratch.write("again", "all.toml", &text);
    let second = load(&sources(&[&again])).config;
    assert_eq!(first, second);

    let json: serde_json::Value = serde_json::from_str(&first.to_json_string()).expect("json");
    assert_eq!(&json, first.raw());
    assert_eq!(json["endpoints"]["a.b"], serde_json::json!(["tcp://a:1"]));
    // The typed struct serializes too.
    let typed = serde_json::to_value(&first).expect("typed");
    assert_eq!(typed["moksha"]["monitoring"]["socket_mode"], "0770");
}

#[test]
fn helpers() {
    let mut c = Config::default();
    assert_eq!(c.effective_hub_name("box"), "fedmsg-hub.box");
    c.hub_name = Some("local.hub".into());
    assert_eq!(c.effective_hub_name("box"), "local.hub");
    assert!(c.effective_verify_threads() >= 1);
    c.verify_threads = 3;
    assert_eq!(c.effective_verify_threads(), 3);
    assert_eq!(c.shutdown_duration(), std::time::Duration::from_secs(10));
}

/// The example configurations shipped in the repository load with no
/// unknown keys except the plugin tables.
#[test]
fn shipped_example_configs_load_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let etc = root.join("etc/fedmsg.d");
    let dev = root.join("fedmsg.d");

    let mut src = Sources {
        config_dirs: vec![etc.clone()],
        ..Sources::default()
    };
    let loaded = load(&src);
    assert!(loaded.files.len() >= 6, "{:?}", loaded.files);
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    let c = &loaded.config;
    assert_eq!(c.topic_prefix, "org.fedoraproject");
    assert_eq!(c.relay_inbound, vec!["tcp://127.0.0.1:2003"]);
    assert!(c.endpoints.contains_key("relay_outbound"));
    assert!(c.endpoints.contains_key("fedora-infrastructure"));
    assert!(c.validate_signatures);
    assert_eq!(
        c.crl_location.as_deref(),
        Some("https://fedoraproject.org/fedmsg/crl.pem")
    );

    src.config_dirs = vec![dev.clone()];
    let loaded = load(&src);
    // Only the plugin tables, which the hub exempts once the plugins load.
    assert_eq!(
        loaded.unknown_keys,
        vec!["busmon", "datanommer", "echo", "tally"]
    );
    let c = &loaded.config;
    assert!(!c.validate_signatures);
    assert!(!c.sign_messages);
    assert_eq!(c.plugin_dir, PathBuf::from(".run/plugins"));
    assert_eq!(c.state_dir, PathBuf::from(".run/state"));
    assert!(fedmsg_config_keys::is_enabled(c.raw(), "tally.enabled"));
    assert!(fedmsg_config_keys::is_enabled(c.raw(), "echo.enabled"));
    assert_eq!(c.subtree("tally.output"), ".run/tally.jsonl");
    assert_eq!(
        c.endpoint_urls(),
        vec![
            ("local.hub".to_string(), "tcp://127.0.0.1:3001".to_string()),
            (
                "relay_outbound".to_string(),
                "tcp://127.0.0.1:4001".to_string()
            ),
        ]
    );

    // Both together, as a developer's machine with /etc populated would.
    src.config_dirs = vec![etc, dev];
    let loaded = load(&src);
    // Only the plugin tables, which the hub exempts once the plugins load.
    assert_eq!(
        loaded.unknown_keys,
        vec!["busmon", "datanommer", "echo", "tally"]
    );
}

#[test]
fn no_silent_conversions_between_numbers_and_booleans() {
    let scratch = Scratch::new();
    for (i, (text, expected)) in [
        (
            "high_water_mark = 1.5",
            "expected an unsigned integer, found float 1.5",
        ),
        ("zmq_strict = 1", "expected a boolean, found integer 1"),
        (
            "io_threads = true",
            "expected an unsigned integer, found boolean true",
        ),
        (
            "plugin_queue_capacity = -1",
            "expected an unsigned integer, found integer -1",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = scratch.write(&format!("d{i}"), "a.toml", text);
        let err = load_err(&sources(&[&dir]));
        assert!(err.ends_with(expected), "{text}: {err}");
    }

    // fedmsg's newer loader accepts "true"/"false" strings for booleans,
    // and integers are fine where seconds are floats.
    let dir = scratch.write(
        "ok",
        "a.toml",
        "sign_messages = \"TRUE\"\nzmq_strict = \"false\"\nshutdown_timeout = 3\n",
    );
    let c = load(&sources(&[&dir])).config;
    assert!(c.sign_messages);
    assert!(!c.zmq_strict);
    assert_eq!(c.shutdown_timeout, 3.0);
}

#[test]
fn config_args_flatten_into_a_command_line() {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    let cli = match Cli::try_parse_from([
        "fedmsg-hub",
        "--config-dir",
        "a",
        "--set",
        "high_water_mark=5",
        "--config-dir",
        "b",
        "--set",
        "endpoints.\"x.y\"=tcp://h:1",
    ]) {
        Ok(cli) => cli,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        cli.config.config_dir,
        vec![PathBuf::from("a"), PathBuf::from("b")]
    );
    assert_eq!(
        cli.config.set,
        vec!["high_water_mark=5", "endpoints.\"x.y\"=tcp://h:1"]
    );
    let src = Sources::from_args(&cli.config);
    assert_eq!(
        src.dirs,
        vec![PathBuf::from("/etc/fedmsg.d"), PathBuf::from("./fedmsg.d")]
    );
    assert_eq!(src.config_dirs, cli.config.config_dir);
    assert_eq!(src.sets, cli.config.set);
    assert!(src.env.iter().all(|(name, _)| name.starts_with("FEDMSG_")));
}

#[test]
fn settings_without_effect_are_told_not_ignored_silently() {
    let scratch = Scratch::new();
    let dir = scratch.write(
        "etc",
        "base.toml",
        "hig_water_mark = 0\nstomp_uri = \"stomp://x:61613\"\nzmq_enabled = false\n\
         srv_endpoints = [\"_fedmsg._tcp.example.org\"]\n[tally]\nenabled = true\n",
    );
    scratch.write("etc", "old.py", "config = dict()\n");
    let mut sources = sources(&[&dir]);
    sources.env = env(&[
        ("FEDMSG_DATANOMMER__ENABLED", "true"),
        ("FEDMSG_SKIP_PYTHON", "1"),
    ]);
    let loaded = load(&sources);
    let notices = loaded.notices().join("\n");
    for expected in [
        "FEDMSG_DATANOMMER__ENABLED ignored: no configuration file has a [datanommer] table",
        "stomp_uri: not implemented",
        "srv_endpoints: not implemented",
        "zmq_enabled = false: not implemented",
        "old.py: Python configuration files are not read",
        "unknown configuration key hig_water_mark",
    ] {
        assert!(
            notices.contains(expected),
            "{expected:?} missing from:\n{notices}"
        );
    }
    // Not configuration, and a plugin's table: no notice.
    assert!(!notices.contains("FEDMSG_SKIP_PYTHON"), "{notices}");
    assert!(!notices.contains("tally"), "{notices}");
    assert_eq!(loaded.unknown_tables(), ["tally"]);
}

#[test]
fn limits_that_cannot_work_are_refused() {
    let mut sources = Sources {
        sets: sets(&["max_message_size=0"]),
        ..Sources::default()
    };
    let error = load_err(&sources);
    assert!(error.contains("max_message_size"), "{error}");
    sources.sets = sets(&["verify_threads=5000"]);
    let error = load_err(&sources);
    assert!(
        error.contains("verify_threads") && error.contains("at most 256"),
        "{error}"
    );
    sources.sets = sets(&["verify_threads=8", "max_message_size=1024"]);
    load(&sources);
}
