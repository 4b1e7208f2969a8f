//! Running the plugin under test as a real process on a Unix socket, the
//! way the proxy does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use prism_proto::plugin::v1::graph_backend_client::GraphBackendClient;
use prism_proto::plugin::v1::key_value_backend_client::KeyValueBackendClient;
use prism_proto::plugin::v1::lifecycle_client::LifecycleClient;
use prism_proto::plugin::v1::time_series_backend_client::TimeSeriesBackendClient;
use prism_proto::wire::{self, MAX_MESSAGE_BYTES, Target, flags};
use tokio::process::{Child, ChildStdin, Command};
use tonic::transport::Channel;

/// The plugin to test: its binary and its `config:` block.
#[derive(Debug, Clone)]
pub struct Subject {
    /// A short name for reports, e.g. `redis`.
    pub name: String,
    pub binary: PathBuf,
    pub config: serde_json::Value,
}

/// A running plugin process.
pub struct PluginProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pub channel: Channel,
    // Holds the socket directory for the process's lifetime.
    _dir: tempfile::TempDir,
}

impl PluginProcess {
    /// Starts the binary with `--socket` and connects to it.
    pub async fn start(binary: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("prism-conf-").tempdir().map_err(|e| e.to_string())?;
        let socket = dir.path().join("plugin.sock");
        let mut child = Command::new(binary)
            .arg(flags::long(flags::SOCKET))
            .arg(&socket)
            .arg(flags::long(flags::EXIT_ON_STDIN_EOF))
            // Plugin logs at info would bury the report; PRISM_LOG overrides.
            .env(flags::LOG_ENV, std::env::var(flags::LOG_ENV).unwrap_or_else(|_| "warn".to_owned()))
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdin = child.stdin.take();
        tokio::select! {
            ready = wire::wait_accepting(&socket, Duration::from_secs(20)) => {
                ready.map_err(|e| format!("{} does not accept on its socket: {e}", binary.display()))?;
            }
            status = child.wait() => {
                return Err(format!("{} exited at start: {}", binary.display(),
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())));
            }
        }
        let channel = wire::connect(&Target::Unix(socket), Duration::from_secs(5))
            .await
            .map_err(|e| format!("cannot connect to the plugin: {}", prism_proto::error_chain(&e)))?;
        Ok(Self { child, stdin, channel, _dir: dir })
    }

    pub fn lifecycle(&self) -> LifecycleClient<Channel> {
        LifecycleClient::new(self.channel.clone())
    }

    pub fn keyvalue(&self) -> KeyValueBackendClient<Channel> {
        KeyValueBackendClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn timeseries(&self) -> TimeSeriesBackendClient<Channel> {
        TimeSeriesBackendClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn graph(&self) -> GraphBackendClient<Channel> {
        GraphBackendClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Stops the process the way the proxy does (close stdin), killing it
    /// if it has not exited within 10 s.
    pub async fn stop(mut self) -> Result<(), String> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let _ = self.child.kill().await;
                Err("plugin did not stop within 10s of its stdin closing".to_owned())
            }
        }
    }
}
