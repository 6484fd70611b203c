//! The send thread of one bot: takes the oldest queued message while the
//! bot is in its channel, renders it (fedmsg.meta through the hub, the
//! optional shortener: both only here, never in `consume`), and writes
//! one line, at most one every `line_rate` seconds. A gap left by the full
//! queue is reported where it happened, by one `… N messages skipped`
//! line, which is paced like any other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fedmsg_plugin_api::tracing;

use crate::conn::{BotShared, Joined};
use crate::proto::message_line;
use crate::queue::{Item, Next};
use crate::render::{self, MetaSource, Palette};
use crate::settings::Method;
use crate::shorten::Shortener;
use crate::stats::{bump, BotStats};

/// How long the thread waits for the channel or a message before looking
/// at the stop signal again.
const POLL: Duration = Duration::from_millis(250);

/// What every bot renders with.
pub struct Renderer {
    /// The hub's fedmsg.meta.
    pub meta: Arc<dyn MetaSource>,
    /// Colours.
    pub palette: Palette,
    /// The link shortener, when configured.
    pub shortener: Option<Shortener>,
    /// `irc_method`.
    pub method: Method,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("palette", &self.palette)
            .field("shortener", &self.shortener)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Renderer {
    /// The text of one message for `bot` (whose channel may block colours).
    pub fn render(&self, item: &Item, bot: &BotShared, colours_blocked: bool) -> String {
        let settings = &bot.settings;
        if !settings.make_terse {
            return render::json(&item.topic, &item.body);
        }
        let meta = match self.meta.render(&item.topic, &item.body) {
            Ok(meta) => meta,
            Err(error) => {
                bump(&bot.stats.meta_failures);
                if let Some(suppressed) = bot.remote_log.check() {
                    tracing::warn!(bot = %settings.label(), topic = %item.topic, %error, suppressed,
                        "fedmsg.meta rendering failed; showing the topic");
                }
                render::fallback(&item.topic)
            }
        };
        if !settings.make_pretty || colours_blocked {
            // fedmsg's terse, not pretty path: msg2repr, no shortening.
            return render::terse(&meta);
        }
        let link = meta.link.as_deref().filter(|l| !l.is_empty());
        let short = match (link, &self.shortener) {
            (Some(link), Some(shortener)) if settings.make_short => match shortener.shorten(link) {
                Ok(short) => Some(short),
                Err(error) => {
                    bump(&bot.stats.shorten_failures);
                    if let Some(suppressed) = bot.remote_log.check() {
                        tracing::warn!(bot = %settings.label(), %error, suppressed,
                            "link not shortened");
                    }
                    None
                }
            },
            _ => None,
        };
        render::pretty(&meta, short.as_deref().or(link), &self.palette)
    }
}

/// The send thread's body.
pub fn run(bot: &BotShared, renderer: &Renderer) {
    let settings = &bot.settings;
    let mut last_sent: Option<Instant> = None;
    while !bot.stop.is_triggered() {
        if bot.link.wait_joined(POLL).is_none() {
            continue;
        }
        if let Some(due) = last_sent.map(|at| at + settings.line_rate) {
            let now = Instant::now();
            if now < due {
                bot.stop.sleep(due - now);
                continue;
            }
        }
        let next = bot.queue.pop(POLL);
        // The wait may have been long: take the channel's state (+c, our
        // nickname) as it is now, and if the bot is out of the channel
        // (connection lost, kicked), put the message back for later.
        let Some(joined) = bot.link.wait_joined(Duration::ZERO) else {
            if matches!(next, Next::Closed) {
                return;
            }
            let dropped = bot.queue.unpop(next);
            crate::stats::add(&bot.stats.skipped, dropped);
            continue;
        };
        let (text, summary) = match next {
            Next::Closed => return,
            Next::Timeout => continue,
            Next::Skipped(n) => (format!("… {n} messages skipped"), true),
            Next::Item(item) => (renderer.render(&item, bot, joined.colours_blocked), false),
        };
        send(bot, renderer.method, &joined, &text, summary);
        last_sent = Some(Instant::now());
    }
}

fn send(bot: &BotShared, method: Method, joined: &Joined, text: &str, summary: bool) {
    let stats: &BotStats = &bot.stats;
    let (line, cut) = message_line(method.command(), &bot.settings.channel, text, &joined.nick);
    if cut {
        bump(&stats.lines_cut);
    }
    match joined.conn.send(&line) {
        Ok(()) if summary => bump(&stats.summaries_sent),
        Ok(()) => bump(&stats.lines_sent),
        Err(error) => {
            bump(&stats.send_failures);
            if let Some(suppressed) = bot.remote_log.check() {
                tracing::warn!(bot = %bot.settings.label(), %error, suppressed,
                    "IRC write failed; the line is lost and the connection closed");
            }
            // The connection thread sees the end of the stream and
            // reconnects.
            joined.conn.shutdown();
        }
    }
}
