//! The store's half of [`SharedLimits`]: a target's token bucket as saved, restored
//! for one claim and saved again. The arithmetic is `herald-core`'s; backends only
//! lock, read and write the row.

use herald_core::flow::TokenBucket;
use herald_core::store::SharedLimits;
use herald_core::time::Timestamp;

/// A target's saved bucket: its tokens, and when they were counted (both `NULL`
/// until the target is first claimed under a rate limit).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SavedBucket {
    pub tokens: Option<f64>,
    pub at: Option<i64>,
}

/// The bucket a claim spends from: the saved one refilled to `now` at the target's
/// current rate, or a full new one if none was saved. `None` for a target without a
/// rate limit.
pub(crate) fn bucket(
    limits: &SharedLimits,
    saved: SavedBucket,
    now: Timestamp,
) -> Option<TokenBucket> {
    let rate = limits.rate?.per_second();
    Some(match (saved.tokens, saved.at) {
        (Some(tokens), Some(at)) => TokenBucket::restore(rate, tokens, Timestamp::from_millis(at)),
        _ => TokenBucket::new(rate, now),
    })
}

/// What to save after `claimed` deliveries were taken from `bucket`.
pub(crate) fn spend(bucket: &mut TokenBucket, claimed: usize, now: Timestamp) -> SavedBucket {
    bucket.take(u32::try_from(claimed).unwrap_or(u32::MAX), now);
    SavedBucket {
        tokens: Some(bucket.tokens(now)),
        at: Some(now.as_millis()),
    }
}
