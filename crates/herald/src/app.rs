//! Wiring: builds the store, the services and the HTTP server from a [`Config`], and
//! stops them. Everything a running instance needs is passed in here, never global,
//! so one process (a test) can run several instances side by side.

use std::fs::{File, TryLockError};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use herald_core::flow::CircuitPolicy;
use herald_core::service::{Admission, Management};
use herald_core::store::{Change, ChangeListener, Store, StoreError};
use herald_core::time::Timestamp;
use herald_store::CommitObserver;
use herald_store::postgres::{PostgresOptions, PostgresSetupError};
use herald_store::{PostgresStore, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin_token::{self, AdminTokenError};
use crate::api::{self, AppState, IngestLimits};
use crate::config::{Config, DatabaseConfig};
use crate::dispatcher::ssrf::Guard;
use crate::dispatcher::{ClientError, Dispatcher};
use crate::housekeeping::{self, HousekeepingSettings};
use crate::metrics::Metrics;
use crate::outcome;
use crate::scheduler::{Hints, Scheduler, SchedulerSettings};

/// Why Herald could not start; each message names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created or written.
    #[error("--data-dir (HERALD_DATA_DIR): cannot use {} as the data directory", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The embedded store cannot be opened or migrated.
    #[error("cannot open the embedded store in {}", path.display())]
    Store {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The PostgreSQL database cannot be used.
    #[error("--database-url (HERALD_DATABASE_URL): cannot use the PostgreSQL database")]
    Database {
        /// Why.
        #[source]
        source: PostgresSetupError,
    },
    /// The shared store needs a configured admin token.
    #[error("HERALD_ADMIN_TOKEN must be set when --database-url is")]
    AdminTokenRequired,
    /// The Kafka consumer cannot be created.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    Kafka(#[from] crate::ingest::kafka::KafkaError),
    /// The admin token file cannot be read or written.
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    /// Another Herald process holds the data directory.
    #[error("--data-dir (HERALD_DATA_DIR): another Herald is already using {}", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The delivery HTTP client cannot be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The listen address cannot be bound.
    #[error("--listen (HERALD_LISTEN): cannot listen on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A started Herald instance.
pub struct RunningApp {
    local_address: SocketAddr,
    generated_admin_token: Option<(String, PathBuf)>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<io::Result<()>>,
    engine_stop: watch::Sender<bool>,
    engine: JoinHandle<()>,
    sources: Option<JoinHandle<()>>,
    shutdown_grace: Duration,
    _lock: Option<File>,
}

impl RunningApp {
    /// The address the API listens on (useful with port 0).
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// The admin token and its file, if this start generated it. Show it once.
    pub fn generated_admin_token(&self) -> Option<&(String, PathBuf)> {
        self.generated_admin_token.as_ref()
    }

    /// Stops accepting requests and claiming deliveries, then waits up to the shutdown
    /// grace, counted from this call, for the requests being served and the delivery
    /// attempts under way (recording their outcomes), and releases the store. Requests
    /// still open after the grace are cut off, and attempts still running are cancelled
    /// (their deliveries keep their leases and are sent again after the restart).
    pub async fn stop(mut self) -> io::Result<()> {
        // The scheduler counts its grace from the same moment.
        let deadline = tokio::time::Instant::now().checked_add(self.shutdown_grace);
        let _ = self.shutdown.send(());
        let _ = self.engine_stop.send(true);
        let served = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, &mut self.server).await {
                Ok(joined) => joined.map_err(io::Error::other)?,
                Err(_) => {
                    self.server.abort();
                    tracing::warn!(
                        "requests still open when the shutdown grace ran out were cut off"
                    );
                    Ok(())
                }
            },
            None => (&mut self.server).await.map_err(io::Error::other)?,
        };
        if let Some(sources) = self.sources
            && let Err(error) = sources.await
        {
            tracing::error!(%error, "an event source ended abnormally");
        }
        self.engine.await.map_err(io::Error::other)?;
        served
    }
}

/// Starts Herald with `config`: opens the store (the embedded one in the data
/// directory, or the shared PostgreSQL database), brings its schema up to date, and
/// starts the delivery engine and the API.
pub async fn start(config: &Config) -> Result<RunningApp, StartError> {
    let metrics = Metrics::new();
    let instance_id = uuid::Uuid::now_v7().to_string();
    let opened = match &config.database {
        None => open_embedded(config, &metrics).await?,
        Some(database) => open_shared(config, database, &instance_id, &metrics).await?,
    };
    let (store, admin, lock) = (opened.store, opened.admin, opened.lock);
    let hints = Arc::new(Hints::default());
    let Engine {
        stop: engine_stop,
        handle: engine,
        admission,
    } = start_engine(
        config,
        store.clone(),
        &instance_id,
        Arc::clone(&hints),
        Arc::clone(&metrics),
    )?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            address: config.listen,
            source,
        })?;
    let local_address = listener.local_addr().map_err(|source| StartError::Listen {
        address: config.listen,
        source,
    })?;
    let management = Management::new(store.clone());
    store.watch(follow_other_instances(
        management.clone(),
        Arc::clone(&hints),
    ));
    let max_payload = usize::try_from(config.max_payload).unwrap_or(usize::MAX);
    let sources = start_sources(
        config,
        &instance_id,
        &management,
        &hints,
        &metrics,
        engine_stop.subscribe(),
    )?;
    let state = AppState {
        management,
        admin_token: admin.hash,
        hints,
        admission,
        max_payload,
        ingest_limits: Arc::new(IngestLimits::new(config.tenant_rate_limit)),
        metrics,
    };
    let (shutdown, stopped) = oneshot::channel::<()>();
    // Answers leave at once: without this, a response written in more than one piece
    // can wait for the client's delayed acknowledgement.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    Ok(RunningApp {
        local_address,
        generated_admin_token: admin.generated,
        shutdown,
        server: tokio::spawn(server.into_future()),
        engine_stop,
        engine,
        sources,
        shutdown_grace: config.shutdown_grace,
        _lock: lock,
    })
}

/// Starts the event sources besides the HTTP API (the Kafka consumer, if configured);
/// they stop when `stop` turns true.
#[cfg(feature = "kafka")]
fn start_sources(
    config: &Config,
    instance_id: &str,
    management: &Management,
    hints: &Arc<Hints>,
    metrics: &Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, StartError> {
    use crate::ingest::kafka;
    let Some(kafka_config) = &config.kafka else {
        return Ok(None);
    };
    let settings = kafka::KafkaSettings {
        brokers: kafka_config.brokers.clone(),
        topics: kafka_config.topics.clone(),
        group: kafka_config.group.clone(),
        instance_id: instance_id.to_owned(),
        max_payload: usize::try_from(config.max_payload).unwrap_or(usize::MAX),
    };
    let consumer = kafka::connect(&settings)?;
    let sinks = kafka::Sinks {
        management: management.clone(),
        hints: Arc::clone(hints),
        metrics: Arc::clone(metrics),
    };
    tracing::info!(topics = ?settings.topics, group = settings.group, "consuming events from Kafka");
    Ok(Some(tokio::spawn(kafka::run(
        consumer, settings, sinks, stop,
    ))))
}

/// Without the `kafka` feature there is no other source (the configuration refuses
/// Kafka settings).
#[cfg(not(feature = "kafka"))]
fn start_sources(
    _config: &Config,
    _instance_id: &str,
    _management: &Management,
    _hints: &Arc<Hints>,
    _metrics: &Arc<Metrics>,
    _stop: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, StartError> {
    Ok(None)
}

/// A store opened for this process, with the admin token it accepts.
struct Opened {
    store: Store,
    admin: admin_token::AdminToken,
    /// The data directory's lock, held while the embedded store is open.
    lock: Option<File>,
}

/// Opens the embedded store in the data directory, which this process then holds alone.
async fn open_embedded(config: &Config, metrics: &Arc<Metrics>) -> Result<Opened, StartError> {
    prepare_data_dir(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let lock = lock_data_dir(&config.data_dir)?;
    let admin = admin_token::ensure(config.admin_token.as_deref(), &config.data_dir)?;
    let store = open_store(&config.data_dir, metrics).await?;
    // This process alone uses the embedded store (the lock proves it), so whatever the
    // last process had in flight when it stopped is due again now.
    let released = store
        .release_all_leases(Timestamp::now())
        .await
        .map_err(|source| StartError::Store {
            path: config.data_dir.clone(),
            source,
        })?;
    if released > 0 {
        tracing::info!(
            released,
            "resuming deliveries that were in flight when Herald last stopped"
        );
    }
    Ok(Opened {
        store,
        admin,
        lock: Some(lock),
    })
}

/// Connects to the PostgreSQL database other instances may share. Their leases are
/// theirs: a dead instance's work is recovered when its leases expire.
async fn open_shared(
    config: &Config,
    database: &DatabaseConfig,
    instance_id: &str,
    metrics: &Arc<Metrics>,
) -> Result<Opened, StartError> {
    let options = PostgresOptions {
        url: database.url.clone(),
        pool_size: database.pool_size,
        connect_timeout: DATABASE_CONNECT_TIMEOUT,
        instance_id: instance_id.to_owned(),
    };
    let metrics = Arc::clone(metrics);
    let observer: CommitObserver = Arc::new(move |took| metrics.commit_took(took));
    let store = PostgresStore::connect_observed(options, observer)
        .await
        .map_err(|source| StartError::Database { source })?;
    tracing::info!(instance = instance_id, "using the shared PostgreSQL store");
    let token = config
        .admin_token
        .as_deref()
        .ok_or(StartError::AdminTokenRequired)?;
    Ok(Opened {
        store: Store::new(store),
        admin: admin_token::ensure(Some(token), &config.data_dir)?,
        lock: None,
    })
}

/// Longest wait for a PostgreSQL connection before a store operation fails.
const DATABASE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What this instance does when another instance sharing the store changes something:
/// forget cached configuration and look for work sooner.
fn follow_other_instances(management: Management, hints: Arc<Hints>) -> ChangeListener {
    Arc::new(move |change| match change {
        Change::Due(targets) => {
            let now = Timestamp::now();
            for target in &targets {
                hints.retry(target.clone(), now);
            }
            hints.first_attempts(targets, now);
        }
        Change::Config(tenant) => {
            management.forget(Some(&tenant));
            hints.rescan();
        }
        Change::Circuit(_) => hints.rescan(),
        Change::Everything => {
            management.forget(None);
            hints.rescan();
        }
    })
}

/// The longest a circuit stays open between probes, however long the target fails.
const MAX_CIRCUIT_COOLDOWN: Duration = Duration::from_secs(3600);

/// The delivery engine, started.
struct Engine {
    /// Stops it when set to `true`.
    stop: watch::Sender<bool>,
    /// Ends when the scheduler, the recorder and housekeeping have.
    handle: JoinHandle<()>,
    /// Where intake asks whether new deliveries may start in flight at once.
    admission: Arc<dyn Admission>,
}

/// Starts the scheduler, the outcome recorder and housekeeping.
fn start_engine(
    config: &Config,
    store: Store,
    instance_id: &str,
    hints: Arc<Hints>,
    metrics: Arc<Metrics>,
) -> Result<Engine, StartError> {
    let housekeeping_settings = HousekeepingSettings {
        instance_id: instance_id.to_owned(),
        retention: config.retention,
    };
    let dispatcher = Dispatcher::new(Guard::new(config.allow_targets.clone()))?;
    let settings = SchedulerSettings {
        policy: config.retry.clone(),
        circuit: CircuitPolicy {
            failures: config.circuit.failures,
            cooldown: config.circuit.cooldown,
            max_cooldown: MAX_CIRCUIT_COOLDOWN,
        },
        lease: config.delivery_lease,
        concurrency: config.delivery_concurrency,
        // The embedded store has one instance; a shared one needs every claim to
        // enforce limits across instances.
        start_at_intake: config.database.is_none(),
    };
    let (records, recorded) = mpsc::unbounded_channel();
    let scheduler = Scheduler::new(
        store.clone(),
        dispatcher,
        settings,
        Arc::clone(&hints),
        records,
        Arc::clone(&metrics),
    );
    let admission: Arc<dyn Admission> = scheduler.admission();
    let (stop, stopped) = watch::channel(false);
    let housekeeping = tokio::spawn(housekeeping::run(
        store.clone(),
        housekeeping_settings,
        metrics,
        stopped.clone(),
    ));
    let grace = config.shutdown_grace;
    let engine = tokio::spawn(async move {
        let recorder = tokio::spawn(outcome::record(store, recorded, hints));
        scheduler.run(stopped, grace).await;
        let _ = housekeeping.await;
        // The scheduler and its attempts held the only senders: the recorder drains and ends.
        let _ = recorder.await;
    });
    Ok(Engine {
        stop,
        handle: engine,
        admission,
    })
}

/// Takes the data directory's lock for the life of the process, so two instances can
/// never share an embedded store.
fn lock_data_dir(path: &Path) -> Result<File, StartError> {
    let file = File::create(path.join("herald.lock")).map_err(|source| StartError::DataDir {
        path: path.to_owned(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StartError::Locked {
            path: path.to_owned(),
        }),
        Err(TryLockError::Error(source)) => Err(StartError::DataDir {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates the directory if needed and proves it is writable, so a bad directory is
/// reported at start-up rather than at the first write.
fn prepare_data_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    let probe = path.join(".write-check");
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}

async fn open_store(data_dir: &Path, metrics: &Arc<Metrics>) -> Result<Store, StartError> {
    let path = data_dir.to_owned();
    let metrics = Arc::clone(metrics);
    let observer: CommitObserver = Arc::new(move |took| metrics.commit_took(took));
    let opened = tokio::task::spawn_blocking(move || SqliteStore::open_observed(&path, observer))
        .await
        .map_err(StoreError::backend)
        .and_then(|result| result);
    opened.map(Store::new).map_err(|source| StartError::Store {
        path: data_dir.to_owned(),
        source,
    })
}
