//! `prism.timeseries.v1.TimeSeriesService`: each call validated against the
//! proxy's limits, then forwarded to the namespace's plugin (see
//! [`DataPlane::forward`]). The plugin SDK checks its own declared limits
//! and the namespace's retention again.

use prism_proto::timeseries::v1::time_series_service_server::TimeSeriesService;
use prism_proto::timeseries::v1::{
    AggregateRequest, AggregateResponse, AppendRequest, AppendResponse, QueryRequest, QueryResponse, SubscribeRequest,
};
use tonic::{Request, Response, Status};

use super::subscribe::{SubscribeStream, Subscriptions};
use super::{DataPlane, at_item, check_name, page_size, replace};
use crate::error::ProxyError;
use crate::plugin::unary;
use crate::shadow::describe_values;

pub struct TimeSeriesApi {
    plane: DataPlane,
    subscriptions: Subscriptions,
}

impl TimeSeriesApi {
    pub fn new(plane: DataPlane, subscriptions: Subscriptions) -> Self {
        Self { plane, subscriptions }
    }
}

fn check_range(start: i64, end: i64) -> Result<(), ProxyError> {
    if start > end {
        return Err(ProxyError::InvalidArgument(format!("start {start} is after end {end}: the range is inverted")));
    }
    Ok(())
}

data_call!(AppendRequest => AppendResponse, Timeseries, Append, Write,
    keys(r) (Some(r.series.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.timeseries()?.append(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "series", &r.series)?;
        let limit = limits.max_batch_items;
        if r.events.len() > limit {
            return Err(ProxyError::OverLimit {
                limit: "max_batch_items",
                message: format!("append has {} events, over the limit of {limit}", r.events.len()),
            });
        }
        for (i, e) in r.events.iter().enumerate() {
            check_name(route, "event_id", &e.event_id).map_err(|err| at_item(i, err, "events"))?;
            if e.payload.len() > route.max_value_bytes {
                return Err(ProxyError::OverLimit {
                    limit: "max_value_bytes",
                    message: format!(
                        "events[{i}]: payload is {} bytes, over the limit of {} bytes for namespace {:?}",
                        e.payload.len(),
                        route.max_value_bytes,
                        route.name()
                    ),
                });
            }
        }
        Ok(r.events.is_empty().then(AppendResponse::default))
    },
    seal(r, codec) {
        // A typed series types its payloads; events without one carry a
        // value only.
        for (i, event) in r.events.iter_mut().enumerate().filter(|(_, e)| !e.payload.is_empty()) {
            let sealed = codec.write(&event.payload).map_err(|e| e.at_item("events", i))?;
            replace(&mut event.payload, sealed);
        }
        Ok(())
    }
);

data_call!(QueryRequest => QueryResponse, Timeseries, Query, Read,
    keys(r) (Some(r.series.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.timeseries()?.query(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "series", &r.series)?;
        check_range(r.start, r.end)?;
        r.limit = page_size(r.limit, limits);
        Ok(None)
    },
    reveal(reply, codec, raw) {
        let mut any = false;
        for event in reply.events.iter_mut().filter(|e| !e.payload.is_empty()) {
            let shown = codec.read(&event.payload, raw)?;
            replace(&mut event.payload, shown);
            any = true;
        }
        Ok(any)
    },
    compare(r, primary, theirs) when r.page_token.is_empty() => {
        if primary.events.len() != theirs.events.len() {
            return Some(format!("events: primary {}, shadow {}", primary.events.len(), theirs.events.len()));
        }
        primary.events.iter().zip(&theirs.events).enumerate().find_map(|(i, (p, t))| {
            if (p.timestamp, &p.event_id) != (t.timestamp, &t.event_id) {
                Some(format!("events[{i}]: a different event (timestamp {} and {})", p.timestamp, t.timestamp))
            } else if p.value != t.value || p.attributes != t.attributes {
                Some(format!("events[{i}]: value or attributes differ"))
            } else {
                (p.payload != t.payload)
                    .then(|| format!("events[{i}]: {}", describe_values("payload", &p.payload, &t.payload)))
            }
        })
    }
);

data_call!(AggregateRequest => AggregateResponse, Timeseries, Aggregate, Read,
    keys(r) (Some(r.series.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.timeseries()?.aggregate(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "series", &r.series)?;
        check_range(r.start, r.end)?;
        if r.bucket_ms < 1 {
            return Err(ProxyError::InvalidArgument(format!("bucket_ms is {}, must be at least 1", r.bucket_ms)));
        }
        Ok(None)
    }
);

#[tonic::async_trait]
impl TimeSeriesService for TimeSeriesApi {
    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn aggregate(&self, request: Request<AggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        self.plane.forward(request).await
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<SubscribeStream>, Status> {
        self.plane.subscribe(&self.subscriptions, request).await
    }
}
