//! NATS JetStream KeyValue store for Prism.
//!
//! Each namespace is one JetStream key-value bucket (`<prefix>_<namespace>`).
//! A value's version is its revision, the bucket stream's sequence number:
//! unique and growing within the bucket, and a key deleted and written again
//! gets a new one. Compare-and-set uses JetStream's expected-last-sequence
//! checks, so it is atomic on the server. On a replicated bucket
//! (`replicas` > 1) the per-key check (`Nats-Expected-Last-Subject-Sequence`,
//! what `create`/`update` send) is not: a clustered stream's leader checks it
//! before the write is replicated, so concurrent writes expecting the same
//! revision can all succeed and all but the last are lost (nats-server issue
//! 4320; seen here with 2.9.10 and `replicas: 3`). There, a conditional write
//! also names the bucket's last sequence, as read from the leader, which the
//! leader does check against the writes it has in flight; a write anywhere
//! in the bucket in between makes it read again and retry.
//!
//! What it does not claim, and the SDK therefore refuses:
//! - **TTL**: per-key TTLs need NATS 2.11; bucket-wide `max_age` cannot
//!   express a per-write TTL.
//! - **Ordered scans**: a bucket lists its keys in no particular order, so a
//!   key-ordered, resumable scan would mean reading every key of the
//!   namespace for each page.
//!
//! NATS keys allow only `[-/_=.A-Za-z0-9]`, so Prism keys are stored
//! base64url-encoded. Buckets are opened lazily: the plugin starts and
//! prepares namespaces while NATS is down, and calls fail with UNAVAILABLE
//! until it returns.
//!
//! TimeSeries namespaces are streams, and Subscribe an ordered consumer:
//! see [`timeseries`].

pub mod timeseries;

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prism_plugin_sdk::{
    Backend, Capabilities, Consistency, Durability, KeyValueStore, Namespace, NamespaceSettings, Pattern, PluginError,
    PluginResult, PutOp, Record, ScanPage,
};
use serde::Deserialize;
use tokio::sync::OnceCell;

/// Configuration (`config:` of the plugin entry in the proxy config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server URL, e.g. `nats://127.0.0.1:4222`; several, comma-separated,
    /// for the seed nodes of a cluster.
    pub url: String,
    /// Prefix of bucket names (`<prefix>_<namespace>`).
    #[serde(default = "defaults::bucket_prefix")]
    pub bucket_prefix: String,
    /// JetStream storage of new buckets: `file` (durable) or `memory`.
    #[serde(default)]
    pub storage: Storage,
    /// Replicas of new buckets (1 on a single server).
    #[serde(default = "defaults::replicas")]
    pub replicas: usize,
    /// Timeout for one request, in milliseconds.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Name of an environment variable holding a NATS user token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Largest value accepted, in bytes (the server's `max_payload` is the
    /// upper bound, 1 MiB by default).
    #[serde(default = "defaults::max_value_bytes")]
    pub max_value_bytes: u64,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    #[default]
    File,
    Memory,
}

mod defaults {
    pub(super) fn bucket_prefix() -> String {
        "prism".to_owned()
    }
    pub(super) fn replicas() -> usize {
        1
    }
    pub(super) fn request_timeout_ms() -> u64 {
        2000
    }
    pub(super) fn max_value_bytes() -> u64 {
        1_000_000
    }
}

/// One namespace: its bucket (KeyValue), opened on first use, and its
/// stream (TimeSeries).
pub struct Bucket {
    name: String,
    store: OnceCell<kv::Store>,
    log: timeseries::Log,
}

/// The plugin.
pub struct Nats {
    config: Config,
    client: async_nats::Client,
    js: jetstream::Context,
}

fn encode_key(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

fn unavailable(err: impl std::fmt::Display) -> PluginError {
    PluginError::Unavailable(format!("nats: {err}"))
}

fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && prefix.len() <= 32 && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Nats {
    /// Refuses at once while the client knows the server is gone: async-nats
    /// would otherwise buffer the request and wait out its timeout for each
    /// step of a call (two or three of them for a first call on a bucket).
    fn connected(&self) -> PluginResult<()> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(PluginError::Unavailable(format!(
                "nats: not connected to {} ({state:?}); reconnecting in the background",
                self.config.url
            ))),
        }
    }

    /// Runs one call within `request_timeout_ms` as a whole, whatever number
    /// of round trips it takes, so the documented timeout is the call's.
    async fn bounded<T>(&self, call: impl Future<Output = PluginResult<T>>) -> PluginResult<T> {
        self.connected()?;
        let limit = Duration::from_millis(self.config.request_timeout_ms);
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(PluginError::Unavailable(format!(
                "nats: no answer from {} within request_timeout_ms ({} ms)",
                self.config.url, self.config.request_timeout_ms
            )))
        })
    }

    async fn store<'a>(&self, bucket: &'a Bucket) -> PluginResult<&'a kv::Store> {
        bucket
            .store
            .get_or_try_init(|| async {
                if let Ok(store) = self.js.get_key_value(&bucket.name).await {
                    return Ok(store);
                }
                // The stream `create_key_value` would make, made directly:
                // `create_key_value` first reads the account info, which
                // async-nats 0.51 cannot parse from NATS 2.9 servers (they do
                // not send `reserved_memory`/`reserved_storage`).
                self.js
                    .get_or_create_stream(stream::Config {
                        name: format!("KV_{}", bucket.name),
                        subjects: vec![format!("$KV.{}.>", bucket.name)],
                        max_messages_per_subject: 1,
                        max_message_size: i32::try_from(self.config.max_value_bytes).unwrap_or(i32::MAX),
                        storage: match self.config.storage {
                            Storage::File => StorageType::File,
                            Storage::Memory => StorageType::Memory,
                        },
                        num_replicas: self.config.replicas,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: DiscardPolicy::New,
                        ..Default::default()
                    })
                    .await
                    .map_err(unavailable)?;
                self.js.get_key_value(&bucket.name).await.map_err(unavailable)
            })
            .await
    }

    /// The live record of a key (a delete marker counts as absent).
    async fn entry(&self, store: &kv::Store, key: &str) -> PluginResult<Option<Record>> {
        let entry = store.entry(encode_key(key)).await.map_err(unavailable)?;
        Ok(entry.filter(|e| e.operation == Operation::Put).map(|e| Record { value: e.value, version: e.revision }))
    }

    async fn current_version(&self, store: &kv::Store, key: &str) -> PluginResult<u64> {
        Ok(self.entry(store, key).await?.map_or(0, |r| r.version))
    }
}

impl Backend for Nats {
    type Config = Config;
    type NamespaceState = Bucket;
    const KIND: &'static str = "nats";

    async fn open(instance: &str, config: Config) -> PluginResult<Self> {
        if !valid_prefix(&config.bucket_prefix) {
            return Err(PluginError::InvalidArgument(
                "bucket_prefix must be 1 to 32 letters, digits or '_'".to_owned(),
            ));
        }
        if config.max_value_bytes == 0 || config.replicas == 0 {
            return Err(PluginError::InvalidArgument("max_value_bytes and replicas must be at least 1".to_owned()));
        }
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("prism-plugin-nats/{instance}"))
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            // Start even when NATS is down; connect in the background.
            .retry_on_initial_connect()
            .max_reconnects(None);
        if let Some(var) = &config.token_env {
            let token = std::env::var(var)
                .map_err(|_| PluginError::InvalidArgument(format!("token_env: variable {var} is not set")))?;
            options = options.token(token);
        }
        // Several seed servers, comma-separated, so a cluster node that is
        // down at start is not the only way in; once connected the client
        // also learns the cluster's other nodes from the server.
        let seeds: Vec<&str> = config.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let client = options
            .connect(seeds.as_slice())
            .await
            .map_err(|e| PluginError::InvalidArgument(format!("nats url {:?}: {e}", config.url)))?;
        // Give a reachable server a moment, so the first health check does
        // not report a connection that is merely still being set up.
        let connected = async {
            while client.connection_state() != State::Connected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(timeout, connected).await.is_err() {
            tracing::warn!(url = %config.url, "nats is not reachable yet; retrying in the background");
        }
        let js = jetstream::new(client.clone());
        Ok(Self { config, client, js })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: vec![Pattern::KeyValue, Pattern::TimeSeries],
            subscribe: true,
            ttl: false,
            cas: true,
            scan: false,
            max_key_bytes: 1024,
            max_value_bytes: self.config.max_value_bytes,
            consistency: if self.config.replicas == 1 { Consistency::Strong } else { Consistency::Eventual },
            durability: match self.config.storage {
                Storage::File => Durability::Durable,
                Storage::Memory => Durability::Ephemeral,
            },
            ..Default::default()
        }
    }

    async fn health(&self) -> PluginResult<()> {
        self.connected()
    }

    async fn prepare_namespace(&self, settings: &NamespaceSettings) -> PluginResult<Bucket> {
        Ok(Bucket {
            name: format!("{}_{}", self.config.bucket_prefix, settings.name),
            store: OnceCell::new(),
            log: timeseries::Log::new(&self.config.bucket_prefix, &settings.name),
        })
    }

    async fn drop_namespace(&self, name: &str) -> PluginResult<()> {
        let bucket = format!("{}_{name}", self.config.bucket_prefix);
        let stream = timeseries::Log::new(&self.config.bucket_prefix, name).stream_name().to_owned();
        self.bounded(async {
            match self.js.delete_key_value(&bucket).await {
                Ok(_) => {}
                // Already gone.
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => return Err(unavailable(e)),
            }
            match self.js.delete_stream(&stream).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("not found") => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    async fn holds_data(&self, ns: &Namespace<Bucket>) -> PluginResult<bool> {
        // A bucket never created holds nothing; otherwise count its stream's
        // messages (a delete marker counts, which errs on the side of
        // keeping data). Asked while the server is down, the answer is an
        // error, not "empty".
        if ns.settings().pattern == Pattern::TimeSeries {
            return self.ts_holds_data(&ns.state.log).await;
        }
        self.bounded(async {
            let Ok(store) = self.js.get_key_value(&ns.state.name).await else { return Ok(false) };
            let status = store.status().await.map_err(unavailable)?;
            Ok(status.values() > 0)
        })
        .await
    }

    async fn drain(&self) {
        // A flush to a server that is gone would wait for it forever.
        let _ = self.bounded(async { self.client.flush().await.map_err(unavailable) }).await;
    }
}

impl KeyValueStore for Nats {
    async fn put(&self, ns: &Namespace<Bucket>, op: PutOp) -> PluginResult<u64> {
        self.bounded(self.put_now(ns, op)).await
    }

    async fn get(&self, ns: &Namespace<Bucket>, key: &str) -> PluginResult<Option<Record>> {
        self.bounded(async { self.entry(self.store(&ns.state).await?, key).await }).await
    }

    async fn delete(&self, ns: &Namespace<Bucket>, key: &str, if_version: Option<u64>) -> PluginResult<bool> {
        self.bounded(self.delete_now(ns, key, if_version)).await
    }

    async fn batch_get(&self, ns: &Namespace<Bucket>, keys: &[String]) -> PluginResult<Vec<Option<Record>>> {
        self.bounded(async {
            let store = self.store(&ns.state).await?;
            let mut records = Vec::with_capacity(keys.len());
            for key in keys {
                records.push(self.entry(store, key).await?);
            }
            Ok(records)
        })
        .await
    }

    async fn batch_put(&self, ns: &Namespace<Bucket>, ops: Vec<PutOp>) -> PluginResult<Vec<u64>> {
        self.bounded(async {
            let store = self.store(&ns.state).await?;
            // JetStream has no multi-key transaction: items are written in
            // order, and a failure leaves the earlier ones written.
            let mut versions = Vec::with_capacity(ops.len());
            for op in ops {
                versions.push(store.put(encode_key(&op.key), op.value).await.map_err(unavailable)?);
            }
            Ok(versions)
        })
        .await
    }

    async fn scan(&self, _: &Namespace<Bucket>, _: &str, _: Option<&str>, _: usize) -> PluginResult<ScanPage> {
        // Never reached: the SDK refuses scans because the plugin does not
        // declare them.
        Err(PluginError::Unimplemented("nats buckets do not list keys in order".to_owned()))
    }
}

/// A key's last message on the bucket stream, as the leader has it.
struct Revision {
    /// The key's version: its last message's sequence, 0 when it has none
    /// or the last is a delete marker.
    current: u64,
    /// The key's last message's sequence, a delete marker's too (what the
    /// per-key expected sequence must name).
    last: u64,
}

/// The calls' bodies, run under [`Nats::bounded`].
impl Nats {
    fn replicated(&self) -> bool {
        self.config.replicas > 1
    }

    /// The key's revision read from the stream leader (a direct get may be
    /// answered by a replica that lags behind).
    async fn leader_revision(&self, store: &kv::Store, key: &str) -> PluginResult<Revision> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let subject = format!("{}{}", store.prefix, encode_key(key));
        match store.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let marker = message.headers.get("KV-Operation").is_some_and(|op| op.as_str() != "PUT");
                Ok(Revision { current: if marker { 0 } else { message.sequence }, last: message.sequence })
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Revision { current: 0, last: 0 }),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Compare-and-set on a replicated bucket: writes `value` (a delete
    /// marker for `None`) if the key's version is `expected`, naming both
    /// the key's last sequence and the bucket's, so that no write accepted
    /// in between, by any client, is overwritten. Retries while other keys
    /// are written; bounded by the call's timeout.
    async fn replicated_cas(
        &self,
        store: &kv::Store,
        key: &str,
        value: Option<bytes::Bytes>,
        expected: u64,
    ) -> PluginResult<u64> {
        use async_nats::jetstream::context::PublishErrorKind;
        use async_nats::jetstream::message::PublishMessage;
        let subject = format!("{}{}", store.prefix, encode_key(key));
        loop {
            // The bucket's last sequence first: a write after it makes the
            // publish below fail, so the key read next is as of `bucket`.
            let bucket = store.stream.get_info().await.map_err(unavailable)?.state.last_sequence;
            let revision = self.leader_revision(store, key).await?;
            if revision.current != expected {
                return Err(PluginError::version_conflict(key, revision.current, expected));
            }
            let message =
                PublishMessage::build().expected_last_sequence(bucket).expected_last_subject_sequence(revision.last);
            let message = match value.clone() {
                Some(value) => message.payload(value),
                None => message.header("KV-Operation", "DEL"),
            };
            let published = self.js.send_publish(subject.clone(), message).await.map_err(unavailable)?;
            match published.await {
                Ok(ack) => return Ok(ack.sequence),
                // Something was written in between; read again.
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => tokio::task::yield_now().await,
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn put_now(&self, ns: &Namespace<Bucket>, op: PutOp) -> PluginResult<u64> {
        let store = self.store(&ns.state).await?;
        if let (Some(expected), true) = (op.if_version, self.replicated()) {
            return self.replicated_cas(store, &op.key, Some(op.value), expected).await;
        }
        let key = encode_key(&op.key);
        match op.if_version {
            None => store.put(key, op.value).await.map_err(unavailable),
            Some(0) => match store.create(key, op.value).await {
                Ok(version) => Ok(version),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    Err(PluginError::version_conflict(&op.key, self.current_version(store, &op.key).await?, 0))
                }
                Err(e) => Err(unavailable(e)),
            },
            Some(expected) => match store.update(key, op.value, expected).await {
                Ok(version) => Ok(version),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    Err(PluginError::version_conflict(&op.key, self.current_version(store, &op.key).await?, expected))
                }
                Err(e) => Err(unavailable(e)),
            },
        }
    }

    async fn delete_now(&self, ns: &Namespace<Bucket>, key: &str, if_version: Option<u64>) -> PluginResult<bool> {
        let store = self.store(&ns.state).await?;
        if let (Some(expected), true) = (if_version, self.replicated()) {
            // Deleting what is not there changes nothing and needs no write.
            if expected == 0 {
                let current = self.leader_revision(store, key).await?.current;
                return if current == 0 { Ok(false) } else { Err(PluginError::version_conflict(key, current, 0)) };
            }
            return self.replicated_cas(store, key, None, expected).await.map(|_| true);
        }
        let current = self.current_version(store, key).await?;
        match if_version {
            Some(expected) if expected != current => Err(PluginError::version_conflict(key, current, expected)),
            _ if current == 0 => Ok(false),
            None => {
                store.delete(encode_key(key)).await.map_err(unavailable)?;
                Ok(true)
            }
            Some(expected) => match store.delete_expect_revision(encode_key(key), Some(expected)).await {
                Ok(()) => Ok(true),
                // Written between the check and the delete.
                Err(e) => match self.current_version(store, key).await? {
                    now if now != expected => Err(PluginError::version_conflict(key, now, expected)),
                    _ => Err(unavailable(e)),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_to_the_nats_alphabet() {
        for key in ["user/1", "a b", "é", "..", "*", ">", "x.y", "\u{0}"] {
            let encoded = encode_key(key);
            assert!(
                encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{key:?} -> {encoded}"
            );
        }
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("prism"));
        assert!(valid_prefix("prism_test_1"));
        for bad in ["", "a-b", "a.b", "a b", &"a".repeat(33)] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }
}
