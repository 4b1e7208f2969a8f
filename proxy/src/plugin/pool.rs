//! A pool of HTTP/2 connections to one plugin.
//!
//! One tonic `Channel` is one HTTP/2 connection driven by one task, so all
//! calls over it serialize on that task. Several connections, picked round
//! robin, spread the work over the runtime's threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use prism_proto::wire::Target;
use tonic::transport::Channel;

use super::mux::Mux;

const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Pool {
    channels: Box<[Channel]>,
    /// A multiplexed KeyValue stream per connection, when the plugin serves
    /// it and the config asks for it.
    streams: Box<[Option<Arc<Mux>>]>,
    next: AtomicUsize,
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
            channels.push(prism_proto::wire::connect(target, connect_timeout).await?);
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
