//! `prismctl`: operate and try out a Prism proxy from the shell.
//!
//! Exit codes: 0 success; 1 a call failed (the gRPC status is printed);
//! 2 usage error; 3 a namespace document is invalid (every error is
//! printed with its field and line).

mod graph;
mod kv;
mod namespace;
mod output;
mod plugins;
mod settings;
mod ts;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

/// Exit code for invalid namespace documents.
const EXIT_INVALID: u8 = 3;

#[derive(Debug, Parser)]
#[command(name = "prismctl", version, about = "Command line client for the Prism data gateway")]
struct Cli {
    /// Proxy endpoint [default: http://127.0.0.1:8980, or `endpoint` in the config file].
    #[arg(long, global = true, env = "PRISM_ENDPOINT")]
    endpoint: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = output::Format::Table)]
    output: output::Format,
    /// Deadline for each call, e.g. 10s [default: 10s, or `timeout` in the config file].
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// prismctl config file [default: ~/.config/prism/prismctl.yaml].
    #[arg(long, global = true, env = "PRISMCTL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the proxy is serving (grpc.health.v1).
    Health,
    /// Read and write KeyValue namespaces.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Append to and read TimeSeries namespaces.
    #[command(subcommand)]
    Ts(ts::TsCommand),
    /// Read and write Graph namespaces.
    #[command(subcommand)]
    Graph(graph::GraphCommand),
    /// Declare, inspect and remove namespaces.
    #[command(subcommand, alias = "ns")]
    Namespace(namespace::NamespaceCommand),
    /// Inspect backend plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Print a shell completion script, e.g. `prismctl completions bash > /etc/bash_completion.d/prismctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Connection settings shared by every command.
pub struct Client {
    endpoint: String,
    pub timeout: Duration,
    pub format: output::Format,
}

impl Client {
    /// Opens a channel to the proxy.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| anyhow::anyhow!("invalid endpoint {:?}: {e}", self.endpoint))?
            .connect_timeout(self.timeout.min(Duration::from_secs(5)));
        endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {}: {}", self.endpoint, output::error_chain(&e)))
    }

    /// A request with the call deadline set.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

/// Returned when invalid namespace documents were found; each error has
/// already been printed. Exits with [`EXIT_INVALID`].
#[derive(Debug)]
pub struct Invalid;

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid namespace documents")
    }
}

impl std::error::Error for Invalid {}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "prismctl", &mut std::io::stdout());
        return Ok(());
    }
    let settings = settings::load(cli.config.as_deref())?;
    let timeout = match (cli.timeout, &settings.timeout) {
        (Some(t), _) => t,
        (None, Some(t)) => humantime::parse_duration(t).map_err(|e| anyhow::anyhow!("config timeout {t:?}: {e}"))?,
        (None, None) => Duration::from_secs(10),
    };
    let endpoint = cli.endpoint.or(settings.endpoint).unwrap_or_else(|| "http://127.0.0.1:8980".to_owned());
    let client = Client { endpoint, timeout, format: cli.output };
    match cli.command {
        Command::Health => health(&client).await,
        Command::Kv(cmd) => kv::run(&client, cmd).await,
        Command::Ts(cmd) => ts::run(&client, cmd).await,
        Command::Graph(cmd) => graph::run(&client, cmd).await,
        Command::Namespace(cmd) => namespace::run(&client, cmd).await,
        Command::Plugins(cmd) => plugins::run(&client, cmd).await,
        Command::Completions { .. } => Ok(()),
    }
}

async fn health(client: &Client) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mut health = HealthClient::new(client.channel().await?);
    let response = health.check(client.request(HealthCheckRequest { service: String::new() })).await?.into_inner();
    let status = ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown);
    output::emit(client.format, &serde_json::json!({ "status": status.as_str_name() }), || {
        status.as_str_name().to_owned()
    })?;
    anyhow::ensure!(status == ServingStatus::Serving, "proxy is not serving");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("prismctl: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<Invalid>() => ExitCode::from(EXIT_INVALID),
        Err(err) => {
            eprintln!("prismctl: {}", output::describe(&err));
            ExitCode::FAILURE
        }
    }
}
