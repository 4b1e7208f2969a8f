//! Kafka TimeSeries store for Prism (ADR-018).
//!
//! Each namespace is one topic, `<topic_prefix>.<namespace>`, with one
//! partition, so a namespace's events have one order, the log's. An event
//! is a record: the series is its key, the event timestamp its timestamp,
//! the payload its value, and the event id, the number and the attributes
//! its headers (`id`, `v`, `a:<name>`).
//!
//! Kafka has no index by series and time and no uniqueness, so the plugin
//! keeps a *view* of each topic it serves: the events by series and time,
//! built by reading the topic from where it last read (to the high
//! watermark) before every call. The topic is the store; the view is
//! rebuilt from it when the plugin starts, and costs memory in proportion to
//! the events kept. An Append reads up to the end first and produces only
//! events the log does not hold, serialized per namespace in this plugin:
//! exact while one plugin writes the topic. Two plugins appending the same
//! event at the same moment may both produce it; the first copy in the log
//! is the event, later ones are skipped by every read (Subscribe, which reads
//! the log, may deliver both: at least once).
//!
//! Subscribe reads the topic itself from an offset (a fetch that waits for
//! new records), keeping the records of its series; positions are offsets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prism_plugin_sdk::view::LogView;
use prism_plugin_sdk::{
    Backend, BucketStats, Capabilities, Consistency, Durability, Event, EventPage, LogPosition, Namespace,
    NamespaceSettings, Pattern, PluginError, PluginResult, RangeQuery, SubscribeFrom, Subscription, TimeSeriesStore,
};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Configuration (`config:` of the plugin entry in the proxy config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Prefix of every topic: `<prefix>.<namespace>`.
    #[serde(default = "defaults::topic_prefix")]
    pub topic_prefix: String,
    /// Replication factor of the topics the plugin creates.
    #[serde(default = "defaults::replication_factor")]
    pub replication_factor: i16,
    /// Longest wait for one broker request.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Whether the brokers keep records across their own restarts (a real
    /// Kafka cluster does; tansu's `memory://` storage does not). Only then
    /// is the plugin durable.
    #[serde(default)]
    pub durable: bool,
}

mod defaults {
    pub(super) fn topic_prefix() -> String {
        "prism".to_owned()
    }
    pub(super) fn replication_factor() -> i16 {
        1
    }
    pub(super) fn request_timeout_ms() -> u64 {
        5000
    }
}

/// Largest payload (with its attributes) of one event, and the most bytes
/// produced in one request: under Kafka's default `message.max.bytes` (1 MB)
/// with room for the batch's framing.
const MAX_VALUE_BYTES: u64 = 512 * 1024;
/// Bytes asked for per fetch.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// Most records produced in one batch. tansu answers a fetch from an offset
/// inside a batch with nothing (Kafka sends the whole batch), so a reader
/// that starts mid-batch steps back to the batch's first record: this
/// bounds those steps.
const MAX_BATCH_RECORDS: usize = 100;
/// How long a subscription's fetch waits at the end of the log for new
/// records.
const FOLLOW_WAIT_MS: i32 = 500;
/// The epoch of every position: offsets of a topic do not start over while
/// it exists. (A namespace dropped and made again has a new topic whose
/// offsets do: a position from before is then read as an offset into it.)
const EPOCH: u64 = 1;

/// The broker connection, made on first use so that the plugin starts (and
/// reports unhealthy) while the brokers are down.
struct Conn {
    config: Config,
    client: Mutex<Option<Arc<Client>>>,
}

fn unavailable(err: impl std::fmt::Display) -> PluginError {
    PluginError::Unavailable(format!("kafka: {err}"))
}

fn is_unknown_topic(err: &KafkaError) -> bool {
    matches!(err, KafkaError::ServerError { protocol_error: ProtocolError::UnknownTopicOrPartition, .. })
}

impl Conn {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// Bounds a broker call: rskafka retries on its own, which must not
    /// outlast the call's budget.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, KafkaError>>,
    ) -> PluginResult<Result<T, KafkaError>> {
        tokio::time::timeout(self.timeout(), call)
            .await
            .map_err(|_| unavailable(format!("no answer from the brokers within {:?}", self.timeout())))
    }

    async fn client(&self) -> PluginResult<Arc<Client>> {
        let mut client = self.client.lock().await;
        if let Some(c) = client.as_ref() {
            return Ok(c.clone());
        }
        let built = ClientBuilder::new(self.config.brokers.clone()).client_id("prism-plugin-kafka").build();
        let built = Arc::new(self.bounded(built).await?.map_err(unavailable)?);
        *client = Some(built.clone());
        Ok(built)
    }

    /// The topic's partition, or `None` when the topic does not exist.
    async fn partition(&self, topic: &str) -> PluginResult<Option<Arc<PartitionClient>>> {
        let client = self.client().await?;
        match self.bounded(client.partition_client(topic, 0, UnknownTopicHandling::Error)).await? {
            Ok(p) => Ok(Some(Arc::new(p))),
            Err(e) if is_unknown_topic(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The topic's partition, creating the topic when it does not exist.
    async fn partition_or_create(&self, topic: &str) -> PluginResult<Arc<PartitionClient>> {
        if let Some(p) = self.partition(topic).await? {
            return Ok(p);
        }
        let client = self.client().await?;
        let controller = client.controller_client().map_err(unavailable)?;
        let timeout_ms = i32::try_from(self.config.request_timeout_ms).unwrap_or(i32::MAX);
        let created = controller.create_topic(topic, 1, self.config.replication_factor, timeout_ms);
        match self.bounded(created).await? {
            Ok(()) | Err(KafkaError::ServerError { protocol_error: ProtocolError::TopicAlreadyExists, .. }) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let made = self.bounded(client.partition_client(topic, 0, UnknownTopicHandling::Retry)).await?;
        Ok(Arc::new(made.map_err(unavailable)?))
    }
}

/// The plugin.
pub struct Kafka {
    conn: Arc<Conn>,
}

/// What the plugin has read of a topic: the events (positions are
/// offsets), and the topic's partition once it exists.
#[derive(Default)]
struct View {
    log: LogView,
    partition: Option<Arc<PartitionClient>>,
}

/// A namespace's topic and the plugin's view of it. The lock serializes
/// the view's catch-up and the namespace's appends.
pub struct Topic {
    name: String,
    view: Mutex<View>,
}

/// The record of an event of `series`.
fn record(series: &str, e: Event) -> Record {
    let mut headers = BTreeMap::from([("id".to_owned(), e.event_id.into_bytes())]);
    if let Some(v) = e.value {
        headers.insert("v".to_owned(), v.to_be_bytes().to_vec());
    }
    for (k, v) in e.attributes {
        headers.insert(format!("a:{k}"), v.into_bytes());
    }
    Record {
        key: Some(series.as_bytes().to_vec()),
        value: Some(e.payload.to_vec()),
        headers,
        timestamp: chrono::DateTime::from_timestamp_millis(e.timestamp).unwrap_or_default(),
    }
}

/// The series and event of a record, or `None` for a record this plugin did
/// not write.
fn event(r: &Record) -> Option<(String, Event)> {
    let series = String::from_utf8(r.key.clone()?).ok()?;
    let event_id = String::from_utf8(r.headers.get("id")?.clone()).ok()?;
    let value = match r.headers.get("v") {
        Some(bytes) => Some(f64::from_be_bytes(bytes.as_slice().try_into().ok()?)),
        None => None,
    };
    let mut attributes = BTreeMap::new();
    for (k, v) in &r.headers {
        if let Some(name) = k.strip_prefix("a:") {
            attributes.insert(name.to_owned(), String::from_utf8(v.clone()).ok()?);
        }
    }
    let payload = Bytes::from(r.value.clone().unwrap_or_default());
    Some((series, Event { timestamp: r.timestamp.timestamp_millis(), event_id, value, payload, attributes }))
}

impl Kafka {
    /// Reads the topic from where the view stopped to its end.
    async fn catch_up(&self, topic: &Topic, view: &mut View) -> PluginResult<()> {
        if view.partition.is_none() {
            view.partition = self.conn.partition(&topic.name).await?;
        }
        let Some(partition) = view.partition.clone() else { return Ok(()) };
        loop {
            let from = i64::try_from(view.log.next()).unwrap_or(i64::MAX);
            let fetched = self.conn.bounded(partition.fetch_records(from, 1..FETCH_BYTES, 0)).await?;
            let (records, high_watermark) = fetched.map_err(unavailable)?;
            if records.is_empty() {
                return Ok(());
            }
            // Kafka sends whole batches: records before `next` were read.
            for r in &records {
                // Kafka sends whole batches, and tansu may repeat a record:
                // the view ignores positions it has read.
                let position = u64::try_from(r.offset).unwrap_or(0);
                match event(&r.record) {
                    Some((series, e)) => {
                        view.log.apply(position, series, e);
                    }
                    None if position >= view.log.next() => view.log.skip(position),
                    None => {}
                }
            }
            if view.log.next() >= u64::try_from(high_watermark).unwrap_or(0) {
                return Ok(());
            }
        }
    }

    /// The view, read up to the end of the topic, locked.
    async fn view<'a>(&self, topic: &'a Topic) -> PluginResult<tokio::sync::MutexGuard<'a, View>> {
        let mut view = topic.view.lock().await;
        self.catch_up(topic, &mut view).await?;
        Ok(view)
    }
}

impl Backend for Kafka {
    type Config = Config;
    type NamespaceState = Arc<Topic>;
    const KIND: &'static str = "kafka";

    async fn open(_instance: &str, config: Config) -> PluginResult<Self> {
        if config.brokers.is_empty() {
            return Err(PluginError::InvalidArgument("brokers must name at least one broker".to_owned()));
        }
        let prefix_ok = !config.topic_prefix.is_empty()
            && config.topic_prefix.len() <= 100
            && config.topic_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !prefix_ok {
            return Err(PluginError::InvalidArgument(format!(
                "topic_prefix {:?} must be 1 to 100 letters, digits, '.', '_' or '-'",
                config.topic_prefix
            )));
        }
        if config.replication_factor < 1 || config.request_timeout_ms == 0 {
            return Err(PluginError::InvalidArgument(
                "replication_factor and request_timeout_ms must be at least 1".to_owned(),
            ));
        }
        Ok(Self { conn: Arc::new(Conn { config, client: Mutex::new(None) }) })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: vec![Pattern::TimeSeries],
            // One partition, read to its end before every call.
            consistency: Consistency::Strong,
            durability: if self.conn.config.durable { Durability::Durable } else { Durability::Ephemeral },
            max_value_bytes: MAX_VALUE_BYTES,
            // A topic name holds at most 249 characters.
            max_key_bytes: 4096,
            subscribe: true,
            ..Default::default()
        }
    }

    async fn health(&self) -> PluginResult<()> {
        let client = self.conn.client().await?;
        self.conn.bounded(client.list_topics()).await?.map_err(unavailable)?;
        Ok(())
    }

    async fn prepare_namespace(&self, settings: &NamespaceSettings) -> PluginResult<Arc<Topic>> {
        let name = format!("{}.{}", self.conn.config.topic_prefix, settings.name);
        if name.len() > 249 {
            return Err(PluginError::FailedPrecondition(format!(
                "topic {name:?} is longer than Kafka's 249 characters: shorten topic_prefix or the namespace name"
            )));
        }
        Ok(Arc::new(Topic { name, view: Mutex::new(View::default()) }))
    }

    async fn drop_namespace(&self, name: &str) -> PluginResult<()> {
        let topic = format!("{}.{name}", self.conn.config.topic_prefix);
        let client = self.conn.client().await?;
        let controller = client.controller_client().map_err(unavailable)?;
        let timeout_ms = i32::try_from(self.conn.config.request_timeout_ms).unwrap_or(i32::MAX);
        match self.conn.bounded(controller.delete_topic(&topic, timeout_ms)).await? {
            Ok(()) => Ok(()),
            Err(e) if is_unknown_topic(&e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn holds_data(&self, ns: &Namespace<Arc<Topic>>) -> PluginResult<bool> {
        let view = self.view(&ns.state).await?;
        Ok(view.log.has_read(0))
    }
}

impl TimeSeriesStore for Kafka {
    async fn append(&self, ns: &Namespace<Arc<Topic>>, series: &str, events: Vec<Event>) -> PluginResult<u64> {
        let topic = &ns.state;
        let view = self.view(topic).await?;
        let fresh = view.log.fresh(series, events);
        let appended = fresh.len() as u64;
        if fresh.is_empty() {
            return Ok(0);
        }
        let partition = match view.partition.clone() {
            Some(p) => p,
            None => self.conn.partition_or_create(&topic.name).await?,
        };
        // Produced in requests under the broker's message size limit. A
        // failure after the first leaves those written: a retried Append
        // skips them.
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut events = fresh.into_iter().peekable();
        while let Some(e) = events.next() {
            let size = e.payload.len() + e.event_id.len() + 64;
            batch.push(record(series, e));
            bytes += size;
            if bytes >= MAX_VALUE_BYTES as usize || batch.len() == MAX_BATCH_RECORDS || events.peek().is_none() {
                let sent = partition.produce(std::mem::take(&mut batch), Compression::NoCompression);
                self.conn.bounded(sent).await?.map_err(unavailable)?;
                bytes = 0;
            }
        }
        // Read back, so the view holds them (and whatever others wrote).
        let mut view = view;
        self.catch_up(topic, &mut view).await?;
        Ok(appended)
    }

    async fn query(&self, ns: &Namespace<Arc<Topic>>, q: RangeQuery) -> PluginResult<EventPage> {
        Ok(self.view(&ns.state).await?.log.query(&q))
    }

    async fn aggregate(
        &self,
        ns: &Namespace<Arc<Topic>>,
        series: &str,
        origin: i64,
        start: i64,
        end: i64,
        bucket_ms: i64,
    ) -> PluginResult<Vec<BucketStats>> {
        Ok(self.view(&ns.state).await?.log.aggregate(series, origin, start, end, bucket_ms))
    }

    async fn subscribe(
        &self,
        ns: Arc<Namespace<Arc<Topic>>>,
        series: &str,
        from: SubscribeFrom,
    ) -> PluginResult<Subscription> {
        let (next, partition) = {
            let view = self.view(&ns.state).await?;
            let end = view.log.next();
            let next = match from {
                SubscribeFrom::Now => end,
                SubscribeFrom::Timestamp(at) => view.log.first_at_or_after(series, at).unwrap_or(end),
                SubscribeFrom::After(p) if p.epoch != EPOCH => 0,
                SubscribeFrom::After(p) => p.sequence.min(end),
            };
            (i64::try_from(next).unwrap_or(i64::MAX), view.partition.clone())
        };
        // The view's partition (looked up while it caught up), not another
        // metadata request.
        if let (SubscribeFrom::After(_), Some(partition)) = (from, &partition) {
            let earliest = self.conn.bounded(partition.get_offset(OffsetAt::Earliest)).await?.map_err(unavailable)?;
            if next < earliest {
                return Err(PluginError::OutOfRange(format!(
                    "from_position is older than the oldest record topic {:?} keeps (offset {earliest}); subscribe from_timestamp instead",
                    ns.state.name
                )));
            }
        }
        // A position is the offset to read next: an event's is its offset
        // plus one.
        let start = LogPosition { epoch: EPOCH, sequence: u64::try_from(next).unwrap_or(0) };
        let follow = Follow {
            conn: self.conn.clone(),
            topic: ns.state.name.clone(),
            series: series.to_owned(),
            next,
            partition,
            aligned: false,
        };
        let events = futures::stream::unfold(follow, |mut f| async move {
            let item = f.next_batch().await;
            Some((item, f))
        })
        .flat_map(|item| {
            futures::stream::iter(match item {
                Ok(batch) => batch.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        })
        .boxed();
        Ok(Subscription { start, events })
    }
}

/// A subscription's read of its topic.
struct Follow {
    conn: Arc<Conn>,
    topic: String,
    series: String,
    next: i64,
    partition: Option<Arc<PartitionClient>>,
    /// Whether `next` is known to start a record batch.
    aligned: bool,
}

impl Follow {
    /// The records from `from`, and the high watermark.
    async fn fetch(
        &self,
        partition: &PartitionClient,
        from: i64,
        wait_ms: i32,
    ) -> PluginResult<(Vec<RecordAndOffset>, i64)> {
        let fetched = self.conn.bounded(partition.fetch_records(from, 1..FETCH_BYTES, wait_ms)).await?;
        fetched.map_err(|e| match e {
            KafkaError::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. } => {
                PluginError::OutOfRange(format!("offset {from} is no longer in topic {:?}", self.topic))
            }
            e => unavailable(e),
        })
    }

    /// The next records of the series (waiting at the end of the log for
    /// new ones); empty while none came.
    async fn next_batch(&mut self) -> PluginResult<Vec<(LogPosition, Event)>> {
        if self.partition.is_none() {
            self.partition = self.conn.partition(&self.topic).await?;
        }
        let Some(partition) = self.partition.clone() else {
            // No topic yet: nothing was ever appended.
            tokio::time::sleep(Duration::from_millis(FOLLOW_WAIT_MS as u64)).await;
            return Ok(Vec::new());
        };
        let wait = if self.aligned { FOLLOW_WAIT_MS } else { 0 };
        let (mut records, high_watermark) = self.fetch(&partition, self.next, wait).await?;
        if !self.aligned {
            // A subscription may start inside a record batch, and tansu
            // answers a fetch from there with the batches after it (or
            // nothing at the end of the log) where Kafka sends the batch
            // itself. Step back until the answer starts at or before
            // `next`; from then on every fetch starts where a batch does.
            let mut from = self.next;
            let started = |records: &[RecordAndOffset]| {
                records.first().map_or(self.next >= high_watermark, |r| r.offset <= self.next)
            };
            while !started(&records) && from > 0 && self.next - from < MAX_BATCH_RECORDS as i64 {
                from -= 1;
                records = self.fetch(&partition, from, 0).await?.0;
            }
            if !started(&records) {
                return Err(PluginError::Internal(format!(
                    "topic {:?} returns no batch holding offset {} (high watermark {high_watermark})",
                    self.topic, self.next
                )));
            }
            self.aligned = true;
        }
        let mut batch = Vec::new();
        for r in records {
            // Kafka sends whole batches (records before `next` were
            // delivered already), and tansu may repeat a record.
            if r.offset < self.next {
                continue;
            }
            self.next = r.offset + 1;
            if let Some((series, e)) = event(&r.record)
                && series == self.series
            {
                batch.push((LogPosition { epoch: EPOCH, sequence: u64::try_from(self.next).unwrap_or(0) }, e));
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_round_trip_through_records() {
        let e = Event {
            timestamp: 1_700_000_000_123,
            event_id: "e\"1".into(),
            value: Some(-2.5),
            payload: Bytes::from_static(b"\x00bytes"),
            attributes: BTreeMap::from([("host".into(), "web-1".into()), ("a:b".into(), String::new())]),
        };
        let r = record("cpu/0", e.clone());
        let (series, back) = event(&r).unwrap();
        assert_eq!(series, "cpu/0");
        assert_eq!(back, e);
        let none = Event { value: None, ..e };
        assert_eq!(event(&record("s", none.clone())).unwrap().1, none);
        let foreign = Record { key: None, value: Some(vec![1]), headers: BTreeMap::new(), timestamp: r.timestamp };
        assert!(event(&foreign).is_none());
    }
}
