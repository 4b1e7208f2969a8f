//! Backend plugins as the proxy sees them: a handle per plugin that the
//! request path reads without locks, kept current by a supervisor task, and
//! the calls made to it (which carry [`CallOptions`], never the inbound
//! request's context).

mod caller;
mod mux;
mod options;
mod pool;
pub mod socket_dir;
mod supervisor;

pub use caller::{KeyValueCaller, unary};
pub use options::CallOptions;
pub use pool::{Pool, Target};
pub use supervisor::{NamespaceSource, StartFailure, Supervisor, find_program};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use prism_proto::plugin::v1::graph_backend_client::GraphBackendClient;
use prism_proto::plugin::v1::key_value_backend_client::KeyValueBackendClient;
use prism_proto::plugin::v1::lifecycle_client::LifecycleClient;
use prism_proto::plugin::v1::time_series_backend_client::TimeSeriesBackendClient;
use prism_proto::plugin::v1::{Capabilities, InitializeResponse};
use tokio::sync::watch;
use tonic::transport::Channel;

use prism_proto::wire::MAX_MESSAGE_BYTES;

use crate::config::PluginConfig;
use crate::error::ProxyError;

/// How many PrepareNamespace calls are in flight at once when many
/// namespaces are prepared together (a plugin connecting, the registry
/// loading): enough to hide the round trips, while the plugin SDK applies
/// them one at a time anyway.
pub(crate) const PREPARE_CONCURRENCY: usize = 16;

/// Every configured plugin, by name. Fixed for the life of the process.
pub type Plugins = BTreeMap<String, Arc<Plugin>>;

/// The plugins of a proxy config.
pub fn plugins(configs: &BTreeMap<String, PluginConfig>) -> Plugins {
    configs.iter().map(|(name, pc)| (name.clone(), Arc::new(Plugin::new(name.clone(), pc.clone())))).collect()
}

/// A live, initialized connection to a plugin process.
#[derive(Debug)]
pub struct Connection {
    pub pool: Pool,
    pub info: InitializeResponse,
    pub pid: Option<u32>,
    pub target: Target,
}

impl Connection {
    pub fn capabilities(&self) -> Capabilities {
        self.info.capabilities.clone().unwrap_or_default()
    }
}

/// Where a plugin is in its life.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Being started or connected for the first time.
    Starting,
    /// Serving.
    Ready(Arc<Connection>),
    /// Reachable, but reports it cannot serve (e.g. its backend is down).
    /// Calls still go through: the plugin answers them with UNAVAILABLE.
    Unhealthy(Arc<Connection>, String),
    /// Not reachable (crashed, restarting, or unreachable address).
    Down(String),
    /// Stopped at shutdown.
    Stopped,
}

impl Phase {
    /// Every phase's name, in the order of the variants (the values of the
    /// `state` label of `prism_plugin_state`).
    pub const NAMES: [&'static str; 5] = ["starting", "ready", "unhealthy", "down", "stopped"];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready(_) => "ready",
            Self::Unhealthy(..) => "unhealthy",
            Self::Down(_) => "down",
            Self::Stopped => "stopped",
        }
    }

    /// The connection of a reachable plugin (ready or unhealthy).
    pub(crate) fn connection(&self) -> Option<&Arc<Connection>> {
        match self {
            Self::Ready(c) | Self::Unhealthy(c, _) => Some(c),
            _ => None,
        }
    }
}

/// A point-in-time view of a plugin, for status output (the admin
/// listener's `/status` serializes it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub phase: &'static str,
    pub message: String,
    pub backend: String,
    pub version: String,
    pub pid: Option<u32>,
    pub target: String,
    pub restarts: u64,
    #[serde(skip)]
    pub capabilities: Option<Capabilities>,
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_seconds(*time))
}

/// One configured plugin.
#[derive(Debug)]
pub struct Plugin {
    name: String,
    config: PluginConfig,
    // Read on every request: a lock-free snapshot.
    phase: ArcSwap<(Phase, SystemTime)>,
    // Wakes tasks waiting for the plugin to become ready.
    changed: watch::Sender<u64>,
    restarts: AtomicU64,
    // What the plugin said in its last Initialize; kept while it is down so
    // namespaces can still be planned against its capabilities.
    last_info: ArcSwapOption<InitializeResponse>,
    /// Held while namespaces are prepared on the plugin and the route table
    /// changes for it, so that a route is never published unprepared: the
    /// supervisor prepares every route of the table under it after a
    /// (re)connect, and a new route is published and prepared under it.
    pub(crate) prepare_lock: tokio::sync::Mutex<()>,
}

impl Plugin {
    pub fn new(name: String, config: PluginConfig) -> Self {
        Self {
            name,
            config,
            phase: ArcSwap::from_pointee((Phase::Starting, SystemTime::now())),
            changed: watch::Sender::new(0),
            restarts: AtomicU64::new(0),
            last_info: ArcSwapOption::empty(),
            prepare_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    pub fn phase(&self) -> Phase {
        self.phase.load().0.clone()
    }

    /// The backend kind and capabilities from the plugin's last Initialize,
    /// if it ever initialized.
    pub fn known(&self) -> Option<Arc<InitializeResponse>> {
        self.last_info.load_full()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        if let Phase::Ready(c) | Phase::Unhealthy(c, _) = &phase {
            self.last_info.store(Some(Arc::new(c.info.clone())));
        }
        self.phase.store(Arc::new((phase, SystemTime::now())));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Times the plugin was restarted or reconnected after it went down.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// The current connection, or UNAVAILABLE naming the plugin and why.
    pub fn connection(&self) -> Result<Arc<Connection>, ProxyError> {
        let guard = self.phase.load();
        match &guard.0 {
            Phase::Ready(c) | Phase::Unhealthy(c, _) => Ok(c.clone()),
            Phase::Starting => Err(ProxyError::Unavailable(format!("plugin {} is starting", self.name))),
            Phase::Down(reason) => {
                Err(ProxyError::Unavailable(format!("plugin {} is unavailable: {reason}", self.name)))
            }
            Phase::Stopped => Err(ProxyError::Unavailable(format!("plugin {} is stopped", self.name))),
        }
    }

    /// A KeyValue caller on the next pooled connection: its multiplexed
    /// stream if open, else a unary client.
    pub fn keyvalue(&self) -> Result<KeyValueCaller<'_>, ProxyError> {
        let conn = self.connection()?;
        Ok(match conn.pool.next_connection() {
            (_, Some(mux)) => KeyValueCaller::Multiplexed(&self.name, mux),
            (channel, None) => KeyValueCaller::Unary(
                &self.name,
                KeyValueBackendClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            ),
        })
    }

    /// A TimeSeries client on the next pooled connection.
    pub fn timeseries(&self) -> Result<TimeSeriesBackendClient<Channel>, ProxyError> {
        let conn = self.connection()?;
        Ok(TimeSeriesBackendClient::new(conn.pool.channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A TimeSeries client on a connection of its own, for one
    /// subscription: a subscriber that reads slowly then holds back only
    /// its own connection's flow-control window, never the pool's.
    pub async fn timeseries_dedicated(&self) -> Result<TimeSeriesBackendClient<Channel>, ProxyError> {
        let conn = self.connection()?;
        let channel = prism_proto::wire::connect(&conn.target, self.config.start_timeout).await.map_err(|e| {
            ProxyError::Unavailable(format!("plugin {} cannot be reached: {}", self.name, prism_proto::error_chain(&e)))
        })?;
        Ok(TimeSeriesBackendClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A Graph client on the next pooled connection.
    pub fn graph(&self) -> Result<GraphBackendClient<Channel>, ProxyError> {
        let conn = self.connection()?;
        Ok(GraphBackendClient::new(conn.pool.channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A Lifecycle client on the next pooled connection.
    pub fn lifecycle(&self) -> Result<LifecycleClient<Channel>, ProxyError> {
        Ok(LifecycleClient::new(self.connection()?.pool.channel()))
    }

    /// A receiver that wakes on every phase change, for watchers (health).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether calls can be served now: connected and its backend healthy.
    pub fn is_serving(&self) -> bool {
        matches!(self.phase.load().0, Phase::Ready(_))
    }

    /// Waits until the plugin is ready (or unhealthy but reachable), up to
    /// `timeout`. Returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                if self.phase.load().0.connection().is_some() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && self.phase.load().0.connection().is_some()
    }

    pub fn status(&self) -> PluginStatus {
        let guard = self.phase.load();
        let (phase, since) = &**guard;
        let (message, conn) = match phase {
            Phase::Ready(c) => (String::new(), Some(c)),
            Phase::Unhealthy(c, m) => (m.clone(), Some(c)),
            Phase::Down(m) => (m.clone(), None),
            Phase::Starting | Phase::Stopped => (String::new(), None),
        };
        PluginStatus {
            name: self.name.clone(),
            phase: phase.name(),
            message,
            backend: conn.map(|c| c.info.backend.clone()).unwrap_or_default(),
            version: conn.map(|c| c.info.version.clone()).unwrap_or_default(),
            pid: conn.and_then(|c| c.pid),
            target: conn.map(|c| c.target.to_string()).unwrap_or_default(),
            restarts: self.restarts(),
            capabilities: conn.map(|c| c.capabilities()),
            since: *since,
        }
    }
}
