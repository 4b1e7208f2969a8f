//! Redis KeyValue and TimeSeries store for Prism.
//!
//! Layout of namespace `ns` under key prefix `P` (all keys share the hash
//! tag `{P:ns}`, so a namespace lives in one cluster slot):
//! - `{P:ns}:d:<key>`: a hash with the value (`d`) and its version (`v`),
//!   expiring natively with `PEXPIRE`;
//! - `{P:ns}:idx`: a sorted set of every key, all with score 0, so
//!   `ZRANGEBYLEX` lists keys in bytewise order: ordered, resumable scans
//!   without `KEYS` or `SCAN`;
//! - `{P:ns}:exp`: a sorted set of keys with a TTL, scored by deadline, so a
//!   background sweep drops expired keys from the index;
//! - `{P:ns}:ver`: the namespace's version counter (`INCR`), kept when the
//!   namespace is dropped so versions are never reused.
//!
//! Writes are Lua scripts (see `scripts.rs`), which makes compare-and-set
//! atomic. Scans skip index entries whose value expired and remove them.
//!
//! TimeSeries uses a sorted set and a hash per series (`timeseries.rs`);
//! a second background task deletes events past each namespace's
//! retention.
//!
//! The same layout runs on one server or on a Redis Cluster (`conn.rs`):
//! the hash tag keeps each namespace in one slot. With `wait_replicas`,
//! every write is acknowledged only once that many replicas have it.

mod conn;
mod scripts;
mod timeseries;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prism_plugin_sdk::retention::Retentions;
use prism_plugin_sdk::{
    Backend, Capabilities, Consistency, Durability, KeyValueStore, Namespace, NamespaceSettings, Pattern, PluginError,
    PluginResult, PutOp, Record, ScanPage,
};
use redis::{IntoConnectionInfo, RedisError, Script, Value};
use serde::Deserialize;

use crate::conn::{Call, Conn, Wait};

/// Configuration (`config:` of the plugin entry in the proxy config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server address, e.g. `redis://127.0.0.1:6379/0`; with `cluster`,
    /// one or more comma-separated seed nodes of the cluster.
    pub url: String,
    /// Whether `url` names a Redis Cluster (`cluster-enabled yes`).
    #[serde(default)]
    pub cluster: bool,
    /// Replicas that must confirm a write before it is acknowledged
    /// (`WAIT`); 0 acknowledges once the master has it, so a failover can
    /// lose the last writes.
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long a write waits for `wait_replicas`, in milliseconds; a write
    /// not confirmed in time fails with UNAVAILABLE (it may still persist).
    #[serde(default = "defaults::wait_timeout_ms")]
    pub wait_timeout_ms: u64,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Prefix of every key this plugin writes.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
    /// Timeout for opening a connection, in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout for one command, in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub response_timeout_ms: u64,
    /// Whether the Redis server persists data (AOF with fsync): only then
    /// does the plugin declare itself durable.
    #[serde(default)]
    pub durable: bool,
    /// How often expired keys are swept from the scan index, in
    /// milliseconds.
    #[serde(default = "defaults::cleanup_interval_ms")]
    pub cleanup_interval_ms: u64,
    /// Largest value accepted, in bytes.
    #[serde(default = "defaults::max_value_bytes")]
    pub max_value_bytes: u64,
}

mod defaults {
    pub(super) fn key_prefix() -> String {
        "prism".to_owned()
    }
    pub(super) fn timeout_ms() -> u64 {
        2000
    }
    pub(super) fn wait_timeout_ms() -> u64 {
        500
    }
    pub(super) fn cleanup_interval_ms() -> u64 {
        1000
    }
    pub(super) fn max_value_bytes() -> u64 {
        16 * 1024 * 1024
    }
}

/// Index entries fetched per round trip while scanning.
const SCAN_CHUNK: usize = 256;
/// Expired index entries removed per namespace per sweep.
const SWEEP_BATCH: isize = 500;

/// Key names of one namespace.
#[derive(Debug)]
pub struct NsKeys {
    tag: String,
}

impl NsKeys {
    fn new(prefix: &str, ns: &str) -> Self {
        Self { tag: format!("{{{prefix}:{ns}}}") }
    }
    fn data(&self, key: &str) -> String {
        format!("{}:d:{key}", self.tag)
    }
    fn idx(&self) -> String {
        format!("{}:idx", self.tag)
    }
    fn exp(&self) -> String {
        format!("{}:exp", self.tag)
    }
    fn ver(&self) -> String {
        format!("{}:ver", self.tag)
    }
}

struct Scripts {
    put: Script,
    delete: Script,
    batch_put: Script,
    forget: Script,
}

/// The plugin.
pub struct Redis {
    config: Config,
    conn: Conn,
    wait: Option<Wait>,
    scripts: Scripts,
    namespaces: Arc<Mutex<HashMap<String, Arc<NsKeys>>>>,
    sweeper: tokio::task::JoinHandle<()>,
    ts_append: Script,
    retention: Arc<Retentions>,
    expirer: tokio::task::JoinHandle<()>,
}

/// Deletes, every `every`, the events of each namespace older than its
/// retention.
async fn retention_loop(mut conn: Conn, prefix: String, retention: Arc<Retentions>, every: Duration) {
    let script = Script::new(timeseries::EXPIRE);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (ns, cutoff) in retention.cutoffs(now_ms() as i64) {
            match timeseries::expire(&mut conn, &script, &NsKeys::new(&prefix, &ns), cutoff).await {
                Ok(n) if n > 0 => tracing::debug!(namespace = %ns, deleted = n, "events past retention deleted"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "retention cleanup skipped"),
            }
        }
    }
}

/// The server this plugin connects to (`host:port`), for the messages
/// saying it cannot be reached. A plugin process opens one backend, once.
static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn redis_error(err: RedisError) -> PluginError {
    if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() || err.is_timeout() {
        let server = SERVER.get().map_or("", String::as_str);
        return PluginError::Unavailable(format!(
            "redis at {server} unreachable: {}",
            prism_plugin_sdk::proto::error_chain(&err)
        ));
    }
    match err.kind() {
        redis::ErrorKind::Server(
            redis::ServerErrorKind::BusyLoading
            | redis::ServerErrorKind::ClusterDown
            | redis::ServerErrorKind::TryAgain
            | redis::ServerErrorKind::MasterDown,
        ) => PluginError::Unavailable(format!("redis not ready: {err}")),
        // Redirections the cluster client still saw after its retries, and
        // a write that reached a master just demoted: the cluster is
        // failing over or moving the slot, and a later call will succeed.
        redis::ErrorKind::Server(
            redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask | redis::ServerErrorKind::ReadOnly,
        ) => PluginError::Unavailable(format!("redis cluster is moving the slot or failing over: {err}")),
        _ if err.to_string().contains("OOM") => PluginError::ResourceExhausted("redis is out of memory".to_owned()),
        _ => PluginError::internal(err),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn ttl_ms(op: &PutOp) -> u64 {
    op.ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Reads a `{status, version}` script reply.
fn status_reply(value: Value) -> PluginResult<(bool, u64)> {
    let parsed: Result<(i64, i64), _> = redis::from_redis_value(value);
    let (ok, version) = parsed.map_err(PluginError::internal)?;
    Ok((ok == 1, version as u64))
}

/// An `HMGET d v` reply as a record.
fn record(reply: (Option<Vec<u8>>, Option<u64>)) -> Option<Record> {
    match reply {
        (Some(value), Some(version)) => Some(Record { value: Bytes::from(value), version }),
        _ => None,
    }
}

async fn sweep_loop(
    mut conn: Conn,
    namespaces: std::sync::Weak<Mutex<HashMap<String, Arc<NsKeys>>>>,
    forget: Script,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(namespaces) = namespaces.upgrade() else { return };
        let all: Vec<Arc<NsKeys>> =
            namespaces.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        drop(namespaces);
        for ns in all {
            let due: Result<Vec<String>, _> = redis::cmd("ZRANGEBYSCORE")
                .arg(ns.exp())
                .arg("-inf")
                .arg(now_ms())
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_BATCH)
                .query_async(&mut conn)
                .await;
            let Ok(due) = due else { continue };
            if due.is_empty() {
                continue;
            }
            let mut invocation = forget.key(ns.idx());
            invocation.key(ns.exp());
            for member in &due {
                invocation.key(ns.data(member));
            }
            for member in &due {
                invocation.arg(member);
            }
            match invocation.invoke_async::<i64>(&mut conn).await {
                Ok(n) if n > 0 => tracing::debug!(removed = n, "expired keys removed from the index"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "sweep skipped"),
            }
        }
    }
}

impl Redis {
    /// Runs a script that writes, waiting for `wait_replicas` if set: the
    /// write is acknowledged only when enough replicas confirmed it.
    pub(crate) async fn write<T: redis::FromRedisValue>(&self, call: &Call<'_>) -> PluginResult<T> {
        let mut conn = self.conn.clone();
        let (reply, acks) = call.run(&mut conn, self.wait).await.map_err(redis_error)?;
        match (acks, self.wait) {
            (Some(acks), Some(wait)) if acks < wait.replicas => Err(PluginError::Unavailable(format!(
                "the write reached the master but only {acks} of {} replicas confirmed it within {} ms; \
                 it is not acknowledged and may or may not survive a failover",
                wait.replicas, wait.timeout_ms
            ))),
            _ => Ok(reply),
        }
    }
}

impl Backend for Redis {
    type Config = Config;
    type NamespaceState = Arc<NsKeys>;
    const KIND: &'static str = "redis";

    async fn open(_instance: &str, config: Config) -> PluginResult<Self> {
        if config.cleanup_interval_ms == 0 || config.key_prefix.is_empty() || config.key_prefix.contains(['{', '}']) {
            return Err(PluginError::InvalidArgument(
                "cleanup_interval_ms must be at least 1 and key_prefix non-empty without braces".to_owned(),
            ));
        }
        let seeds = config
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.into_connection_info()
                    .map_err(|e| PluginError::InvalidArgument(format!("invalid redis url {u:?}: {e}")))
            })
            .collect::<PluginResult<Vec<_>>>()?;
        let Some(first) = seeds.first() else {
            return Err(PluginError::InvalidArgument("url: no redis address given".to_owned()));
        };
        if seeds.len() > 1 && !config.cluster {
            return Err(PluginError::InvalidArgument(
                "url: several addresses are the seed nodes of a cluster; set cluster: true".to_owned(),
            ));
        }
        if config.wait_replicas > 0 && !(1..config.response_timeout_ms).contains(&config.wait_timeout_ms) {
            return Err(PluginError::InvalidArgument(format!(
                "wait_timeout_ms must be at least 1 and below response_timeout_ms ({})",
                config.response_timeout_ms
            )));
        }
        let password = match &config.password_env {
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| PluginError::InvalidArgument(format!("password_env: variable {var} is not set")))?,
            ),
            None => None,
        };
        let _ = SERVER.set(seeds.iter().map(|s| s.addr().to_string()).collect::<Vec<_>>().join(","));
        let settings = conn::Settings {
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            response_timeout: Duration::from_millis(config.response_timeout_ms),
            password,
        };
        let conn =
            if config.cluster { Conn::cluster(seeds, &settings) } else { Conn::single(first.clone(), &settings) }
                .map_err(|e| PluginError::InvalidArgument(format!("redis: {e}")))?;
        let wait = (config.wait_replicas > 0)
            .then_some(Wait { replicas: config.wait_replicas, timeout_ms: config.wait_timeout_ms });
        let scripts = Scripts {
            put: Script::new(scripts::PUT),
            delete: Script::new(scripts::DELETE),
            batch_put: Script::new(scripts::BATCH_PUT),
            forget: Script::new(scripts::FORGET),
        };
        let namespaces = Arc::new(Mutex::new(HashMap::new()));
        let sweeper = tokio::spawn(sweep_loop(
            conn.clone(),
            Arc::downgrade(&namespaces),
            Script::new(scripts::FORGET),
            Duration::from_millis(config.cleanup_interval_ms),
        ));
        let retention = Arc::new(Retentions::default());
        let expirer = tokio::spawn(retention_loop(
            conn.clone(),
            config.key_prefix.clone(),
            retention.clone(),
            Duration::from_millis(config.cleanup_interval_ms),
        ));
        let ts_append = Script::new(timeseries::APPEND);
        Ok(Self { config, conn, wait, scripts, namespaces, sweeper, ts_append, retention, expirer })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: vec![Pattern::KeyValue, Pattern::TimeSeries],
            retention: true,
            ttl: true,
            cas: true,
            scan: true,
            max_key_bytes: 4096,
            max_value_bytes: self.config.max_value_bytes,
            // Replication to replicas is asynchronous; a failover can lose
            // acknowledged writes.
            consistency: Consistency::Eventual,
            durability: if self.config.durable { Durability::Durable } else { Durability::Ephemeral },
            ..Default::default()
        }
    }

    async fn health(&self) -> PluginResult<()> {
        let mut conn = self.conn.clone();
        conn.ping().await.map_err(redis_error)
    }

    async fn prepare_namespace(&self, settings: &NamespaceSettings) -> PluginResult<Arc<NsKeys>> {
        let keys = Arc::new(NsKeys::new(&self.config.key_prefix, &settings.name));
        self.retention.prepare(settings);
        self.namespaces.lock().unwrap_or_else(PoisonError::into_inner).insert(settings.name.clone(), keys.clone());
        Ok(keys)
    }

    async fn drop_namespace(&self, name: &str) -> PluginResult<()> {
        self.namespaces.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
        self.retention.remove(name);
        let keys = NsKeys::new(&self.config.key_prefix, name);
        let mut conn = self.conn.clone();
        timeseries::drop_all(&mut conn, &keys).await?;
        loop {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(keys.idx())
                .arg(0)
                .arg(SCAN_CHUNK as isize - 1)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if members.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for m in &members {
                pipe.del(keys.data(m)).ignore();
            }
            pipe.cmd("ZREM").arg(keys.idx()).arg(&members).ignore();
            pipe.query_async::<()>(&mut conn).await.map_err(redis_error)?;
        }
        redis::cmd("DEL").arg(keys.idx()).arg(keys.exp()).query_async::<()>(&mut conn).await.map_err(redis_error)
    }

    async fn holds_data(&self, ns: &Namespace<Arc<NsKeys>>) -> PluginResult<bool> {
        // The index may still list keys that expired but were not swept:
        // "may hold data" errs on the side of keeping data.
        let mut conn = self.conn.clone();
        let count: u64 = redis::cmd("ZCARD").arg(ns.state.idx()).query_async(&mut conn).await.map_err(redis_error)?;
        let series: u64 =
            redis::cmd("SCARD").arg(ns.state.ts_series()).query_async(&mut conn).await.map_err(redis_error)?;
        Ok(count > 0 || series > 0)
    }

    async fn drain(&self) {
        self.sweeper.abort();
        self.expirer.abort();
    }
}

impl KeyValueStore for Redis {
    async fn put(&self, ns: &Namespace<Arc<NsKeys>>, op: PutOp) -> PluginResult<u64> {
        let keys = &ns.state;
        let ttl = ttl_ms(&op);
        let if_version = op.if_version.map(|v| v.to_string()).unwrap_or_default();
        let mut call = Call::new(&self.scripts.put);
        call.key(keys.data(&op.key)).key(keys.idx()).key(keys.exp()).key(keys.ver());
        call.arg(&op.key).arg(&op.value[..]).arg(ttl).arg(now_ms().saturating_add(ttl)).arg(if_version);
        let reply: Value = self.write(&call).await?;
        match status_reply(reply)? {
            (true, version) => Ok(version),
            (false, current) => Err(PluginError::version_conflict(&op.key, current, op.if_version.unwrap_or(0))),
        }
    }

    async fn get(&self, ns: &Namespace<Arc<NsKeys>>, key: &str) -> PluginResult<Option<Record>> {
        let mut conn = self.conn.clone();
        let reply: (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
            .arg(ns.state.data(key))
            .arg("d")
            .arg("v")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(record(reply))
    }

    async fn delete(&self, ns: &Namespace<Arc<NsKeys>>, key: &str, if_version: Option<u64>) -> PluginResult<bool> {
        let keys = &ns.state;
        let mut call = Call::new(&self.scripts.delete);
        call.key(keys.data(key)).key(keys.idx()).key(keys.exp());
        call.arg(key).arg(if_version.map(|v| v.to_string()).unwrap_or_default());
        let reply: Value = self.write(&call).await?;
        match status_reply(reply)? {
            (true, previous) => Ok(previous != 0),
            (false, current) => Err(PluginError::version_conflict(key, current, if_version.unwrap_or(0))),
        }
    }

    async fn batch_get(&self, ns: &Namespace<Arc<NsKeys>>, keys: &[String]) -> PluginResult<Vec<Option<Record>>> {
        if keys.is_empty() {
            // An empty pipeline is an error in redis-rs.
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET").arg(ns.state.data(key)).arg("d").arg("v");
        }
        let mut conn = self.conn.clone();
        let replies: Vec<(Option<Vec<u8>>, Option<u64>)> = pipe.query_async(&mut conn).await.map_err(redis_error)?;
        Ok(replies.into_iter().map(record).collect())
    }

    async fn batch_put(&self, ns: &Namespace<Arc<NsKeys>>, ops: Vec<PutOp>) -> PluginResult<Vec<u64>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &ns.state;
        let now = now_ms();
        let mut call = Call::new(&self.scripts.batch_put);
        call.key(keys.idx()).key(keys.exp()).key(keys.ver());
        for op in &ops {
            call.key(keys.data(&op.key));
        }
        for op in &ops {
            let ttl = ttl_ms(op);
            call.arg(&op.key).arg(&op.value[..]).arg(ttl).arg(now.saturating_add(ttl));
        }
        self.write(&call).await
    }

    async fn scan(
        &self,
        ns: &Namespace<Arc<NsKeys>>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> PluginResult<ScanPage> {
        let keys = &ns.state;
        // `(`/`[` mark exclusive/inclusive bounds. No valid UTF-8 string
        // contains the byte 0xFF, so prefix + 0xFF is above every key that
        // starts with the prefix.
        let mut start: Vec<u8> = match after {
            Some(after) => [b"(", after.as_bytes()].concat(),
            None => [b"[", prefix.as_bytes()].concat(),
        };
        let end: Vec<u8> = if prefix.is_empty() { b"+".to_vec() } else { [b"(", prefix.as_bytes(), &[0xFF]].concat() };
        let mut conn = self.conn.clone();
        let mut entries = Vec::with_capacity(limit + 1);
        let mut stale = Vec::new();
        'fetch: loop {
            let members: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(keys.idx())
                .arg(&start)
                .arg(&end)
                .arg("LIMIT")
                .arg(0)
                .arg(SCAN_CHUNK)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let Some(last) = members.last() else { break };
            start = [b"(", last.as_bytes()].concat();
            let exhausted = members.len() < SCAN_CHUNK;
            let mut pipe = redis::pipe();
            for m in &members {
                pipe.cmd("HMGET").arg(keys.data(m)).arg("d").arg("v");
            }
            let replies: Vec<(Option<Vec<u8>>, Option<u64>)> =
                pipe.query_async(&mut conn).await.map_err(redis_error)?;
            for (member, reply) in members.into_iter().zip(replies) {
                match record(reply) {
                    Some(r) => {
                        entries.push((member, r));
                        if entries.len() > limit {
                            break 'fetch;
                        }
                    }
                    None => stale.push(member),
                }
            }
            if exhausted {
                break;
            }
        }
        if !stale.is_empty() {
            // Only entries whose value is still gone are removed, so a key
            // written again meanwhile keeps its index entry.
            let mut invocation = self.scripts.forget.key(keys.idx());
            invocation.key(keys.exp());
            for m in &stale {
                invocation.key(keys.data(m));
            }
            for m in &stale {
                invocation.arg(m);
            }
            let _ = invocation.invoke_async::<i64>(&mut conn).await;
        }
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok(ScanPage { entries, more })
    }
}
