//! The wire contract between the proxy and its plugins, defined once and
//! used by the proxy, the plugin SDK and the conformance runner: message
//! size limits, HTTP/2 windows, the plugin command line, the metadata a
//! call carries, and how a Unix-socket plugin is dialled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Server, Uri};

/// Largest message exchanged with a plugin, either way. The proxy enforces
/// the client-facing limits (16 MiB by default); this only has to be above
/// every one of them.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control windows on both ends of a plugin connection. Larger
/// than the 64 KiB default so big values and batches flow without waiting
/// for window updates; small calls never notice them.
pub const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// Idle plugin connections are pinged this often, so a dead peer is noticed
/// without waiting for a call to time out.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Headers a call carries, as constant names: looking a header up by a
/// `&str` parses the name on every call, and these are read on every call.
///
/// A unary plugin call carries the client's request id (so one request can
/// be followed from the proxy's log into the plugin's), the remaining
/// deadline as the standard `grpc-timeout`, and the W3C trace context
/// (`prism_telemetry` names those); a multiplexed call carries the same
/// facts in `CallOptions`.
pub mod metadata {
    use http::HeaderName;

    /// The request id; also the header clients may send and always get back.
    pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    /// A call's deadline (gRPC over HTTP/2).
    pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    /// The status of a trailers-only gRPC response (an error).
    pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
}

/// Parses a `grpc-timeout` header value: digits followed by a unit (H, M,
/// S, m, u, n), as the gRPC over HTTP/2 spec defines it. The proxy reads a
/// client's deadline from it, and a plugin the proxy's remaining deadline.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    // Split off the last byte, not the last character: a value ending in a
    // multi-byte character has no unit, and slicing inside it would panic.
    let (&unit, digits) = value.as_bytes().split_last()?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The command line the proxy starts a `command:` plugin with, and the
/// environment that sets the same options (a plugin container is configured
/// through the environment).
pub mod flags {
    /// `--socket PATH`: serve on this Unix socket.
    pub const SOCKET: &str = "socket";
    pub const SOCKET_ENV: &str = "PRISM_PLUGIN_SOCKET";
    /// `--listen ADDR`: serve on this TCP address (container mode).
    pub const LISTEN: &str = "listen";
    pub const LISTEN_ENV: &str = "PRISM_PLUGIN_LISTEN";
    /// `--exit-on-stdin-eof`: stop when standard input closes, so a plugin
    /// never outlives the proxy that holds the other end of the pipe.
    pub const EXIT_ON_STDIN_EOF: &str = "exit-on-stdin-eof";
    /// `--log-format text|json`.
    pub const LOG_FORMAT: &str = "log-format";
    pub const LOG_FORMAT_ENV: &str = "PRISM_LOG_FORMAT";
    /// `--worker-threads N`.
    pub const WORKER_THREADS: &str = "worker-threads";
    pub const WORKER_THREADS_ENV: &str = "PRISM_PLUGIN_WORKER_THREADS";
    /// The log filter (an `EnvFilter` directive), read by the proxy and by
    /// plugins, which inherit it.
    pub const LOG_ENV: &str = "PRISM_LOG";

    /// `--NAME`, for building command lines.
    pub fn long(name: &str) -> String {
        format!("--{name}")
    }
}

/// The gRPC server every plugin runs.
pub fn plugin_server() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
}

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket the proxy gave a plugin it started.
    Unix(PathBuf),
    /// `host:port` of a plugin the proxy reaches (a container, another host).
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

/// The client end of a plugin connection, with the same windows as the
/// server.
fn endpoint(uri: &str, connect_timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_while_idle(true))
}

/// Opens one HTTP/2 connection to a plugin.
pub async fn connect(target: &Target, connect_timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    match target {
        Target::Unix(path) => {
            let path = path.clone();
            // The URI is required by the HTTP layer but never resolved: the
            // connector dials the socket.
            endpoint("http://plugin.local", connect_timeout)?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                }))
                .await
        }
        Target::Tcp(addr) => endpoint(&format!("http://{addr}"), connect_timeout)?.connect().await,
    }
}

/// Waits until a freshly started plugin accepts connections on `socket`, up
/// to `timeout`. The socket file appears when the plugin binds, a moment
/// before it listens; a connection in that moment is refused, and is no
/// reason to think the plugin failed.
pub async fn wait_accepting(socket: &Path, timeout: Duration) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match UnixStream::connect(socket).await {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn waits_for_a_socket_that_appears_late() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("late.sock");
        let path = socket.clone();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            listener.accept().await.unwrap();
        });
        wait_accepting(&socket, Duration::from_secs(5)).await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn gives_up_on_a_socket_that_never_appears() {
        let dir = tempfile::tempdir().unwrap();
        let err = wait_accepting(&dir.path().join("never.sock"), Duration::from_millis(100)).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        // The last two: a value ending in a multi-byte character panicked
        // (found by the property tests).
        for bad in ["", "m", "10", "10x", "-5S", "+5S", "1234567890S", "𑤘", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn flags_are_long_options() {
        assert_eq!(flags::long(flags::SOCKET), "--socket");
        assert_eq!(flags::long(flags::EXIT_ON_STDIN_EOF), "--exit-on-stdin-eof");
    }
}
