//! Logging: JSON lines when stdout is not a terminal (for collectors), readable text
//! when it is; the level comes from `RUST_LOG` (default `info`). The line that says
//! how an attempt ended carries the delivery's span: tenant, event, delivery and
//! target ids and the attempt number. Payloads, bodies and secrets are never logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, from `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if std::io::stdout().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
}
