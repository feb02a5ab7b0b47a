//! Wiring: builds the store, the services and the HTTP server from a [`Config`], and
//! stops them. Everything a running instance needs is passed in here, never global,
//! so one process (a test) can run several instances side by side.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use herald_core::service::Management;
use herald_core::store::{Store, StoreError};
use herald_store::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin_token::{self, AdminTokenError};
use crate::api::{self, AppState};
use crate::config::Config;

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
    /// The admin token file cannot be read or written.
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
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

    /// Stops accepting requests, lets in-flight ones finish, and releases the store.
    pub async fn stop(self) -> io::Result<()> {
        let _ = self.shutdown.send(());
        self.server.await.map_err(io::Error::other)?
    }
}

/// Starts Herald with `config`: prepares the data directory, opens and migrates the
/// store, and starts serving the API.
pub async fn start(config: &Config) -> Result<RunningApp, StartError> {
    prepare_data_dir(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let admin = admin_token::ensure(config.admin_token.as_deref(), &config.data_dir)?;
    let store = open_store(&config.data_dir).await?;
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
    let state = AppState {
        management: Management::new(store),
        admin_token: admin.hash,
    };
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    Ok(RunningApp {
        local_address,
        generated_admin_token: admin.generated,
        shutdown,
        server: tokio::spawn(server.into_future()),
    })
}

/// Creates the directory if needed and proves it is writable, so a bad directory is
/// reported at start-up rather than at the first write.
fn prepare_data_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    let probe = path.join(".write-check");
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}

async fn open_store(data_dir: &Path) -> Result<Store, StartError> {
    let path = data_dir.to_owned();
    let opened = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .map_err(StoreError::backend)
        .and_then(|result| result);
    opened.map(Store::new).map_err(|source| StartError::Store {
        path: data_dir.to_owned(),
        source,
    })
}
