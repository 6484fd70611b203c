//! Loader tests against the real plugin `.so` files of the workspace
//! (examples and `tests/plugins/*` fixtures). They must have been built:
//! `cargo build --workspace` (same profile as the tests).
//!
//! Unit tests rather than integration tests so that the loader can stay
//! private to the hub.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fedmsg_meta::MetaSet;

use crate::plugin_meta::PluginMeta;
use fedmsg_wire::delivery::{Delivery, Source};

use super::{
    load_dir, load_file, ConsumeOutcome, LoadErrorKind, NoPublish, PluginLibrary, PublishSink,
    PLUGIN_LOG_TARGET,
};
use serde_json::{json, Value};

/// Finds `lib<name>.so` next to this test binary's profile directory
/// (`target/<profile>/deps/<test>` → `target/<profile>/`), or under
/// `$CARGO_TARGET_DIR/<profile>` / `<workspace>/target/<profile>`.
fn so(name: &str) -> PathBuf {
    let file = format!("lib{name}.so");
    let mut dirs = Vec::new();
    if let Some(profile_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
    {
        dirs.push(profile_dir);
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(target).join(profile));
    }
    dirs.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(profile),
    );
    for dir in &dirs {
        let candidate = dir.join(&file);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{file} not found in {dirs:?}: run `cargo build --workspace` first (same profile as the tests)");
}

fn load(name: &str) -> PluginLibrary {
    let path = so(name);
    load_file(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn delivery(topic: &str, msg_id: Option<&str>) -> Delivery {
    let body =
        json!({"topic": topic, "msg_id": msg_id, "msg": {"n": 1}, "timestamp": 1.5}).to_string();
    Delivery {
        topic: topic.to_owned(),
        body,
        msg_id: msg_id.map(str::to_owned),
        timestamp: Some(1.5),
        seq_id: None,
        source: Arc::new(Source {
            name: "relay".into(),
            url: "tcp://127.0.0.1:9940".into(),
        }),
        validated: true,
        signer: Some("bodhi-bodhi-backend01.phx2.fedoraproject.org".into()),
    }
}

fn no_publish() -> Arc<dyn PublishSink> {
    Arc::new(NoPublish::default())
}

/// The bundled fedmsg.meta processors, as a hub with a default
/// configuration has them.
fn meta() -> Arc<PluginMeta> {
    Arc::new(PluginMeta::ready(
        MetaSet::bundled(&fedmsg_meta::default_topic_prefix_re("org.fedoraproject"))
            .expect("bundled rules"),
    ))
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
        .collect()
}

#[test]
fn each_plugin_gets_its_own_module_and_instance() {
    let tally = load("fedmsg_example_tally");
    let echo = load("fedmsg_example_echo");
    let faulty = load("fedmsg_test_faulty");
    assert_eq!(
        [tally.name(), echo.name(), faulty.name()],
        [
            "fedmsg-example-tally",
            "fedmsg-example-echo",
            "fedmsg-test-faulty"
        ]
    );
    assert_eq!(
        [tally.config_key(), faulty.config_key()],
        ["tally.enabled", "faulty.enabled"]
    );
    assert_eq!(tally.section_path(), "tally");
    assert_eq!(tally.api_version(), fedmsg_plugin_api::abi::API_VERSION);
    assert_eq!(tally.version(), env!("CARGO_PKG_VERSION"));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = json!({
        "tally": {"enabled": true, "output": dir.path().join("tally.jsonl"), "topic": "org.tally.*"},
        "faulty": {"enabled": true, "output": dir.path().join("faulty.jsonl"), "topic": ["a", "b"]},
    });
    assert_eq!(
        tally.describe(&config).expect("describe").topics,
        ["org.tally.*"]
    );
    assert_eq!(
        faulty.describe(&config).expect("describe").topics,
        ["a", "b"]
    );
    assert_eq!(echo.describe(&config).expect("describe").topics, ["*"]);

    let mut t = tally
        .instantiate(
            &config,
            no_publish(),
            meta(),
            &dir.path().join("state/tally"),
        )
        .expect("tally");
    let mut f = faulty
        .instantiate(
            &config,
            no_publish(),
            meta(),
            &dir.path().join("state/faulty"),
        )
        .expect("faulty");
    assert!(
        dir.path().join("state/tally").is_dir(),
        "the state directory is created"
    );

    // Instances are Send: consume on other threads, as the dispatch workers do.
    let a = std::thread::spawn(move || (t.consume(&delivery("org.tally.one", Some("t-1"))), t));
    let b = std::thread::spawn(move || (f.consume(&delivery("b.two", Some("f-1"))), f));
    let (outcome_a, mut t) = a.join().expect("thread a");
    let (outcome_b, mut f) = b.join().expect("thread b");
    assert_eq!(
        (outcome_a, outcome_b),
        (ConsumeOutcome::Consumed, ConsumeOutcome::Consumed)
    );
    t.shutdown().expect("shutdown");
    f.shutdown().expect("shutdown");

    assert_eq!(
        read_lines(&dir.path().join("tally.jsonl")),
        [json!({"msg_id": "t-1", "topic": "org.tally.one"})]
    );
    assert_eq!(
        read_lines(&dir.path().join("faulty.jsonl")),
        [
            json!({"msg_id": "f-1", "topic": "b.two", "validated": true, "signer": "bodhi-bodhi-backend01.phx2.fedoraproject.org"})
        ]
    );
}

#[test]
fn two_copies_of_one_file_are_two_modules() {
    // Same root-module type, same code, two files: abi_stable's per-type
    // cache would hand the second load the first module; ours must not.
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("a-tally.so");
    let second = dir.path().join("b-tally.so");
    std::fs::copy(so("fedmsg_example_tally"), &first).expect("copy");
    std::fs::copy(so("fedmsg_example_tally"), &second).expect("copy");
    let libs = [
        load_file(&first).expect("first"),
        load_file(&second).expect("second"),
    ];
    assert_eq!(libs[0].path(), first);
    assert_eq!(libs[1].path(), second);

    let out_a = dir.path().join("a.jsonl");
    let out_b = dir.path().join("b.jsonl");
    let mut a = libs[0]
        .instantiate(
            &json!({"tally": {"output": out_a}}),
            no_publish(),
            meta(),
            &dir.path().join("sa"),
        )
        .expect("a");
    let mut b = libs[1]
        .instantiate(
            &json!({"tally": {"output": out_b}}),
            no_publish(),
            meta(),
            &dir.path().join("sb"),
        )
        .expect("b");
    assert_eq!(
        a.consume(&delivery("x.a", Some("1"))),
        ConsumeOutcome::Consumed
    );
    assert_eq!(
        b.consume(&delivery("x.b", Some("2"))),
        ConsumeOutcome::Consumed
    );
    assert_eq!(read_lines(&out_a), [json!({"msg_id": "1", "topic": "x.a"})]);
    assert_eq!(read_lines(&out_b), [json!({"msg_id": "2", "topic": "x.b"})]);
}

#[test]
fn tally_appends_one_json_line_per_message() {
    let tally = load("fedmsg_example_tally");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let config = json!({"tally": {"enabled": true, "output": out}});
    let mut instance = tally
        .instantiate(&config, no_publish(), meta(), &dir.path().join("state"))
        .expect("tally");
    for i in 0..100 {
        let id = format!("id-{i}");
        assert_eq!(
            instance.consume(&delivery("org.x", Some(&id))),
            ConsumeOutcome::Consumed
        );
    }
    // A message without msg_id, and a topic that needs JSON escaping.
    assert_eq!(
        instance.consume(&delivery("org.\"quoted\"", None)),
        ConsumeOutcome::Consumed
    );
    // Written through on every message: visible before shutdown.
    let lines = read_lines(&out);
    assert_eq!(lines.len(), 101);
    assert_eq!(lines[42], json!({"msg_id": "id-42", "topic": "org.x"}));
    assert_eq!(
        lines[100],
        json!({"msg_id": null, "topic": "org.\"quoted\""})
    );
    instance.shutdown().expect("shutdown");
    instance.shutdown().expect("a second shutdown is a no-op");
}

#[test]
fn construction_and_description_errors_are_reported() {
    let tally = load("fedmsg_example_tally");
    let dir = tempfile::tempdir().expect("tempdir");
    let err = tally
        .instantiate(
            &json!({"tally": {"enabled": true}}),
            no_publish(),
            meta(),
            dir.path(),
        )
        .expect_err("no output");
    assert_eq!(err, "config key `tally.output`: is required but not set");

    let err = tally
        .describe(&json!({"tally": {"topic": 5}}))
        .expect_err("bad topic type");
    assert_eq!(
        err,
        "config key `tally.topic`: expected a string or a list of strings, found 5"
    );

    let faulty = load("fedmsg_test_faulty");
    let config = json!({"faulty": {"output": dir.path().join("f"), "panic_in_new": true}});
    let err = faulty
        .instantiate(&config, no_publish(), meta(), dir.path())
        .expect_err("panics");
    assert!(
        err.starts_with("panicked: faulty: panic_in_new is set (at "),
        "{err}"
    );
}

#[test]
fn panics_and_errors_in_consume_are_contained() {
    let faulty = load("fedmsg_test_faulty");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("faulty.jsonl");
    let config =
        json!({"faulty": {"enabled": true, "output": out, "panic_on": "boom", "fail_on": "fail"}});
    let mut instance = faulty
        .instantiate(&config, no_publish(), meta(), dir.path())
        .expect("faulty");

    match instance.consume(&delivery("org.boom", Some("p"))) {
        ConsumeOutcome::Panicked(text) => {
            assert!(
                text.starts_with(r#"faulty: panic_on "boom" matched topic org.boom (at "#),
                "{text}"
            );
            assert!(text.contains("lib.rs:"), "the location is included: {text}");
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    // The hub survived, and so did the instance.
    assert_eq!(
        instance.consume(&delivery("org.ok", Some("1"))),
        ConsumeOutcome::Consumed
    );
    assert_eq!(
        instance.consume(&delivery("org.fail", Some("f"))),
        ConsumeOutcome::Failed(r#"faulty: fail_on "fail" matched topic org.fail"#.into())
    );
    for _ in 0..3 {
        assert!(matches!(
            instance.consume(&delivery("org.boom", None)),
            ConsumeOutcome::Panicked(_)
        ));
    }
    assert_eq!(
        instance.consume(&delivery("org.ok", Some("2"))),
        ConsumeOutcome::Consumed
    );
    instance.shutdown().expect("shutdown");
    assert_eq!(
        read_lines(&out),
        [
            json!({"msg_id": "1", "topic": "org.ok", "validated": true, "signer": "bodhi-bodhi-backend01.phx2.fedoraproject.org"}),
            json!({"msg_id": "2", "topic": "org.ok", "validated": true, "signer": "bodhi-bodhi-backend01.phx2.fedoraproject.org"})
        ]
    );
}

#[test]
fn publish_goes_through_the_publish_sink() {
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, Value)>>);
    impl PublishSink for Recorder {
        fn publish(&self, plugin: &str, topic: &str, body: &Value) -> Result<(), String> {
            self.0.lock().map_err(|e| e.to_string())?.push((
                plugin.into(),
                topic.into(),
                body.clone(),
            ));
            Ok(())
        }
    }

    let faulty = load("fedmsg_test_faulty");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = json!({"faulty": {"output": dir.path().join("o"), "publish_on": "echo"}});

    let recorder = Arc::new(Recorder::default());
    let mut instance = faulty
        .instantiate(&config, recorder.clone(), meta(), dir.path())
        .expect("faulty");
    assert_eq!(
        instance.consume(&delivery("org.echo", Some("m-1"))),
        ConsumeOutcome::Consumed
    );
    let published = recorder.0.lock().expect("lock").clone();
    assert_eq!(
        published,
        [(
            "fedmsg-test-faulty".into(),
            "org.echo.reply".into(),
            json!({"in_reply_to": "m-1"})
        )]
    );

    // A sink that refuses: the plugin sees the refusal as an error.
    let mut instance = faulty
        .instantiate(&config, no_publish(), meta(), dir.path())
        .expect("faulty");
    assert_eq!(
        instance.consume(&delivery("org.echo", Some("m-2"))),
        ConsumeOutcome::Failed("publish failed: this test has no publisher".into())
    );
}

#[test]
fn non_plugins_are_refused_with_the_file_and_reason() {
    let path = so("fedmsg_test_not_a_plugin");
    let err = load_file(&path).expect_err("not a plugin");
    assert_eq!(err.kind, LoadErrorKind::NotAPlugin);
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a fedmsg plugin (it exports no abi_stable root module)",
            path.display()
        )
    );
}

#[test]
fn incompatible_abi_is_refused_with_what_differs() {
    let path = so("fedmsg_test_abi_next");
    let err = load_file(&path).expect_err("incompatible");
    let LoadErrorKind::IncompatibleAbi(detail) = &err.kind else {
        panic!("wrong kind: {err}")
    };
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: incompatible plugin ABI: ", path.display())),
        "{text}"
    );
    assert!(
        detail.starts_with(&format!(
            "built against fedmsg-plugin-api 0.2.0, this hub implements {}",
            fedmsg_plugin_api::abi::API_VERSION
        )),
        "{detail}"
    );
    // What differs: the field 0.2.0 inserted into RawMessage.
    assert!(detail.contains("headers_json"), "{detail}");
    assert!(text.lines().count() == 1, "one line: {text}");
}

#[test]
fn plugin_built_against_an_older_compatible_api_loads_and_runs() {
    let old = load("fedmsg_test_abi_old");
    assert_eq!(old.api_version(), "0.1.0");
    assert_eq!(old.config_key(), "abi_old.enabled");
    assert_eq!(old.describe(&json!({})).expect("describe").topics, ["*"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("old.txt");
    let config = json!({"abi_old": {"enabled": true, "output": out}});
    let mut instance = old
        .instantiate(&config, no_publish(), meta(), dir.path())
        .expect("instantiate");
    assert_eq!(
        instance.consume(&delivery("org.old", Some("1"))),
        ConsumeOutcome::Consumed
    );
    instance.shutdown().expect("shutdown");
    assert_eq!(std::fs::read_to_string(&out).expect("output"), "org.old\n");

    // The root-module field appended in 0.1.1 is absent from the old plugin…
    assert!(!old.can_update_log_level());
    // …and present in current ones.
    assert!(load("fedmsg_example_tally").can_update_log_level());
}

#[test]
fn load_dir_reports_every_file_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        so("fedmsg_test_not_a_plugin"),
        dir.path().join("b-not-a-plugin.so"),
    )
    .expect("copy");
    std::fs::copy(so("fedmsg_example_echo"), dir.path().join("c-echo.so")).expect("copy");
    std::fs::write(dir.path().join("a-garbage.so"), b"\x7fELF but not really").expect("write");
    std::fs::write(dir.path().join("README.txt"), b"ignored").expect("write");
    std::fs::create_dir(dir.path().join("d-dir.so")).expect("mkdir");
    // The same plugin twice: the later file is refused.
    std::fs::copy(
        so("fedmsg_example_echo"),
        dir.path().join("e-echo-again.so"),
    )
    .expect("copy");

    let results = load_dir(dir.path());
    let summary: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(lib) => format!("ok {}", lib.name()),
            Err(e) => format!(
                "{} {:?}",
                e.path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                std::mem::discriminant(&e.kind)
                    == std::mem::discriminant(&LoadErrorKind::NotAPlugin)
            ),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "a-garbage.so false",
            "b-not-a-plugin.so true",
            "ok fedmsg-example-echo",
            "e-echo-again.so false"
        ]
    );
    let garbage = results[0].as_ref().expect_err("garbage");
    assert!(
        matches!(garbage.kind, LoadErrorKind::NotALibrary(_)),
        "{garbage}"
    );
    let duplicate = results[3].as_ref().expect_err("duplicate");
    assert_eq!(
        duplicate.to_string(),
        format!(
            "{}: plugin fedmsg-example-echo is already loaded from {}",
            dir.path().join("e-echo-again.so").display(),
            dir.path().join("c-echo.so").display()
        )
    );
}

/// A hub-side subscriber that records the events re-emitted for plugins.
mod capture {
    use super::*;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    #[derive(Debug, Clone, PartialEq)]
    pub struct Captured {
        pub level: Level,
        pub target: String,
        pub fields: Vec<(String, String)>,
    }

    pub struct Capture {
        pub max: Level,
        pub events: Mutex<Vec<Captured>>,
    }

    struct Fields(Vec<(String, String)>);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= self.max
        }
        fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
            Some(tracing::level_filters::LevelFilter::from_level(self.max))
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields(Vec::new());
            event.record(&mut fields);
            if let Ok(mut events) = self.events.lock() {
                events.push(Captured {
                    level: *event.metadata().level(),
                    target: event.metadata().target().to_owned(),
                    fields: fields.0,
                });
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[test]
fn plugin_log_events_reach_the_hub_log() {
    use capture::{Capture, Captured};
    use tracing::Level;

    let echo = load("fedmsg_example_echo");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = json!({"echo": {"enabled": true}});
    // echo logs each message's fedmsg.meta line, rendered by the hub with
    // its rule set, an operator's rule included.
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("demo.toml"),
        "[processor]\nname = \"demo\"\n[fields]\nsubtitle = \"demo {{ msg.n }}\"\nlink = \"https://demo/{{ msg.n }}\"\n",
    )
    .expect("rule file");
    let prefix = fedmsg_meta::default_topic_prefix_re("org.fedoraproject");
    let (meta_set, errors) = MetaSet::with_rules(&prefix, Some(&rules)).expect("rules");
    assert!(errors.is_empty(), "{errors:?}");
    let meta_set = Arc::new(PluginMeta::ready(meta_set));

    // At INFO, the plugin's debug event in `new` is filtered on the plugin side.
    let info = Arc::new(Capture {
        max: Level::INFO,
        events: Mutex::new(Vec::new()),
    });
    tracing::subscriber::with_default(info.clone(), || {
        let mut instance = echo
            .instantiate(&config, no_publish(), Arc::clone(&meta_set), dir.path())
            .expect("echo");
        assert_eq!(
            instance.consume(&delivery("org.fedoraproject.prod.demo.event", Some("m-1"))),
            ConsumeOutcome::Consumed
        );
        instance.shutdown().expect("shutdown");
    });
    let events = info.events.lock().expect("lock").clone();
    let field = |e: &Captured, name: &str| {
        e.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events
        .iter()
        .all(|e| e.target == PLUGIN_LOG_TARGET && e.level == Level::INFO));
    assert_eq!(
        field(&events[0], "plugin").as_deref(),
        Some("fedmsg-example-echo")
    );
    assert_eq!(
        field(&events[0], "plugin_target").as_deref(),
        Some("fedmsg_example_echo")
    );
    assert_eq!(
        field(&events[0], "message").as_deref(),
        Some(
            r#"demo.event -- demo 1 https://demo/1 topic="org.fedoraproject.prod.demo.event" msg_id="m-1" signer="bodhi-bodhi-backend01.phx2.fedoraproject.org" seen=1"#
        )
    );
    assert_eq!(
        field(&events[1], "message").as_deref(),
        Some("echo stopping seen=1")
    );

    // At DEBUG the constructor's event arrives too.
    let debug = Arc::new(Capture {
        max: Level::DEBUG,
        events: Mutex::new(Vec::new()),
    });
    tracing::subscriber::with_default(debug.clone(), || {
        echo.instantiate(&config, no_publish(), meta(), dir.path())
            .expect("echo");
    });
    let events = debug.events.lock().expect("lock").clone();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].level, Level::DEBUG);
    assert_eq!(
        field(&events[0], "message").as_deref(),
        Some(r#"echo ready plugin="fedmsg-example-echo""#)
    );
}

/// A shared library whose ELF constructor calls `abort()`, compiled with
/// the machine's C compiler (build-essential, installed by
/// scripts/install-deps.sh).
fn aborting_library(dir: &Path) -> PathBuf {
    let source = dir.join("abort.c");
    std::fs::write(
        &source,
        "#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) { abort(); }\n",
    )
    .expect("write");
    let library = dir.join("aborts-on-load.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    library
}

#[test]
fn files_that_kill_whoever_loads_them_are_refused_and_the_hub_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A plugin still being copied: the first third of the tally library.
    let whole = std::fs::read(so("fedmsg_example_tally")).expect("read");
    let truncated = dir.path().join("a-truncated.so");
    std::fs::write(&truncated, &whole[..whole.len() / 3]).expect("write");
    let aborting = aborting_library(dir.path());
    std::fs::copy(so("fedmsg_example_echo"), dir.path().join("c-echo.so")).expect("copy");

    // Loading either in this process would kill it (SIGBUS, SIGABRT);
    // the probe process dies instead.
    let error = load_file(&aborting).expect_err("refused");
    assert!(
        matches!(&error.kind, LoadErrorKind::ProbeFailed(why) if why.contains("SIGABRT")),
        "{error}"
    );
    let results = load_dir(dir.path());
    assert_eq!(results.len(), 3);
    for refused in &results[..2] {
        let error = refused.as_ref().expect_err("refused");
        assert!(
            matches!(
                &error.kind,
                LoadErrorKind::ProbeFailed(_) | LoadErrorKind::NotALibrary(_)
            ),
            "{error}"
        );
    }
    assert_eq!(
        results[2].as_ref().map(PluginLibrary::name).ok(),
        Some("fedmsg-example-echo"),
        "the good plugin still loads"
    );
}
