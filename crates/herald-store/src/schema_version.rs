//! The rules every backend's schema version follows (each keeps its own migrations).

use herald_core::store::StoreError;

/// Refuses a database migrated by a newer Herald: its schema cannot be guessed at.
pub(crate) fn refuse_newer(found: i64, latest: i64) -> Result<(), StoreError> {
    if found > latest {
        return Err(StoreError::Corrupt {
            detail: format!(
                "the database has schema version {found}, newer than the {latest} this Herald knows; upgrade Herald"
            ),
        });
    }
    Ok(())
}

/// Succeeds only when the database's schema is exactly the one this binary writes
/// (a readiness check).
pub(crate) fn require_current(found: i64, latest: i64) -> Result<(), StoreError> {
    if found == latest {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            detail: format!("schema version {found}, expected {latest}"),
        })
    }
}
