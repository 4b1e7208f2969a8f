//! Running a plugin process: arguments, logging, listener, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use prism_proto::plugin::v1::graph_backend_server::GraphBackendServer;
use prism_proto::plugin::v1::key_value_backend_server::KeyValueBackendServer;
use prism_proto::plugin::v1::lifecycle_server::LifecycleServer;
use prism_proto::plugin::v1::time_series_backend_server::TimeSeriesBackendServer;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;

use crate::backend::{Backend, GraphStore, KeyValueStore, TimeSeriesStore};
use crate::call::CallLayer;
use crate::graph::GraphService;
use crate::keyvalue::KeyValueService;
use crate::lifecycle::LifecycleService;
use crate::state::PluginState;
use crate::timeseries::TimeSeriesService;
use prism_proto::wire::{self, MAX_MESSAGE_BYTES, flags};

/// Command line of every plugin binary.
#[derive(Debug, Parser)]
#[command(version, about = "A Prism backend plugin. Started by prism-proxy, or run on a TCP address as a container.")]
struct PluginArgs {
    /// Serve on this Unix socket (how prism-proxy starts `command:` plugins).
    #[arg(long = flags::SOCKET, env = flags::SOCKET_ENV, conflicts_with = "listen", required_unless_present = "listen")]
    socket: Option<PathBuf>,
    /// Serve on this TCP address (container mode; the proxy reaches it
    /// through an `address:` plugin entry).
    #[arg(long = flags::LISTEN, env = flags::LISTEN_ENV)]
    listen: Option<SocketAddr>,
    /// Stop when standard input closes. The proxy holds the other end of the
    /// pipe, so a plugin never outlives a proxy that died without cleaning up.
    #[arg(long = flags::EXIT_ON_STDIN_EOF)]
    exit_on_stdin_eof: bool,
    /// Log format on standard error.
    #[arg(long = flags::LOG_FORMAT, env = flags::LOG_FORMAT_ENV, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Threads that run the plugin's tasks (with [`PluginServer::main`]).
    /// 1, the default, runs everything on one thread: the calls of a
    /// multiplexed stream and the backend client then never cross threads,
    /// which measured faster on small machines (ADR-007). More threads let
    /// an in-process store use more cores.
    #[arg(long = flags::WORKER_THREADS, env = flags::WORKER_THREADS_ENV, default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: u16,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Builds and runs a plugin process.
///
/// ```no_run
/// # use prism_plugin_sdk::{PluginServer, Backend};
/// # async fn demo<B: prism_plugin_sdk::KeyValueStore>() -> std::process::ExitCode {
/// PluginServer::<B>::new().keyvalue().run().await
/// # }
/// ```
pub struct PluginServer<B: Backend> {
    state: Arc<PluginState<B>>,
    routes: RoutesBuilder,
}

impl<B: Backend> Default for PluginServer<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> PluginServer<B> {
    /// A server with the Lifecycle service; add pattern services with
    /// [`PluginServer::keyvalue`].
    pub fn new() -> Self {
        let state = Arc::new(PluginState::new());
        let mut routes = RoutesBuilder::default();
        routes.add_service(LifecycleServer::new(LifecycleService { state: state.clone() }));
        Self { state, routes }
    }

    /// A plugin binary's whole `main`: parses the command line, builds the
    /// tokio runtime it asks for (`--worker-threads`) and runs
    /// [`PluginServer::run`] on it.
    ///
    /// ```no_run
    /// # use prism_plugin_sdk::PluginServer;
    /// # fn demo<B: prism_plugin_sdk::KeyValueStore>() -> std::process::ExitCode {
    /// PluginServer::<B>::new().keyvalue().main()
    /// # }
    /// ```
    pub fn main(self) -> ExitCode {
        let args = PluginArgs::parse();
        let runtime = match args.worker_threads {
            1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
            n => tokio::runtime::Builder::new_multi_thread().worker_threads(n.into()).enable_all().build(),
        };
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("{}: cannot start the runtime: {err}", B::KIND);
                return ExitCode::FAILURE;
            }
        };
        // The trace exporter is a tonic client: it is built in the runtime.
        let telemetry = {
            let _entered = runtime.enter();
            init_telemetry::<B>(args.log_format)
        };
        runtime.block_on(async move {
            let code = self.run_with(args).await;
            // Spans still buffered are exported before the process ends.
            telemetry.shutdown().await;
            code
        })
    }

    /// Parses the command line, serves until SIGTERM, SIGINT or (with
    /// `--exit-on-stdin-eof`) the end of standard input, then drains the
    /// backend. Runs on the caller's runtime; `--worker-threads` is ignored
    /// (see [`PluginServer::main`]).
    pub async fn run(self) -> ExitCode {
        let args = PluginArgs::parse();
        let telemetry = init_telemetry::<B>(args.log_format);
        let code = self.run_with(args).await;
        telemetry.shutdown().await;
        code
    }

    async fn run_with(self, args: PluginArgs) -> ExitCode {
        match self.serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "plugin stopped with an error");
                ExitCode::FAILURE
            }
        }
    }

    async fn serve(self, args: PluginArgs) -> Result<(), Box<dyn std::error::Error>> {
        let shutdown = shutdown_signal(args.exit_on_stdin_eof);
        if let Some(path) = args.socket {
            // A socket file left by a crashed process would make bind fail.
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)?;
            tracing::info!(backend = B::KIND, socket = %path.display(), "listening");
            let mut server = wire::plugin_server().layer(CallLayer);
            let router = server.add_routes(self.routes.routes());
            let served = router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown).await;
            let _ = std::fs::remove_file(&path);
            served?;
            self.state.drain().await;
        } else if let Some(addr) = args.listen {
            self.serve_tcp(TcpListener::bind(addr).await?, shutdown).await?;
        }
        tracing::info!(backend = B::KIND, "stopped");
        Ok(())
    }

    /// Serves on a bound TCP listener until `shutdown` resolves, then
    /// drains the backend: the plugin embedded in another program (an
    /// in-process test, an all-in-one binary) instead of its own process.
    pub async fn serve_tcp(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        if let Ok(local) = listener.local_addr() {
            tracing::info!(backend = B::KIND, addr = %local, "listening");
        }
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut server = wire::plugin_server().layer(CallLayer);
        let served = server.add_routes(self.routes.routes()).serve_with_incoming_shutdown(incoming, shutdown).await;
        self.state.drain().await;
        served
    }
}

impl<B: KeyValueStore> PluginServer<B> {
    /// Serves the KeyValue pattern.
    pub fn keyvalue(mut self) -> Self {
        let service = KeyValueBackendServer::new(KeyValueService { state: self.state.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        self.routes.add_service(service);
        self
    }
}

impl<B: TimeSeriesStore> PluginServer<B> {
    /// Serves the TimeSeries pattern.
    pub fn timeseries(mut self) -> Self {
        let service = TimeSeriesBackendServer::new(TimeSeriesService { state: self.state.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        self.routes.add_service(service);
        self
    }
}

impl<B: GraphStore> PluginServer<B> {
    /// Serves the Graph pattern.
    pub fn graph(mut self) -> Self {
        let service = GraphBackendServer::new(GraphService { state: self.state.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        self.routes.add_service(service);
        self
    }
}

/// Logs on standard error and, when the standard OpenTelemetry variables
/// name a collector (the proxy sets them for the plugins it starts when it
/// exports traces), spans of the calls the proxy traced. A plugin never
/// starts a trace: it follows the proxy's sampling decision.
fn init_telemetry<B: Backend>(format: LogFormat) -> prism_telemetry::Telemetry {
    let logs = prism_telemetry::Logs {
        format: match format {
            LogFormat::Text => prism_telemetry::LogFormat::Text,
            LogFormat::Json => prism_telemetry::LogFormat::Json,
        },
        default_filter: "info".to_owned(),
    };
    let traces = prism_telemetry::Traces::from_env(&format!("prism-plugin-{}", B::KIND));
    match prism_telemetry::init(&logs, traces.as_ref()) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            // Logs still work; traces are off.
            let _ = prism_telemetry::init(&logs, None);
            tracing::error!(error = %err, "traces are off");
            prism_telemetry::Telemetry::default()
        }
    }
}

async fn shutdown_signal(watch_stdin: bool) {
    let stdin_closed = async {
        if !watch_stdin {
            return std::future::pending::<()>().await;
        }
        // A plain thread, not tokio's blocking pool: a read blocked on stdin
        // would otherwise keep the runtime from shutting down.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, stopping"),
        () = terminate => tracing::info!("SIGTERM received, stopping"),
        () = stdin_closed => tracing::info!("parent closed stdin, stopping"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use clap::Parser;

    use super::PluginArgs;

    #[test]
    fn worker_threads_default_to_one_and_refuse_nonsense() {
        let args = PluginArgs::try_parse_from(["plugin", "--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(args.worker_threads, 1);
        let args = PluginArgs::try_parse_from(["plugin", "--socket", "/tmp/x.sock", "--worker-threads", "4"]).unwrap();
        assert_eq!(args.worker_threads, 4);
        for bad in ["0", "-1", "two", "5000", ""] {
            let flag = format!("--worker-threads={bad}");
            let err = PluginArgs::try_parse_from(["plugin", "--socket", "/tmp/x.sock", flag.as_str()])
                .expect_err(bad)
                .to_string();
            assert!(err.contains("--worker-threads"), "{bad}: {err}");
        }
    }
}
