//! The `prism.plugin.v1.KeyValueBackend` service: checks each call against
//! the declared capabilities and limits, then calls the [`KeyValueStore`].

use std::sync::Arc;
use std::time::Duration;

use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchGetResponse, BatchPutRequest, BatchPutResponse, DeleteRequest, DeleteResponse, Entry,
    GetRequest, GetResponse, GetResult, PutRequest, PutResponse, ScanRequest, ScanResponse,
};
use prism_proto::plugin::v1::key_value_backend_server::KeyValueBackend;
use prism_proto::plugin::v1::{CallError, Capabilities, KeyValueCall, KeyValueReply, key_value_call, key_value_reply};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::{KeyValueStore, Namespace, PutOp};
use crate::call::{backend, within_deadline};
use crate::cursor;
use crate::error::PluginError;
use crate::state::PluginState;

/// Page size used when a scan asks for 0.
pub const DEFAULT_SCAN_PAGE: usize = 100;
/// Largest scan page a plugin returns, whatever is asked.
pub const MAX_SCAN_PAGE: usize = 10_000;
/// Most keys or items in one batch call a plugin accepts.
pub const MAX_BATCH_ITEMS: usize = 10_000;

pub(crate) struct KeyValueService<B: KeyValueStore> {
    pub(crate) state: Arc<PluginState<B>>,
}

/// What every call needs: the backend, its capabilities and the namespace.
struct Call<'a, B: KeyValueStore> {
    backend: &'a B,
    caps: &'a Capabilities,
    ns: Arc<Namespace<B::NamespaceState>>,
}

impl<B: KeyValueStore> KeyValueService<B> {
    fn call(&self, namespace: &str) -> Result<Call<'_, B>, PluginError> {
        let ready = self.state.ready()?;
        if !ready.capabilities.patterns.contains(&(prism_proto::plugin::v1::Pattern::Keyvalue as i32)) {
            return Err(PluginError::Unimplemented(format!("{} plugin does not serve KeyValue", B::KIND)));
        }
        let ns = self.state.namespace(namespace)?;
        Ok(Call { backend: &ready.backend, caps: &ready.capabilities, ns })
    }
}

fn check_key(key: &str, caps: &Capabilities) -> Result<(), PluginError> {
    if key.is_empty() {
        return Err(PluginError::InvalidArgument("key must not be empty".to_owned()));
    }
    if caps.max_key_bytes > 0 && key.len() as u64 > caps.max_key_bytes {
        return Err(PluginError::InvalidArgument(format!(
            "key is {} bytes, over the limit of {} bytes",
            key.len(),
            caps.max_key_bytes
        )));
    }
    Ok(())
}

fn check_batch(len: usize) -> Result<(), PluginError> {
    if len > MAX_BATCH_ITEMS {
        return Err(PluginError::InvalidArgument(format!(
            "batch has {len} items, over the limit of {MAX_BATCH_ITEMS}"
        )));
    }
    Ok(())
}

fn put_op<S>(
    caps: &Capabilities,
    ns: &Namespace<S>,
    key: String,
    value: bytes::Bytes,
    ttl_seconds: u64,
    if_version: Option<u64>,
) -> Result<PutOp, PluginError> {
    check_key(&key, caps)?;
    if value.is_empty() {
        return Err(PluginError::InvalidArgument("value must not be empty".to_owned()));
    }
    let limit = [caps.max_value_bytes, ns.settings().max_value_bytes].into_iter().filter(|l| *l > 0).min();
    if let Some(limit) = limit
        && value.len() as u64 > limit
    {
        return Err(PluginError::InvalidArgument(format!(
            "value is {} bytes, over the limit of {limit} bytes",
            value.len()
        )));
    }
    if ttl_seconds > 0 && !caps.ttl {
        return Err(PluginError::Unimplemented("this backend does not support TTL (ttl_seconds)".to_owned()));
    }
    if if_version.is_some() && !caps.cas {
        return Err(PluginError::Unimplemented(
            "this backend does not support compare-and-set (if_version)".to_owned(),
        ));
    }
    let ttl = (ttl_seconds > 0).then(|| Duration::from_secs(ttl_seconds));
    Ok(PutOp { key, value, ttl, if_version })
}

/// Replies a multiplexed stream may have waiting to be sent. Beyond it the
/// calls' tasks wait, which in turn stops reading calls: the proxy's sends
/// then wait on HTTP/2 flow control instead of the plugin buffering without
/// bound.
const MULTIPLEX_BUFFER: usize = 1024;

/// Runs one multiplexed call through the same checks as its unary twin,
/// in its span and under its deadline.
async fn dispatch<B: KeyValueStore>(service: KeyValueService<B>, call: KeyValueCall) -> KeyValueReply {
    use key_value_call::Request as Call;
    const SERVICE: &str = "/prism.plugin.v1.KeyValueBackend/";
    let KeyValueCall { id, request, options } = call;
    let method = match &request {
        Some(Call::Put(_)) => "Put",
        Some(Call::Get(_)) => "Get",
        Some(Call::Delete(_)) => "Delete",
        Some(Call::BatchGet(_)) => "BatchGet",
        Some(Call::BatchPut(_)) => "BatchPut",
        Some(Call::Scan(_)) => "Scan",
        None => "",
    };
    let reply =
        within_deadline(SERVICE, method, options.as_ref(), serve(&service, request)).await.unwrap_or_else(|status| {
            key_value_reply::Reply::Error(CallError {
                code: status.code() as i32,
                message: status.message().to_owned(),
            })
        });
    KeyValueReply { id, reply: Some(reply) }
}

/// The unary method a multiplexed call stands for.
async fn serve<B: KeyValueStore>(
    service: &KeyValueService<B>,
    request: Option<key_value_call::Request>,
) -> Result<key_value_reply::Reply, Status> {
    use key_value_call::Request as Call;
    use key_value_reply::Reply;
    match request {
        Some(Call::Put(r)) => service.put(Request::new(r)).await.map(|r| Reply::Put(r.into_inner())),
        Some(Call::Get(r)) => service.get(Request::new(r)).await.map(|r| Reply::Get(r.into_inner())),
        Some(Call::Delete(r)) => service.delete(Request::new(r)).await.map(|r| Reply::Delete(r.into_inner())),
        Some(Call::BatchGet(r)) => service.batch_get(Request::new(r)).await.map(|r| Reply::BatchGet(r.into_inner())),
        Some(Call::BatchPut(r)) => service.batch_put(Request::new(r)).await.map(|r| Reply::BatchPut(r.into_inner())),
        Some(Call::Scan(r)) => service.scan(Request::new(r)).await.map(|r| Reply::Scan(r.into_inner())),
        None => Err(PluginError::InvalidArgument("multiplexed call without a request".to_owned()).into()),
    }
}

#[tonic::async_trait]
impl<B: KeyValueStore> KeyValueBackend for KeyValueService<B> {
    type MultiplexStream = ReceiverStream<Result<KeyValueReply, Status>>;

    async fn multiplex(
        &self,
        request: Request<Streaming<KeyValueCall>>,
    ) -> Result<Response<Self::MultiplexStream>, Status> {
        let mut calls = request.into_inner();
        let (tx, rx) = mpsc::channel(MULTIPLEX_BUFFER);
        let state = self.state.clone();
        tokio::spawn(async move {
            // Each call runs in its own task so that a slow call (a big scan,
            // a backend round trip) never holds up the ones behind it.
            while let Ok(Some(call)) = calls.message().await {
                let service = KeyValueService { state: state.clone() };
                let tx = tx.clone();
                // Poll the call once here: an in-memory store answers at
                // once, and a task per call would cost a spawn and a wake-up
                // (ADR-007). A call that waits moves to its own task.
                let mut reply = Box::pin(dispatch(service, call));
                match futures::poll!(reply.as_mut()) {
                    std::task::Poll::Ready(reply) => {
                        let _ = tx.send(Ok(reply)).await;
                    }
                    std::task::Poll::Pending => {
                        tokio::spawn(async move {
                            let reply = reply.await;
                            let _ = tx.send(Ok(reply)).await;
                        });
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        let call = self.call(&req.namespace)?;
        let op = put_op(call.caps, &call.ns, req.key, req.value, req.ttl_seconds, req.if_version)?;
        let version = backend::<B, _>("put", call.backend.put(&call.ns, op)).await?;
        Ok(Response::new(PutResponse { version }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        let call = self.call(&req.namespace)?;
        check_key(&req.key, call.caps)?;
        let response = match backend::<B, _>("get", call.backend.get(&call.ns, &req.key)).await? {
            Some(record) => GetResponse { found: true, value: record.value, version: record.version },
            None => GetResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        let call = self.call(&req.namespace)?;
        check_key(&req.key, call.caps)?;
        if req.if_version.is_some() && !call.caps.cas {
            return Err(PluginError::Unimplemented(
                "this backend does not support compare-and-set (if_version)".to_owned(),
            )
            .into());
        }
        let deleted = backend::<B, _>("delete", call.backend.delete(&call.ns, &req.key, req.if_version)).await?;
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn batch_get(&self, request: Request<BatchGetRequest>) -> Result<Response<BatchGetResponse>, Status> {
        let req = request.into_inner();
        let call = self.call(&req.namespace)?;
        check_batch(req.keys.len())?;
        for key in &req.keys {
            check_key(key, call.caps)?;
        }
        let records = backend::<B, _>("batch_get", call.backend.batch_get(&call.ns, &req.keys)).await?;
        if records.len() != req.keys.len() {
            return Err(PluginError::internal(format!(
                "batch_get returned {} results for {} keys",
                records.len(),
                req.keys.len()
            ))
            .into());
        }
        let items = req
            .keys
            .into_iter()
            .zip(records)
            .map(|(key, record)| match record {
                Some(r) => GetResult { key, found: true, value: r.value, version: r.version },
                None => GetResult { key, ..Default::default() },
            })
            .collect();
        Ok(Response::new(BatchGetResponse { items }))
    }

    async fn batch_put(&self, request: Request<BatchPutRequest>) -> Result<Response<BatchPutResponse>, Status> {
        let req = request.into_inner();
        let call = self.call(&req.namespace)?;
        check_batch(req.items.len())?;
        // Validate every item before writing any, so a bad item never leaves
        // a half-applied batch behind.
        let ops = req
            .items
            .into_iter()
            .map(|item| put_op(call.caps, &call.ns, item.key, item.value, item.ttl_seconds, None))
            .collect::<Result<Vec<_>, _>>()?;
        let count = ops.len();
        let versions = backend::<B, _>("batch_put", call.backend.batch_put(&call.ns, ops)).await?;
        if versions.len() != count {
            return Err(PluginError::internal(format!(
                "batch_put returned {} versions for {count} items",
                versions.len()
            ))
            .into());
        }
        Ok(Response::new(BatchPutResponse { versions }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = request.into_inner();
        let call = self.call(&req.namespace)?;
        if !call.caps.scan {
            return Err(PluginError::Unimplemented("this backend does not support ordered scans".to_owned()).into());
        }
        let after = cursor::decode(&req.namespace, &req.prefix, &req.page_token)?;
        let limit = match req.page_size as usize {
            0 => DEFAULT_SCAN_PAGE,
            n => n.min(MAX_SCAN_PAGE),
        };
        let page = backend::<B, _>("scan", call.backend.scan(&call.ns, &req.prefix, after.as_deref(), limit)).await?;
        let next_page_token = match (page.more, page.entries.last()) {
            (true, Some((last, _))) => cursor::encode(&req.namespace, &req.prefix, last),
            _ => String::new(),
        };
        let items =
            page.entries.into_iter().map(|(key, r)| Entry { key, value: r.value, version: r.version }).collect();
        Ok(Response::new(ScanResponse { items, next_page_token }))
    }
}
