//! Running the plugin under test as a real process on a Unix socket, the
//! way the proxy does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use prism_proto::plugin::v1::graph_backend_client::GraphBackendClient;
use prism_proto::plugin::v1::key_value_backend_client::KeyValueBackendClient;
use prism_proto::plugin::v1::lifecycle_client::LifecycleClient;
use prism_proto::plugin::v1::time_series_backend_client::TimeSeriesBackendClient;
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, Command};
use tonic::transport::{Channel, Endpoint, Uri};

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

const MESSAGE_LIMIT: usize = 64 * 1024 * 1024;

impl PluginProcess {
    /// Starts the binary with `--socket` and connects to it.
    pub async fn start(binary: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("prism-conf-").tempdir().map_err(|e| e.to_string())?;
        let socket = dir.path().join("plugin.sock");
        let mut child = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .arg("--exit-on-stdin-eof")
            // Plugin logs at info would bury the report; PRISM_LOG overrides.
            .env("PRISM_LOG", std::env::var("PRISM_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdin = child.stdin.take();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{} did not create its socket within 20s", binary.display()));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{} exited at start: {status}", binary.display()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let path = socket.clone();
        let channel = Endpoint::from_static("http://plugin.local")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
            }))
            .await
            .map_err(|e| format!("cannot connect to the plugin: {e}"))?;
        Ok(Self { child, stdin, channel, _dir: dir })
    }

    pub fn lifecycle(&self) -> LifecycleClient<Channel> {
        LifecycleClient::new(self.channel.clone())
    }

    pub fn keyvalue(&self) -> KeyValueBackendClient<Channel> {
        KeyValueBackendClient::new(self.channel.clone())
            .max_decoding_message_size(MESSAGE_LIMIT)
            .max_encoding_message_size(MESSAGE_LIMIT)
    }

    pub fn timeseries(&self) -> TimeSeriesBackendClient<Channel> {
        TimeSeriesBackendClient::new(self.channel.clone())
            .max_decoding_message_size(MESSAGE_LIMIT)
            .max_encoding_message_size(MESSAGE_LIMIT)
    }

    pub fn graph(&self) -> GraphBackendClient<Channel> {
        GraphBackendClient::new(self.channel.clone())
            .max_decoding_message_size(MESSAGE_LIMIT)
            .max_encoding_message_size(MESSAGE_LIMIT)
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
