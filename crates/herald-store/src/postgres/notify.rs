//! Telling other instances about changes, with `LISTEN`/`NOTIFY`.
//!
//! A write that other instances must react to sends a notification inside its own
//! transaction, so it is delivered exactly when (and only if) the change commits. Each
//! instance keeps one extra connection that listens, turns notifications from other
//! instances into [`Change`]s, and ignores its own (it knew already). When that
//! connection is lost, notifications may have been missed: after reconnecting it
//! reports [`Change::Everything`]. Notifications only make instances react sooner:
//! every instance also rescans the store periodically.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::GenericClient;
use futures_util::StreamExt;
use herald_core::id::{TargetId, TenantId};
use herald_core::store::{Change, ChangeListener, StoreError};
use tokio_postgres::{AsyncMessage, NoTls};

use super::rows;

/// The notification channel every instance listens on.
pub const CHANNEL: &str = "herald_changes";

/// PostgreSQL's limit on a notification payload is 8000 bytes; a longer list of
/// targets is sent as "look at everything" instead.
const MAX_PAYLOAD: usize = 7_000;

/// How long new work is gathered before it is announced in one notification.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(10);

/// How long to wait before listening again after the connection was lost.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// This process's mark on its notifications, so its listener can skip them.
#[derive(Debug, Clone)]
pub(super) struct Origin(Arc<str>);

impl Origin {
    pub(super) fn new() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string().into())
    }

    /// Sends `change` to the other instances when `client`'s transaction commits.
    pub(super) async fn send(
        &self,
        client: &impl GenericClient,
        change: &Change,
    ) -> Result<(), StoreError> {
        let payload = encode(&self.0, change);
        rows::execute(client, "SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map(drop)
    }
}

fn encode(origin: &str, change: &Change) -> String {
    let body = match change {
        Change::Due(targets) => {
            let list: Vec<&str> = targets.iter().map(TargetId::as_str).collect();
            format!("due {}", list.join(","))
        }
        Change::Config(tenant) => format!("config {tenant}"),
        Change::Circuit(target) => format!("circuit {target}"),
        Change::Everything => "everything".to_owned(),
    };
    if body.len() > MAX_PAYLOAD {
        format!("{origin} everything")
    } else {
        format!("{origin} {body}")
    }
}

/// The change a notification payload describes, if it came from another process.
fn decode(own: &str, payload: &str) -> Option<Change> {
    let (origin, body) = payload.split_once(' ')?;
    if origin == own {
        return None;
    }
    let (kind, data) = body.split_once(' ').unwrap_or((body, ""));
    match kind {
        "due" => Some(Change::Due(
            data.split(',').filter_map(TargetId::parse).collect(),
        )),
        "config" => TenantId::parse(data).map(Change::Config),
        "circuit" => TargetId::parse(data).map(Change::Circuit),
        _ => Some(Change::Everything),
    }
}

/// Announces new work to the other instances, many commits in one notification.
///
/// `NOTIFY` takes a database-wide lock when its transaction commits, so one per
/// intake transaction would serialise every instance's intake on it. Instead intake
/// hands the targets of committed deliveries here, and one notification every
/// [`ANNOUNCE_EVERY`] carries them all, outside any transaction. Other instances learn
/// of new work that much later; this instance's own scheduler is told at once.
pub(super) struct Announcer {
    pending: Arc<Mutex<Vec<TargetId>>>,
    wake: Arc<tokio::sync::Notify>,
    _task: Background,
}

impl Announcer {
    pub(super) fn start(pool: deadpool_postgres::Pool, origin: Origin) -> Self {
        let pending: Arc<Mutex<Vec<TargetId>>> = Arc::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(announce(
            pool,
            origin,
            Arc::clone(&pending),
            Arc::clone(&wake),
        ));
        Self {
            pending,
            wake,
            _task: Background(task),
        }
    }

    /// These targets have new work, committed already.
    pub(super) fn due(&self, targets: impl IntoIterator<Item = TargetId>) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(targets);
        self.wake.notify_one();
    }
}

async fn announce(
    pool: deadpool_postgres::Pool,
    origin: Origin,
    pending: Arc<Mutex<Vec<TargetId>>>,
    wake: Arc<tokio::sync::Notify>,
) {
    loop {
        wake.notified().await;
        tokio::time::sleep(ANNOUNCE_EVERY).await;
        let mut targets =
            std::mem::take(&mut *pending.lock().unwrap_or_else(PoisonError::into_inner));
        targets.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        targets.dedup();
        if targets.is_empty() {
            continue;
        }
        let sent = match pool.get().await {
            Ok(client) => origin.send(&client, &Change::Due(targets)).await,
            Err(error) => Err(StoreError::backend(error)),
        };
        // Only a delay: the other instances' periodic rescans find the work anyway.
        if let Err(error) = sent {
            tracing::warn!(%error, "announcing new work to other instances failed");
        }
    }
}

/// The listening connection, running until dropped.
pub(super) struct Listener {
    listener: Arc<Mutex<Option<ChangeListener>>>,
    _task: Background,
}

impl Listener {
    /// Starts listening; changes are dropped until [`Self::set`] names a listener.
    pub(super) fn start(config: tokio_postgres::Config, origin: Origin) -> Self {
        let listener: Arc<Mutex<Option<ChangeListener>>> = Arc::default();
        let task = tokio::spawn(listen(config, origin, Arc::clone(&listener)));
        Self {
            listener,
            _task: Background(task),
        }
    }

    /// Names who is told about changes.
    pub(super) fn set(&self, listener: ChangeListener) {
        *self.listener.lock().unwrap_or_else(PoisonError::into_inner) = Some(listener);
    }
}

/// A task that runs as long as its owner: dropping this aborts it.
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn listen(
    config: tokio_postgres::Config,
    origin: Origin,
    listener: Arc<Mutex<Option<ChangeListener>>>,
) {
    let tell = |change: Change| {
        let current = listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(current) = current {
            current(change);
        }
    };
    loop {
        match listen_once(&config, &origin, &tell).await {
            Ok(()) => tracing::warn!("the PostgreSQL notification connection closed; reconnecting"),
            Err(error) => {
                tracing::warn!(%error, "listening for PostgreSQL notifications failed; retrying");
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Listens on one connection until it ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    origin: &Origin,
    tell: &impl Fn(Change),
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if sender.send(notification.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "the PostgreSQL notification connection failed");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Whatever was sent while this connection was not listening is lost.
    tell(Change::Everything);
    while let Some(payload) = received.recv().await {
        if let Some(change) = decode(&origin.0, &payload) {
            tell(change);
        }
    }
    driver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_own_ones_are_skipped() {
        let tenant = TenantId::generate();
        let targets = vec![TargetId::generate(), TargetId::generate()];
        for change in [
            Change::Due(targets.clone()),
            Change::Config(tenant),
            Change::Circuit(targets[0].clone()),
            Change::Everything,
        ] {
            let payload = encode("a", &change);
            assert_eq!(decode("b", &payload), Some(change));
            assert_eq!(decode("a", &payload), None);
        }
    }

    #[test]
    fn a_payload_over_the_limit_becomes_everything() {
        let targets = (0..500).map(|_| TargetId::generate()).collect();
        let payload = encode("a", &Change::Due(targets));
        assert!(payload.len() < 8_000);
        assert_eq!(decode("b", &payload), Some(Change::Everything));
    }
}
