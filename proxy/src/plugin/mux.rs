//! KeyValue calls multiplexed on one long-lived stream per connection
//! (`KeyValueBackend.Multiplex`, ADR-007).
//!
//! A small unary call spends most of its cost opening an HTTP/2 stream and
//! encoding headers and trailers on both sides; on an open stream a call is
//! one DATA frame each way. Calls carry an id; a reader task hands each
//! reply to the caller waiting for that id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prism_proto::plugin::v1::key_value_backend_client::KeyValueBackendClient;
use prism_proto::plugin::v1::{CallOptions, KeyValueCall, KeyValueReply, key_value_call, key_value_reply};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// Calls that may wait to be written to the stream. Beyond it callers wait,
/// which pushes back on clients instead of queueing without bound.
const SEND_BUFFER: usize = 1024;

type Waiter = oneshot::Sender<Option<key_value_reply::Reply>>;

/// What the reader task and the callers share.
#[derive(Default)]
struct Shared {
    // A std mutex: held for one hash map operation, never across an await.
    pending: Mutex<HashMap<u64, Waiter>>,
    closed: AtomicBool,
}

impl Shared {
    fn take(&self, id: u64) -> Option<Waiter> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id)
    }
}

pub struct Mux {
    tx: mpsc::Sender<KeyValueCall>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux").field("open", &self.is_open()).finish_non_exhaustive()
    }
}

/// Removes a caller's pending entry if its future is dropped before the
/// reply arrives (deadline exceeded, client gone), so the map does not grow.
struct Pending<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.take(self.id);
        }
    }
}

/// The stream is gone (the plugin died or is restarting): the caller
/// reports it as a lost connection, as for a unary call.
#[derive(Debug)]
pub struct Closed;

impl Mux {
    /// Opens the stream on `channel`. Fails with UNIMPLEMENTED when the
    /// plugin does not serve it.
    pub async fn open(channel: Channel, max_message_bytes: usize) -> Result<Arc<Self>, Status> {
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        let mut client = KeyValueBackendClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let replies = client.multiplex(ReceiverStream::new(rx)).await?.into_inner();
        let shared = Arc::new(Shared::default());
        // The reader holds only the shared state, not the Mux: dropping the
        // Mux drops the sender, which ends the stream and then the reader.
        tokio::spawn(read_replies(shared.clone(), replies));
        Ok(Arc::new(Self { tx, shared, next_id: AtomicU64::new(0) }))
    }

    pub fn is_open(&self) -> bool {
        !self.shared.closed.load(Ordering::SeqCst)
    }

    /// Sends one call and waits for its reply.
    pub async fn call(
        &self,
        request: key_value_call::Request,
        options: CallOptions,
    ) -> Result<key_value_reply::Reply, Closed> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, reply) = oneshot::channel();
        self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, waiter);
        let mut pending = Pending { shared: &self.shared, id, armed: true };
        // The reader marks the stream closed before it fails the waiters, so
        // a call registered after that sweep sees the mark here.
        if !self.is_open() {
            return Err(Closed);
        }
        let call = KeyValueCall { id, request: Some(request), options: Some(options) };
        if self.tx.send(call).await.is_err() {
            return Err(Closed);
        }
        let reply = reply.await;
        pending.armed = false;
        match reply {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) | Err(_) => Err(Closed),
        }
    }
}

async fn read_replies(shared: Arc<Shared>, mut replies: Streaming<KeyValueReply>) {
    loop {
        match replies.message().await {
            Ok(Some(KeyValueReply { id, reply })) => {
                if let Some(waiter) = shared.take(id) {
                    // An empty reply is malformed; the caller reports it.
                    let _ = waiter.send(reply);
                }
            }
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(error = %status, "multiplexed stream to the plugin failed");
                break;
            }
        }
    }
    shared.closed.store(true, Ordering::SeqCst);
    let waiters = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(PoisonError::into_inner));
    for (_, waiter) in waiters {
        let _ = waiter.send(None);
    }
}
