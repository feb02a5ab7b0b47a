//! Logging: JSON lines when stdout is not a terminal (for collectors), readable text
//! when it is; the level comes from `RUST_LOG` (default `info`). The line that says
//! how an attempt ended carries the delivery's span: tenant, event, delivery and
//! target ids and the attempt number. Payloads, bodies and secrets are never logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;

/// The variable the log filter is read from.
const FILTER_VARIABLE: &str = "RUST_LOG";

/// `RUST_LOG` is set but is not a filter: refused rather than ignored, so that a typo
/// does not silently log at the default level.
#[derive(Debug, thiserror::Error)]
#[error("{FILTER_VARIABLE}={value:?} is not a log filter: {source}")]
pub struct BadLogFilter {
    value: String,
    source: ParseError,
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init() -> Result<(), BadLogFilter> {
    let filter = filter_from(std::env::var(FILTER_VARIABLE).ok())?;
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
    Ok(())
}

/// The filter `value` describes; `info` when it is unset or blank.
fn filter_from(value: Option<String>) -> Result<EnvFilter, BadLogFilter> {
    match value.filter(|value| !value.trim().is_empty()) {
        None => Ok(EnvFilter::new("info")),
        Some(value) => EnvFilter::builder()
            .parse(&value)
            .map_err(|source| BadLogFilter { value, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_does_not_parse_is_refused_and_a_blank_one_means_info() {
        let error = filter_from(Some("herald=loud".into())).expect_err("not a level");
        assert!(
            error.to_string().contains("RUST_LOG=\"herald=loud\""),
            "{error}"
        );
        assert!(filter_from(Some("info,[delivery{tenant=ten_1}]=debug".into())).is_ok());
        for unset in [None, Some(String::new()), Some("  ".into())] {
            let filter = filter_from(unset).expect("the default");
            assert_eq!(filter.to_string(), "info");
        }
    }
}
