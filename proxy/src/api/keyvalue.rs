//! `prism.keyvalue.v1.KeyValueService`: validate against the namespace's
//! limits, then forward to the namespace's plugin.

use std::sync::Arc;

use prism_proto::keyvalue::v1::key_value_service_server::KeyValueService;
use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchGetResponse, BatchPutRequest, BatchPutResponse, DeleteRequest, DeleteResponse, GetRequest,
    GetResponse, PutRequest, PutResponse, ScanRequest, ScanResponse,
};
use tonic::{Request, Response, Status};

use super::{call_plugin, check_name};
use crate::config::Limits;
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::gateway::{Gateway, Route};
use crate::namespace::PatternKind;
use crate::security::Right;

pub struct KeyValueApi {
    gateway: Arc<Gateway>,
}

impl KeyValueApi {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    fn limits(&self) -> &Limits {
        &self.gateway.config.limits
    }

    fn route(
        &self,
        ctx: &RequestContext,
        namespace: &str,
        right: Right,
        keys: &[&str],
    ) -> Result<Arc<Route>, ProxyError> {
        self.gateway.authorize(ctx, namespace, PatternKind::Keyvalue, right, keys)
    }
}

fn check_key(route: &Route, key: &str) -> Result<(), ProxyError> {
    check_name(route, "key", key)
}

fn check_value(route: &Route, value: &[u8]) -> Result<(), ProxyError> {
    if value.is_empty() {
        return Err(ProxyError::InvalidArgument("value must not be empty".to_owned()));
    }
    if value.len() > route.max_value_bytes {
        return Err(ProxyError::InvalidArgument(format!(
            "value is {} bytes, over the limit of {} bytes for namespace {:?}",
            value.len(),
            route.max_value_bytes,
            route.name()
        )));
    }
    Ok(())
}

fn check_batch(limits: &Limits, len: usize) -> Result<(), ProxyError> {
    if len > limits.max_batch_items {
        return Err(ProxyError::InvalidArgument(format!(
            "batch has {len} items, over the limit of {}",
            limits.max_batch_items
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl KeyValueService for KeyValueApi {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let mut req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Write, &[&req.key])?;
        check_key(&route, &req.key)?;
        check_value(&route, &req.value)?;
        if req.ttl_seconds == 0 {
            req.ttl_seconds = route.default_ttl_seconds;
        }
        let client = route.plugin.keyvalue()?;
        let response = call_plugin(&ctx, &route.plugin, client.put(&ctx, req)).await?;
        Ok(Response::new(response))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Read, &[&req.key])?;
        check_key(&route, &req.key)?;
        let client = route.plugin.keyvalue()?;
        let response = call_plugin(&ctx, &route.plugin, client.get(&ctx, req)).await?;
        Ok(Response::new(response))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Write, &[&req.key])?;
        check_key(&route, &req.key)?;
        let client = route.plugin.keyvalue()?;
        let response = call_plugin(&ctx, &route.plugin, client.delete(&ctx, req)).await?;
        Ok(Response::new(response))
    }

    async fn batch_get(&self, request: Request<BatchGetRequest>) -> Result<Response<BatchGetResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let keys: Vec<&str> = req.keys.iter().map(String::as_str).collect();
        let route = self.route(&ctx, &req.namespace, Right::Read, &keys)?;
        check_batch(self.limits(), req.keys.len())?;
        for key in &req.keys {
            check_key(&route, key)?;
        }
        if req.keys.is_empty() {
            return Ok(Response::new(BatchGetResponse::default()));
        }
        let client = route.plugin.keyvalue()?;
        let response = call_plugin(&ctx, &route.plugin, client.batch_get(&ctx, req)).await?;
        Ok(Response::new(response))
    }

    async fn batch_put(&self, request: Request<BatchPutRequest>) -> Result<Response<BatchPutResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let mut req = request.into_inner();
        let keys: Vec<&str> = req.items.iter().map(|i| i.key.as_str()).collect();
        let route = self.route(&ctx, &req.namespace, Right::Write, &keys)?;
        check_batch(self.limits(), req.items.len())?;
        for (i, item) in req.items.iter_mut().enumerate() {
            check_key(&route, &item.key).and_then(|()| check_value(&route, &item.value)).map_err(|e| match e {
                ProxyError::InvalidArgument(m) => ProxyError::InvalidArgument(format!("items[{i}]: {m}")),
                other => other,
            })?;
            if item.ttl_seconds == 0 {
                item.ttl_seconds = route.default_ttl_seconds;
            }
        }
        if req.items.is_empty() {
            return Ok(Response::new(BatchPutResponse::default()));
        }
        let client = route.plugin.keyvalue()?;
        let response = call_plugin(&ctx, &route.plugin, client.batch_put(&ctx, req)).await?;
        Ok(Response::new(response))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let mut req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Read, &[])?;
        if req.prefix.len() > route.max_key_bytes {
            return Err(ProxyError::InvalidArgument(format!(
                "prefix is {} bytes, over the key limit of {} bytes",
                req.prefix.len(),
                route.max_key_bytes
            ))
            .into());
        }
        let limits = self.limits();
        req.page_size = match req.page_size {
            0 => limits.default_page_size,
            n => n.min(limits.max_page_size),
        };
        let client = route.plugin.keyvalue()?;
        let response = call_plugin(&ctx, &route.plugin, client.scan(&ctx, req)).await?;
        Ok(Response::new(response))
    }
}
