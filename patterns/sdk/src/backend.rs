//! The traits a plugin author implements.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prism_proto::plugin::v1 as proto;
use serde::de::DeserializeOwned;

use crate::error::{PluginError, PluginResult};

/// A data pattern a plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    KeyValue,
    TimeSeries,
    Graph,
}

impl Pattern {
    pub(crate) fn to_proto(self) -> proto::Pattern {
        match self {
            Self::KeyValue => proto::Pattern::Keyvalue,
            Self::TimeSeries => proto::Pattern::Timeseries,
            Self::Graph => proto::Pattern::Graph,
        }
    }

    fn from_proto(pattern: i32) -> Option<Self> {
        match proto::Pattern::try_from(pattern).ok()? {
            proto::Pattern::Keyvalue => Some(Self::KeyValue),
            proto::Pattern::Timeseries => Some(Self::TimeSeries),
            proto::Pattern::Graph => Some(Self::Graph),
            proto::Pattern::Unspecified => None,
        }
    }
}

/// What a read sees after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// A read may miss a write acknowledged a moment ago (replicas).
    #[default]
    Eventual,
    /// A read sees every acknowledged write.
    Strong,
}

/// Whether data outlives the plugin and its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Lost when the plugin or the backend restarts.
    #[default]
    Ephemeral,
    /// Survives a restart of the plugin and of the backend.
    Durable,
}

/// What a plugin can do. Declare only what the backend truly supports: the
/// SDK refuses calls that need anything else, and the conformance suite
/// checks both ways. The defaults claim nothing (no pattern, no TTL,
/// eventual, ephemeral, no declared limits).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub patterns: Vec<Pattern>,
    /// Values may expire (`ttl_seconds`).
    pub ttl: bool,
    /// Compare-and-set through `if_version`.
    pub cas: bool,
    /// Ordered prefix scans.
    pub scan: bool,
    /// Largest key and value the backend accepts, in bytes; 0 for no limit
    /// of its own.
    pub max_key_bytes: u64,
    pub max_value_bytes: u64,
    pub consistency: Consistency,
    pub durability: Durability,
    /// TimeSeries: the backend deletes events older than the namespace's
    /// retention from storage.
    pub retention: bool,
    /// Most events in one Append; 0 for the SDK default.
    pub max_append_events: u64,
    /// Most items in a Query or Neighbors page; 0 for the SDK default.
    pub max_page_items: u64,
    /// Most vertices one Traverse returns, and its deepest walk; 0 for the
    /// SDK defaults.
    pub max_traverse_results: u64,
    pub max_traverse_depth: u32,
    /// TimeSeries: the backend follows a series as it grows
    /// ([`TimeSeriesStore::subscribe`]).
    pub subscribe: bool,
}

impl Capabilities {
    /// As sent in the Initialize answer.
    pub(crate) fn to_proto(&self) -> proto::Capabilities {
        proto::Capabilities {
            patterns: self.patterns.iter().map(|p| p.to_proto() as i32).collect(),
            ttl: self.ttl,
            cas: self.cas,
            scan: self.scan,
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            consistency: match self.consistency {
                Consistency::Eventual => proto::Consistency::Eventual,
                Consistency::Strong => proto::Consistency::Strong,
            } as i32,
            durability: match self.durability {
                Durability::Ephemeral => proto::Durability::Ephemeral,
                Durability::Durable => proto::Durability::Durable,
            } as i32,
            retention: self.retention,
            max_append_events: self.max_append_events,
            max_page_items: self.max_page_items,
            max_traverse_results: self.max_traverse_results,
            max_traverse_depth: self.max_traverse_depth,
            subscribe: self.subscribe,
        }
    }
}

/// A namespace as the proxy asks the plugin to prepare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSettings {
    pub name: String,
    pub pattern: Pattern,
    /// Largest value the namespace accepts (already the lowest of the
    /// proxy's, the namespace's and the plugin's limits); 0 for none.
    pub max_value_bytes: u64,
    /// TimeSeries: events older than this are not kept.
    pub retention: Option<Duration>,
}

impl NamespaceSettings {
    /// A namespace of `pattern` with no limits of its own.
    pub fn new(name: impl Into<String>, pattern: Pattern) -> Self {
        Self { name: name.into(), pattern, max_value_bytes: 0, retention: None }
    }
}

impl TryFrom<proto::NamespaceSettings> for NamespaceSettings {
    type Error = PluginError;

    fn try_from(settings: proto::NamespaceSettings) -> Result<Self, PluginError> {
        let pattern = Pattern::from_proto(settings.pattern).ok_or_else(|| {
            PluginError::InvalidArgument(format!("namespace {:?} has no known pattern", settings.name))
        })?;
        Ok(Self {
            name: settings.name,
            pattern,
            max_value_bytes: settings.max_value_bytes,
            retention: (settings.retention_seconds > 0).then(|| Duration::from_secs(settings.retention_seconds)),
        })
    }
}

/// A prepared namespace as handed to the store: the settings the proxy sent
/// and the plugin's own per-namespace state (a table name, a key prefix, an
/// in-memory map).
#[derive(Debug)]
pub struct Namespace<S> {
    settings: NamespaceSettings,
    /// The plugin's state for this namespace, built by
    /// [`Backend::prepare_namespace`].
    pub state: S,
}

impl<S> Namespace<S> {
    pub(crate) fn new(settings: NamespaceSettings, state: S) -> Self {
        Self { settings, state }
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The settings the proxy sent when preparing the namespace.
    pub fn settings(&self) -> &NamespaceSettings {
        &self.settings
    }

    /// How long data is kept, if the namespace has a retention.
    pub fn retention(&self) -> Option<Duration> {
        self.settings.retention
    }
}

/// The lifecycle part every plugin implements.
pub trait Backend: Send + Sync + Sized + 'static {
    /// The plugin's configuration, deserialized from the `config:` block of
    /// the proxy config. Unknown fields should be rejected
    /// (`#[serde(deny_unknown_fields)]`).
    type Config: DeserializeOwned + Send;
    /// Per-namespace state built by [`Backend::prepare_namespace`].
    type NamespaceState: Send + Sync + 'static;

    /// The backend kind, e.g. `"memstore"`.
    const KIND: &'static str;

    /// The backend as OpenTelemetry's `db.system` names it (`postgresql`,
    /// `redis`, `sqlite`, ...), on the spans around the backend's calls.
    const DB_SYSTEM: &'static str = Self::KIND;

    /// Builds the backend from its configuration. A backend that is down at
    /// this point should still open (and report unhealthy) so that it can
    /// recover by itself when the backend returns.
    fn open(instance: &str, config: Self::Config) -> impl Future<Output = PluginResult<Self>> + Send;

    /// What this backend can do. Only declare what the backend truly
    /// supports: the SDK refuses calls needing anything else.
    fn capabilities(&self) -> Capabilities;

    /// Checks that the backend can serve; an error makes the plugin report
    /// `NOT_SERVING` with the error's message.
    fn health(&self) -> impl Future<Output = PluginResult<()>> + Send {
        async { Ok(()) }
    }

    /// Makes a namespace ready and returns the state the store methods get.
    /// Must be idempotent: the proxy prepares every namespace again after a
    /// plugin restart. Should not need the backend to be reachable (create
    /// tables or buckets on first use instead): a namespace that cannot be
    /// prepared answers FAILED_PRECONDITION, whereas one whose backend is
    /// down answers UNAVAILABLE, which is what a client should see.
    fn prepare_namespace(
        &self,
        settings: &NamespaceSettings,
    ) -> impl Future<Output = PluginResult<Self::NamespaceState>> + Send;

    /// Deletes a namespace and all its data. Must be idempotent.
    fn drop_namespace(&self, name: &str) -> impl Future<Output = PluginResult<()>> + Send;

    /// Whether a prepared namespace may hold data. The proxy asks before it
    /// removes a namespace or moves it to another backend, so that data is
    /// never orphaned silently. When unsure (expired values not yet swept),
    /// answer true.
    fn holds_data(&self, ns: &Namespace<Self::NamespaceState>) -> impl Future<Output = PluginResult<bool>> + Send;

    /// Finishes background work and releases backend connections before the
    /// process stops.
    fn drain(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: Bytes,
    pub version: u64,
}

/// One write, already validated by the SDK against the declared
/// capabilities: `ttl` is only set when the plugin declares TTL support and
/// `if_version` only when it declares compare-and-set.
#[derive(Debug, Clone)]
pub struct PutOp {
    pub key: String,
    pub value: Bytes,
    pub ttl: Option<Duration>,
    pub if_version: Option<u64>,
}

/// One page of a scan.
#[derive(Debug, Default)]
pub struct ScanPage {
    /// Entries in key order.
    pub entries: Vec<(String, Record)>,
    /// Whether more keys with the prefix follow the last entry.
    pub more: bool,
}

/// The KeyValue pattern.
///
/// Versions must be unique within a namespace and grow with every write, so
/// that a key deleted and written again never reuses a version. Expired
/// values must never be returned, whatever the backend's cleanup schedule.
pub trait KeyValueStore: Backend {
    /// Writes a value and returns its new version. When `op.if_version` is
    /// set, writes only if the current version equals it (0: key absent),
    /// else fails with [`crate::PluginError::Conflict`].
    fn put(&self, ns: &Namespace<Self::NamespaceState>, op: PutOp) -> impl Future<Output = PluginResult<u64>> + Send;

    /// Reads a value; `None` when absent or expired.
    fn get(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        key: &str,
    ) -> impl Future<Output = PluginResult<Option<Record>>> + Send;

    /// Deletes a key; returns whether it existed. With `if_version`, deletes
    /// only if the current version equals it, else fails with
    /// [`crate::PluginError::Conflict`].
    fn delete(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        key: &str,
        if_version: Option<u64>,
    ) -> impl Future<Output = PluginResult<bool>> + Send;

    /// Reads many keys; one result per key, in order. The default reads
    /// them one by one; a backend with a batch read (MGET, `= ANY($1)`)
    /// should override it.
    fn batch_get(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        keys: &[String],
    ) -> impl Future<Output = PluginResult<Vec<Option<Record>>>> + Send {
        async move {
            let mut records = Vec::with_capacity(keys.len());
            for key in keys {
                records.push(self.get(ns, key).await?);
            }
            Ok(records)
        }
    }

    /// Writes many values (never with `if_version`); one version per item,
    /// in order. The default writes them one by one, so a failure can leave
    /// the first items written; a backend with transactions or pipelines
    /// should override it to write all or none.
    fn batch_put(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        ops: Vec<PutOp>,
    ) -> impl Future<Output = PluginResult<Vec<u64>>> + Send {
        async move {
            let mut versions = Vec::with_capacity(ops.len());
            for op in ops {
                versions.push(self.put(ns, op).await?);
            }
            Ok(versions)
        }
    }

    /// Lists up to `limit` live entries whose key starts with `prefix` and
    /// sorts strictly after `after` (when given), in key order.
    fn scan(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = PluginResult<ScanPage>> + Send;
}

/// One TimeSeries event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub event_id: String,
    pub value: Option<f64>,
    pub payload: Bytes,
    pub attributes: BTreeMap<String, String>,
}

/// A range read, already validated by the SDK: `start <= end`, `start`
/// raised to the retention cutoff, `limit` within the declared page limit.
#[derive(Debug, Clone)]
pub struct RangeQuery {
    pub series: String,
    /// Inclusive start and exclusive end, in milliseconds.
    pub start: i64,
    pub end: i64,
    pub descending: bool,
    /// Resume strictly after this `(timestamp, event_id)` in the query's
    /// order.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

/// One page of a range read.
#[derive(Debug, Default)]
pub struct EventPage {
    /// Events in the query's order.
    pub events: Vec<Event>,
    /// Whether more events of the range follow the last one.
    pub more: bool,
}

/// The raw figures of one aggregate bucket; the SDK derives the requested
/// function from them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BucketStats {
    /// Index of the bucket from the start of the range.
    pub index: i64,
    /// Events in the bucket.
    pub count: u64,
    /// Events with a value, and the sum, min and max of those values.
    pub values: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl BucketStats {
    /// Adds one event to `buckets`, for backends that aggregate while
    /// walking a range in time order: a new bucket starts when the event's
    /// index (from `origin`, `bucket_ms` wide) changes.
    pub fn accumulate(buckets: &mut Vec<Self>, origin: i64, bucket_ms: i64, timestamp: i64, value: Option<f64>) {
        let index = (timestamp - origin) / bucket_ms;
        if buckets.last().is_none_or(|b| b.index != index) {
            buckets.push(Self { index, min: f64::INFINITY, max: f64::NEG_INFINITY, ..Default::default() });
        }
        if let Some(b) = buckets.last_mut() {
            b.count += 1;
            if let Some(v) = value {
                b.values += 1;
                b.sum += v;
                b.min = b.min.min(v);
                b.max = b.max.max(v);
            }
        }
    }
}

/// A place in a series' append log, as a subscription reports it: the
/// sequence grows with every event appended to the series (by one or
/// more); the epoch changes when the log starts over (a store kept in
/// memory that restarted), so that an old position is never taken for a
/// place in the new log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogPosition {
    pub epoch: u64,
    pub sequence: u64,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeFrom {
    /// With the next event appended.
    Now,
    /// From the first event, in append order, whose timestamp is at or
    /// after this; every later event follows, whatever its timestamp.
    Timestamp(i64),
    /// Right after the event at this position. A position of another
    /// epoch, or one older than what the log still holds, is the store's
    /// to answer: from the start of the current log (never a gap), or
    /// [`PluginError::OutOfRange`] when events after it were removed.
    After(LogPosition),
}

/// Stored events in append order with their positions, then new ones as
/// they are appended. An error ends it.
pub type EventStream = futures::stream::BoxStream<'static, PluginResult<(LogPosition, Event)>>;

/// A series followed from a start point.
pub struct Subscription {
    /// The position the first event follows: what a client resumes from
    /// when it has received no event yet.
    pub start: LogPosition,
    /// The events. Must be lazy: it is polled only as fast as the proxy
    /// takes messages, and must not buffer the log in memory meanwhile.
    pub events: EventStream,
}

/// The TimeSeries pattern.
///
/// An event is identified by `(series, timestamp, event_id)`; storing one
/// that exists already must leave the stored one unchanged. Backends that
/// declare `retention` delete events older than
/// [`Namespace::retention`] from storage; the SDK already hides them from
/// reads, whatever the backend's cleanup schedule.
pub trait TimeSeriesStore: Backend {
    /// Stores the events that are not stored yet; returns how many were new.
    fn append(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        series: &str,
        events: Vec<Event>,
    ) -> impl Future<Output = PluginResult<u64>> + Send;

    /// One page of a range read, in the query's order (timestamp, then
    /// event_id; both reversed when descending).
    fn query(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        query: RangeQuery,
    ) -> impl Future<Output = PluginResult<EventPage>> + Send;

    /// Per-bucket figures of the events with `start <= timestamp < end`,
    /// bucket `i` covering `[origin + i * bucket_ms, origin + (i + 1) *
    /// bucket_ms)`. Only buckets with events, in index order. Must be
    /// computed without loading the range into memory.
    fn aggregate(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        series: &str,
        origin: i64,
        start: i64,
        end: i64,
        bucket_ms: i64,
    ) -> impl Future<Output = PluginResult<Vec<BucketStats>>> + Send;

    /// Follows `series` from `from`: its stored events in append order,
    /// then each one as it is appended. Only called when the plugin
    /// declares `subscribe`; the default refuses.
    fn subscribe(
        &self,
        ns: Arc<Namespace<Self::NamespaceState>>,
        series: &str,
        from: SubscribeFrom,
    ) -> impl Future<Output = PluginResult<Subscription>> + Send {
        let _ = (ns, series, from);
        async { Err(PluginError::Unimplemented(format!("{} plugin cannot follow a series", Self::KIND))) }
    }
}

/// A vertex as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vertex {
    pub id: String,
    pub label: String,
    pub properties: BTreeMap<String, String>,
}

/// An edge as stored, identified by `(from, label, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub label: String,
    pub properties: BTreeMap<String, String>,
}

/// Which edges of a vertex a listing follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
    Both,
}

/// A page of one half (outgoing or incoming) of a vertex's edges.
#[derive(Debug, Default)]
pub struct EdgePage {
    /// Ordered by `(label, other end)`.
    pub edges: Vec<Edge>,
    pub more: bool,
}

/// A traversal's answer: the vertices reached (the start excluded) with
/// their depth, in breadth-first order, and whether more were left past
/// the limit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TraversePage {
    pub vertices: Vec<(String, u32)>,
    pub truncated: bool,
}

/// The Graph pattern.
///
/// Traversals are run by the SDK, breadth first, one [`GraphStore::expand`]
/// per level, so a backend only answers bounded batch lookups; a backend
/// that can run a whole bounded traversal in one query does so in
/// [`GraphStore::traverse`].
pub trait GraphStore: Backend {
    /// Creates or replaces a vertex; returns whether it was created.
    fn put_vertex(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        vertex: Vertex,
    ) -> impl Future<Output = PluginResult<bool>> + Send;

    fn get_vertex(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        id: &str,
    ) -> impl Future<Output = PluginResult<Option<Vertex>>> + Send;

    /// Deletes a vertex and its edges, atomically; `None` when it did not
    /// exist, else the number of edges deleted.
    fn delete_vertex(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        id: &str,
    ) -> impl Future<Output = PluginResult<Option<u64>>> + Send;

    /// Creates or replaces an edge; fails with
    /// [`crate::PluginError::NotFound`] when either vertex is missing.
    fn put_edge(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        edge: Edge,
    ) -> impl Future<Output = PluginResult<bool>> + Send;

    fn delete_edge(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        from: &str,
        to: &str,
        label: &str,
    ) -> impl Future<Output = PluginResult<bool>> + Send;

    /// Up to `limit` outgoing (or, with `incoming`, incoming) edges of `id`
    /// with `label` (any when `None`), ordered by `(label, other end)` and
    /// strictly after `after` when given.
    fn edges(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        id: &str,
        incoming: bool,
        label: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> impl Future<Output = PluginResult<EdgePage>> + Send;

    /// Up to `limit` distinct vertices one edge away from any of `ids` in
    /// `direction`, following only `labels` (all when empty). Which ones are
    /// returned when there are more is up to the backend.
    fn expand(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        ids: &[String],
        direction: Direction,
        labels: &[String],
        limit: usize,
    ) -> impl Future<Output = PluginResult<Vec<String>>> + Send;

    /// The whole traversal from `start` (which exists) in the backend, up
    /// to `max_depth` edges and `limit` vertices, each reported at its
    /// shortest depth: one round trip instead of one per level. `Ok(None)`,
    /// the default, makes the SDK walk it level by level with
    /// [`GraphStore::expand`].
    fn traverse(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        start: &str,
        direction: Direction,
        labels: &[String],
        max_depth: u32,
        limit: usize,
    ) -> impl Future<Output = PluginResult<Option<TraversePage>>> + Send {
        let _ = (ns, start, direction, labels, max_depth, limit);
        async { Ok(None) }
    }
}
