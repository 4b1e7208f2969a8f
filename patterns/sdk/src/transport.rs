//! HTTP/2 and message-size settings shared by every plugin server.

use tonic::transport::Server;

/// Largest message a plugin accepts or sends. The proxy enforces the
/// client-facing limits; this only has to be above them.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn server_builder() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        // Bigger windows than the 64 KiB default let large values and
        // batches flow without waiting for window updates.
        .initial_stream_window_size(Some(1024 * 1024))
        .initial_connection_window_size(Some(8 * 1024 * 1024))
}
