//! The per-tenant ingest rate limit: a token bucket per tenant, at the edge, checked
//! before anything is stored. Over the limit a publish is refused whole with 429 and
//! `Retry-After`, so nothing accepted is ever dropped.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use herald_core::flow::TokenBucket;
use herald_core::id::TenantId;
use herald_core::service::Management;
use herald_core::time::Timestamp;

use super::error::{ApiError, Quota};

/// A tenant's ingest bucket holds one second of its rate: bursts within a second pass.
const BURST_SECONDS: f64 = 1.0;

/// Every tenant's ingest bucket, created on a tenant's first publish.
#[derive(Debug)]
pub struct IngestLimits {
    default: Option<f64>,
    buckets: Mutex<HashMap<TenantId, Option<TokenBucket>>>,
}

impl IngestLimits {
    /// Limits with `default` events per second for tenants without their own.
    pub fn new(default: Option<f64>) -> Self {
        Self {
            default,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits `count` events of `tenant`, or refuses them all. Returns the quota left
    /// (for the response headers), `None` when the tenant has no limit.
    pub async fn admit(
        &self,
        management: &Management,
        tenant: &TenantId,
        count: u32,
    ) -> Result<Option<Quota>, ApiError> {
        if !self.known(tenant) {
            let own = management.tenant(tenant).await?.ingest_rate_limit;
            let rate = own.map(|r| r.per_second()).or(self.default);
            let now = Timestamp::now();
            self.lock().entry(tenant.clone()).or_insert_with(|| {
                rate.map(|rate| TokenBucket::with_burst(rate, BURST_SECONDS, now))
            });
        }
        let now = Timestamp::now();
        let mut buckets = self.lock();
        let Some(Some(bucket)) = buckets.get_mut(tenant) else {
            return Ok(None);
        };
        // Whole tokens only: a fractional burst (a rate of 1.5/s) still admits batches.
        let wanted = f64::from(count).min(bucket.burst().floor().max(1.0));
        let available = bucket.available(now);
        if f64::from(available) < wanted {
            let wait = bucket.seconds_until(wanted, now).max(1.0);
            let quota = quota(bucket, now, wait);
            return Err(ApiError::RateLimited {
                detail: format!(
                    "the tenant may publish {} events per second; retry after {} s",
                    bucket.rate(),
                    quota.retry_after_secs
                ),
                quota,
            });
        }
        // A batch larger than the burst passes when the bucket is full and leaves a
        // debt, so the rate holds over time without refusing big batches forever.
        bucket.take(count, now);
        Ok(Some(quota(bucket, now, 0.0)))
    }

    /// Drops a tenant's bucket so its next publish reads its (changed) limit.
    pub fn forget(&self, tenant: &TenantId) {
        self.lock().remove(tenant);
    }

    fn known(&self, tenant: &TenantId) -> bool {
        self.lock().contains_key(tenant)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Option<TokenBucket>>> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn quota(bucket: &mut TokenBucket, now: Timestamp, retry_after: f64) -> Quota {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = |seconds: f64| seconds.ceil().max(0.0) as u64;
    Quota {
        limit: whole(bucket.rate()),
        remaining: u64::from(bucket.available(now)),
        reset_secs: whole(bucket.seconds_to_full(now)),
        retry_after_secs: whole(retry_after),
    }
}
