//! Event types and the patterns that select them.
//!
//! An event type is 1–255 characters of dot-separated segments, each made of
//! `[A-Za-z0-9_-]`. A pattern is an exact event type, a prefix of whole segments
//! followed by `.*` (which matches every type with at least one more segment), or `*`
//! alone (which matches everything).

use std::fmt;

use crate::validation::ValidationError;

/// The longest event type, in bytes (all allowed characters are ASCII).
pub const MAX_EVENT_TYPE_LEN: usize = 255;

/// A validated event type such as `core.orders.created.v1`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(String);

impl EventType {
    /// Validates `text` as an event type, naming `field` in the error.
    pub fn parse(text: &str, field: &str) -> Result<Self, ValidationError> {
        check_segments(text, field, "event type")?;
        Ok(Self(text.to_owned()))
    }

    /// The event type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A validated event-type pattern: `*`, `core.orders.*` or `core.orders.created.v1`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FilterPattern(String);

impl FilterPattern {
    /// Validates `text` as a pattern, naming `field` in the error.
    pub fn parse(text: &str, field: &str) -> Result<Self, ValidationError> {
        if text == "*" {
            return Ok(Self(text.to_owned()));
        }
        // Before anything that quotes the text back.
        if text.len() > MAX_EVENT_TYPE_LEN {
            return Err(too_long(field, "pattern"));
        }
        let exact_part = text.strip_suffix(".*").unwrap_or(text);
        if exact_part.contains('*') {
            return Err(ValidationError::new(
                field,
                format!(
                    "{text:?} is not a valid pattern: `*` may only stand alone or as the whole last segment (`prefix.*`)"
                ),
            ));
        }
        check_segments(exact_part, field, "pattern")?;
        Ok(Self(text.to_owned()))
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether an event of type `event_type` is selected by this pattern.
    pub fn matches(&self, event_type: &EventType) -> bool {
        let event = event_type.as_str();
        if self.0 == "*" {
            return true;
        }
        match self.0.strip_suffix('*') {
            // The prefix keeps its trailing dot, so `a.*` never matches `ab.c` or `a`.
            Some(prefix_with_dot) => {
                event.len() > prefix_with_dot.len() && event.starts_with(prefix_with_dot)
            }
            None => self.0 == event,
        }
    }
}

impl fmt::Display for FilterPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FilterPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

fn check_segments(text: &str, field: &str, what: &str) -> Result<(), ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::new(field, format!("the {what} is empty")));
    }
    if text.len() > MAX_EVENT_TYPE_LEN {
        return Err(too_long(field, what));
    }
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if text.split('.').all(segment_ok) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{text:?} is not a valid {what}: use dot-separated segments of letters, digits, `_` and `-`"
            ),
        ))
    }
}

fn too_long(field: &str, what: &str) -> ValidationError {
    ValidationError::new(
        field,
        format!("the {what} is longer than {MAX_EVENT_TYPE_LEN} characters"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> EventType {
        EventType::parse(text, "type").expect("valid event type")
    }

    fn pattern(text: &str) -> FilterPattern {
        FilterPattern::parse(text, "events").expect("valid pattern")
    }

    #[test]
    fn matching_table() {
        let cases = [
            ("*", "a", true),
            ("*", "core.orders.created.v1", true),
            ("core.orders.created.v1", "core.orders.created.v1", true),
            ("core.orders.created.v1", "core.orders.created.v2", false),
            ("core.orders.*", "core.orders.created.v1", true),
            ("core.orders.*", "core.orders.x", true),
            ("core.orders.*", "core.orders", false),
            ("core.orders.*", "core.ordersx.created", false),
            ("core.*", "core2.orders", false),
            ("Core.*", "core.orders", false),
        ];
        for (p, e, expected) in cases {
            assert_eq!(pattern(p).matches(&event(e)), expected, "{p} vs {e}");
        }
    }

    #[test]
    fn invalid_event_types_are_refused() {
        let long = "a".repeat(256);
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a/b",
            "a.*",
            "ä",
            long.as_str(),
        ] {
            assert!(
                EventType::parse(bad, "type").is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(EventType::parse(&"a".repeat(255), "type").is_ok());
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for bad in [
            "", "**", "*.a", "a*", "a.*.b", "a.b*", "a..*", ".*", "a.**", "a b.*",
        ] {
            assert!(
                FilterPattern::parse(bad, "events[0]").is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let error = FilterPattern::parse("a..b", "events[3]").expect_err("invalid");
        assert_eq!(error.field, "events[3]");
        assert!(error.message.contains("a..b"), "{}", error.message);
    }
}
