//! A complete, minimal KeyValue plugin: an ordered map per namespace, in
//! memory. It declares scans but neither TTL nor compare-and-set, so the
//! SDK refuses calls that need those (UNIMPLEMENTED) and the conformance
//! suite checks that it does. `docs-cms/guides/write-a-plugin.md` walks
//! through it; run its conformance with
//!
//! ```sh
//! cargo build -p prism-plugin-sdk --example minimal_kv
//! target/debug/prism-conformance --plugin target/debug/examples/minimal_kv
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prism_plugin_sdk::{
    Backend, Capabilities, Consistency, Durability, KeyValueStore, Namespace, NamespaceSettings, Pattern, PluginResult,
    PluginServer, PutOp, Record, ScanPage,
};

/// The plugin's `config:` block in the proxy config. This plugin has no
/// settings; unknown ones are refused, so a typo is not silently ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

/// One namespace's data, keys in order (for scans).
type Map = Mutex<BTreeMap<String, Record>>;

struct MinimalKv {
    /// Every namespace's map, so a re-prepared namespace finds its data.
    namespaces: Mutex<HashMap<String, Arc<Map>>>,
    /// Versions must be unique and grow with every write in a namespace,
    /// also across deletes: one counter for the whole plugin does that.
    versions: AtomicU64,
}

fn lock(map: &Map) -> std::sync::MutexGuard<'_, BTreeMap<String, Record>> {
    // A panic while holding the lock leaves a map that is still consistent
    // (every change is one insert or remove), so the poison is ignored.
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Backend for MinimalKv {
    type Config = Config;
    type NamespaceState = Arc<Map>;
    const KIND: &'static str = "minimal-kv";

    async fn open(_instance: &str, _config: Config) -> PluginResult<Self> {
        Ok(Self { namespaces: Mutex::new(HashMap::new()), versions: AtomicU64::new(0) })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: vec![Pattern::KeyValue],
            scan: true,
            // Memory is finite: bound what one key and one value may take.
            // The SDK refuses larger ones before `put` runs.
            max_key_bytes: 4096,
            max_value_bytes: 4 * 1024 * 1024,
            consistency: Consistency::Strong,
            durability: Durability::Ephemeral,
            // No TTL and no compare-and-set.
            ..Capabilities::default()
        }
    }

    async fn prepare_namespace(&self, settings: &NamespaceSettings) -> PluginResult<Arc<Map>> {
        let mut all = self.namespaces.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(all.entry(settings.name.clone()).or_default().clone())
    }

    async fn drop_namespace(&self, name: &str) -> PluginResult<()> {
        self.namespaces.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
        Ok(())
    }

    async fn holds_data(&self, ns: &Namespace<Arc<Map>>) -> PluginResult<bool> {
        Ok(!lock(&ns.state).is_empty())
    }
}

impl KeyValueStore for MinimalKv {
    async fn put(&self, ns: &Namespace<Arc<Map>>, op: PutOp) -> PluginResult<u64> {
        // The SDK has checked the key and value limits, and passes no TTL or
        // if_version since neither is declared.
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&ns.state).insert(op.key, Record { value: op.value, version });
        Ok(version)
    }

    async fn get(&self, ns: &Namespace<Arc<Map>>, key: &str) -> PluginResult<Option<Record>> {
        Ok(lock(&ns.state).get(key).cloned())
    }

    async fn delete(&self, ns: &Namespace<Arc<Map>>, key: &str, _if_version: Option<u64>) -> PluginResult<bool> {
        Ok(lock(&ns.state).remove(key).is_some())
    }

    async fn scan(
        &self,
        ns: &Namespace<Arc<Map>>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> PluginResult<ScanPage> {
        let map = lock(&ns.state);
        let start = after.map_or(Bound::Included(prefix), Bound::Excluded);
        let mut entries: Vec<(String, Record)> = map
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit + 1)
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect();
        // One entry past the page tells whether another page follows.
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok(ScanPage { entries, more })
    }

    // batch_get and batch_put: the SDK's defaults call get and put per item.
}

fn main() -> ExitCode {
    PluginServer::<MinimalKv>::new().keyvalue().main()
}
