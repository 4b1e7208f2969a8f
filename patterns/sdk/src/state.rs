//! Shared state of a running plugin: the backend once initialized, and the
//! prepared namespaces.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prism_proto::plugin::v1::{Capabilities, Pattern};
use tokio::sync::Mutex;

use crate::backend::{Backend, Namespace, NamespaceSettings};
use crate::error::PluginError;

/// The backend after a successful Initialize.
pub(crate) struct Ready<B> {
    pub(crate) backend: B,
    pub(crate) capabilities: Capabilities,
    pub(crate) instance: String,
    pub(crate) config: serde_json::Value,
}

/// What a pattern call needs: the backend, its capabilities and the
/// namespace.
pub(crate) struct Call<'a, B: Backend> {
    pub(crate) backend: &'a B,
    pub(crate) caps: &'a Capabilities,
    pub(crate) ns: Arc<Namespace<B::NamespaceState>>,
}

// A persistent map: prepare and drop copy it with structural sharing, in
// O(log n), so preparing N namespaces (a proxy starting with thousands)
// costs O(N log N) instead of N copies of a growing std HashMap.
type NamespaceMap<S> = imbl::HashMap<String, Arc<Namespace<S>>>;

pub(crate) struct PluginState<B: Backend> {
    ready: OnceLock<Ready<B>>,
    // Read on every call, written only by prepare/drop: a copy-on-write map
    // keeps the read path free of locks.
    namespaces: ArcSwap<NamespaceMap<B::NamespaceState>>,
    // Serializes Initialize and the copy-on-write updates of `namespaces`.
    admin: Mutex<()>,
}

impl<B: Backend> PluginState<B> {
    pub(crate) fn new() -> Self {
        Self { ready: OnceLock::new(), namespaces: ArcSwap::default(), admin: Mutex::new(()) }
    }

    /// Drains the backend, if it was initialized (at shutdown).
    pub(crate) async fn drain(&self) {
        if let Ok(ready) = self.ready() {
            ready.backend.drain().await;
        }
    }

    pub(crate) fn ready(&self) -> Result<&Ready<B>, PluginError> {
        self.ready
            .get()
            .ok_or_else(|| PluginError::FailedPrecondition(format!("{} plugin is not initialized", B::KIND)))
    }

    /// Initializes the backend once. A second Initialize with the same
    /// configuration (a proxy that restarted while this plugin kept running)
    /// answers as the first did; a different configuration is refused,
    /// because switching backends under live namespaces would lose data.
    /// Opens the backend once; a repeated call with the same config (the
    /// proxy re-initializes a plugin that reported itself unhealthy) returns
    /// the open one. The flag says whether this call opened it.
    pub(crate) async fn initialize(&self, instance: &str, config_json: &str) -> Result<(&Ready<B>, bool), PluginError> {
        let json = if config_json.trim().is_empty() { "{}" } else { config_json };
        let invalid =
            |e: serde_json::Error| PluginError::InvalidArgument(format!("invalid {} plugin config: {e}", B::KIND));
        // Compared as JSON values, so formatting and key order do not matter.
        let value: serde_json::Value = serde_json::from_str(json).map_err(invalid)?;
        let _guard = self.admin.lock().await;
        if let Some(ready) = self.ready.get() {
            if ready.config == value {
                return Ok((ready, false));
            }
            return Err(PluginError::FailedPrecondition(format!(
                "{} plugin is already initialized with another configuration; restart it to change it",
                B::KIND
            )));
        }
        let config: B::Config = serde_json::from_value(value.clone()).map_err(invalid)?;
        let backend = B::open(instance, config).await?;
        // Kept in their wire form: the call checks read it on every call.
        let capabilities = backend.capabilities().to_proto();
        let ready = Ready { backend, capabilities, instance: instance.to_owned(), config: value };
        // Cannot already be set: we hold the admin lock and checked above.
        Ok((self.ready.get_or_init(|| ready), true))
    }

    /// The backend and prepared namespace for a call of `pattern` (named
    /// `what` in errors), refused when the plugin does not declare it.
    pub(crate) fn call(&self, pattern: Pattern, what: &str, namespace: &str) -> Result<Call<'_, B>, PluginError> {
        let ready = self.ready()?;
        if !ready.capabilities.patterns.contains(&(pattern as i32)) {
            return Err(PluginError::Unimplemented(format!("{} plugin does not serve {what}", B::KIND)));
        }
        let ns = self.namespace(namespace)?;
        Ok(Call { backend: &ready.backend, caps: &ready.capabilities, ns })
    }

    pub(crate) fn namespace(&self, name: &str) -> Result<Arc<Namespace<B::NamespaceState>>, PluginError> {
        self.namespaces.load().get(name).cloned().ok_or_else(|| {
            PluginError::FailedPrecondition(format!("namespace {name:?} is not prepared on this plugin"))
        })
    }

    pub(crate) async fn prepare(&self, settings: NamespaceSettings) -> Result<(), PluginError> {
        let ready = self.ready()?;
        if settings.name.is_empty() {
            return Err(PluginError::InvalidArgument("namespace name must not be empty".to_owned()));
        }
        let _guard = self.admin.lock().await;
        let state = ready.backend.prepare_namespace(&settings).await?;
        let mut map = NamespaceMap::clone(&self.namespaces.load());
        map.insert(settings.name.clone(), Arc::new(Namespace::new(settings, state)));
        self.namespaces.store(Arc::new(map));
        Ok(())
    }

    pub(crate) async fn drop_namespace(&self, name: &str) -> Result<(), PluginError> {
        let ready = self.ready()?;
        let _guard = self.admin.lock().await;
        // Unroute first so no new call reaches data that is being deleted.
        let mut map = NamespaceMap::clone(&self.namespaces.load());
        map.remove(name);
        self.namespaces.store(Arc::new(map));
        ready.backend.drop_namespace(name).await
    }
}
