//! The schema and its migrations, tracked in SQLite's `user_version`.
//!
//! Migrations only ever append: the n-th entry moves the schema from version n to n+1.
//! A database newer than this binary is refused rather than guessed at.

use herald_core::store::StoreError;
use rusqlite::{Connection, OptionalExtension};

use super::error::translate;

const MIGRATIONS: &[&str] = &[
    // 1: tenants, API keys and the delivery configuration.
    "CREATE TABLE tenants (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE api_keys (
        id              TEXT PRIMARY KEY,
        tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        key_hash        BLOB NOT NULL UNIQUE,
        visible_prefix  TEXT NOT NULL,
        created_at      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX api_keys_by_tenant ON api_keys(tenant_id, id);
    CREATE TABLE targets (
        id                     TEXT PRIMARY KEY,
        tenant_id              TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        url                    TEXT NOT NULL,
        description            TEXT,
        secret                 TEXT NOT NULL,
        headers                TEXT NOT NULL,
        rate_limit_per_second  REAL,
        max_in_flight          INTEGER NOT NULL,
        timeout_ms             INTEGER NOT NULL,
        active                 INTEGER NOT NULL,
        created_at             INTEGER NOT NULL,
        updated_at             INTEGER NOT NULL,
        UNIQUE (tenant_id, id)
    ) STRICT;
    CREATE TABLE filters (
        id           TEXT PRIMARY KEY,
        tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        description  TEXT,
        patterns     TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        UNIQUE (tenant_id, id)
    ) STRICT;
    CREATE TABLE subscriptions (
        id          TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL,
        target_id   TEXT NOT NULL,
        filter_id   TEXT NOT NULL,
        active      INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        UNIQUE (target_id, filter_id),
        FOREIGN KEY (tenant_id, target_id) REFERENCES targets(tenant_id, id) ON DELETE CASCADE,
        FOREIGN KEY (tenant_id, filter_id) REFERENCES filters(tenant_id, id) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX subscriptions_by_tenant ON subscriptions(tenant_id, id);
    CREATE INDEX subscriptions_by_filter ON subscriptions(filter_id);",
    // 2: events, their deliveries (the queue) and the attempt log; secret rotation.
    "ALTER TABLE targets ADD COLUMN previous_secret TEXT;
    ALTER TABLE targets ADD COLUMN previous_secret_expires_at INTEGER;
    CREATE TABLE events (
        id               TEXT PRIMARY KEY,
        tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        event_type       TEXT NOT NULL,
        content_type     TEXT NOT NULL,
        payload          BLOB NOT NULL,
        idempotency_key  TEXT,
        created_at       INTEGER NOT NULL,
        UNIQUE (tenant_id, idempotency_key)
    ) STRICT;
    CREATE TABLE deliveries (
        id                TEXT PRIMARY KEY,
        tenant_id         TEXT NOT NULL,
        event_id          TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
        target_id         TEXT NOT NULL,
        subscription_id   TEXT NOT NULL,
        event_type        TEXT NOT NULL,
        status            TEXT NOT NULL,
        attempts          INTEGER NOT NULL,
        next_attempt_at   INTEGER NOT NULL,
        window_start      INTEGER NOT NULL,
        lease_token       INTEGER NOT NULL DEFAULT 0,
        lease_expires_at  INTEGER,
        last_status_code  INTEGER,
        last_error        TEXT,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL,
        FOREIGN KEY (tenant_id, target_id) REFERENCES targets(tenant_id, id) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_leased ON deliveries(lease_expires_at) WHERE status = 'delivering';
    CREATE INDEX deliveries_by_tenant ON deliveries(tenant_id, id);
    CREATE INDEX deliveries_by_event ON deliveries(event_id);
    CREATE INDEX deliveries_by_target ON deliveries(target_id);
    CREATE TABLE attempts (
        id                TEXT PRIMARY KEY,
        delivery_id       TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
        tenant_id         TEXT NOT NULL,
        number            INTEGER NOT NULL,
        started_at        INTEGER NOT NULL,
        duration_ms       INTEGER NOT NULL,
        status_code       INTEGER,
        error             TEXT,
        response_headers  TEXT NOT NULL,
        response_body     TEXT
    ) STRICT;
    CREATE INDEX attempts_by_delivery ON attempts(delivery_id, number);",
    // 3: flow control: per-target lanes of the queue, circuits, 410-disabled targets,
    // per-tenant ingest limits.
    "ALTER TABLE targets ADD COLUMN disabled_reason TEXT;
    ALTER TABLE tenants ADD COLUMN ingest_rate_limit REAL;
    CREATE TABLE circuits (
        target_id             TEXT PRIMARY KEY REFERENCES targets(id) ON DELETE CASCADE,
        state                 TEXT NOT NULL,
        since                 INTEGER NOT NULL,
        consecutive_failures  INTEGER NOT NULL,
        next_probe_at         INTEGER,
        opens                 INTEGER NOT NULL
    ) STRICT;
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_first_due ON deliveries(target_id, next_attempt_at)
        WHERE status = 'pending' AND attempts = 0;
    CREATE INDEX deliveries_retry_due ON deliveries(target_id, next_attempt_at)
        WHERE status = 'pending' AND attempts > 0;",
    // 4: limits shared by every claim (each target's token bucket, and a count of its
    // deliveries in flight read from an index); the instance registry and leadership;
    // finished events found by age for retention; Kafka records parked as bad.
    "CREATE TABLE target_flow (
        target_id  TEXT PRIMARY KEY REFERENCES targets(id) ON DELETE CASCADE,
        tokens     REAL,
        tokens_at  INTEGER
    ) STRICT;
    CREATE INDEX deliveries_in_flight ON deliveries(target_id) WHERE status = 'delivering';
    CREATE TABLE instances (
        id            TEXT PRIMARY KEY,
        description   TEXT NOT NULL,
        started_at    INTEGER NOT NULL,
        heartbeat_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE leadership (
        role        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        expires_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX events_by_age ON events(created_at);
    CREATE TABLE parked_records (
        id           TEXT PRIMARY KEY,
        topic        TEXT NOT NULL,
        partition    INTEGER NOT NULL,
        record_offset INTEGER NOT NULL,
        reason       TEXT NOT NULL,
        headers      TEXT NOT NULL,
        value        BLOB,
        value_bytes  INTEGER NOT NULL,
        parked_at    INTEGER NOT NULL,
        UNIQUE (topic, partition, record_offset)
    ) STRICT;",
    // 5: leases are recovered through the in-flight index (every `delivering` row,
    // a handful), so claims and outcomes no longer maintain an index of their expiry.
    "DROP INDEX deliveries_leased;",
    // 6: attempts are only ever read by delivery, so their ids need no index (one
    // B-tree fewer per attempt). A primary key cannot be dropped in SQLite, so the
    // table is rebuilt: on a large log this takes a while, once, at start.
    "CREATE TABLE attempts_rebuilt (
        id                TEXT NOT NULL,
        delivery_id       TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
        tenant_id         TEXT NOT NULL,
        number            INTEGER NOT NULL,
        started_at        INTEGER NOT NULL,
        duration_ms       INTEGER NOT NULL,
        status_code       INTEGER,
        error             TEXT,
        response_headers  TEXT NOT NULL,
        response_body     TEXT
    ) STRICT;
    INSERT INTO attempts_rebuilt (id, delivery_id, tenant_id, number, started_at, duration_ms,
        status_code, error, response_headers, response_body)
        SELECT id, delivery_id, tenant_id, number, started_at, duration_ms, status_code, error,
            response_headers, response_body
        FROM attempts ORDER BY rowid;
    DROP TABLE attempts;
    ALTER TABLE attempts_rebuilt RENAME TO attempts;
    CREATE INDEX attempts_by_delivery ON attempts(delivery_id, number);",
    // 7: each tenant's dead letters, for listing and redriving them without reading
    // every delivery the tenant has; only deaths and redrives maintain it.
    "CREATE INDEX deliveries_dead ON deliveries(tenant_id, id) WHERE status = 'dead';",
    // 8: deliveries no longer reference targets, and the index of every delivery by
    // target goes. Its one use was that reference's cascade when a target is deleted,
    // yet every delivery written paid for it (near a quarter of the pages a fan-out commit
    // writes). A deleted target's deliveries still owed or dead are now deleted through
    // the lanes' partial indexes, and those it received stay as history (see
    // `queue::delete_target`). A reference cannot be dropped in SQLite, so the table is
    // rebuilt: on a large queue this takes a while, once, at start.
    "CREATE TABLE deliveries_rebuilt (
        id                TEXT PRIMARY KEY,
        tenant_id         TEXT NOT NULL,
        event_id          TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
        target_id         TEXT NOT NULL,
        subscription_id   TEXT NOT NULL,
        event_type        TEXT NOT NULL,
        status            TEXT NOT NULL,
        attempts          INTEGER NOT NULL,
        next_attempt_at   INTEGER NOT NULL,
        window_start      INTEGER NOT NULL,
        lease_token       INTEGER NOT NULL DEFAULT 0,
        lease_expires_at  INTEGER,
        last_status_code  INTEGER,
        last_error        TEXT,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    ) STRICT;
    INSERT INTO deliveries_rebuilt (id, tenant_id, event_id, target_id, subscription_id, event_type,
        status, attempts, next_attempt_at, window_start, lease_token, lease_expires_at,
        last_status_code, last_error, created_at, updated_at)
        SELECT id, tenant_id, event_id, target_id, subscription_id, event_type, status, attempts,
            next_attempt_at, window_start, lease_token, lease_expires_at, last_status_code,
            last_error, created_at, updated_at
        FROM deliveries ORDER BY rowid;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_rebuilt RENAME TO deliveries;
    CREATE INDEX deliveries_by_tenant ON deliveries(tenant_id, id);
    CREATE INDEX deliveries_by_event ON deliveries(event_id);
    CREATE INDEX deliveries_first_due ON deliveries(target_id, next_attempt_at)
        WHERE status = 'pending' AND attempts = 0;
    CREATE INDEX deliveries_retry_due ON deliveries(target_id, next_attempt_at)
        WHERE status = 'pending' AND attempts > 0;
    CREATE INDEX deliveries_in_flight ON deliveries(target_id) WHERE status = 'delivering';
    CREATE INDEX deliveries_dead ON deliveries(tenant_id, id) WHERE status = 'dead';",
];

/// The schema version this binary writes.
pub(super) fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Applies every migration the database has not seen, each in its own transaction.
pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    migrate_to(connection, latest_version())
}

/// Applies the migrations up to schema `target`.
///
/// Foreign keys are off while migrations run, as SQLite's procedure for rebuilding a
/// table requires: with them on, dropping a table that others reference would cascade
/// into their rows. Each migration checks the references before it commits.
fn migrate_to(connection: &mut Connection, target: i64) -> Result<(), StoreError> {
    let current = version(connection)?;
    crate::schema_version::refuse_newer(current, latest_version())?;
    if current >= target {
        return Ok(());
    }
    connection
        .pragma_update(None, "foreign_keys", false)
        .map_err(translate)?;
    let applied = apply(connection, current, target);
    let restored = connection
        .pragma_update(None, "foreign_keys", true)
        .map_err(translate);
    applied.and(restored)
}

fn apply(connection: &mut Connection, current: i64, target: i64) -> Result<(), StoreError> {
    for (version, sql) in (1_i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
        .take_while(|(version, _)| *version <= target)
    {
        let transaction = connection.transaction().map_err(translate)?;
        transaction.execute_batch(sql).map_err(translate)?;
        let broken: Option<String> = transaction
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()
            .map_err(translate)?;
        if let Some(table) = broken {
            return Err(StoreError::Corrupt {
                detail: format!(
                    "after migration {version}, rows of {table} reference missing rows"
                ),
            });
        }
        transaction
            .pragma_update(None, "user_version", version)
            .map_err(translate)?;
        transaction.commit().map_err(translate)?;
        tracing::info!(version, "applied SQLite schema migration");
    }
    Ok(())
}

/// The schema version recorded in the database.
pub(super) fn version(connection: &Connection) -> Result<i64, StoreError> {
    connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(translate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(connection: &Connection, table: &str) -> i64 {
        connection
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count")
    }

    fn insert_event(
        connection: &Connection,
        id: &str,
        key: Option<&str>,
    ) -> rusqlite::Result<usize> {
        connection.execute(
            "INSERT INTO events (id, tenant_id, event_type, content_type, payload, idempotency_key, \
             created_at) VALUES (?1, 'ten_a', 'order.paid', 'application/json', X'7B7D', ?2, 1)",
            rusqlite::params![id, key],
        )
    }

    /// A store at schema `version` holding tenant `ten_a` and its target `tgt_a`.
    fn store_with_a_target_at(version: i64) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut connection = Connection::open(dir.path().join("herald.db")).expect("database");
        connection
            .pragma_update(None, "foreign_keys", true)
            .expect("foreign keys");
        migrate_to(&mut connection, version).expect("older schema");
        connection
            .execute_batch(
                "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ('ten_a', 'a', 1, 1);
                 INSERT INTO targets (id, tenant_id, url, secret, headers, max_in_flight, timeout_ms,
                     active, created_at, updated_at)
                     VALUES ('tgt_a', 'ten_a', 'http://127.0.0.1/', 'whsec_x', '{}', 10, 1000, 1, 1, 1);",
            )
            .expect("tenant and target");
        (dir, connection)
    }

    /// Deletes `evt_1`, whose delivery and its attempt are the only ones stored.
    fn assert_deleting_the_event_deletes_its_delivery_and_attempt(connection: &Connection) {
        connection
            .execute("DELETE FROM events WHERE id = 'evt_1'", [])
            .expect("delete event");
        assert_eq!(
            [
                count(connection, "deliveries"),
                count(connection, "attempts")
            ],
            [0, 0]
        );
    }

    fn names(connection: &Connection, sql: &str) -> Vec<String> {
        let mut statement = connection.prepare(sql).expect("query");
        statement
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("names")
    }

    #[test]
    fn rebuilt_deliveries_keep_their_rows_and_lose_only_the_target_reference() {
        let (_dir, mut connection) = store_with_a_target_at(7);
        insert_event(&connection, "evt_1", None).expect("event");
        connection
            .execute_batch(
                "INSERT INTO deliveries (id, tenant_id, event_id, target_id, subscription_id, event_type,
                     status, attempts, next_attempt_at, window_start, lease_token, lease_expires_at,
                     last_status_code, last_error, created_at, updated_at)
                     VALUES ('dlv_1', 'ten_a', 'evt_1', 'tgt_a', 'sub_a', 'order.paid', 'delivering', 2,
                     5, 4, 7, 99, 503, 'HTTP 503', 3, 6);
                 INSERT INTO attempts (id, delivery_id, tenant_id, number, started_at, duration_ms,
                     status_code, response_headers)
                     VALUES ('att_1', 'dlv_1', 'ten_a', 1, 1, 3, 503, '[]');",
            )
            .expect("delivery and attempt");

        migrate(&mut connection).expect("latest schema");

        let kept: (String, i64, i64, i64, i64, Option<i64>, Option<String>) = connection
            .query_row(
                "SELECT status, attempts, next_attempt_at, window_start, lease_token, \
                 last_status_code, last_error FROM deliveries WHERE id = 'dlv_1'",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                    ))
                },
            )
            .expect("the delivery, every column kept");
        assert_eq!(
            kept,
            (
                "delivering".into(),
                2,
                5,
                4,
                7,
                Some(503),
                Some("HTTP 503".into())
            )
        );
        assert_eq!(
            names(
                &connection,
                "SELECT \"table\" FROM pragma_foreign_key_list('deliveries')"
            ),
            ["events"],
            "deliveries reference their events only"
        );
        assert_eq!(
            names(
                &connection,
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'deliveries' \
                 AND sql IS NOT NULL ORDER BY name"
            ),
            [
                "deliveries_by_event",
                "deliveries_by_tenant",
                "deliveries_dead",
                "deliveries_first_due",
                "deliveries_in_flight",
                "deliveries_retry_due"
            ]
        );
        // Attempts reference the rebuilt table: removing the event removes both.
        assert_deleting_the_event_deletes_its_delivery_and_attempt(&connection);
    }

    #[test]
    fn rebuilt_attempts_keep_their_rows_and_references() {
        let (_dir, mut connection) = store_with_a_target_at(5);
        insert_event(&connection, "evt_1", Some("order-1")).expect("keyed event");
        insert_event(&connection, "evt_2", None).expect("keyless event");
        connection
            .execute_batch(
                "INSERT INTO deliveries (id, tenant_id, event_id, target_id, subscription_id, event_type,
                     status, attempts, next_attempt_at, window_start, created_at, updated_at)
                     VALUES ('dlv_1', 'ten_a', 'evt_1', 'tgt_a', 'sub_a', 'order.paid', 'delivered', 1,
                     1, 1, 1, 1);
                 INSERT INTO attempts (id, delivery_id, tenant_id, number, started_at, duration_ms,
                     status_code, response_headers)
                     VALUES ('att_1', 'dlv_1', 'ten_a', 1, 1, 3, 200, '[]');",
            )
            .expect("delivery and attempt");

        migrate(&mut connection).expect("latest schema");

        assert_eq!(version(&connection).expect("version"), latest_version());
        assert_eq!(
            [
                count(&connection, "events"),
                count(&connection, "deliveries"),
                count(&connection, "attempts")
            ],
            [2, 1, 1]
        );
        let foreign_keys: bool = connection
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .expect("pragma");
        assert!(foreign_keys, "foreign keys are back on after migrating");
        // Attempts reference deliveries still: removing the event removes both.
        assert_deleting_the_event_deletes_its_delivery_and_attempt(&connection);
    }
}
