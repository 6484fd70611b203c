//! The connection thread of one bot: connect, register (SASL PLAIN, server
//! password, NickServ), join, and then read, answering the server at once:
//! PING → PONG without waiting behind message lines (those are written by
//! the send thread, [`crate::sender`]). Around that:
//!
//! - nickname in use at registration → `_` appended; the wanted nickname is
//!   taken back when it frees (ISON every `regain_interval`, and at once
//!   when its holder is seen leaving);
//! - kicked, or the join refused → join again after `rejoin_delay`;
//! - `+c` on the channel (seen in the mode reply after joining, or a mode
//!   change) → lines without colours until `-c`; checked again at every
//!   join (upstream turned colours off for good);
//! - no traffic for [`PING_AFTER`] → our own PING; none for [`DEAD_AFTER`]
//!   → the connection is given up;
//! - any loss → reconnect after an exponential backoff with jitter
//!   ([`crate::backoff`]), reset once a connection has worked for a while.
//!
//! Log lines the server can cause are rate-limited per bot.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fedmsg_plugin_api::tracing;
use fedmsg_wire::ratelimit::LogLimiter;
use fedmsg_wire::shutdown::Stop;
use openssl::ssl::SslConnector;

use crate::backoff::Backoff;
use crate::proto::{clean, command_line, irc_eq, Line, MAX_RECEIVED_LINE};
use crate::queue::OutQueue;
use crate::settings::BotSettings;
use crate::stats::{bump, BotStats};
use crate::transport::{ConnectError, Connection, ReadOutcome};

/// How long the reader waits for bytes before looking at its timers and
/// the stop signal.
const POLL: Duration = Duration::from_millis(200);

/// Silence after which we PING the server.
pub const PING_AFTER: Duration = Duration::from_secs(90);

/// Silence after which the connection is considered dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(180);

/// How long a registered connection must have lasted for the next
/// reconnect to start the backoff over (a server that accepts and drops
/// us at once keeps backing off).
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Nicknames tried at registration (`nick`, `nick_`, `nick__`, ...).
const MAX_NICK_TRIES: usize = 10;

/// Give up on capability negotiation (and register without SASL) after
/// this long without an answer.
const CAP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long lines wait for the channel modes after joining.
const MODE_TIMEOUT: Duration = Duration::from_secs(5);

/// The IRC "real name" we register with.
const REALNAME: &str = "fedmsg-hub IRC bot";

/// What the send thread needs to know about the connection.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The connection.
    pub conn: Arc<Connection>,
    /// Our current nickname (the relay prefix's length depends on it).
    pub nick: String,
    /// The channel is `+c`: no colours.
    pub colours_blocked: bool,
}

#[derive(Debug, Default)]
struct LinkState {
    conn: Option<Arc<Connection>>,
    nick: String,
    joined: bool,
    colours_blocked: bool,
}

/// The state of one bot's connection, shared by its two threads and the
/// plugin.
#[derive(Debug, Default)]
pub struct Link {
    state: Mutex<LinkState>,
    changed: Condvar,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // Plain data, updated field by field: a poisoned lock holds a
        // consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut LinkState)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// The connection while joined to the channel; waits up to `timeout`.
    pub fn wait_joined(&self, timeout: Duration) -> Option<Joined> {
        let mut state = self.lock();
        if !state.joined {
            state = match self.changed.wait_timeout(state, timeout) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        match (&state.conn, state.joined) {
            (Some(conn), true) => Some(Joined {
                conn: Arc::clone(conn),
                nick: state.nick.clone(),
                colours_blocked: state.colours_blocked,
            }),
            _ => None,
        }
    }

    /// True while joined.
    pub fn is_joined(&self) -> bool {
        self.lock().joined
    }

    /// Our current nickname (empty before the first registration).
    pub fn nick(&self) -> String {
        self.lock().nick.clone()
    }

    /// The current connection, if any.
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.lock().conn.clone()
    }

    /// Wakes everyone waiting (shutdown).
    pub fn wake(&self) {
        self.changed.notify_all();
    }
}

/// Everything of one bot that its threads share.
pub struct BotShared {
    /// The bot's settings.
    pub settings: BotSettings,
    /// Its outgoing queue.
    pub queue: OutQueue,
    /// Its connection state.
    pub link: Link,
    /// Its counters.
    pub stats: BotStats,
    /// Set when the plugin stops.
    pub stop: Stop,
    /// The TLS client, when `ssl`.
    pub tls: Option<SslConnector>,
    /// Limits log lines the server (or the network) can cause.
    pub remote_log: LogLimiter,
    /// Limits log lines about (re)connecting.
    pub connect_log: LogLimiter,
    /// Limits the informational lines a server can cause (joined,
    /// registered, nickname, channel modes): a server repeating them
    /// must not fill the log.
    pub info_log: LogLimiter,
}

impl std::fmt::Debug for BotShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotShared")
            .field("bot", &self.settings.label())
            .finish_non_exhaustive()
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    /// The plugin is stopping.
    #[error("stopping")]
    Stopped,
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent ERROR.
    #[error("the server said: {0}")]
    ServerError(String),
    /// Reading or writing failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// No traffic for [`DEAD_AFTER`].
    #[error("no traffic for {0:?} (ping timeout)")]
    PingTimeout(Duration),
    /// Registration did not finish within `timeout`.
    #[error("registration did not finish within {0:?}")]
    RegistrationTimeout(Duration),
    /// The server refused every nickname we tried.
    #[error("nickname refused: {0}")]
    NickRefused(String),
}

/// The connection thread's body: sessions until the stop signal, with a
/// backoff between them.
pub fn run(bot: &BotShared) {
    let mut backoff = Backoff::new();
    let label = bot.settings.label();
    loop {
        let started = Instant::now();
        let mut registered_at = None;
        let end = session(bot, &mut registered_at);
        bot.link.update(|s| {
            s.conn = None;
            s.joined = false;
        });
        if matches!(end, SessionEnd::Stopped) || bot.stop.is_triggered() {
            return;
        }
        match &end {
            SessionEnd::Connect(ConnectError::Tls { .. }) => bump(&bot.stats.tls_failures),
            SessionEnd::Connect(_) => bump(&bot.stats.connect_failures),
            SessionEnd::RegistrationTimeout(_) | SessionEnd::NickRefused(_) => {
                bump(&bot.stats.registration_failures)
            }
            SessionEnd::PingTimeout(_) => bump(&bot.stats.ping_timeouts),
            SessionEnd::Closed | SessionEnd::ServerError(_) | SessionEnd::Io(_) => {
                bump(&bot.stats.disconnects)
            }
            SessionEnd::Stopped => {}
        }
        if registered_at.is_some_and(|at: Instant| at.elapsed() >= STABLE_AFTER) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        if let Some(suppressed) = bot.connect_log.check() {
            tracing::warn!(
                bot = %label,
                error = %end,
                retry_in_ms = delay.as_millis() as u64,
                lasted_ms = started.elapsed().as_millis() as u64,
                suppressed,
                "IRC connection lost or failed; reconnecting"
            );
        }
        if !bot.stop.sleep(delay) {
            return;
        }
    }
}

/// One connection, from connect to loss.
fn session(bot: &BotShared, registered_at: &mut Option<Instant>) -> SessionEnd {
    let conn = match Connection::open(&bot.settings, bot.tls.as_ref()) {
        Ok(conn) => Arc::new(conn),
        Err(e) => return e.into(),
    };
    bump(&bot.stats.connects);
    bot.link.update(|s| {
        s.conn = Some(Arc::clone(&conn));
        s.joined = false;
        s.colours_blocked = false;
    });
    let mut session = Session::new(bot, Arc::clone(&conn));
    let end = session.run();
    *registered_at = session.registered_at;
    if matches!(end, SessionEnd::Stopped) {
        let _ = conn.try_send(&command_line("QUIT", &[], Some("fedmsg-hub stopping")));
    }
    conn.shutdown();
    end
}

/// The protocol state of one connection.
struct Session<'a> {
    bot: &'a BotShared,
    conn: Arc<Connection>,
    /// The nickname we have (or are trying to get, before registration).
    nick: String,
    nick_tries: usize,
    registered_at: Option<Instant>,
    joined: bool,
    /// Capability negotiation (SASL) is open: registration waits for it.
    negotiating: bool,
    started: Instant,
    last_received: Instant,
    pinged: bool,
    rejoin_at: Option<Instant>,
    /// Joined and asked for the channel modes, lines held until the answer.
    modes_asked: Option<Instant>,
    next_regain: Instant,
    buf: Vec<u8>,
    /// Dropping the rest of an over-long line.
    discarding: bool,
}

impl<'a> Session<'a> {
    fn new(bot: &'a BotShared, conn: Arc<Connection>) -> Session<'a> {
        let now = Instant::now();
        Session {
            bot,
            conn,
            nick: bot.settings.nickname.clone(),
            nick_tries: 1,
            registered_at: None,
            joined: false,
            negotiating: false,
            started: now,
            last_received: now,
            pinged: false,
            rejoin_at: None,
            modes_asked: None,
            next_regain: now,
            buf: Vec::with_capacity(4096),
            discarding: false,
        }
    }

    fn settings(&self) -> &'a BotSettings {
        &self.bot.settings
    }

    fn send(&self, command: &str, params: &[&str], trailing: Option<&str>) -> std::io::Result<()> {
        self.conn.send(&command_line(command, params, trailing))
    }

    /// A warning the server can cause, rate-limited.
    fn remote_warn(&self, what: &str, detail: &str) {
        if let Some(suppressed) = self.bot.remote_log.check() {
            tracing::warn!(
                bot = %self.settings().label(),
                nick = %self.nick,
                detail = %clean(detail),
                suppressed,
                "{what}"
            );
        }
    }

    /// An informational line the server can cause, rate-limited.
    fn remote_info(&self, what: &str) {
        if let Some(suppressed) = self.bot.info_log.check() {
            tracing::info!(
                bot = %self.settings().label(),
                nick = %self.nick,
                suppressed,
                "{what}"
            );
        }
    }

    fn run(&mut self) -> SessionEnd {
        match self.register() {
            Ok(()) => {}
            Err(e) => return e.into(),
        }
        loop {
            if self.bot.stop.is_triggered() {
                return SessionEnd::Stopped;
            }
            if let Err(end) = self.timers() {
                return end;
            }
            match self.conn.wait_readable(POLL) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => return e.into(),
            }
            match self.conn.read_available(&mut self.buf, MAX_RECEIVED_LINE) {
                Ok(ReadOutcome::Closed) => return SessionEnd::Closed,
                Ok(ReadOutcome::Data(0)) => {}
                Ok(ReadOutcome::Data(_)) => self.last_received = Instant::now(),
                Err(e) => return e.into(),
            }
            if let Err(end) = self.process_buffer() {
                return end;
            }
        }
    }

    fn register(&mut self) -> std::io::Result<()> {
        if self.settings().sasl.is_some() {
            // Registration is held until `CAP END`.
            self.negotiating = true;
            self.send("CAP", &["REQ"], Some("sasl"))?;
        }
        if let Some(password) = &self.settings().password {
            self.send("PASS", &[], Some(password))?;
        }
        let nick = self.nick.clone();
        self.send("NICK", &[&nick], None)?;
        self.send("USER", &[&nick, "0", "*"], Some(REALNAME))
    }

    /// Splits complete lines off the buffer and handles them.
    fn process_buffer(&mut self) -> Result<(), SessionEnd> {
        let mut start = 0;
        while let Some(offset) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let raw = &self.buf[start..end];
            start = end + 1;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            let text = String::from_utf8_lossy(raw).into_owned();
            self.handle_text(&text)?;
        }
        self.buf.drain(..start);
        if self.buf.len() >= MAX_RECEIVED_LINE {
            // A line longer than IRC allows: drop it up to its end.
            bump(&self.bot.stats.bad_lines);
            self.remote_warn("over-long line from the server dropped", "");
            self.buf.clear();
            self.discarding = true;
        }
        Ok(())
    }

    fn handle_text(&mut self, text: &str) -> Result<(), SessionEnd> {
        match Line::parse(text) {
            Ok(line) => self.handle(&line),
            Err(crate::proto::ParseError::Empty) => Ok(()),
            Err(e) => {
                bump(&self.bot.stats.bad_lines);
                self.remote_warn(&format!("unparsable line from the server ({e})"), text);
                Ok(())
            }
        }
    }

    fn is_our_channel(&self, name: &str) -> bool {
        irc_eq(name, &self.settings().channel)
    }

    fn handle(&mut self, line: &Line<'_>) -> Result<(), SessionEnd> {
        let bot: &'a BotShared = self.bot;
        let stats = &bot.stats;
        let wanted = self.settings().nickname.clone();
        match line.command.to_ascii_uppercase().as_str() {
            "PING" => {
                // Answered here, at once: message lines are written by the
                // send thread and never delay this.
                let token = line.params.last().copied().unwrap_or("");
                self.send("PONG", &[], Some(token))?;
                bump(&stats.pings_answered);
            }
            "ERROR" => return Err(SessionEnd::ServerError(clean(line.param(0)).into_owned())),
            "001" => self.welcome(line)?,
            "433" | "436" | "437" if self.registered_at.is_none() => self.nick_taken(line)?,
            "432" if self.registered_at.is_none() => {
                return Err(SessionEnd::NickRefused(
                    clean(&format!("{}: {}", line.param(1), line.param(2))).into_owned(),
                ))
            }
            "CAP" => self.capability(line)?,
            "AUTHENTICATE" if line.param(0) == "+" => self.authenticate()?,
            "903" | "907" => {
                self.remote_info("SASL authentication succeeded");
                self.end_negotiation()?;
            }
            "902" | "904" | "905" | "906" | "908" => {
                bump(&stats.sasl_failures);
                self.remote_warn(
                    "SASL authentication failed; registering without",
                    line.params.last().copied().unwrap_or(""),
                );
                self.end_negotiation()?;
            }
            "JOIN"
                if line.source_nick().is_some_and(|n| irc_eq(n, &self.nick))
                    && self.is_our_channel(line.param(0)) =>
            {
                self.joined = true;
                self.rejoin_at = None;
                bump(&stats.joins);
                self.remote_info("joined");
                // Lines start once the reply (324) has said whether the
                // channel is +c, so that the first ones are right too.
                self.modes_asked = Some(Instant::now());
                let channel = self.settings().channel.clone();
                self.send("MODE", &[&channel], None)?;
            }
            "324" if self.is_our_channel(line.param(1)) => {
                let blocked = mode_sets_c(line.param(2), false);
                self.set_colours_blocked(blocked);
                self.open_channel();
            }
            "MODE" if self.is_our_channel(line.param(0)) => {
                let current = self.colours_blocked();
                let blocked = mode_sets_c(line.param(1), current);
                if blocked != current {
                    self.set_colours_blocked(blocked);
                }
            }
            "KICK" | "PART"
                if self.is_our_channel(line.param(0))
                    && (line.is("KICK") && irc_eq(line.param(1), &self.nick)
                        || line.is("PART")
                            && line.source_nick().is_some_and(|n| irc_eq(n, &self.nick))) =>
            {
                if line.is("KICK") {
                    bump(&stats.kicks);
                }
                self.left_channel();
                let reason = line.params.last().copied().unwrap_or("");
                self.remote_warn(
                    &format!(
                        "removed from the channel; rejoining in {:?}",
                        self.settings().rejoin_delay
                    ),
                    reason,
                );
            }
            // Cannot join: full, invite only, banned, bad key, needs a
            // registered nick, no such channel, too many channels.
            "471" | "473" | "474" | "475" | "477" | "403" | "405"
                if self.is_our_channel(line.param(1)) =>
            {
                bump(&stats.join_refusals);
                self.left_channel();
                self.remote_warn(
                    &format!(
                        "the server refused the join; retrying in {:?}",
                        self.settings().rejoin_delay
                    ),
                    line.params.last().copied().unwrap_or(""),
                );
            }
            "NICK" => {
                let new = line.param(0);
                if line.source_nick().is_some_and(|n| irc_eq(n, &self.nick)) {
                    self.nick = new.to_owned();
                    let nick = self.nick.clone();
                    self.bot.link.update(|s| s.nick = nick);
                    if irc_eq(new, &wanted) {
                        bump(&stats.nick_regained);
                        self.remote_info("nickname regained");
                    }
                } else if line.source_nick().is_some_and(|n| irc_eq(n, &wanted)) {
                    self.regain()?;
                }
            }
            "QUIT" if line.source_nick().is_some_and(|n| irc_eq(n, &wanted)) => self.regain()?,
            "303" => {
                let online = line.param(1).split(' ').any(|n| irc_eq(n, &wanted));
                if !online {
                    self.regain()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn welcome(&mut self, line: &Line<'_>) -> Result<(), SessionEnd> {
        self.registered_at = Some(Instant::now());
        if !line.param(0).is_empty() {
            self.nick = line.param(0).to_owned();
        }
        bump(&self.bot.stats.registrations);
        let nick = self.nick.clone();
        self.bot.link.update(|s| s.nick = nick);
        self.remote_info("registered");
        if let (Some(password), None) = (
            self.settings().nickserv_password.clone(),
            self.settings().sasl.as_ref(),
        ) {
            let account = self.settings().nickname.clone();
            self.send(
                "PRIVMSG",
                &["NickServ"],
                Some(&format!("IDENTIFY {account} {password}")),
            )?;
        }
        self.next_regain = Instant::now() + self.settings().regain_interval;
        self.join()
    }

    fn join(&mut self) -> Result<(), SessionEnd> {
        let channel = self.settings().channel.clone();
        self.send("JOIN", &[&channel], None)?;
        Ok(())
    }

    /// The send thread may write to the channel now.
    fn open_channel(&mut self) {
        if self.joined && self.modes_asked.take().is_some() {
            self.bot.link.update(|s| s.joined = true);
        }
    }

    fn left_channel(&mut self) {
        self.joined = false;
        self.modes_asked = None;
        self.rejoin_at = Some(Instant::now() + self.settings().rejoin_delay);
        self.bot.link.update(|s| s.joined = false);
    }

    fn colours_blocked(&self) -> bool {
        self.bot.link.lock().colours_blocked
    }

    fn set_colours_blocked(&self, blocked: bool) {
        if blocked != self.colours_blocked() {
            self.remote_info(if blocked {
                "channel mode +c: lines without colours"
            } else {
                "channel mode -c: colours again"
            });
        }
        self.bot.link.update(|s| s.colours_blocked = blocked);
    }

    fn nick_taken(&mut self, line: &Line<'_>) -> Result<(), SessionEnd> {
        bump(&self.bot.stats.nick_collisions);
        if self.nick_tries >= MAX_NICK_TRIES {
            return Err(SessionEnd::NickRefused(format!(
                "{} (and {} variants) in use",
                self.settings().nickname,
                MAX_NICK_TRIES - 1
            )));
        }
        self.nick_tries += 1;
        self.nick.push('_');
        self.remote_warn(
            &format!("nickname in use; trying {}", self.nick),
            line.param(1),
        );
        let nick = self.nick.clone();
        self.send("NICK", &[&nick], None)?;
        Ok(())
    }

    /// Asks for the wanted nickname (the server answers NICK or 433).
    fn regain(&mut self) -> Result<(), SessionEnd> {
        let wanted = self.settings().nickname.clone();
        if self.registered_at.is_some() && !irc_eq(&self.nick, &wanted) {
            self.send("NICK", &[&wanted], None)?;
        }
        Ok(())
    }

    fn capability(&mut self, line: &Line<'_>) -> Result<(), SessionEnd> {
        let sub = line.param(1);
        let caps = line.params.last().copied().unwrap_or("");
        if sub.eq_ignore_ascii_case("ACK")
            && caps.split(' ').any(|c| c.eq_ignore_ascii_case("sasl"))
        {
            self.send("AUTHENTICATE", &["PLAIN"], None)?;
        } else if sub.eq_ignore_ascii_case("NAK") {
            bump(&self.bot.stats.sasl_failures);
            self.remote_warn("the server does not offer SASL; registering without", caps);
            self.end_negotiation()?;
        }
        Ok(())
    }

    /// Sends the SASL PLAIN credentials, base64, in 400-byte pieces (a
    /// piece of exactly 400 is followed by `+`).
    fn authenticate(&mut self) -> Result<(), SessionEnd> {
        let Some((account, password)) = self.settings().sasl.clone() else {
            return self.end_negotiation();
        };
        let payload = format!("{account}\0{account}\0{password}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
        for piece in encoded.as_bytes().chunks(400) {
            // Base64 is ASCII: every chunk is valid UTF-8.
            let piece = String::from_utf8_lossy(piece);
            self.send("AUTHENTICATE", &[&piece], None)?;
        }
        if encoded.len() % 400 == 0 {
            self.send("AUTHENTICATE", &["+"], None)?;
        }
        Ok(())
    }

    fn end_negotiation(&mut self) -> Result<(), SessionEnd> {
        if self.negotiating {
            self.negotiating = false;
            self.send("CAP", &["END"], None)?;
        }
        Ok(())
    }

    fn timers(&mut self) -> Result<(), SessionEnd> {
        let now = Instant::now();
        let settings = self.settings();
        if self.registered_at.is_none() {
            if self.negotiating && now.duration_since(self.started) >= CAP_TIMEOUT {
                bump(&self.bot.stats.sasl_failures);
                self.remote_warn("no answer to SASL; registering without", "");
                self.end_negotiation()?;
            }
            if now.duration_since(self.started) >= settings.timeout {
                return Err(SessionEnd::RegistrationTimeout(settings.timeout));
            }
            return Ok(());
        }
        let silent = now.duration_since(self.last_received);
        if silent >= DEAD_AFTER {
            return Err(SessionEnd::PingTimeout(silent));
        }
        if silent >= PING_AFTER && !self.pinged {
            self.pinged = true;
            self.send("PING", &[], Some("fedmsg"))?;
        } else if silent < PING_AFTER {
            self.pinged = false;
        }
        if self
            .modes_asked
            .is_some_and(|at| now.duration_since(at) >= MODE_TIMEOUT)
        {
            // No answer about the modes: send anyway (with colours).
            self.open_channel();
        }
        if !self.joined && self.rejoin_at.is_some_and(|at| now >= at) {
            self.rejoin_at = None;
            self.join()?;
        }
        if now >= self.next_regain {
            self.next_regain = now + settings.regain_interval;
            if !irc_eq(&self.nick, &settings.nickname) {
                let wanted = settings.nickname.clone();
                self.send("ISON", &[], Some(&wanted))?;
            }
        }
        Ok(())
    }
}

/// Applies a mode string (`+nt`, `-c+k`, ...) to the `c` flag: the
/// letters of the first parameter only (later parameters are arguments).
fn mode_sets_c(modes: &str, mut current: bool) -> bool {
    let mut adding = true;
    for c in modes.chars() {
        match c {
            '+' => adding = true,
            '-' => adding = false,
            'c' => current = adding,
            _ => {}
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings() {
        assert!(mode_sets_c("+nct", false));
        assert!(!mode_sets_c("+nt", false));
        assert!(mode_sets_c("+nt", true), "unchanged by other modes");
        assert!(!mode_sets_c("-c", true));
        assert!(mode_sets_c("-n+c", false));
        assert!(!mode_sets_c("+c-c", false));
    }
}
