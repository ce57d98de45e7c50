//! Tracing set-up in the style of the Rust Lambda runtime: the level from `AWS_LAMBDA_LOG_LEVEL`,
//! then `RUST_LOG`; JSON unless `AWS_LAMBDA_LOG_FORMAT` says text; no ANSI colour and no local
//! timestamp (CloudWatch adds its own).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.to_ascii_lowercase())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .map(|f| f.eq_ignore_ascii_case("text"))
        .unwrap_or(false);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(std::io::stdout);
    if text {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init();
    }
}

/// The operator commands' logs: text on stderr, warnings and errors unless `RUST_LOG` says
/// otherwise, so that stdout holds the report alone.
pub fn init_cli() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| EnvFilter::try_new(l).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}
