//! Filters: named sets of event-type patterns.

use crate::filter::{EventType, FilterPattern};
use crate::id::{FilterId, TenantId};
use crate::time::Timestamp;
use crate::validation::ValidationError;

use super::text::Description;

/// Most patterns one filter may hold.
const MAX_PATTERNS: usize = 100;

/// A non-empty list of distinct patterns, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPatterns(Vec<FilterPattern>);

impl FilterPatterns {
    /// Validates the patterns sent in `field`; errors point at the offending item.
    pub fn parse(items: &[String], field: &str) -> Result<Self, ValidationError> {
        if items.is_empty() {
            return Err(ValidationError::new(
                field,
                "must list at least one event-type pattern",
            ));
        }
        if items.len() > MAX_PATTERNS {
            return Err(ValidationError::new(
                field,
                format!("must list at most {MAX_PATTERNS} patterns"),
            ));
        }
        let mut patterns: Vec<FilterPattern> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let pattern = FilterPattern::parse(item, &format!("{field}[{index}]"))?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Ok(Self(patterns))
    }

    /// The patterns, in order.
    pub fn as_slice(&self) -> &[FilterPattern] {
        &self.0
    }

    /// Whether any pattern selects `event_type`.
    pub fn matches(&self, event_type: &EventType) -> bool {
        self.0.iter().any(|pattern| pattern.matches(event_type))
    }
}

/// A tenant's named selection of event types.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The filter's id.
    pub id: FilterId,
    /// The tenant owning it.
    pub tenant_id: TenantId,
    /// Optional human description.
    pub description: Option<Description>,
    /// The patterns; an event matches the filter when any one matches.
    pub patterns: FilterPatterns,
    /// When the filter was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What a tenant gives to create a filter.
#[derive(Debug, Clone)]
pub struct NewFilter {
    /// Optional human description.
    pub description: Option<Description>,
    /// The patterns.
    pub patterns: FilterPatterns,
}

/// A change to a filter; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct FilterPatch {
    /// `Some(None)` clears the description.
    pub description: Option<Option<Description>>,
    /// Replaces the whole pattern list.
    pub patterns: Option<FilterPatterns>,
}

impl FilterPatch {
    /// Applies the change to `filter`, stamping it with `now`.
    pub fn apply(self, filter: &mut Filter, now: Timestamp) {
        if let Some(description) = self.description {
            filter.description = description;
        }
        if let Some(patterns) = self.patterns {
            filter.patterns = patterns;
        }
        filter.updated_at = now;
    }
}
