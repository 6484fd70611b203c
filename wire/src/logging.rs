//! Logging setup shared by `fedmsg-hub` and the commands: `tracing` events
//! to standard error.

/// Logs to stderr with `filter` (e.g. `info`, `fedmsg_hub=debug`), else
/// `RUST_LOG`, else `default`. Colours only on a terminal. A second call
/// (tests) keeps the first subscriber.
pub fn init(filter: Option<&str>, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(filter) => EnvFilter::new(filter),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
