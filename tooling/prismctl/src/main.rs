//! `prismctl`: talk to a Prism proxy from the shell.
//!
//! Exit codes: 0 success, 1 the call failed (the gRPC status is printed),
//! 2 usage error.

mod kv;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(version, about = "Command line client for the Prism data gateway")]
struct Cli {
    /// Proxy endpoint.
    #[arg(long, global = true, env = "PRISM_ENDPOINT", default_value = "http://127.0.0.1:8980")]
    endpoint: String,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = output::Format::Text)]
    output: output::Format,
    /// Deadline for each call.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
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
}

/// Connection settings shared by every command.
pub struct Client {
    pub channel: Channel,
    pub timeout: Duration,
    pub format: output::Format,
}

impl Client {
    /// A request with the call deadline set.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let endpoint = Endpoint::from_shared(cli.endpoint.clone())
        .map_err(|e| anyhow::anyhow!("invalid endpoint {:?}: {e}", cli.endpoint))?
        .connect_timeout(cli.timeout.min(Duration::from_secs(5)));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {}", cli.endpoint, output::error_chain(&e)))?;
    Ok(Client { channel, timeout: cli.timeout, format: cli.output })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = connect(&cli).await?;
    match cli.command {
        Command::Health => health(&client).await,
        Command::Kv(cmd) => kv::run(&client, cmd).await,
    }
}

async fn health(client: &Client) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mut health = HealthClient::new(client.channel.clone());
    let response = health.check(client.request(HealthCheckRequest { service: String::new() })).await?.into_inner();
    let status = ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown);
    match client.format {
        output::Format::Json => println!("{}", serde_json::json!({ "status": status.as_str_name() })),
        output::Format::Text => println!("{}", status.as_str_name()),
    }
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
        Err(err) => {
            eprintln!("prismctl: {}", output::describe(&err));
            ExitCode::FAILURE
        }
    }
}
