//! busmon in a real hub: moksha's WebSocket protocol (subscribe frames in,
//! `{"topic","body"}` out, exactly the matching messages), SSE `/stream`
//! with a plain HTTP client, `/_heartbeat`, the client limit, refused
//! client frames counted. All on loopback, on free ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fedmsg_e2e::bus::free_port;
use fedmsg_e2e::{envelope, Hub, Publisher, Sandbox, WAIT};
use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn start(extra: &str) -> Result<(Sandbox, Publisher, Hub, u16)> {
    let mut publisher = Publisher::bind()?;
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin("fedmsg-busmon")?;
    let port = free_port()?;
    sandbox.write_config(
        "hub.toml",
        &format!(
            "{}\n[busmon]\nenabled = true\nhttp_listen = \"127.0.0.1:{port}\"\n{extra}",
            sandbox.base_config(publisher.endpoint())
        ),
    )?;
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;
    let deadline = Instant::now() + WAIT;
    while http_get(port, "/_heartbeat").is_err() {
        ensure!(
            Instant::now() < deadline,
            "busmon never answered:\n{}",
            hub.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((sandbox, publisher, hub, port))
}

/// `GET path` → (status line and headers, body).
fn http_get(port: u16, path: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    Ok((head.to_owned(), body.to_owned()))
}

fn connect(port: u16) -> Result<Ws> {
    let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/"))?;
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
    }
    Ok(ws)
}

fn subscribe(ws: &mut Ws, pattern: &str) -> Result<()> {
    let frame = serde_json::json!({"topic": "__topic_subscribe__", "body": pattern});
    ws.send(Message::text(frame.to_string()))?;
    Ok(())
}

/// Frames received within `for_at_most`, as (topic, envelope).
fn receive(ws: &mut Ws, into: &mut Vec<(String, Value)>, for_at_most: Duration) -> Result<()> {
    let deadline = Instant::now() + for_at_most;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(text.as_str())?;
                let topic = frame["topic"].as_str().context("topic")?.to_owned();
                ensure!(
                    frame["body"]["topic"] == topic,
                    "body of another topic: {frame}"
                );
                into.push((topic, frame["body"].clone()));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => bail!("websocket: {e}"),
        }
    }
    Ok(())
}

fn ids(frames: &[(String, Value)]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|(_, body)| body["msg_id"].as_str().map(str::to_owned))
        .filter(|id| !id.starts_with("probe"))
        .collect()
}

#[test]
fn busmon_websocket_and_sse_get_exactly_the_matching_messages() -> Result<()> {
    let (_sandbox, publisher, mut hub, port) = start("max_clients = 4\n")?;
    let (head, body) = http_get(port, "/_heartbeat")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    ensure!(body == "I am ok.  Thanks for asking.", "{body}");

    let mut a = connect(port)?;
    subscribe(&mut a, "org.test.a.*")?;
    let mut b = connect(port)?;
    subscribe(&mut b, "org.test.b.x")?;
    subscribe(&mut b, "org.test.a.y")?;
    let mut quiet = connect(port)?;

    let mut sse = TcpStream::connect(("127.0.0.1", port))?;
    sse.set_read_timeout(Some(Duration::from_millis(100)))?;
    write!(
        sse,
        "GET /stream?topic=org.test.b.* HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )?;
    let mut sse_reader = BufReader::new(sse.try_clone()?);
    let mut sse_text = String::new();
    let mut read_sse = |text: &mut String| {
        let mut line = String::new();
        while sse_reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            text.push_str(&line);
            line.clear();
        }
    };

    // Subscriptions are taken asynchronously: probe until both clients see one.
    let (mut got_a, mut got_b, mut got_quiet) = (Vec::new(), Vec::new(), Vec::new());
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        ensure!(
            Instant::now() < deadline,
            "no probe reached both clients:\n{}",
            hub.log()
        );
        publisher.send("org.test.a.y", &format!("probe-{n}"))?;
        receive(&mut a, &mut got_a, Duration::from_millis(200))?;
        receive(&mut b, &mut got_b, Duration::from_millis(200))?;
        if !got_a.is_empty() && !got_b.is_empty() {
            break;
        }
    }
    read_sse(&mut sse_text);
    ensure!(sse_text.contains(": busmon"), "{sse_text}");

    // The fifth client is one too many.
    match tungstenite::connect(format!("ws://127.0.0.1:{port}/")) {
        Err(tungstenite::Error::Http(response)) => {
            ensure!(response.status() == 503, "{:?}", response.status())
        }
        Err(e) => bail!("unexpected refusal: {e}"),
        Ok(_) => bail!("a fifth client was accepted with max_clients = 4"),
    }
    // Frames busmon refuses: not moksha's, and a publish (client2server off).
    a.send(Message::text("not json"))?;
    a.send(Message::text(r#"{"topic":"org.test.a.x","body":{"x":1}}"#))?;

    let sent = [
        ("org.test.a.x", "m1"),
        ("org.test.b.x", "m2"),
        ("org.test.a.y", "m3"),
        ("org.test.c.z", "m4"),
        ("org.test.b.xyz", "m5"),
        ("org.test.a.y", "end"),
    ];
    for (topic, id) in sent {
        publisher.send(topic, id)?;
    }
    let deadline = Instant::now() + WAIT;
    while !(ids(&got_a).contains(&"end".to_owned()) && ids(&got_b).contains(&"end".to_owned())) {
        ensure!(
            Instant::now() < deadline,
            "a: {:?} b: {:?}",
            ids(&got_a),
            ids(&got_b)
        );
        receive(&mut a, &mut got_a, Duration::from_millis(200))?;
        receive(&mut b, &mut got_b, Duration::from_millis(200))?;
    }
    receive(&mut quiet, &mut got_quiet, Duration::from_millis(500))?;
    ensure!(ids(&got_a) == ["m1", "m3", "end"], "{:?}", ids(&got_a));
    // A glob without wildcard is a prefix (fedmsg's rule): b.xyz matches b.x.
    ensure!(
        ids(&got_b) == ["m2", "m3", "m5", "end"],
        "{:?}",
        ids(&got_b)
    );
    ensure!(
        got_quiet.is_empty(),
        "a client without subscriptions got {got_quiet:?}"
    );
    // The envelope arrives as published.
    let m1 = &got_a
        .iter()
        .find(|(_, b)| b["msg_id"] == "m1")
        .context("m1")?
        .1;
    let published: Value = serde_json::from_str(&envelope("org.test.a.x", "m1"))?;
    ensure!(*m1 == published, "{m1} != {published}");

    let deadline = Instant::now() + WAIT;
    while !sse_text.contains("\"m5\"") {
        ensure!(Instant::now() < deadline, "SSE:\n{sse_text}");
        read_sse(&mut sse_text);
    }
    for id in ["m2", "m5"] {
        ensure!(sse_text.contains(&format!("id: {id}\n")), "{sse_text}");
    }
    for id in ["m1", "m3", "m4", "end"] {
        ensure!(
            !sse_text.contains(&format!("\"{id}\"")),
            "SSE got {id}:\n{sse_text}"
        );
    }

    let (_, stats) = http_get(port, "/api/stats")?;
    let stats: Value = serde_json::from_str(&stats)?;
    ensure!(stats["bad_frames"] == 1, "{stats}");
    ensure!(stats["publish_refused"] == 1, "{stats}");
    ensure!(stats["clients_refused"] == 1, "{stats}");
    ensure!(stats["rates"]["total"].as_u64() >= Some(6), "{stats}");
    drop((a, b, quiet, sse));
    ensure!(hub.terminate()?.success(), "{}", hub.log());
    ensure!(hub.log().contains("busmon stopped"), "{}", hub.log());
    Ok(())
}
