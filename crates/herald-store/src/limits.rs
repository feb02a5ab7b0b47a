//! The store's half of [`SharedLimits`]: a target's token bucket as saved, restored
//! for one claim and saved again. The arithmetic is `herald-core`'s; backends only
//! lock, read and write the row.

use herald_core::flow::TokenBucket;
use herald_core::store::{ClaimRequest, HeldBack, SharedLimits};
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

/// What to save after `claimed` deliveries were taken from `bucket`, last saved as
/// `saved`; `None` when nothing was claimed (nothing to save). Instances' clocks differ
/// a little: the saved time never moves backwards, or a claimant whose clock is behind
/// would hand the next one tokens it already earned.
pub(crate) fn spend(
    bucket: &mut TokenBucket,
    saved: SavedBucket,
    claimed: usize,
    now: Timestamp,
) -> Option<SavedBucket> {
    if claimed == 0 {
        return None;
    }
    let at = saved
        .at
        .map_or(now, |at| Timestamp::from_millis(at.max(now.as_millis())));
    bucket.take(u32::try_from(claimed).unwrap_or(u32::MAX), at);
    Some(SavedBucket {
        tokens: Some(bucket.tokens(at)),
        at: Some(at.as_millis()),
    })
}

/// Whether the limits gave `request` less than it asked (`granted`: first attempts,
/// retries), and if its rate did, when the next token comes.
pub(crate) fn held_back(
    request: &ClaimRequest,
    granted: (u32, u32),
    bucket: Option<&mut TokenBucket>,
    now: Timestamp,
) -> Option<HeldBack> {
    let asked = request.first_attempts.saturating_add(request.retries);
    if granted.0.saturating_add(granted.1) >= asked {
        return None;
    }
    let until = bucket.and_then(|b| (b.available(now) == 0).then(|| b.next_token_at(now)));
    Some(HeldBack {
        target_id: request.target_id.clone(),
        until,
    })
}
