//! Group commit for event intake on PostgreSQL.
//!
//! Every commit waits for the WAL to reach the disk. One transaction per published event
//! would make intake as fast as the disk's flushes and no faster; instead concurrent
//! `insert_events` calls are gathered into one transaction (their rows travel together in
//! the same array statements) while the previous ones commit. A caller is answered only
//! after the transaction holding its events committed, as before. An idle store adds no
//! delay: a lone call is written at once.

use std::sync::Arc;

use herald_core::store::{EventRecord, Inserted, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Database;

/// Most events written in one transaction.
const MAX_EVENTS: usize = 2_000;
/// Most payload bytes written in one transaction (a group's payloads travel in one
/// array parameter).
const MAX_BYTES: usize = 16 << 20;
/// Transactions writing intake at once: one commits while the next gathers and writes.
const CONCURRENT_GROUPS: usize = 2;

type Reply = oneshot::Sender<Result<Vec<Inserted>, StoreError>>;

/// One caller's events and where to send its answer.
struct Request {
    records: Vec<EventRecord>,
    reply: Reply,
}

/// The queue intake goes through; writes groups on the store it is started with.
pub(super) struct Intake {
    sender: mpsc::UnboundedSender<Request>,
}

impl Intake {
    /// Starts writing groups to `store`; the task ends when this queue is dropped.
    pub(super) fn start(store: Arc<Database>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(gather(store, receiver));
        Self { sender }
    }

    /// Writes `records` in the next group; answers once that group committed.
    pub(super) async fn insert(
        &self,
        records: Vec<EventRecord>,
    ) -> Result<Vec<Inserted>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request { records, reply })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

fn closed() -> StoreError {
    StoreError::backend(std::io::Error::other(
        "the PostgreSQL store is shutting down",
    ))
}

async fn gather(store: Arc<Database>, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let groups = Arc::new(Semaphore::new(CONCURRENT_GROUPS));
    while let Some(first) = receiver.recv().await {
        let Ok(permit) = Arc::clone(&groups).acquire_owned().await else {
            return;
        };
        // Everything that queued while the previous groups were writing joins this one.
        let mut events = first.records.len();
        let mut bytes = payload_bytes(&first);
        let mut group = vec![first];
        while events < MAX_EVENTS && bytes < MAX_BYTES {
            let Ok(next) = receiver.try_recv() else { break };
            events += next.records.len();
            bytes += payload_bytes(&next);
            group.push(next);
        }
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            write_group(&store, group).await;
            drop(permit);
        });
    }
}

fn payload_bytes(request: &Request) -> usize {
    request.records.iter().map(|r| r.event.payload.len()).sum()
}

/// Writes a group in one transaction. If one request's data broke a rule (a target
/// deleted meanwhile), each request is written on its own, so it cannot fail its
/// neighbours; any other failure (the database unreachable) fails the whole group at
/// once rather than every request in turn.
async fn write_group(store: &Database, group: Vec<Request>) {
    let sizes: Vec<usize> = group.iter().map(|r| r.records.len()).collect();
    let (replies, records): (Vec<Reply>, Vec<Vec<EventRecord>>) =
        group.into_iter().map(|r| (r.reply, r.records)).unzip();
    let all: Vec<EventRecord> = records.into_iter().flatten().collect();
    // Each request's records, as a slice of `all`.
    let mut start = 0;
    let parts: Vec<&[EventRecord]> = sizes
        .iter()
        .map(|size| {
            let part = &all[start..start + size];
            start += size;
            part
        })
        .collect();
    match super::queue::insert_events(store, &all).await {
        Ok(mut results) => {
            for (reply, size) in replies.into_iter().zip(sizes) {
                let rest = results.split_off(size.min(results.len()));
                let _ = reply.send(Ok(std::mem::replace(&mut results, rest)));
            }
        }
        Err(StoreError::Conflict(_)) if parts.len() > 1 => {
            for (reply, part) in replies.into_iter().zip(parts) {
                let _ = reply.send(super::queue::insert_events(store, part).await);
            }
        }
        Err(error) => {
            if replies.len() > 1 {
                tracing::error!(%error, requests = replies.len(), "writing a group of events failed");
            }
            let detail = error.to_string();
            let mut error = Some(error);
            for reply in replies {
                // The first caller gets the error itself (its kind, for the API's
                // answer); the others a copy of its message.
                let failed = error
                    .take()
                    .unwrap_or_else(|| StoreError::backend(std::io::Error::other(detail.clone())));
                let _ = reply.send(Err(failed));
            }
        }
    }
}
