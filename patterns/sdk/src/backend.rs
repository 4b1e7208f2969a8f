//! The traits a plugin author implements.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use prism_proto::plugin::v1::{Capabilities, NamespaceSettings};
use serde::de::DeserializeOwned;

use crate::error::PluginResult;

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
        (self.settings.retention_seconds > 0).then(|| Duration::from_secs(self.settings.retention_seconds))
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

    /// Reads many keys; one result per key, in order.
    fn batch_get(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        keys: &[String],
    ) -> impl Future<Output = PluginResult<Vec<Option<Record>>>> + Send;

    /// Writes many values (never with `if_version`); one version per item,
    /// in order.
    fn batch_put(
        &self,
        ns: &Namespace<Self::NamespaceState>,
        ops: Vec<PutOp>,
    ) -> impl Future<Output = PluginResult<Vec<u64>>> + Send;

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
