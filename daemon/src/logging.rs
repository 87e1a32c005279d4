//! Plain-text tracing to stderr, which journald captures as it is. `RUST_LOG` (tracing
//! `EnvFilter` syntax) wins over `[log] level`, as in moq-relay.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

pub fn init(level: LogLevel) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|err| {
                eprintln!("moq-relayd: ignoring RUST_LOG={directives:?}: {err}");
                EnvFilter::new(level.as_str())
            }),
        _ => EnvFilter::new(level.as_str()),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // When stderr is gone (a closed pipe, a restarted log collector) tracing-subscriber
        // would report it with eprintln!, which panics: losing log lines must not stop
        // the relay.
        .log_internal_errors(false)
        .init();
}
