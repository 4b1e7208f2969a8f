//! A pool of HTTP/2 connections to one plugin.
//!
//! One tonic `Channel` is one HTTP/2 connection driven by one task, so all
//! calls over it serialize on that task. Several connections, picked round
//! robin, spread the work over the runtime's threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where a plugin listens.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

#[derive(Debug)]
pub struct Pool {
    channels: Box<[Channel]>,
    next: AtomicUsize,
}

fn endpoint(uri: &str, connect_timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        // Match the plugin server's larger windows so big values and batches
        // do not stall on flow control.
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

impl Pool {
    /// Opens `size` connections; fails if any cannot be opened.
    pub async fn connect(
        target: &Target,
        size: usize,
        connect_timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let mut channels = Vec::with_capacity(size);
        for _ in 0..size {
            let channel = match target {
                Target::Unix(path) => {
                    let path = path.clone();
                    // The URI is required by the HTTP layer but never resolved:
                    // the connector dials the socket.
                    endpoint("http://plugin.local", connect_timeout)?
                        .connect_with_connector(tower::service_fn(move |_: Uri| {
                            let path = path.clone();
                            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                        }))
                        .await?
                }
                Target::Tcp(addr) => endpoint(&format!("http://{addr}"), connect_timeout)?.connect().await?,
            };
            channels.push(channel);
        }
        Ok(Self { channels: channels.into_boxed_slice(), next: AtomicUsize::new(0) })
    }

    /// The next connection, round robin.
    pub fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    pub fn size(&self) -> usize {
        self.channels.len()
    }
}
