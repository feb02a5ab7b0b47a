//! Free-text fields with a bounded length.

use crate::validation::ValidationError;

/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 1024;

/// A human description of a resource: up to 1,024 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    /// Validates a description sent in `field`.
    pub fn parse(text: &str, field: &str) -> Result<Self, ValidationError> {
        bounded_text(text, field, MAX_DESCRIPTION_CHARS).map(Self)
    }

    /// The description as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that `text` has at most `max_chars` characters and none of them is a control
/// character other than a newline or tab.
pub(crate) fn bounded_text(
    text: &str,
    field: &str,
    max_chars: usize,
) -> Result<String, ValidationError> {
    if text.chars().count() > max_chars {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(text.to_owned())
}
