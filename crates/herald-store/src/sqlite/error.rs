//! Translation of SQLite errors into [`StoreError`].

use herald_core::store::{Conflict, StoreError};
use rusqlite::ErrorCode;
use rusqlite::ffi;

/// Maps a driver error to the backend-neutral error, recognising constraint
/// violations the service layer explains to users.
pub(super) fn translate(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &error
        && failure.code == ErrorCode::ConstraintViolation
    {
        match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return StoreError::Conflict(Conflict::Duplicate);
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                return StoreError::Conflict(Conflict::MissingReference);
            }
            _ => {}
        }
    }
    if let rusqlite::Error::FromSqlConversionFailure(column, _, cause) = &error {
        return StoreError::Corrupt {
            detail: format!("column {column}: {cause}"),
        };
    }
    StoreError::backend(error)
}
