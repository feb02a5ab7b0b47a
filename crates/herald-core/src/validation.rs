//! How a value that breaks a rule is described to the person who sent it.

use std::fmt;

/// A rejected input: which field, and a sentence saying what is wrong with it.
///
/// `field` is the wire name (camelCase, dotted for nested values) so the API can
/// point at it without translation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The offending field, as named on the wire (`url`, `headers.X-Team`, `events[2]`).
    pub field: String,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl ValidationError {
    /// A rejection of `field` for the reason `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error reported under another field name (for list items).
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Most characters of a rejected input quoted back in an error.
const QUOTED_CHARS: usize = 80;

/// `text` as an error quotes it back: whole if short, otherwise its start and an
/// ellipsis, so an answer never repeats a megabyte the client sent.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_quoted_by_their_start() {
        assert_eq!(quoted("tgt_1"), "\"tgt_1\"");
        let long = "é".repeat(1_000_000);
        let shown = quoted(&long);
        assert!(
            shown.chars().count() < 100 && shown.ends_with('…'),
            "{shown}"
        );
    }
}
