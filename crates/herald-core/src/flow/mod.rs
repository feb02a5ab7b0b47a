//! Flow control: the pure rules that decide how much traffic a target gets.
//!
//! [`circuit`] stops traffic to a failing target and probes it back to health;
//! [`bucket`] enforces a target's `rateLimitPerSecond` (and a tenant's ingest limit);
//! [`window`] adapts a target's concurrency to the pressure it signals (additive
//! increase, multiplicative decrease, within `maxInFlight`); [`fair`] splits free
//! capacity max-min fairly, first across tenants, then across a tenant's targets;
//! [`feedback`] says what an attempt's result means for all of them.
//!
//! None of these keeps a clock or does I/O: the scheduler owns the state and passes
//! the time in, so every rule is tested deterministically.

pub mod bucket;
pub mod circuit;
pub mod fair;
pub mod feedback;
pub mod window;

pub use bucket::TokenBucket;
pub use circuit::{Circuit, CircuitPolicy, CircuitState};
pub use fair::fair_shares;
pub use feedback::{Feedback, Health, feedback};
pub use window::ConcurrencyWindow;
