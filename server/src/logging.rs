//! The process's log: `tracing` events to stderr, filtered by `RINGMQ_LOG` (openraft's
//! own INFO narration of every election is left out unless asked for).
//!
//! A peer of the controller quorum that cannot be reached (a node stopped, restarting or
//! cut off) is an expected condition, but openraft reports it at ERROR on every retry,
//! about every 0.65 s. Those events are shown as WARN instead, each distinct one at most
//! once per [`UNREACHABLE_REPEAT`]: an ERROR line stays something a person must act on.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How often the same unreachable-peer report is repeated.
pub const UNREACHABLE_REPEAT: Duration = Duration::from_secs(30);

/// Installs the process's subscriber (once, from `main`).
pub fn init() {
    let filter = EnvFilter::new(match std::env::var("RINGMQ_LOG") {
        Ok(f) if f.contains("openraft") => f,
        Ok(f) => format!("openraft=warn,{f}"),
        Err(_) => "info,openraft=warn".to_owned(),
    });
    let shown = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(HideUnreachable);
    tracing_subscriber::registry()
        .with(filter)
        .with(shown)
        .with(Demote::default())
        .init();
}

/// An event's fields as `name=value` text (the message first, bare).
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

/// An openraft ERROR about a peer it cannot reach, as text.
fn unreachable_peer(event: &Event<'_>) -> Option<String> {
    let meta = event.metadata();
    if *meta.level() != Level::ERROR || !meta.target().starts_with("openraft") {
        return None;
    }
    let mut text = Text::default();
    event.record(&mut text);
    text.0.contains("Unreachable").then_some(text.0)
}

/// Keeps openraft's unreachable-peer ERRORs out of the log as written.
struct HideUnreachable;

impl<S: Subscriber> Filter<S> for HideUnreachable {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        unreachable_peer(event).is_none()
    }
}

/// Writes them again as WARN, each distinct one once per [`UNREACHABLE_REPEAT`].
#[derive(Default)]
struct Demote {
    last: Mutex<HashMap<String, Instant>>,
}

impl Demote {
    fn due(&self, text: &str) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let now = Instant::now();
        last.retain(|_, at| now.duration_since(*at) < UNREACHABLE_REPEAT);
        if last.contains_key(text) {
            return false;
        }
        last.insert(text.to_owned(), now);
        true
    }
}

impl<S: Subscriber> Layer<S> for Demote {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if let Some(text) = unreachable_peer(event)
            && self.due(&text)
        {
            tracing::warn!(
                target: "ringmq::quorum",
                "openraft: {text} (a quorum peer is unreachable; repeated at most every {} s)",
                UNREACHABLE_REPEAT.as_secs()
            );
        }
    }
}
