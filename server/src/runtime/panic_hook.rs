//! Panics as log events: a panic in any broker thread or task is logged through `tracing`
//! at ERROR (thread, location, message, backtrace) and counted, so the tests — which fail
//! on unexpected ERROR lines — and `/metrics` (`ringmq_panics_total`) both see it. The
//! default hook's stderr message would go unnoticed.

use std::sync::atomic::{AtomicU64, Ordering};

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Panics since the process started.
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Replaces the default panic hook. Call once, after the tracing subscriber is set.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string payload)".to_owned());
        let location = info
            .location()
            .map_or_else(|| "?".to_owned(), |l| format!("{}:{}", l.file(), l.line()));
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(
            thread = thread.name().unwrap_or("?"),
            %location,
            panic = %message,
            "PANIC: {message}\n{backtrace}"
        );
        // Counted once logged, so whoever sees the count finds the line.
        PANICS.fetch_add(1, Ordering::Relaxed);
    }));
}
