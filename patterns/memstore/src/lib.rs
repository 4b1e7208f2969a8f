//! An in-memory KeyValue, TimeSeries and Graph store for Prism.
//!
//! Each namespace is an ordered map behind its own lock, so scans walk keys
//! in order without sorting and namespaces never contend. TTLs are enforced
//! on every read and swept in the background from an index ordered by
//! deadline, so the sweep touches only what expired. Data does not survive
//! a restart (the plugin declares itself ephemeral).
//!
//! TimeSeries events sit in an ordered map keyed by `(series, timestamp,
//! event_id)`, so range reads and aggregates walk only the range; a second
//! index by timestamp lets the sweeper drop events past the namespace's
//! retention without scanning every series. Graph edges are kept twice,
//! ordered by `(from, label, to)` and by `(to, label, from)`, so both
//! directions are range walks.

mod graph;
mod timeseries;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use prism_plugin_sdk::{
    Backend, Capabilities, Consistency, Durability, KeyValueStore, Namespace, NamespaceSettings, Pattern, PluginError,
    PluginResult, PutOp, Record, ScanPage,
};
use serde::Deserialize;
use tokio::time::Instant;

/// Configuration (`config:` of the plugin entry in the proxy config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Largest value accepted, in bytes.
    pub max_value_bytes: u64,
    /// Longest key accepted, in bytes.
    pub max_key_bytes: u64,
    /// How often expired values are swept from memory, in milliseconds.
    /// Reads never return expired values whatever this is.
    pub sweep_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self { max_value_bytes: 16 * 1024 * 1024, max_key_bytes: 4096, sweep_interval_ms: 1000 }
    }
}

/// The plugin.
pub struct MemStore {
    config: Config,
    namespaces: Arc<Mutex<HashMap<String, Arc<NsData>>>>,
    // One counter for the whole process: versions are then unique and
    // growing within every namespace, and a re-created key never reuses one.
    versions: AtomicU64,
    sweeper: tokio::task::JoinHandle<()>,
}

/// One namespace's data.
#[derive(Default)]
pub struct NsData {
    inner: RwLock<Inner>,
    ts: RwLock<timeseries::Events>,
    graph: RwLock<graph::Graph>,
    /// Bumped after every TimeSeries append that stored an event: wakes
    /// the namespace's subscriptions.
    appended: tokio::sync::watch::Sender<u64>,
    /// Retention of the namespace in milliseconds (0: none), for the sweeper.
    retention_ms: AtomicU64,
}

#[derive(Default)]
struct Inner {
    map: BTreeMap<String, Entry>,
    // Deadline and version of every value with a TTL, so the sweeper finds
    // expired values without walking the whole map.
    expiries: BTreeMap<(Instant, u64), String>,
}

struct Entry {
    value: Bytes,
    version: u64,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }

    fn record(&self) -> Record {
        Record { value: self.value.clone(), version: self.version }
    }
}

impl Inner {
    fn live(&self, key: &str, now: Instant) -> Option<&Entry> {
        self.map.get(key).filter(|e| e.live(now))
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let old = self.map.remove(key)?;
        if let Some(at) = old.expires_at {
            self.expiries.remove(&(at, old.version));
        }
        Some(old)
    }

    fn insert(&mut self, key: String, value: Bytes, version: u64, ttl: Option<Duration>, now: Instant) {
        self.remove(&key);
        let expires_at = ttl.map(|ttl| now + ttl);
        if let Some(at) = expires_at {
            self.expiries.insert((at, version), key.clone());
        }
        self.map.insert(key, Entry { value, version, expires_at });
    }

    fn sweep(&mut self, now: Instant) {
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.map.remove(&key);
        }
    }
}

impl MemStore {
    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn read(ns: &NsData) -> std::sync::RwLockReadGuard<'_, Inner> {
    // A panic while holding the lock cannot leave the map half-updated in a
    // way that matters more than losing the process, so poisoning is ignored.
    ns.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(ns: &NsData) -> std::sync::RwLockWriteGuard<'_, Inner> {
    ns.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn sweep_loop(namespaces: Weak<Mutex<HashMap<String, Arc<NsData>>>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(namespaces) = namespaces.upgrade() else { return };
        let all: Vec<Arc<NsData>> =
            namespaces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        let now = Instant::now();
        for ns in all {
            write(&ns).sweep(now);
            let retention = ns.retention_ms.load(Ordering::Relaxed);
            if retention > 0 {
                write_lock(&ns.ts).expire(timeseries::now_ms().saturating_sub(retention as i64));
            }
        }
    }
}

impl Backend for MemStore {
    type Config = Config;
    type NamespaceState = Arc<NsData>;
    const KIND: &'static str = "memstore";

    async fn open(_instance: &str, config: Config) -> PluginResult<Self> {
        if config.sweep_interval_ms == 0 {
            return Err(PluginError::InvalidArgument("sweep_interval_ms must be at least 1".to_owned()));
        }
        let namespaces = Arc::new(Mutex::new(HashMap::new()));
        let sweeper =
            tokio::spawn(sweep_loop(Arc::downgrade(&namespaces), Duration::from_millis(config.sweep_interval_ms)));
        Ok(Self { config, namespaces, versions: AtomicU64::new(0), sweeper })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: vec![Pattern::KeyValue, Pattern::TimeSeries, Pattern::Graph],
            retention: true,
            ttl: true,
            cas: true,
            scan: true,
            max_key_bytes: self.config.max_key_bytes,
            max_value_bytes: self.config.max_value_bytes,
            consistency: Consistency::Strong,
            durability: Durability::Ephemeral,
            subscribe: true,
            ..Default::default()
        }
    }

    async fn prepare_namespace(&self, settings: &NamespaceSettings) -> PluginResult<Arc<NsData>> {
        let mut all = self.namespaces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ns = all.entry(settings.name.clone()).or_default().clone();
        ns.retention_ms.store(
            settings.retention.map_or(0, |r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
            Ordering::Relaxed,
        );
        Ok(ns)
    }

    async fn drop_namespace(&self, name: &str) -> PluginResult<()> {
        self.namespaces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
        Ok(())
    }

    async fn holds_data(&self, ns: &Namespace<Arc<NsData>>) -> PluginResult<bool> {
        let now = Instant::now();
        Ok(read(&ns.state).map.values().any(|e| e.live(now))
            || !read_lock(&ns.state.ts).is_empty()
            || !read_lock(&ns.state.graph).is_empty())
    }

    async fn drain(&self) {
        self.sweeper.abort();
    }
}

impl KeyValueStore for MemStore {
    async fn put(&self, ns: &Namespace<Arc<NsData>>, op: PutOp) -> PluginResult<u64> {
        let now = Instant::now();
        let mut inner = write(&ns.state);
        if let Some(expected) = op.if_version {
            let current = inner.live(&op.key, now).map_or(0, |e| e.version);
            if current != expected {
                return Err(PluginError::version_conflict(&op.key, current, expected));
            }
        }
        let version = self.next_version();
        inner.insert(op.key, op.value, version, op.ttl, now);
        Ok(version)
    }

    async fn get(&self, ns: &Namespace<Arc<NsData>>, key: &str) -> PluginResult<Option<Record>> {
        Ok(read(&ns.state).live(key, Instant::now()).map(Entry::record))
    }

    async fn delete(&self, ns: &Namespace<Arc<NsData>>, key: &str, if_version: Option<u64>) -> PluginResult<bool> {
        let now = Instant::now();
        let mut inner = write(&ns.state);
        let current = inner.live(key, now).map_or(0, |e| e.version);
        if let Some(expected) = if_version
            && current != expected
        {
            return Err(PluginError::version_conflict(key, current, expected));
        }
        // An expired entry may still sit in the map; remove it either way.
        inner.remove(key);
        Ok(current != 0)
    }

    async fn batch_get(&self, ns: &Namespace<Arc<NsData>>, keys: &[String]) -> PluginResult<Vec<Option<Record>>> {
        let now = Instant::now();
        let inner = read(&ns.state);
        Ok(keys.iter().map(|k| inner.live(k, now).map(Entry::record)).collect())
    }

    async fn batch_put(&self, ns: &Namespace<Arc<NsData>>, ops: Vec<PutOp>) -> PluginResult<Vec<u64>> {
        let now = Instant::now();
        // One lock for the whole batch: readers see all of it or none.
        let mut inner = write(&ns.state);
        Ok(ops
            .into_iter()
            .map(|op| {
                let version = self.next_version();
                inner.insert(op.key, op.value, version, op.ttl, now);
                version
            })
            .collect())
    }

    async fn scan(
        &self,
        ns: &Namespace<Arc<NsData>>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> PluginResult<ScanPage> {
        let now = Instant::now();
        let inner = read(&ns.state);
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        let mut live = inner
            .map
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.live(now));
        let entries: Vec<_> = live.by_ref().take(limit).map(|(k, e)| (k.clone(), e.record())).collect();
        let more = live.next().is_some();
        Ok(ScanPage { entries, more })
    }
}
