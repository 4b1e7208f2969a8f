//! `prism.keyvalue.v1.KeyValueService`: each call validated against the
//! namespace's limits, then forwarded to the namespace's plugin (see
//! [`DataPlane::forward`]).

use prism_proto::keyvalue::v1::key_value_service_server::KeyValueService;
use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchGetResponse, BatchPutRequest, BatchPutResponse, DeleteRequest, DeleteResponse, GetRequest,
    GetResponse, PutRequest, PutResponse, ScanRequest, ScanResponse,
};
use tonic::{Request, Response, Status};

use super::{DataPlane, at_item, check_name, page_size, replace};
use crate::config::Limits;
use crate::error::ProxyError;
use crate::routes::Route;
use crate::security::audit::key_hash;
use crate::shadow::describe_values;

pub struct KeyValueApi {
    plane: DataPlane,
}

impl KeyValueApi {
    pub fn new(plane: DataPlane) -> Self {
        Self { plane }
    }
}

fn check_value(route: &Route, value: &[u8]) -> Result<(), ProxyError> {
    if value.is_empty() {
        return Err(ProxyError::InvalidArgument("value must not be empty".to_owned()));
    }
    if value.len() > route.max_value_bytes {
        return Err(ProxyError::OverLimit {
            limit: "max_value_bytes",
            message: format!(
                "value is {} bytes, over the limit of {} bytes for namespace {:?}",
                value.len(),
                route.max_value_bytes,
                route.name()
            ),
        });
    }
    Ok(())
}

fn check_batch(limits: &Limits, len: usize) -> Result<(), ProxyError> {
    if len > limits.max_batch_items {
        return Err(ProxyError::OverLimit {
            limit: "max_batch_items",
            message: format!("batch has {len} items, over the limit of {}", limits.max_batch_items),
        });
    }
    Ok(())
}

/// How two answers about one key differ, if they do.
fn found_and_value(found: bool, value: &[u8], their_found: bool, their_value: &[u8]) -> Option<String> {
    if found != their_found {
        return Some(format!("found: primary {found}, shadow {their_found}"));
    }
    (found && value != their_value).then(|| describe_values("value", value, their_value))
}

/// A write without a TTL gets the namespace's (`spec.needs.ttl`).
fn default_ttl(route: &Route, ttl_seconds: &mut u64) {
    if *ttl_seconds == 0 {
        *ttl_seconds = route.default_ttl_seconds;
    }
}

data_call!(PutRequest => PutResponse, Keyvalue, Put, Write,
    keys(r) (Some(r.key.as_str()), 1),
    send(r, plugin, options) plugin.keyvalue()?.put(options, r).await,
    validate(r, route, limits) {
        check_name(route, "key", &r.key)?;
        check_value(route, &r.value)?;
        default_ttl(route, &mut r.ttl_seconds);
        Ok(None)
    },
    seal(r, codec) {
        let sealed = codec.write(&r.value)?;
        replace(&mut r.value, sealed);
        Ok(())
    },
    shadow(r) {
        r.if_version = None;
    },
    written(r) vec![r.key.clone()]
);

data_call!(GetRequest => GetResponse, Keyvalue, Get, Read,
    keys(r) (Some(r.key.as_str()), 1),
    send(r, plugin, options) plugin.keyvalue()?.get(options, r).await,
    validate(r, route, limits) {
        check_name(route, "key", &r.key)?;
        Ok(None)
    },
    reveal(reply, codec, raw) {
        if !reply.found {
            return Ok(false);
        }
        let shown = codec.read(&reply.value, raw)?;
        replace(&mut reply.value, shown);
        Ok(true)
    },
    compare(r, primary, theirs) when true => {
        found_and_value(primary.found, &primary.value, theirs.found, &theirs.value)
    }
);

data_call!(DeleteRequest => DeleteResponse, Keyvalue, Delete, Write,
    keys(r) (Some(r.key.as_str()), 1),
    send(r, plugin, options) plugin.keyvalue()?.delete(options, r).await,
    validate(r, route, limits) {
        check_name(route, "key", &r.key)?;
        Ok(None)
    },
    shadow(r) {
        r.if_version = None;
    },
    written(r) vec![r.key.clone()]
);

data_call!(BatchGetRequest => BatchGetResponse, Keyvalue, BatchGet, Read,
    keys(r) (r.keys.first().map(String::as_str), r.keys.len()),
    send(r, plugin, options) plugin.keyvalue()?.batch_get(options, r).await,
    validate(r, route, limits) {
        check_batch(limits, r.keys.len())?;
        for key in &r.keys {
            check_name(route, "key", key)?;
        }
        Ok(r.keys.is_empty().then(BatchGetResponse::default))
    },
    reveal(reply, codec, raw) {
        let mut any = false;
        for item in reply.items.iter_mut().filter(|i| i.found) {
            let shown = codec.read(&item.value, raw)?;
            replace(&mut item.value, shown);
            any = true;
        }
        Ok(any)
    },
    compare(r, primary, theirs) when true => {
        if primary.items.len() != theirs.items.len() {
            return Some(format!("items: primary {}, shadow {}", primary.items.len(), theirs.items.len()));
        }
        primary.items.iter().zip(&theirs.items).enumerate().find_map(|(i, (p, t))| {
            found_and_value(p.found, &p.value, t.found, &t.value).map(|d| format!("items[{i}]: {d}"))
        })
    }
);

data_call!(BatchPutRequest => BatchPutResponse, Keyvalue, BatchPut, Write,
    keys(r) (r.items.first().map(|i| i.key.as_str()), r.items.len()),
    send(r, plugin, options) plugin.keyvalue()?.batch_put(options, r).await,
    validate(r, route, limits) {
        check_batch(limits, r.items.len())?;
        for (i, item) in r.items.iter_mut().enumerate() {
            check_name(route, "key", &item.key)
                .and_then(|()| check_value(route, &item.value))
                .map_err(|e| at_item(i, e, "items"))?;
            default_ttl(route, &mut item.ttl_seconds);
        }
        Ok(r.items.is_empty().then(BatchPutResponse::default))
    },
    seal(r, codec) {
        for (i, item) in r.items.iter_mut().enumerate() {
            let sealed = codec.write(&item.value).map_err(|e| e.at_item("items", i))?;
            replace(&mut item.value, sealed);
        }
        Ok(())
    },
    written(r) r.items.iter().map(|i| i.key.clone()).collect()
);

data_call!(ScanRequest => ScanResponse, Keyvalue, Scan, Read,
    keys(_r) (None, 0),
    send(r, plugin, options) plugin.keyvalue()?.scan(options, r).await,
    validate(r, route, limits) {
        if r.prefix.len() > route.max_key_bytes {
            return Err(ProxyError::OverLimit {
                limit: "max_key_bytes",
                message: format!(
                    "prefix is {} bytes, over the key limit of {} bytes",
                    r.prefix.len(),
                    route.max_key_bytes
                ),
            });
        }
        r.page_size = page_size(r.page_size, limits);
        Ok(None)
    },
    reveal(reply, codec, raw) {
        for item in &mut reply.items {
            let shown = codec.read(&item.value, raw)?;
            replace(&mut item.value, shown);
        }
        Ok(!reply.items.is_empty())
    },
    compare(r, primary, theirs) when r.page_token.is_empty() => {
        if primary.items.len() != theirs.items.len() {
            return Some(format!("items: primary {}, shadow {}", primary.items.len(), theirs.items.len()));
        }
        primary.items.iter().zip(&theirs.items).enumerate().find_map(|(i, (p, t))| {
            if p.key != t.key {
                Some(format!("items[{i}]: key differs: primary {}, shadow {}", key_hash(&p.key), key_hash(&t.key)))
            } else {
                (p.value != t.value).then(|| format!("items[{i}]: {}", describe_values("value", &p.value, &t.value)))
            }
        })
    }
);

#[tonic::async_trait]
impl KeyValueService for KeyValueApi {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn batch_get(&self, request: Request<BatchGetRequest>) -> Result<Response<BatchGetResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn batch_put(&self, request: Request<BatchPutRequest>) -> Result<Response<BatchPutResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.plane.forward(request).await
    }
}
