//! TimeSeries on JetStream streams.
//!
//! Each TimeSeries namespace is one stream, `TS_<prefix>_<namespace>`, on
//! the subjects `<prefix>.ts.<namespace>.<series>` (the series
//! base64url-encoded, as NATS tokens allow only some characters). An event
//! is a message whose payload is the event itself (`prism.timeseries.v1.Event`
//! in protobuf); its `Nats-Msg-Id` lets JetStream drop a retried publish
//! within its duplicate window.
//!
//! A stream has no index by event time and keeps duplicates older than that
//! window, so the plugin keeps a view of each stream it serves
//! ([`LogView`]: events by series and time, rebuilt from the stream when the
//! plugin starts), read to the end of the stream before every call. An
//! Append produces only the events the view does not hold, under the
//! namespace's lock. Subscribe is a JetStream ordered consumer on the
//! series' subject from a stream sequence: positions are stream sequences,
//! and the epoch is the stream's creation time, so a position of a stream
//! since deleted and made again starts over instead of skipping.
//!
//! Not claimed: retention. A stream's `max_age` counts from when a message
//! was stored, not from the event's timestamp, so it cannot drop events by
//! their time.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use prism_plugin_sdk::proto::timeseries::v1::Event as WireEvent;
use prism_plugin_sdk::view::LogView;
use prism_plugin_sdk::{
    BucketStats, Event, EventPage, LogPosition, Namespace, PluginError, PluginResult, RangeQuery, SubscribeFrom,
    Subscription, TimeSeriesStore,
};
use prost::Message;
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard};

use crate::{Bucket, Nats, Storage, unavailable};

/// A namespace's stream and the plugin's view of it.
pub struct Log {
    stream: String,
    subject: String,
    view: Mutex<View>,
}

/// What the plugin has read of a stream.
struct View {
    log: LogView,
    /// The stream's creation time (nanoseconds): a stream made again reads
    /// from scratch.
    epoch: u64,
}

impl Log {
    pub(crate) fn new(prefix: &str, namespace: &str) -> Self {
        Self {
            stream: format!("TS_{prefix}_{namespace}"),
            subject: format!("{prefix}.ts.{namespace}"),
            view: Mutex::new(View { log: LogView::starting_at(1), epoch: 0 }),
        }
    }

    pub(crate) fn stream_name(&self) -> &str {
        &self.stream
    }

    fn series_subject(&self, series: &str) -> String {
        format!("{}.{}", self.subject, URL_SAFE_NO_PAD.encode(series))
    }

    fn series_of(&self, subject: &str) -> Option<String> {
        let token = subject.strip_prefix(&self.subject)?.strip_prefix('.')?;
        String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()
    }
}

fn not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

impl Nats {
    /// The namespace's stream; made when `create`, else `None` while it does
    /// not exist.
    async fn ts_stream(&self, log: &Log, create: bool) -> PluginResult<Option<stream::Stream>> {
        match self.js.get_stream(&log.stream).await {
            Ok(s) => return Ok(Some(s)),
            Err(e) if not_found(&e) && !create => return Ok(None),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let made = self
            .js
            .get_or_create_stream(stream::Config {
                name: log.stream.clone(),
                subjects: vec![format!("{}.*", log.subject)],
                storage: match self.config.storage {
                    Storage::File => StorageType::File,
                    Storage::Memory => StorageType::Memory,
                },
                num_replicas: self.config.replicas,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(Some(made))
    }

    /// Reads the stream from where the view stopped to its end.
    async fn catch_up(&self, log: &Log, view: &mut View) -> PluginResult<()> {
        let Some(mut s) = self.ts_stream(log, false).await? else { return Ok(()) };
        let info = s.info().await.map_err(unavailable)?;
        let epoch = u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0);
        if epoch != view.epoch {
            *view = View { log: LogView::starting_at(1), epoch };
        }
        let last = info.state.last_sequence;
        if view.log.next() > last {
            return Ok(());
        }
        let consumer = s
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: view.log.next() },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        while view.log.next() <= last {
            let Some(message) = messages.next().await else { break };
            let message = message.map_err(unavailable)?;
            let sequence = message.info().map_err(unavailable)?.stream_sequence;
            let decoded = log.series_of(message.subject.as_str()).zip(WireEvent::decode(message.payload.clone()).ok());
            match decoded {
                Some((series, event)) => {
                    view.log.apply(sequence, series, event.into());
                }
                None => view.log.skip(sequence),
            }
        }
        Ok(())
    }

    /// Whether the namespace's stream holds any message.
    pub(crate) async fn ts_holds_data(&self, log: &Log) -> PluginResult<bool> {
        self.bounded(async {
            let Some(mut s) = self.ts_stream(log, false).await? else { return Ok(false) };
            Ok(s.info().await.map_err(unavailable)?.state.messages > 0)
        })
        .await
    }

    /// The view, read to the end of the stream, locked; within the request
    /// timeout.
    async fn ts_view<'a>(&self, log: &'a Log) -> PluginResult<MutexGuard<'a, View>> {
        self.bounded(async {
            let mut view = log.view.lock().await;
            self.catch_up(log, &mut view).await?;
            Ok(view)
        })
        .await
    }
}

impl TimeSeriesStore for Nats {
    async fn append(&self, ns: &Namespace<Bucket>, series: &str, events: Vec<Event>) -> PluginResult<u64> {
        let log = &ns.state.log;
        self.bounded(async {
            let mut view = log.view.lock().await;
            self.catch_up(log, &mut view).await?;
            let fresh = view.log.fresh(series, events);
            let appended = fresh.len() as u64;
            if fresh.is_empty() {
                return Ok(0);
            }
            self.ts_stream(log, true).await?;
            let subject = log.series_subject(series);
            // Sent one after another without waiting, then acknowledged
            // together: one round trip for the append, not one an event.
            let mut acks = Vec::with_capacity(fresh.len());
            for e in fresh {
                let id = format!("{subject}.{}.{}", e.timestamp, URL_SAFE_NO_PAD.encode(&e.event_id));
                let publish = PublishMessage::build().message_id(id).payload(WireEvent::from(e).encode_to_vec().into());
                acks.push(self.js.send_publish(subject.clone(), publish).await.map_err(unavailable)?);
            }
            for ack in acks {
                ack.await.map_err(unavailable)?;
            }
            self.catch_up(log, &mut view).await?;
            Ok(appended)
        })
        .await
    }

    async fn query(&self, ns: &Namespace<Bucket>, q: RangeQuery) -> PluginResult<EventPage> {
        Ok(self.ts_view(&ns.state.log).await?.log.query(&q))
    }

    async fn aggregate(
        &self,
        ns: &Namespace<Bucket>,
        series: &str,
        origin: i64,
        start: i64,
        end: i64,
        bucket_ms: i64,
    ) -> PluginResult<Vec<BucketStats>> {
        Ok(self.ts_view(&ns.state.log).await?.log.aggregate(series, origin, start, end, bucket_ms))
    }

    async fn subscribe(
        &self,
        ns: Arc<Namespace<Bucket>>,
        series: &str,
        from: SubscribeFrom,
    ) -> PluginResult<Subscription> {
        let log = &ns.state.log;
        let subject = log.series_subject(series);
        let (start, messages) = self
            .bounded(async {
                let mut view = log.view.lock().await;
                self.catch_up(log, &mut view).await?;
                let mut s = self.ts_stream(log, true).await?.ok_or_else(|| unavailable("the stream vanished"))?;
                let info = s.info().await.map_err(unavailable)?;
                let epoch = u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0);
                let end = info.state.last_sequence + 1;
                let next = match from {
                    SubscribeFrom::Now => end,
                    SubscribeFrom::Timestamp(at) => view.log.first_at_or_after(series, at).unwrap_or(end),
                    // Another stream's position (deleted and made again):
                    // everything this one holds follows it.
                    SubscribeFrom::After(p) if p.epoch != epoch => 1,
                    SubscribeFrom::After(p) => p.sequence.min(end),
                };
                if let SubscribeFrom::After(p) = from
                    && p.epoch == epoch
                    && info.state.messages > 0
                    && next < info.state.first_sequence
                {
                    return Err(PluginError::OutOfRange(format!(
                        "from_position is older than the oldest message stream {:?} keeps (sequence {}); subscribe from_timestamp instead",
                        log.stream, info.state.first_sequence
                    )));
                }
                let consumer = s
                    .create_consumer(OrderedConfig {
                        filter_subject: subject.clone(),
                        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: next.max(1) },
                        ..Default::default()
                    })
                    .await
                    .map_err(unavailable)?;
                let messages = consumer.messages().await.map_err(unavailable)?;
                Ok((LogPosition { epoch, sequence: next }, messages))
            })
            .await?;
        let epoch = start.epoch;
        let ns_for_decode = ns.clone();
        // The ordered consumer pulls in bounded batches as the stream is
        // polled, and re-creates itself after a gap or a lost connection.
        let events = messages
            .filter_map(move |message| {
                let item = match message {
                    Err(e) => Some(Err(unavailable(e))),
                    Ok(message) => match message.info() {
                        Err(e) => Some(Err(unavailable(e))),
                        Ok(info) => {
                            let sequence = info.stream_sequence;
                            let log = &ns_for_decode.state.log;
                            let decoded = log
                                .series_of(message.subject.as_str())
                                .zip(WireEvent::decode(message.payload.clone()).ok());
                            decoded.map(|(_, e)| Ok((LogPosition { epoch, sequence: sequence + 1 }, e.into())))
                        }
                    },
                };
                std::future::ready(item)
            })
            .boxed();
        Ok(Subscription { start, events })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn series_subjects_round_trip() {
        let log = Log::new("prism", "metrics");
        for series in ["cpu", "a.b*c>d e", "ünï/cödé", ""] {
            let subject = log.series_subject(series);
            assert_eq!(subject.matches('.').count(), 3, "{subject}");
            assert_eq!(log.series_of(&subject).as_deref(), Some(series));
        }
        assert_eq!(log.series_of("prism.ts.other.Y3B1"), None);
    }
}
