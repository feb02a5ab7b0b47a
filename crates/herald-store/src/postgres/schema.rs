//! The schema and its migrations, tracked in the `herald_schema` table.
//!
//! Migrations only ever append: the n-th entry moves the schema from version n to n+1.
//! Instances starting together migrate one at a time (under an advisory lock), and a
//! database newer than this binary is refused rather than guessed at. Column types
//! match the embedded store's (text ids and JSON, `BIGINT` milliseconds), so both
//! backends read rows with the same decoders.

use deadpool_postgres::Client;
use herald_core::store::StoreError;

use super::error::translate;

/// The advisory lock key held while migrating ("herald" in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64;

const MIGRATIONS: &[&str] = &[
    // 1: the whole schema of the embedded store's version 4, plus who holds each lease
    // and the registry of running instances. Every target has a `target_flow` row: the
    // lock claims take on it makes its shared limits exact across instances.
    "CREATE TABLE tenants (
        id                 TEXT PRIMARY KEY,
        name               TEXT NOT NULL,
        created_at         BIGINT NOT NULL,
        updated_at         BIGINT NOT NULL,
        ingest_rate_limit  DOUBLE PRECISION
    );
    CREATE TABLE api_keys (
        id              TEXT PRIMARY KEY,
        tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        key_hash        BYTEA NOT NULL UNIQUE,
        visible_prefix  TEXT NOT NULL,
        created_at      BIGINT NOT NULL
    );
    CREATE INDEX api_keys_by_tenant ON api_keys(tenant_id, id);
    CREATE TABLE targets (
        id                          TEXT PRIMARY KEY,
        tenant_id                   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        url                         TEXT NOT NULL,
        description                 TEXT,
        secret                      TEXT NOT NULL,
        headers                     TEXT NOT NULL,
        rate_limit_per_second       DOUBLE PRECISION,
        max_in_flight               BIGINT NOT NULL,
        timeout_ms                  BIGINT NOT NULL,
        active                      BOOLEAN NOT NULL,
        created_at                  BIGINT NOT NULL,
        updated_at                  BIGINT NOT NULL,
        previous_secret             TEXT,
        previous_secret_expires_at  BIGINT,
        disabled_reason             TEXT,
        UNIQUE (tenant_id, id)
    );
    CREATE TABLE filters (
        id           TEXT PRIMARY KEY,
        tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        description  TEXT,
        patterns     TEXT NOT NULL,
        created_at   BIGINT NOT NULL,
        updated_at   BIGINT NOT NULL,
        UNIQUE (tenant_id, id)
    );
    CREATE TABLE subscriptions (
        id          TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL,
        target_id   TEXT NOT NULL,
        filter_id   TEXT NOT NULL,
        active      BOOLEAN NOT NULL,
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL,
        UNIQUE (target_id, filter_id),
        FOREIGN KEY (tenant_id, target_id) REFERENCES targets(tenant_id, id) ON DELETE CASCADE,
        FOREIGN KEY (tenant_id, filter_id) REFERENCES filters(tenant_id, id) ON DELETE CASCADE
    );
    CREATE INDEX subscriptions_by_tenant ON subscriptions(tenant_id, id);
    CREATE INDEX subscriptions_by_filter ON subscriptions(filter_id);
    CREATE TABLE events (
        id               TEXT PRIMARY KEY,
        tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        event_type       TEXT NOT NULL,
        content_type     TEXT NOT NULL,
        payload          BYTEA NOT NULL,
        idempotency_key  TEXT,
        created_at       BIGINT NOT NULL,
        UNIQUE (tenant_id, idempotency_key)
    );
    CREATE TABLE deliveries (
        id                TEXT PRIMARY KEY,
        tenant_id         TEXT NOT NULL,
        event_id          TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
        target_id         TEXT NOT NULL,
        subscription_id   TEXT NOT NULL,
        event_type        TEXT NOT NULL,
        status            TEXT NOT NULL,
        attempts          BIGINT NOT NULL,
        next_attempt_at   BIGINT NOT NULL,
        window_start      BIGINT NOT NULL,
        lease_token       BIGINT NOT NULL DEFAULT 0,
        lease_expires_at  BIGINT,
        leased_by         TEXT,
        last_status_code  BIGINT,
        last_error        TEXT,
        created_at        BIGINT NOT NULL,
        updated_at        BIGINT NOT NULL,
        FOREIGN KEY (tenant_id, target_id) REFERENCES targets(tenant_id, id) ON DELETE CASCADE
    );
    CREATE INDEX deliveries_first_due ON deliveries(target_id, next_attempt_at)
        WHERE status = 'pending' AND attempts = 0;
    CREATE INDEX deliveries_retry_due ON deliveries(target_id, next_attempt_at)
        WHERE status = 'pending' AND attempts > 0;
    CREATE INDEX deliveries_by_tenant ON deliveries(tenant_id, id);
    CREATE INDEX deliveries_by_event ON deliveries(event_id);
    CREATE INDEX deliveries_by_target ON deliveries(target_id);
    CREATE TABLE attempts (
        id                TEXT PRIMARY KEY,
        delivery_id       TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
        tenant_id         TEXT NOT NULL,
        number            BIGINT NOT NULL,
        started_at        BIGINT NOT NULL,
        duration_ms       BIGINT NOT NULL,
        status_code       BIGINT,
        error             TEXT,
        response_headers  TEXT NOT NULL,
        response_body     TEXT
    );
    CREATE INDEX attempts_by_delivery ON attempts(delivery_id, number);
    CREATE TABLE circuits (
        target_id             TEXT PRIMARY KEY REFERENCES targets(id) ON DELETE CASCADE,
        state                 TEXT NOT NULL,
        since                 BIGINT NOT NULL,
        consecutive_failures  BIGINT NOT NULL,
        next_probe_at         BIGINT,
        opens                 BIGINT NOT NULL
    );
    CREATE TABLE target_flow (
        target_id  TEXT PRIMARY KEY REFERENCES targets(id) ON DELETE CASCADE,
        tokens     DOUBLE PRECISION,
        tokens_at  BIGINT
    );
    -- In flight per target, for shared limits; lease recovery scans it too (it holds only
    -- the deliveries under way), so renewing a lease changes no indexed column.
    CREATE INDEX deliveries_in_flight ON deliveries(target_id) WHERE status = 'delivering';
    CREATE TABLE instances (
        id            TEXT PRIMARY KEY,
        description   TEXT NOT NULL,
        started_at    BIGINT NOT NULL,
        heartbeat_at  BIGINT NOT NULL
    );
    CREATE TABLE leadership (
        role        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        expires_at  BIGINT NOT NULL
    );
    CREATE INDEX events_by_age ON events(created_at);
    CREATE TABLE parked_records (
        id             TEXT PRIMARY KEY,
        topic          TEXT NOT NULL,
        partition      BIGINT NOT NULL,
        record_offset  BIGINT NOT NULL,
        reason         TEXT NOT NULL,
        headers        TEXT NOT NULL,
        value          BYTEA,
        value_bytes    BIGINT NOT NULL,
        parked_at      BIGINT NOT NULL,
        UNIQUE (topic, partition, record_offset)
    );",
    // 2: each tenant's dead letters, for listing and redriving them without reading
    // every delivery the tenant has; only deaths and redrives maintain it.
    "CREATE INDEX deliveries_dead ON deliveries(tenant_id, id) WHERE status = 'dead';",
    // 3: deliveries no longer reference targets, as on SQLite: a deleted target's
    // deliveries still owed or dead are deleted with it, and those it received stay as
    // history (see `queue::delete_target`). Intake and requeues hold the target's row
    // themselves, as the reference's check did.
    "ALTER TABLE deliveries DROP CONSTRAINT deliveries_tenant_id_target_id_fkey;",
];

/// The schema version this binary writes.
pub(super) fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Applies every migration the database has not seen, each in its own transaction,
/// one instance at a time.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    // A migration may take longer than the statement timeout Herald's connections
    // otherwise run with (an index on a big table).
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(translate)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(translate)?;
    let result = apply_pending(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(translate);
    let reset = client
        .batch_execute("RESET statement_timeout")
        .await
        .map_err(translate);
    result.and(unlocked.map(drop)).and(reset)
}

async fn apply_pending(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS herald_schema (version BIGINT NOT NULL)")
        .await
        .map_err(translate)?;
    let current = version(client).await?;
    crate::schema_version::refuse_newer(current, latest_version())?;
    for (version, sql) in (1_i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let transaction = client.transaction().await.map_err(translate)?;
        transaction.batch_execute(sql).await.map_err(translate)?;
        transaction
            .execute("DELETE FROM herald_schema", &[])
            .await
            .map_err(translate)?;
        transaction
            .execute(
                "INSERT INTO herald_schema (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(translate)?;
        transaction.commit().await.map_err(translate)?;
        tracing::info!(version, "applied PostgreSQL schema migration");
    }
    Ok(())
}

/// The schema version recorded in the database (0 for a new one).
pub(super) async fn version(client: &Client) -> Result<i64, StoreError> {
    let row = client
        .query_opt("SELECT max(version) FROM herald_schema", &[])
        .await
        .map_err(translate)?;
    Ok(row
        .and_then(|row| row.get::<_, Option<i64>>(0))
        .unwrap_or(0))
}
