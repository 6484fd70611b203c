//! The plugin's counters: every way a message can go or fail has one. They
//! are logged when the plugin stops (one line per connection) and can be
//! read at any time with [`crate::IrcBot::stats`].

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$doc:meta])* $name:ident / $snapshot:ident { $($(#[$fdoc:meta])* $field:ident,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct $snapshot {
            $($(#[$fdoc])* pub $field: u64,)*
        }

        impl $name {
            /// Reads every counter.
            pub fn snapshot(&self) -> $snapshot {
                $snapshot { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Counters of one connection (one `[[irc]]` entry).
    BotStats / BotSnapshot {
        /// Messages queued for this channel.
        queued,
        /// Messages hidden by a topic filter.
        filtered_topic,
        /// Messages hidden by a body filter.
        filtered_body,
        /// Messages dropped unsent because the queue was full (oldest first).
        skipped,
        /// Message lines written to the server.
        lines_sent,
        /// `… N messages skipped` lines written.
        summaries_sent,
        /// Lines cut to fit 512 bytes.
        lines_cut,
        /// Lines lost because the connection failed while writing them.
        send_failures,
        /// Messages still queued when the plugin stopped.
        dropped_at_shutdown,
        /// Renderings that fell back to the topic (the hub's fedmsg.meta
        /// failed or is missing).
        meta_failures,
        /// Links that could not be shortened (sent in full).
        shorten_failures,
        /// TCP connections (and TLS handshakes) that succeeded.
        connects,
        /// Name resolution or TCP connect failures.
        connect_failures,
        /// TLS handshake or certificate verification failures.
        tls_failures,
        /// Registrations completed (RPL_WELCOME).
        registrations,
        /// Registrations that timed out or were refused.
        registration_failures,
        /// Established connections that were lost (EOF, error, server ERROR).
        disconnects,
        /// Connections closed for lack of any traffic (ping timeout).
        ping_timeouts,
        /// Server PINGs answered.
        pings_answered,
        /// Channel joins.
        joins,
        /// Joins the server refused (banned, invite only, key, full).
        join_refusals,
        /// Kicks from the channel.
        kicks,
        /// Nickname already in use at registration (`_` appended).
        nick_collisions,
        /// The wanted nickname taken back after a collision.
        nick_regained,
        /// SASL authentications that failed (or were not offered).
        sasl_failures,
        /// Received lines that were not IRC (no command, too long).
        bad_lines,
    }
}

counters! {
    /// Counters of the plugin as a whole.
    PluginStats / PluginSnapshot {
        /// Messages `consume` was called with.
        consumed,
    }
}

/// Adds one.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
