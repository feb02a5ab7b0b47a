//! Translation of PostgreSQL errors into [`StoreError`].

use herald_core::store::{Conflict, StoreError};
use tokio_postgres::error::SqlState;

/// Maps a driver error to the backend-neutral error, recognising constraint
/// violations the service layer explains to users.
pub(super) fn translate(error: tokio_postgres::Error) -> StoreError {
    match error.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
            StoreError::Conflict(Conflict::Duplicate)
        }
        Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::Conflict(Conflict::MissingReference)
        }
        _ => StoreError::backend(error),
    }
}

/// Maps a connection pool error (no connection could be had) to a backend failure.
pub(super) fn pool(error: deadpool_postgres::PoolError) -> StoreError {
    StoreError::backend(error)
}
