//! Unit tests: settings, the self-loop check, forwarding bytes unchanged.

use std::time::Duration;

use fedmsg_plugin_api::serde_json::json;

use super::*;

fn settings(global: &Value) -> Result<Settings, GatewayError> {
    Settings::from_config(&PluginConfig::new(
        global.clone(),
        "fedmsg.consumers.gateway",
    ))
}

#[test]
fn defaults_where_fedmsg_raised_key_error() {
    let s = settings(&json!({})).unwrap();
    assert_eq!(s.port, 9940);
    assert_eq!(s.high_water_mark, 10_000);
    assert_eq!(s.bind_url(), "tcp://*:9940");
    assert!(!s.validate);
    let flat =
        json!({"fedmsg.consumers.gateway.port": 9999, "fedmsg.consumers.gateway.enabled": true});
    assert_eq!(settings(&flat).unwrap().port, 9999);
}

#[test]
fn bad_settings_are_named() {
    let e = settings(&json!({"fedmsg": {"consumers": {"gateway": {"port": "x"}}}})).unwrap_err();
    assert!(e.to_string().contains("fedmsg.consumers.gateway"), "{e}");
    let e = settings(&json!({"fedmsg": {"consumers": {"gateway": {"high_water_mark": -1}}}}))
        .unwrap_err();
    assert!(e.to_string().contains("high_water_mark"), "{e}");
    let e = settings(&json!({"fedmsg": {"consumers": {"gateway": {"prot": 1}}}})).unwrap_err();
    assert!(e.to_string().contains("prot"), "{e}");
    let one = json!({"fedmsg": {"consumers": {"gateway": {"public_url": "tcp://a:1", "interface": "::1"}}}});
    let s = settings(&one).unwrap();
    assert_eq!(s.public_url, vec!["tcp://a:1".to_string()]);
    assert_eq!(s.bind_url(), "tcp://[::1]:9940");
}

#[test]
fn urls() {
    assert_eq!(tcp_host_port("tcp://a.b:9940"), Some(("a.b", 9940)));
    assert_eq!(tcp_host_port("tcp://[::1]:5"), Some(("::1", 5)));
    assert_eq!(tcp_host_port("ipc:///x"), None);
    assert_eq!(tcp_host_port("tcp://a:b"), None);
}

#[test]
fn self_loop_is_found() {
    let s = Settings::default();
    let eps = |url: &str| {
        endpoints(&json!({"endpoints": {"me": url, "other": ["tcp://192.0.2.7:9940"]}})).unwrap()
    };
    for url in [
        "tcp://127.0.0.1:9940",
        "tcp://localhost:9940",
        "tcp://*:9940",
        "tcp://0.0.0.0:9940",
        "tcp://[::1]:9940",
    ] {
        let e = find_self_loop(&s, &eps(url)).unwrap_or_else(|| panic!("{url}"));
        let text = e.to_string();
        assert!(
            text.contains("\"me\"") && text.contains("forever"),
            "{text}"
        );
    }
    // Another port of this machine, or the gateway's port elsewhere
    // (TEST-NET-1, never local): not a loop.
    assert!(find_self_loop(&s, &eps("tcp://127.0.0.1:9941")).is_none());
    let public = Settings {
        public_url: vec!["tcp://hub.example.org:9940".into()],
        ..Settings::default()
    };
    let e = find_self_loop(&public, &eps("tcp://hub.example.org:9940")).unwrap();
    assert!(e.to_string().contains("public_url"), "{e}");
}

#[test]
fn self_loop_refuses_to_start() {
    let s = Settings {
        interface: "127.0.0.1".into(),
        port: free_port(),
        ..Settings::default()
    };
    let eps =
        endpoints(&json!({"endpoints": {"gw": format!("tcp://127.0.0.1:{}", s.port)}})).unwrap();
    assert!(matches!(
        Gateway::start(&s, &eps),
        Err(GatewayError::SelfLoop { .. })
    ));
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn forwards_bytes_unchanged() {
    let s = Settings {
        interface: "127.0.0.1".into(),
        port: free_port(),
        ..Settings::default()
    };
    let gateway = Gateway::start(&s, &BTreeMap::new()).unwrap();
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvtimeo(100).unwrap();
    sub.connect(gateway.url()).unwrap();
    // Odd spacing, key order and escapes: nothing may be re-encoded.
    let body = "{\"topic\":\"org.x\", \"b\" : \"\\u00e9\u{e9}\",\"a\":1.50}";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        gateway.forward("org.x", body).unwrap();
        if let Ok(frames) = sub.recv_multipart(0) {
            assert_eq!(frames, vec![b"org.x".to_vec(), body.as_bytes().to_vec()]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing received");
    }
    assert!(gateway.stats().forwarded.load(Ordering::Relaxed) >= 1);
    assert_eq!(gateway.stats().send_failed.load(Ordering::Relaxed), 0);
}
