//! Forwarding a plugin's `tracing` events to the hub's log.
//!
//! A plugin `.so` links its own copy of `tracing`, with its own global
//! dispatcher, so events emitted in plugin code never reach the hub's
//! subscriber by themselves. The generated shim therefore installs
//! [`Forwarder`] as the plugin's global default subscriber (once, at the
//! first instantiation) and points it at the hub's `log` callback.
//!
//! Filtering happens on the plugin side against the hub's maximum level, so
//! a disabled `debug!` in a hot loop costs one atomic load and no
//! formatting. Spans are accepted but not forwarded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Once, RwLock};

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use crate::abi::{level, HubBox};

static MAX_LEVEL: AtomicU8 = AtomicU8::new(level::OFF);
static SINK: RwLock<Option<Arc<HubBox>>> = RwLock::new(None);
static INSTALL: Once = Once::new();

/// Converts a `tracing` level to its [`level`] constant.
pub(crate) fn level_to_u8(l: Level) -> u8 {
    match l {
        Level::ERROR => level::ERROR,
        Level::WARN => level::WARN,
        Level::INFO => level::INFO,
        Level::DEBUG => level::DEBUG,
        Level::TRACE => level::TRACE,
    }
}

/// Converts a [`level`] constant to a `tracing` level (`None` for OFF;
/// anything above TRACE counts as TRACE).
pub fn u8_to_level(l: u8) -> Option<Level> {
    match l {
        level::OFF => None,
        level::ERROR => Some(Level::ERROR),
        level::WARN => Some(Level::WARN),
        level::INFO => Some(Level::INFO),
        level::DEBUG => Some(Level::DEBUG),
        _ => Some(Level::TRACE),
    }
}

fn filter_of(max: u8) -> LevelFilter {
    u8_to_level(max).map_or(LevelFilter::OFF, LevelFilter::from_level)
}

/// Points the forwarder at `hub` (replacing any earlier instance's) and
/// installs it as this library's global subscriber the first time.
pub(crate) fn connect(hub: Arc<HubBox>, max_level: u8) {
    if let Ok(mut sink) = SINK.write() {
        *sink = Some(hub);
    }
    set_max_level(max_level);
    INSTALL.call_once(|| {
        // Fails only if the plugin installed its own global subscriber
        // first; then that one wins and the author has chosen so.
        let _ = tracing::subscriber::set_global_default(Forwarder {
            next_span: AtomicU64::new(1),
        });
    });
}

/// Changes the most verbose forwarded level and makes `tracing` re-ask every
/// callsite (its cached interest depends on the level).
pub(crate) fn set_max_level(max_level: u8) {
    let old = MAX_LEVEL.swap(max_level, Ordering::Relaxed);
    if old != max_level {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// The plugin-side subscriber that forwards events to the hub.
struct Forwarder {
    next_span: AtomicU64,
}

impl Forwarder {
    fn allows(&self, metadata: &Metadata<'_>) -> bool {
        level_to_u8(*metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }
}

impl Subscriber for Forwarder {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Cached per callsite until `rebuild_interest_cache` (on level change).
        if self.allows(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.allows(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(filter_of(MAX_LEVEL.load(Ordering::Relaxed)))
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        // Span ids must be non-zero and distinct; nothing else is kept.
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        if !self.allows(metadata) {
            return;
        }
        let mut fields = FieldText::default();
        event.record(&mut fields);
        let Ok(sink) = SINK.read() else { return };
        if let Some(hub) = sink.as_ref() {
            hub.log(
                level_to_u8(*metadata.level()),
                RStr::from_str(metadata.target()),
                RStr::from_str(&fields.message),
                RStr::from_str(&fields.rest),
            );
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Collects an event's `message` and its other fields as `k=v` pairs
/// (values in `Debug` form, as `tracing-subscriber`'s fmt layer shows them).
#[derive(Default)]
pub(crate) struct FieldText {
    pub(crate) message: String,
    pub(crate) rest: String,
}

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.rest.is_empty() {
                self.rest.push(' ');
            }
            let _ = write!(self.rest, "{}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_round_trip() {
        for l in [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ] {
            assert_eq!(u8_to_level(level_to_u8(l)), Some(l));
        }
        assert_eq!(u8_to_level(level::OFF), None);
        assert_eq!(u8_to_level(200), Some(Level::TRACE));
        assert_eq!(filter_of(level::OFF), LevelFilter::OFF);
        assert_eq!(filter_of(level::INFO), LevelFilter::INFO);
    }

    #[test]
    fn fields_are_formatted_k_eq_v() {
        struct Capture(std::sync::Mutex<Vec<(String, String)>>);
        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                let mut text = FieldText::default();
                event.record(&mut text);
                self.0.lock().unwrap().push((text.message, text.rest));
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let capture = Arc::new(Capture(Default::default()));
        tracing::subscriber::with_default(capture.clone(), || {
            tracing::info!(topic = "org.x", n = 3, shown = %"plain", "got {}", "it");
        });
        let got = capture.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![(
                "got it".to_string(),
                r#"topic="org.x" n=3 shown=plain"#.to_string()
            )]
        );
    }
}
