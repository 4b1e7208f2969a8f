//! `prism.timeseries.v1.TimeSeriesService`: validate against the proxy's
//! limits, then forward to the namespace's plugin. The plugin SDK checks
//! its own declared limits and the namespace's retention again.

use std::sync::Arc;

use prism_proto::timeseries::v1::time_series_service_server::TimeSeriesService;
use prism_proto::timeseries::v1::{
    AggregateRequest, AggregateResponse, AppendRequest, AppendResponse, QueryRequest, QueryResponse,
};
use tonic::{Request, Response, Status};

use super::{call_plugin, check_name};
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::gateway::{Gateway, Route};
use crate::namespace::PatternKind;
use crate::security::Right;

pub struct TimeSeriesApi {
    gateway: Arc<Gateway>,
}

impl TimeSeriesApi {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    fn route(
        &self,
        ctx: &RequestContext,
        namespace: &str,
        right: Right,
        series: &str,
    ) -> Result<Arc<Route>, ProxyError> {
        self.gateway.authorize(ctx, namespace, PatternKind::Timeseries, right, &[series])
    }
}

fn check_range(start: i64, end: i64) -> Result<(), ProxyError> {
    if start > end {
        return Err(ProxyError::InvalidArgument(format!("start {start} is after end {end}: the range is inverted")));
    }
    Ok(())
}

#[tonic::async_trait]
impl TimeSeriesService for TimeSeriesApi {
    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Write, &req.series)?;
        check_name(&route, "series", &req.series)?;
        let limit = self.gateway.config.limits.max_batch_items;
        if req.events.len() > limit {
            return Err(ProxyError::InvalidArgument(format!(
                "append has {} events, over the limit of {limit}",
                req.events.len()
            ))
            .into());
        }
        for (i, e) in req.events.iter().enumerate() {
            check_name(&route, "event_id", &e.event_id).map_err(|e| match e {
                ProxyError::InvalidArgument(m) => ProxyError::InvalidArgument(format!("events[{i}]: {m}")),
                other => other,
            })?;
            if e.payload.len() > route.max_value_bytes {
                return Err(ProxyError::InvalidArgument(format!(
                    "events[{i}]: payload is {} bytes, over the limit of {} bytes for namespace {:?}",
                    e.payload.len(),
                    route.max_value_bytes,
                    route.name()
                ))
                .into());
            }
        }
        if req.events.is_empty() {
            return Ok(Response::new(AppendResponse::default()));
        }
        let mut client = route.plugin.timeseries()?;
        let response = call_plugin(&ctx, &route.plugin, client.append(ctx.outbound(req))).await?;
        Ok(Response::new(response))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let mut req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Read, &req.series)?;
        check_name(&route, "series", &req.series)?;
        check_range(req.start, req.end)?;
        let limits = &self.gateway.config.limits;
        req.limit = match req.limit {
            0 => limits.default_page_size,
            n => n.min(limits.max_page_size),
        };
        let mut client = route.plugin.timeseries()?;
        let response = call_plugin(&ctx, &route.plugin, client.query(ctx.outbound(req))).await?;
        Ok(Response::new(response))
    }

    async fn aggregate(&self, request: Request<AggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Read, &req.series)?;
        check_name(&route, "series", &req.series)?;
        check_range(req.start, req.end)?;
        if req.bucket_ms < 1 {
            return Err(
                ProxyError::InvalidArgument(format!("bucket_ms is {}, must be at least 1", req.bucket_ms)).into()
            );
        }
        let mut client = route.plugin.timeseries()?;
        let response = call_plugin(&ctx, &route.plugin, client.aggregate(ctx.outbound(req))).await?;
        Ok(Response::new(response))
    }
}
