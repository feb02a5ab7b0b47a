//! A store shared by any number of Herald instances: one PostgreSQL database.
//!
//! Statements run on a pool of connections (`deadpool-postgres`), each statement
//! prepared once per connection. Work is claimed row by row with `FOR UPDATE SKIP
//! LOCKED`, so instances never wait on each other's claims; each lease records the
//! instance holding it (`leased_by`, for operators) and is renewed by it while the
//! attempt runs, so a dead instance's leases run out and the leader recovers them.
//! Configuration changes are announced with `NOTIFY` inside the transaction that makes
//! them, so they arrive exactly when they commit; new work is announced right after its
//! commit, many commits per notification (see [`notify`]). Concurrent intake calls share
//! one transaction (see [`intake`]).

mod backend;
mod error;
mod housekeeping;
mod intake;
mod notify;
mod parked;
mod queue;
mod rows;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use herald_core::store::StoreError;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

pub use notify::CHANNEL;

use crate::CommitObserver;

/// How to reach the database and how many connections to keep.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A `postgres://` URL or a `key=value` connection string.
    pub url: String,
    /// Most connections this instance opens.
    pub pool_size: usize,
    /// Longest wait for a connection (from the pool, or a new one) before a store
    /// operation fails.
    pub connect_timeout: Duration,
    /// This instance's id: recorded on the leases it holds.
    pub instance_id: String,
}

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PostgresSetupError {
    /// The URL does not parse.
    #[error("the database URL is not valid: {0}")]
    BadUrl(String),
    /// The URL asks for something this build cannot do.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The pool could not be built.
    #[error("cannot set up the connection pool: {0}")]
    Pool(String),
    /// Connecting or migrating failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A [`StoreBackend`](herald_core::store::StoreBackend) on a PostgreSQL database.
pub struct PostgresStore {
    database: Arc<Database>,
    intake: intake::Intake,
    listener: notify::Listener,
}

/// The connections and what every statement needs, shared with the intake task.
pub(super) struct Database {
    pool: Pool,
    instance_id: String,
    notifier: notify::Origin,
    announcer: notify::Announcer,
    observer: CommitObserver,
}

impl PostgresStore {
    /// Connects, brings the schema up to date (one instance at a time) and starts
    /// listening for other instances' changes.
    pub async fn connect(options: PostgresOptions) -> Result<Self, PostgresSetupError> {
        Self::connect_observed(options, Arc::new(|_| {})).await
    }

    /// Like [`Self::connect`], telling `observer` how long every commit takes.
    pub async fn connect_observed(
        options: PostgresOptions,
        observer: CommitObserver,
    ) -> Result<Self, PostgresSetupError> {
        let config = parse_url(&options.url)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| PostgresSetupError::Pool(e.to_string()))?;
        let mut client = pool.get().await.map_err(error::pool)?;
        schema::migrate(&mut client).await?;
        drop(client);
        let notifier = notify::Origin::new();
        let database = Arc::new(Database {
            announcer: notify::Announcer::start(pool.clone(), notifier.clone()),
            notifier: notifier.clone(),
            instance_id: options.instance_id,
            observer,
            pool,
        });
        Ok(Self {
            listener: notify::Listener::start(config, notifier),
            intake: intake::Intake::start(Arc::clone(&database)),
            database,
        })
    }
}

impl Database {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(error::pool)
    }
}

/// `url` (a `postgres://` URL) with its database name replaced by `database`.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{database}?{query}"),
        None => format!("{host_part}/{database}"),
    }
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, PostgresSetupError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| PostgresSetupError::BadUrl(e.to_string()))?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(PostgresSetupError::Unsupported(
            "the database URL requires TLS (sslmode=require), which this Herald build does not speak to \
             PostgreSQL yet; use sslmode=disable or prefer over a trusted network",
        ));
    }
    if config.get_application_name().is_none() {
        config.application_name("herald");
    }
    // A connection the network silently dropped is noticed in about a minute, not the
    // two hours of the TCP default, and no statement waits forever.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(30));
    }
    if config.get_options().is_none() {
        config.options("-c statement_timeout=60000");
    }
    Ok(config)
}

/// Support for test suites: a fresh, empty database per test on one test server.
pub mod testing {
    use tokio_postgres::NoTls;

    /// The variable naming the test server's URL (any database on it; the test script
    /// starts the server and sets it).
    pub const TEST_DATABASE_URL: &str = "HERALD_TEST_DATABASE_URL";

    /// Creates a new empty database on the server `admin_url` points at and returns
    /// its URL. Panics with an explanation when the server cannot be used: a test that
    /// needs PostgreSQL must fail, not skip, without it.
    pub async fn fresh_database(admin_url: &str) -> String {
        let name = format!("herald_test_{}", uuid::Uuid::now_v7().simple());
        let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin_url}: {e}"));
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        drop(client);
        let _ = driver.await;
        super::url_with_database(admin_url, &name)
    }

    /// Runs `sql` (statements separated by `;`) on the database `url` names; panics
    /// if it fails (tests use it to set up the store's own faults, such as a trigger).
    pub async fn execute(url: &str, sql: &str) {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {url}: {e}"));
        let driver = tokio::spawn(connection);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("cannot run {sql:?}: {e}"));
        drop(client);
        let _ = driver.await;
    }

    /// The test server's URL from [`TEST_DATABASE_URL`]; panics with how to set it.
    pub fn server_url() -> String {
        std::env::var(TEST_DATABASE_URL).unwrap_or_else(|_| {
            panic!(
                "{TEST_DATABASE_URL} is not set: run the tests with scripts/test, which starts PostgreSQL"
            )
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_database_name_is_replaced() {
            assert_eq!(
                super::super::url_with_database("postgres://u@h:1/postgres", "x"),
                "postgres://u@h:1/x"
            );
            assert_eq!(
                super::super::url_with_database("postgres://u@h:1?sslmode=disable", "x"),
                "postgres://u@h:1/x?sslmode=disable"
            );
        }
    }
}
