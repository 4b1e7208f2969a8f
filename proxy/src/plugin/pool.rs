//! A pool of HTTP/2 connections to one plugin.
//!
//! One tonic `Channel` is one HTTP/2 connection driven by one task, so all
//! calls over it serialize on that task. Several connections, picked round
//! robin, spread the work over the runtime's threads.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::mux::Mux;

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

const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Pool {
    channels: Box<[Channel]>,
    /// A multiplexed KeyValue stream per connection, when the plugin serves
    /// it and the config asks for it.
    streams: Box<[Option<Arc<Mux>>]>,
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
        let streams = vec![None; channels.len()].into_boxed_slice();
        Ok(Self { channels: channels.into_boxed_slice(), streams, next: AtomicUsize::new(0) })
    }

    /// Opens a multiplexed KeyValue stream on every connection. A plugin
    /// that does not serve them keeps getting unary calls.
    pub async fn open_streams(&mut self, max_message_bytes: usize) {
        let mut streams = Vec::with_capacity(self.channels.len());
        for channel in &self.channels {
            // Bounded: a plugin that never answers the stream's headers must
            // not hold up its start; it then gets unary calls.
            match tokio::time::timeout(STREAM_OPEN_TIMEOUT, Mux::open(channel.clone(), max_message_bytes)).await {
                Ok(Ok(mux)) => streams.push(Some(mux)),
                Ok(Err(status)) => {
                    tracing::debug!(error = %status, "no multiplexed stream; using unary calls");
                    streams.push(None);
                }
                Err(_) => {
                    tracing::warn!("the plugin did not open a multiplexed stream in time; using unary calls");
                    streams.push(None);
                }
            }
        }
        self.streams = streams.into_boxed_slice();
    }

    /// The next connection, round robin.
    pub fn channel(&self) -> Channel {
        self.next_connection().0
    }

    /// The next connection and its multiplexed stream if it has an open
    /// one, round robin.
    pub fn next_connection(&self) -> (Channel, Option<Arc<Mux>>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        let stream = self.streams.get(i).and_then(Option::as_ref).filter(|m| m.is_open()).cloned();
        (self.channels[i].clone(), stream)
    }

    pub fn size(&self) -> usize {
        self.channels.len()
    }
}
