//! The plugin against a scripted IRC server on a loopback socket: the
//! protocol paths ngircd cannot show (SASL, `+c`, a kick, the skip
//! summary's place) and the ones that must be exact (PONG not queued).
//! The end-to-end tests (`tests/tests/e2e/irc.rs`) run a real ngircd.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fedmsg_plugin_api::{ConsumerPlugin, HubContext, Message, MetaRendering, PluginConfig};
use serde_json::{json, Value};

use super::*;

/// Every wait of these tests; generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// fedmsg.meta stand-in: title = topic without its first three parts,
/// subtitle = `msg.text`, link = `msg.link`.
struct FakeMeta;

impl MetaSource for FakeMeta {
    fn render(&self, topic: &str, body: &str) -> Result<MetaRendering, String> {
        let body: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
        let title = render::fallback_title(topic);
        let subtitle = body["msg"]["text"].as_str().unwrap_or("").to_owned();
        let link = body["msg"]["link"].as_str().map(str::to_owned);
        let repr = format!("{title} -- {subtitle} {}", link.as_deref().unwrap_or(""));
        serde_json::from_value(
            json!({"title": title, "subtitle": subtitle, "link": link, "repr": repr}),
        )
        .map_err(|e| e.to_string())
    }
}

/// One accepted connection, read line by line.
struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Peer {
    fn accept(listener: &TcpListener) -> Peer {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + WAIT;
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the bot did not connect");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        Peer {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// The next line from the bot (without CRLF).
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("a line from the bot");
        assert!(n > 0, "the bot closed the connection");
        assert!(line.ends_with("\r\n"), "not CRLF-terminated: {line:?}");
        assert!(line.len() <= proto::MAX_LINE, "too long: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// Reads lines until one starts with `prefix`; returns it.
    fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write to the bot");
    }

    /// Welcome, join confirmation, channel modes.
    fn welcome_and_join(&mut self, nick: &str, modes: &str) {
        self.send(&format!(":srv 001 {nick} :Welcome"));
        self.expect("JOIN #chan");
        self.send(&format!(":{nick}!~{nick}@127.0.0.1 JOIN :#chan"));
        self.expect("MODE #chan");
        self.send(&format!(":srv 324 {nick} #chan {modes}"));
    }
}

fn config(port: u16, extra: Value, global: Value) -> Settings {
    let mut bot = json!({"network": "127.0.0.1", "port": port, "channel": "chan",
                         "nickname": "bot", "line_rate": 0, "timeout": 30});
    if let (Some(bot), Some(extra)) = (bot.as_object_mut(), extra.as_object()) {
        bot.extend(extra.clone());
    }
    let mut all = json!({"irc": [bot], "irc_color_lookup": {"logger": "orange"}});
    if let (Some(all), Some(global)) = (all.as_object_mut(), global.as_object()) {
        all.extend(global.clone());
    }
    Settings::from_config(&PluginConfig::new(all, "fedmsg.consumers.ircbot")).expect("settings")
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

fn start(settings: Settings) -> IrcBot {
    IrcBot::start(settings, Arc::new(FakeMeta)).expect("start")
}

fn body(text: &str) -> String {
    json!({"topic": "org.fedoraproject.dev.logger.log", "msg": {"text": text}, "i": 1}).to_string()
}

const TOPIC: &str = "org.fedoraproject.dev.logger.log";

/// Waits until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn registers_joins_and_shows_pretty_and_plain_lines() {
    let (listener, port) = listener();
    let mut bot = start(config(
        port,
        json!({"make_terse": true, "make_pretty": true, "filters": {"body": ["lub-dub"], "topic": ["\\.secret\\."]}}),
        json!({}),
    ));
    let mut peer = Peer::accept(&listener);
    assert_eq!(peer.expect("NICK"), "NICK bot");
    assert_eq!(peer.expect("USER"), "USER bot 0 * :fedmsg-hub IRC bot");
    peer.welcome_and_join("bot", "+nt");
    eventually("joined", || bot.joined() == [true]);

    bot.offer(TOPIC, &body("hello"));
    bot.offer(TOPIC, &body("lub-dub"));
    bot.offer("org.fedoraproject.dev.secret.x", &body("hidden"));
    bot.offer(TOPIC, &body("a\r\nPRIVMSG #other :pwned"));
    assert_eq!(
        peer.expect("NOTICE"),
        "NOTICE #chan :\x0307logger.log\x03 -- hello "
    );
    assert_eq!(
        peer.expect("NOTICE"),
        "NOTICE #chan :\x0307logger.log\x03 -- a  PRIVMSG #other :pwned "
    );
    // +c: colours off from now on.
    peer.send(":op!o@h MODE #chan +c");
    eventually("+c seen", || {
        bot.bots[0]
            .shared
            .link
            .wait_joined(Duration::ZERO)
            .is_some_and(|j| j.colours_blocked)
    });
    bot.offer(TOPIC, &body("plain"));
    assert_eq!(peer.expect("NOTICE"), "NOTICE #chan :logger.log -- plain ");

    let long = "ü".repeat(5000);
    bot.offer(TOPIC, &body(&long));
    let line = peer.expect("NOTICE");
    assert!(line.ends_with('…'), "{line}");
    assert!(line.len() + 2 + proto::prefix_reserve("bot") <= proto::MAX_LINE);

    bot.stop();
    assert_eq!(peer.expect("QUIT"), "QUIT :fedmsg-hub stopping");
    let (plugin, bots) = bot.stats();
    assert_eq!(plugin.consumed, 6);
    let s = bots[0];
    assert_eq!((s.queued, s.filtered_body, s.filtered_topic), (4, 1, 1));
    assert_eq!((s.lines_sent, s.lines_cut, s.joins), (4, 1, 1));
}

#[test]
fn pong_is_not_queued_behind_message_lines() {
    let (listener, port) = listener();
    // One line a minute: the second message waits 60 s for its turn.
    let bot = start(config(
        port,
        json!({"line_rate": 60, "make_terse": true}),
        json!({}),
    ));
    let mut peer = Peer::accept(&listener);
    peer.expect("USER");
    peer.welcome_and_join("bot", "+");
    bot.offer(TOPIC, &body("first"));
    bot.offer(TOPIC, &body("second"));
    assert_eq!(peer.expect("NOTICE"), "NOTICE #chan :logger.log -- first ");
    let asked = Instant::now();
    peer.send("PING :token-1");
    assert_eq!(peer.line(), "PONG :token-1");
    assert!(asked.elapsed() < Duration::from_secs(20), "PONG waited");
    assert_eq!(bot.bots[0].shared.queue.len(), 1, "second still queued");
}

#[test]
fn overflow_drops_the_oldest_and_reports_the_gap_once() {
    let (listener, port) = listener();
    let bot = start(config(
        port,
        json!({"max_queue": 3}),
        json!({"irc_method": "msg"}),
    ));
    // Not joined yet: messages wait, bounded.
    for i in 0..10 {
        bot.offer(TOPIC, &body(&format!("m{i}")));
    }
    let mut peer = Peer::accept(&listener);
    peer.expect("USER");
    peer.welcome_and_join("bot", "+");
    assert_eq!(
        peer.expect("PRIVMSG"),
        "PRIVMSG #chan :… 7 messages skipped"
    );
    for i in 7..10 {
        let line = peer.expect("PRIVMSG");
        assert!(line.contains(&format!("\"text\":\"m{i}\"")), "{line}");
        assert!(
            line.starts_with(&format!("PRIVMSG #chan :{TOPIC:<30} {{")),
            "{line}"
        );
    }
    let s = bot.stats().1[0];
    assert_eq!((s.skipped, s.queued), (7, 10));
    eventually("counted", || {
        let s = bot.stats().1[0];
        s.summaries_sent == 1 && s.lines_sent == 3
    });
}

#[test]
fn nick_collision_then_regain() {
    let (listener, port) = listener();
    let bot = start(config(port, json!({"regain_interval": 0.2}), json!({})));
    let mut peer = Peer::accept(&listener);
    assert_eq!(peer.expect("NICK"), "NICK bot");
    peer.send(":srv 433 * bot :Nickname is already in use");
    assert_eq!(peer.expect("NICK"), "NICK bot_");
    peer.welcome_and_join("bot_", "+");
    // Still taken: ISON says so, no NICK.
    assert_eq!(peer.expect("ISON"), "ISON :bot");
    peer.send(":srv 303 bot_ :bot");
    assert_eq!(peer.expect("ISON"), "ISON :bot");
    // Free now.
    peer.send(":srv 303 bot_ :");
    assert_eq!(peer.expect("NICK"), "NICK bot");
    peer.send(":bot_!~bot@127.0.0.1 NICK :bot");
    eventually("regained", || bot.nicks() == ["bot"]);
    let s = bot.stats().1[0];
    assert_eq!((s.nick_collisions, s.nick_regained), (1, 1));
}

#[test]
fn sasl_plain_then_nickserv_is_not_used() {
    let (listener, port) = listener();
    let _bot = start(config(
        port,
        json!({"sasl_password": "s3cret", "sasl_username": "acct", "nickserv_password": "x", "password": "srvpw"}),
        json!({}),
    ));
    let mut peer = Peer::accept(&listener);
    assert_eq!(peer.line(), "CAP REQ :sasl");
    assert_eq!(peer.line(), "PASS :srvpw");
    peer.expect("USER");
    peer.send(":srv CAP * ACK :sasl");
    assert_eq!(peer.line(), "AUTHENTICATE PLAIN");
    peer.send("AUTHENTICATE +");
    let expected = base64::engine::general_purpose::STANDARD.encode("acct\0acct\0s3cret");
    assert_eq!(peer.line(), format!("AUTHENTICATE {expected}"));
    peer.send(":srv 903 bot :SASL authentication successful");
    assert_eq!(peer.line(), "CAP END");
    peer.send(":srv 001 bot :Welcome");
    // With SASL, no NickServ IDENTIFY.
    assert_eq!(peer.line(), "JOIN #chan");
}

#[test]
fn nickserv_identify_after_welcome() {
    let (listener, port) = listener();
    let _bot = start(config(port, json!({"nickserv_password": "pw"}), json!({})));
    let mut peer = Peer::accept(&listener);
    peer.expect("USER");
    peer.send(":srv 001 bot :Welcome");
    assert_eq!(peer.line(), "PRIVMSG NickServ :IDENTIFY bot pw");
    assert_eq!(peer.line(), "JOIN #chan");
}

#[test]
fn kicked_rejoins_after_the_delay_and_reconnects_after_a_loss() {
    let (listener, port) = listener();
    let bot = start(config(port, json!({"rejoin_delay": 0.3}), json!({})));
    let mut peer = Peer::accept(&listener);
    peer.expect("USER");
    peer.welcome_and_join("bot", "+");
    eventually("joined", || bot.joined() == [true]);
    let kicked = Instant::now();
    peer.send(":op!o@h KICK #chan bot :spam");
    peer.expect("JOIN #chan");
    assert!(
        kicked.elapsed() >= Duration::from_millis(300),
        "rejoined too early"
    );
    assert_eq!(bot.stats().1[0].kicks, 1);

    // The server goes away: the bot comes back (backoff ≤ 1 s first).
    drop(peer);
    let mut peer = Peer::accept(&listener);
    peer.expect("NICK bot");
    peer.expect("USER");
    peer.welcome_and_join("bot", "+");
    eventually("joined again", || bot.joined() == [true]);
    let s = bot.stats().1[0];
    assert_eq!((s.connects, s.disconnects, s.joins), (2, 1, 2));
}

#[test]
fn the_plugin_through_its_trait() {
    // A detached context has no fedmsg.meta: terse lines fall back to the
    // topic, counted.
    let (listener, port) = listener();
    let config = PluginConfig::new(
        json!({"irc": [{"network": "127.0.0.1", "port": port, "channel": "#c", "line_rate": 0,
                        "make_terse": true}]}),
        "fedmsg.consumers.ircbot",
    );
    assert_eq!(IrcBot::topics(&config).unwrap(), vec!["*"]);
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = IrcBot::new(&config, HubContext::detached("irc", dir.path())).unwrap();
    let mut peer = Peer::accept(&listener);
    peer.expect("USER");
    peer.send(":srv 001 fedmsg-bot :Welcome");
    peer.expect("JOIN #c");
    peer.send(":fedmsg-bot!u@h JOIN #c");
    peer.expect("MODE #c");
    peer.send(":srv 324 fedmsg-bot #c +");
    let body = body("x");
    plugin.consume(&Message::new(TOPIC, &body)).unwrap();
    assert_eq!(peer.expect("NOTICE"), "NOTICE #c :logger.log --  ");
    assert_eq!(plugin.stats().1[0].meta_failures, 1);
    plugin.shutdown();
    peer.expect("QUIT");

    let bad = PluginConfig::new(
        json!({"irc": [{"channel": "#a b"}]}),
        "fedmsg.consumers.ircbot",
    );
    let err = IrcBot::new(&bad, HubContext::detached("irc", dir.path())).unwrap_err();
    assert!(err.render().contains("irc[0].channel"), "{}", err.render());
}
