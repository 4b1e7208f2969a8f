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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

    use std::time::Duration;

    use prism_proto::keyvalue::v1 as kv;
    use prism_proto::keyvalue::v1::{GetRequest, GetResponse};
    use prism_proto::plugin::v1::key_value_backend_server::{KeyValueBackend, KeyValueBackendServer};
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response};

    use super::*;

    type Reply = Result<KeyValueReply, Status>;

    /// A plugin whose one multiplexed stream the test drives: it sees each
    /// call and decides which replies go back, when and in which order.
    struct Scripted {
        stream: Mutex<Option<(mpsc::Sender<KeyValueCall>, mpsc::Receiver<Reply>)>>,
    }

    #[tonic::async_trait]
    impl KeyValueBackend for Scripted {
        type MultiplexStream = ReceiverStream<Reply>;

        async fn multiplex(
            &self,
            request: Request<Streaming<KeyValueCall>>,
        ) -> Result<Response<Self::MultiplexStream>, Status> {
            let (calls, replies) = self.stream.lock().unwrap().take().expect("one stream");
            let mut incoming = request.into_inner();
            tokio::spawn(async move {
                while let Ok(Some(call)) = incoming.message().await {
                    let _ = calls.send(call).await;
                }
            });
            Ok(Response::new(ReceiverStream::new(replies)))
        }

        async fn put(&self, _: Request<kv::PutRequest>) -> Result<Response<kv::PutResponse>, Status> {
            Err(Status::unimplemented("unary"))
        }
        async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
            Err(Status::unimplemented("unary"))
        }
        async fn delete(&self, _: Request<kv::DeleteRequest>) -> Result<Response<kv::DeleteResponse>, Status> {
            Err(Status::unimplemented("unary"))
        }
        async fn batch_get(&self, _: Request<kv::BatchGetRequest>) -> Result<Response<kv::BatchGetResponse>, Status> {
            Err(Status::unimplemented("unary"))
        }
        async fn batch_put(&self, _: Request<kv::BatchPutRequest>) -> Result<Response<kv::BatchPutResponse>, Status> {
            Err(Status::unimplemented("unary"))
        }
        async fn scan(&self, _: Request<kv::ScanRequest>) -> Result<Response<kv::ScanResponse>, Status> {
            Err(Status::unimplemented("unary"))
        }
    }

    /// The plugin side of the test: the calls it received, and where its
    /// replies go.
    struct Plugin {
        calls: mpsc::Receiver<KeyValueCall>,
        replies: mpsc::Sender<Reply>,
    }

    impl Plugin {
        /// The next `n` calls, by the key each asked for.
        async fn receive(&mut self, n: usize) -> Vec<(u64, String)> {
            let mut calls = Vec::new();
            for _ in 0..n {
                let call = tokio::time::timeout(Duration::from_secs(5), self.calls.recv()).await.unwrap().unwrap();
                let Some(key_value_call::Request::Get(get)) = call.request else { panic!("not a get: {call:?}") };
                calls.push((call.id, get.key));
            }
            calls
        }

        /// Answers call `id` with its key as the value.
        async fn answer(&self, (id, key): &(u64, String)) {
            let reply = key_value_reply::Reply::Get(GetResponse {
                value: key.clone().into_bytes().into(),
                ..Default::default()
            });
            self.replies.send(Ok(KeyValueReply { id: *id, reply: Some(reply) })).await.unwrap();
        }
    }

    async fn open() -> (Arc<Mux>, Plugin) {
        let (calls_tx, calls) = mpsc::channel(64);
        let (replies, replies_rx) = mpsc::channel(64);
        let service = Scripted { stream: Mutex::new(Some((calls_tx, replies_rx))) };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KeyValueBackendServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
        (Mux::open(channel, 1 << 20).await.unwrap(), Plugin { calls, replies })
    }

    fn get(mux: &Arc<Mux>, key: &str) -> tokio::task::JoinHandle<Result<String, String>> {
        let mux = mux.clone();
        let request = key_value_call::Request::Get(GetRequest { namespace: "ns".into(), key: key.into() });
        tokio::spawn(async move {
            match mux.call(request, CallOptions::default()).await {
                Ok(key_value_reply::Reply::Get(r)) => Ok(String::from_utf8(r.value.to_vec()).unwrap()),
                other => Err(format!("{other:?}")),
            }
        })
    }

    async fn value(call: tokio::task::JoinHandle<Result<String, String>>) -> String {
        tokio::time::timeout(Duration::from_secs(5), call).await.expect("no reply in 5 s").unwrap().unwrap()
    }

    /// Replies in any order reach their own callers, and the stream serves
    /// calls again after every caller has had its reply.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_in_any_order_reach_their_own_callers() {
        let (mux, mut plugin) = open().await;
        for round in 0..3 {
            let keys: Vec<String> = (0..16).map(|i| format!("r{round}-k{i}")).collect();
            let calls: Vec<_> = keys.iter().map(|k| get(&mux, k)).collect();
            let mut received = plugin.receive(keys.len()).await;
            // Last sent answered first.
            received.reverse();
            for call in &received {
                plugin.answer(call).await;
            }
            for (call, key) in calls.into_iter().zip(&keys) {
                assert_eq!(&value(call).await, key);
            }
        }
        assert!(mux.is_open());
    }

    /// The first caller gives up before its reply: the caller after it
    /// still gets its own, the late reply is dropped, and the stream goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_leaves_the_stream_to_the_others() {
        let (mux, mut plugin) = open().await;
        let first = get(&mux, "first");
        let [first_call] = plugin.receive(1).await.try_into().unwrap();
        let second = get(&mux, "second");
        let [second_call] = plugin.receive(1).await.try_into().unwrap();
        first.abort();
        let _ = first.await;
        plugin.answer(&second_call).await;
        assert_eq!(value(second).await, "second");
        // The first call's late reply is dropped, and the stream goes on.
        plugin.answer(&first_call).await;
        let third = get(&mux, "third");
        let [third_call] = plugin.receive(1).await.try_into().unwrap();
        plugin.answer(&third_call).await;
        assert_eq!(value(third).await, "third");
    }

    /// Every other caller gives up while the rest wait, round after round:
    /// those that stay get their own replies, the others' replies are
    /// dropped, and no caller leaves its entry behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_giving_up_in_turn_leave_nothing_behind() {
        let (mux, mut plugin) = open().await;
        for round in 0..20 {
            let keys: Vec<String> = (0..8).map(|i| format!("r{round}-k{i}")).collect();
            let calls: Vec<_> = keys.iter().map(|k| get(&mux, k)).collect();
            let received = plugin.receive(keys.len()).await;
            let mut kept = Vec::new();
            for (i, (call, key)) in calls.into_iter().zip(&keys).enumerate() {
                if i % 2 == round % 2 {
                    call.abort();
                    assert!(call.await.unwrap_err().is_cancelled());
                } else {
                    kept.push((call, key));
                }
            }
            // Those that gave up have taken their entries with them.
            assert_eq!(mux.shared.pending.lock().unwrap().len(), kept.len(), "round {round}");
            // Answer every call, those that gave up too, one by one.
            for call in &received {
                plugin.answer(call).await;
                tokio::task::yield_now().await;
            }
            for (call, key) in kept {
                assert_eq!(&value(call).await, key);
            }
        }
        assert!(mux.shared.pending.lock().unwrap().is_empty(), "entries left behind");
    }

    /// The plugin ends the stream: every waiting caller fails, and so does
    /// every later one, and the stream reports itself closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_that_ends_fails_every_waiting_caller() {
        let (mux, mut plugin) = open().await;
        let calls: Vec<_> = (0..4).map(|i| get(&mux, &format!("k{i}"))).collect();
        plugin.receive(4).await;
        plugin.replies.send(Err(Status::internal("plugin gone"))).await.unwrap();
        for call in calls {
            let answer = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
            assert!(answer.is_err(), "{answer:?}");
        }
        assert!(!mux.is_open());
        assert!(mux.call(key_value_call::Request::Get(GetRequest::default()), CallOptions::default()).await.is_err());
    }
}
