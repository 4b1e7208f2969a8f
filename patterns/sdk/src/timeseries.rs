//! The `prism.plugin.v1.TimeSeriesBackend` service: checks each call
//! against the declared capabilities, limits and the namespace's retention,
//! then calls the [`TimeSeriesStore`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::BoxStream;
use prism_proto::plugin::v1::time_series_backend_server::TimeSeriesBackend;
use prism_proto::plugin::v1::{Capabilities, Pattern, TimeSeriesCursor};
use prism_proto::timeseries::v1::subscribe_request::Start;
use prism_proto::timeseries::v1::{
    AggregateFunction, AggregateRequest, AggregateResponse, AppendRequest, AppendResponse, Bucket, Event as WireEvent,
    Order, QueryRequest, QueryResponse, SubscribeRequest, SubscribeResponse,
};
use tonic::{Request, Response, Status};

use crate::backend::{BucketStats, Event, LogPosition, Namespace, RangeQuery, SubscribeFrom, TimeSeriesStore};
use crate::call::backend as traced;
use crate::cursor;
use crate::error::PluginError;
use crate::state::{Call, PluginState};

/// Events per Query page when a request asks for 0.
pub const DEFAULT_PAGE_ITEMS: usize = 100;
/// Largest Query or Neighbors page when the plugin declares none.
pub const MAX_PAGE_ITEMS: usize = 10_000;
/// Most events in one Append when the plugin declares none.
pub const MAX_APPEND_EVENTS: usize = 10_000;
/// Most buckets one Aggregate may produce, so a tiny bucket over a long
/// range cannot make the plugin build a huge answer.
pub const MAX_BUCKETS: i64 = 10_000;
/// Longest series name or event id, in bytes, when the plugin declares no
/// key limit.
const MAX_NAME_BYTES: usize = 4096;

/// A declared limit, or the SDK's default when the plugin declares none.
pub(crate) fn declared(limit: u64, default: usize) -> usize {
    if limit == 0 { default } else { usize::try_from(limit).unwrap_or(usize::MAX) }
}

pub(crate) fn check_name(what: &str, name: &str, caps: &Capabilities) -> Result<(), PluginError> {
    if name.is_empty() {
        return Err(PluginError::InvalidArgument(format!("{what} must not be empty")));
    }
    let limit = declared(caps.max_key_bytes, MAX_NAME_BYTES);
    if name.len() > limit {
        return Err(PluginError::InvalidArgument(format!(
            "{what} is {} bytes, over the limit of {limit} bytes",
            name.len()
        )));
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The oldest timestamp the namespace keeps, if it has a retention.
pub fn retention_cutoff<S>(ns: &Namespace<S>) -> Option<i64> {
    ns.retention().map(|r| now_ms().saturating_sub(i64::try_from(r.as_millis()).unwrap_or(i64::MAX)))
}

fn check_range(start: i64, end: i64) -> Result<(), PluginError> {
    if start < 0 {
        return Err(PluginError::InvalidArgument(format!("start {start} is before the Unix epoch")));
    }
    if start > end {
        return Err(PluginError::InvalidArgument(format!("start {start} is after end {end}: the range is inverted")));
    }
    Ok(())
}

impl From<Event> for WireEvent {
    fn from(e: Event) -> Self {
        Self {
            timestamp: e.timestamp,
            event_id: e.event_id,
            value: e.value,
            payload: e.payload,
            attributes: e.attributes.into_iter().collect(),
        }
    }
}

impl From<WireEvent> for Event {
    fn from(e: WireEvent) -> Self {
        Self {
            timestamp: e.timestamp,
            event_id: e.event_id,
            value: e.value,
            payload: e.payload,
            attributes: e.attributes.into_iter().collect(),
        }
    }
}

fn bucket(stats: &BucketStats, origin: i64, bucket_ms: i64, function: AggregateFunction) -> Bucket {
    let with_values = |v: f64| (stats.values > 0).then_some(v);
    let value = match function {
        AggregateFunction::Count | AggregateFunction::Unspecified => Some(stats.count as f64),
        AggregateFunction::Sum => with_values(stats.sum),
        AggregateFunction::Min => with_values(stats.min),
        AggregateFunction::Max => with_values(stats.max),
        AggregateFunction::Avg => with_values(stats.sum / stats.values.max(1) as f64),
    };
    Bucket { start: origin.saturating_add(stats.index.saturating_mul(bucket_ms)), count: stats.count, value }
}

pub(crate) struct TimeSeriesService<B: TimeSeriesStore> {
    pub(crate) state: Arc<PluginState<B>>,
}

#[tonic::async_trait]
impl<B: TimeSeriesStore> TimeSeriesBackend for TimeSeriesService<B> {
    type SubscribeStream = BoxStream<'static, Result<SubscribeResponse, Status>>;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Timeseries, "TimeSeries", &req.namespace)?;
        check_name("series", &req.series, caps)?;
        if !caps.subscribe {
            return Err(PluginError::Unimplemented(format!(
                "{} plugin cannot follow a series (it does not declare subscribe)",
                B::KIND
            ))
            .into());
        }
        let from = match req.start {
            None => SubscribeFrom::Now,
            Some(Start::FromTimestamp(at)) if at < 0 => {
                return Err(
                    PluginError::InvalidArgument(format!("from_timestamp {at} is before the Unix epoch")).into()
                );
            }
            Some(Start::FromTimestamp(at)) => SubscribeFrom::Timestamp(at),
            Some(Start::FromPosition(position)) => {
                let (epoch, sequence) = cursor::decode_position(&req.namespace, &req.series, &position)?;
                SubscribeFrom::After(LogPosition { epoch, sequence })
            }
        };
        let subscription = traced::<B, _>("subscribe", backend.subscribe(ns.clone(), &req.series, from)).await?;
        let (namespace, series) = (req.namespace, req.series);
        let position = move |p: LogPosition| cursor::encode_position(&namespace, &series, p.epoch, p.sequence);
        let first = SubscribeResponse { event: None, position: position(subscription.start) };
        let events = subscription.events.filter_map(move |item| {
            let message = match item {
                // Past the retention: hidden, as from every read, whatever
                // the backend's cleanup schedule.
                Ok((_, event)) if retention_cutoff(&ns).is_some_and(|c| event.timestamp < c) => None,
                Ok((at, event)) => Some(Ok(SubscribeResponse { event: Some(event.into()), position: position(at) })),
                Err(e) => Some(Err(Status::from(e))),
            };
            std::future::ready(message)
        });
        Ok(Response::new(futures::stream::once(std::future::ready(Ok(first))).chain(events).boxed()))
    }

    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Timeseries, "TimeSeries", &req.namespace)?;
        check_name("series", &req.series, caps)?;
        let limit = declared(caps.max_append_events, MAX_APPEND_EVENTS);
        if req.events.len() > limit {
            return Err(PluginError::InvalidArgument(format!(
                "append has {} events, over the limit of {limit}",
                req.events.len()
            ))
            .into());
        }
        if ns.retention().is_some() && !caps.retention {
            return Err(PluginError::Unimplemented(format!("{} plugin does not enforce retention", B::KIND)).into());
        }
        let max_value =
            [caps.max_value_bytes, ns.settings().max_value_bytes].into_iter().filter(|l| *l > 0).min().unwrap_or(0);
        let cutoff = retention_cutoff(&ns);
        // Validate every event before storing any, so a bad event never
        // leaves a half-applied append behind.
        let mut events = Vec::with_capacity(req.events.len());
        let mut expired = 0u64;
        for (i, e) in req.events.into_iter().enumerate() {
            let at = |m: String| PluginError::InvalidArgument(format!("events[{i}]: {m}"));
            check_name("event_id", &e.event_id, caps).map_err(|e| at(e.to_string()))?;
            if e.timestamp < 0 {
                return Err(at(format!("timestamp {} is before the Unix epoch", e.timestamp)).into());
            }
            let size = e.payload.len() + e.attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            if max_value > 0 && size as u64 > max_value {
                return Err(at(format!(
                    "payload and attributes are {size} bytes, over the limit of {max_value} bytes"
                ))
                .into());
            }
            if e.value.is_some_and(|v| !v.is_finite()) {
                return Err(at("value must be a finite number".to_owned()).into());
            }
            if cutoff.is_some_and(|c| e.timestamp < c) {
                expired += 1;
                continue;
            }
            events.push(Event {
                timestamp: e.timestamp,
                event_id: e.event_id,
                value: e.value,
                payload: e.payload,
                attributes: e.attributes.into_iter().collect(),
            });
        }
        let kept = events.len() as u64;
        let appended = if events.is_empty() {
            0
        } else {
            traced::<B, _>("append", backend.append(&ns, &req.series, events)).await?
        };
        Ok(Response::new(AppendResponse { appended, duplicates: kept.saturating_sub(appended), expired }))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Timeseries, "TimeSeries", &req.namespace)?;
        check_name("series", &req.series, caps)?;
        check_range(req.start, req.end)?;
        let descending = req.order() == Order::Descending;
        let base = TimeSeriesCursor {
            namespace: req.namespace.clone(),
            series: req.series.clone(),
            start: req.start,
            end: req.end,
            descending,
            ..Default::default()
        };
        let after = cursor::decode_query(&base, &req.page_token)?;
        let limit = match req.limit as usize {
            0 => DEFAULT_PAGE_ITEMS,
            n => n.min(declared(caps.max_page_items, MAX_PAGE_ITEMS)),
        };
        let start = retention_cutoff(&ns).map_or(req.start, |c| req.start.max(c));
        if start >= req.end {
            return Ok(Response::new(QueryResponse::default()));
        }
        let query = RangeQuery { series: req.series, start, end: req.end, descending, after, limit };
        let mut page = traced::<B, _>("query", backend.query(&ns, query)).await?;
        page.events.truncate(limit);
        let next_page_token = match (page.more, page.events.last()) {
            (true, Some(last)) => cursor::encode_query(&TimeSeriesCursor {
                after_timestamp: last.timestamp,
                after_event_id: last.event_id.clone(),
                ..base
            }),
            _ => String::new(),
        };
        Ok(Response::new(QueryResponse {
            events: page.events.into_iter().map(WireEvent::from).collect(),
            next_page_token,
        }))
    }

    async fn aggregate(&self, request: Request<AggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Timeseries, "TimeSeries", &req.namespace)?;
        check_name("series", &req.series, caps)?;
        check_range(req.start, req.end)?;
        let function = req.function();
        if function == AggregateFunction::Unspecified {
            return Err(
                PluginError::InvalidArgument("function is required (count, sum, min, max or avg)".to_owned()).into()
            );
        }
        if req.bucket_ms < 1 {
            return Err(
                PluginError::InvalidArgument(format!("bucket_ms is {}, must be at least 1", req.bucket_ms)).into()
            );
        }
        let span = req.end - req.start;
        let buckets = span / req.bucket_ms + i64::from(span % req.bucket_ms != 0);
        if buckets > MAX_BUCKETS {
            return Err(PluginError::InvalidArgument(format!(
                "the range holds {buckets} buckets of {} ms, over the limit of {MAX_BUCKETS}",
                req.bucket_ms
            ))
            .into());
        }
        let start = retention_cutoff(&ns).map_or(req.start, |c| req.start.max(c));
        if start >= req.end {
            return Ok(Response::new(AggregateResponse::default()));
        }
        let stats =
            traced::<B, _>("aggregate", backend.aggregate(&ns, &req.series, req.start, start, req.end, req.bucket_ms))
                .await?;
        let buckets = stats.iter().map(|s| bucket(s, req.start, req.bucket_ms, function)).collect();
        Ok(Response::new(AggregateResponse { buckets }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_pick_the_function() {
        let s = BucketStats { index: 2, count: 3, values: 2, sum: 10.0, min: 4.0, max: 6.0 };
        let b = |f| bucket(&s, 1000, 10, f);
        assert_eq!(b(AggregateFunction::Count).value, Some(3.0));
        assert_eq!(b(AggregateFunction::Sum).value, Some(10.0));
        assert_eq!(b(AggregateFunction::Min).value, Some(4.0));
        assert_eq!(b(AggregateFunction::Max).value, Some(6.0));
        assert_eq!(b(AggregateFunction::Avg).value, Some(5.0));
        assert_eq!(b(AggregateFunction::Avg).start, 1020);
        let empty = BucketStats { values: 0, count: 1, ..s };
        assert_eq!(bucket(&empty, 0, 10, AggregateFunction::Avg).value, None);
    }

    #[test]
    fn ranges() {
        assert!(check_range(5, 5).is_ok());
        assert!(check_range(6, 5).unwrap_err().to_string().contains("inverted"));
        assert!(check_range(-1, 5).is_err());
    }
}
