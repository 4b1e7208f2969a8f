//! `prism-proxy`: runs the gateway from a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prism_proxy::config::Config;
use prism_proxy::startup::{self, Options, StartError};
use prism_proxy::{logging, server};

/// Exit code for a configuration the proxy refuses (as clap uses for usage
/// errors).
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(version, about = "Prism data access gateway")]
struct Cli {
    /// Proxy configuration file (YAML). Without it: the first of
    /// ./prism.yaml, $XDG_CONFIG_HOME/prism/prism.yaml
    /// (~/.config/prism/prism.yaml) and /etc/prism/prism.yaml that exists.
    #[arg(long, short, env = "PRISM_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration as start would (certificates, keys, the
    /// audit sink, the JWKS source, the registry) and plan every namespace
    /// without changing anything; print the result and exit.
    #[arg(long)]
    check: bool,
    /// Serve a non-loopback address without client authentication. Anyone
    /// who can reach it may read, write and administer every namespace;
    /// logged as an error at start.
    #[arg(long)]
    allow_insecure_remote: bool,
    /// Threads of the proxy's runtime: 0 for one per core (the default), 1
    /// for a single-threaded runtime.
    #[arg(long, env = "PRISM_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
}

/// Where a config is looked for without `--config`, in order: the working
/// directory, the user's config directory, the system's.
fn default_places() -> Vec<PathBuf> {
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|home| PathBuf::from(home).join(".config")));
    [
        Some(PathBuf::from("prism.yaml")),
        user.map(|d| d.join("prism").join("prism.yaml")),
        Some("/etc/prism/prism.yaml".into()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match cli.config {
        Some(path) => path,
        None => {
            let places = default_places();
            let Some(found) = places.iter().find(|p| p.is_file()) else {
                let list: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
                eprintln!(
                    "prism-proxy: no config file: --config (or PRISM_CONFIG) is not set and none of the default places has one ({})",
                    list.join(", ")
                );
                return ExitCode::from(EXIT_CONFIG);
            };
            // Said on stderr before logging starts, so it shows whatever the log settings.
            eprintln!("prism-proxy: using config file {} (no --config given)", found.display());
            found.clone()
        }
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("prism-proxy: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let options = Options { allow_insecure_remote: cli.allow_insecure_remote };
    let builder = if cli.check || cli.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if cli.worker_threads > 1 {
            builder.worker_threads(cli.worker_threads);
        }
        builder
    };
    let runtime = match { builder }.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("prism-proxy: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        let accepted = runtime.block_on(startup::check(&config, options, &path));
        return if accepted { ExitCode::SUCCESS } else { ExitCode::from(EXIT_CONFIG) };
    }
    // The trace exporter is a tonic client: it is built inside the runtime.
    let telemetry = {
        let _entered = runtime.enter();
        match logging::init(&config) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("prism-proxy: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    tracing::info!(config = %path.display(), "config loaded");
    let result = runtime.block_on(async move {
        let result = start(config, options).await;
        // Spans still buffered are exported before the process ends.
        telemetry.shutdown().await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "prism-proxy failed");
            eprintln!("prism-proxy: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config, options: Options) -> Result<(), StartError> {
    startup::check_listen(&config, options, config.listen)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    server::run(config, options, listener, server::shutdown_signal()).await
}
