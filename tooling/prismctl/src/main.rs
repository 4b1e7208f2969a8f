//! `prismctl`: operate and try out a Prism proxy from the shell.
//!
//! Exit codes: 0 success; 1 a call failed (the gRPC status is printed);
//! 2 usage error; 3 a namespace document is invalid (every error is
//! printed with its field and line).

mod graph;
mod kv;
mod login;
mod migrate;
mod namespace;
mod output;
mod plugins;
mod schema;
mod settings;
mod shadow;
mod ts;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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
    /// Print tables and lists without their header row.
    #[arg(long, global = true)]
    no_headers: bool,
    /// Deadline for each call, e.g. 10s [default: 10s, or `timeout` in the config file].
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// prismctl config file [default: ~/.config/prism/prismctl.yaml].
    #[arg(long, global = true, env = "PRISMCTL_CONFIG")]
    config: Option<PathBuf>,
    /// PEM file of the CA that signs the proxy's certificate (TLS).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// PEM client certificate, for proxies that require mTLS (with --key).
    #[arg(long, global = true, id = "client_cert", requires = "client_key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert. (Its id differs from its flag so that it
    /// cannot clash with the `key` argument of `kv` commands.)
    #[arg(long = "key", global = true, id = "client_key", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// OAuth2 bearer token sent with every call.
    #[arg(long, global = true, env = "PRISM_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    /// Register and inspect the .proto schemas of typed namespaces (PII).
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Inspect a namespace's shadow traffic (spec.shadow).
    #[command(subcommand)]
    Shadow(shadow::ShadowCommand),
    /// Move a KeyValue namespace to another backend without downtime:
    /// `migrate NAMESPACE --to BACKEND`, then backfill, verify, promote,
    /// finalize (or rollback); `migrate status NAMESPACE` shows where it is.
    Migrate(migrate::MigrateArgs),
    /// Get an access token from an OIDC issuer (client credentials, or the
    /// device grant for people) and keep it for later commands.
    Login(login::LoginArgs),
    /// Forget the kept access token.
    Logout,
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
    tls: Option<ClientTlsConfig>,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Client {
    /// Opens a channel to the proxy.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| anyhow::anyhow!("invalid endpoint {:?}: {e}", self.endpoint))?
            .connect_timeout(self.timeout.min(Duration::from_secs(5)));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
        }
        endpoint.connect().await.map_err(|e| {
            let chain = prism_proto::error_chain(&e);
            anyhow::anyhow!("cannot connect to {}: {chain}{}", self.endpoint, connect_hint(&self.endpoint, &chain))
        })
    }

    /// A request with the call deadline set.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
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
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "prismctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Login(args) => return login::login(args).await,
        Command::Logout => return login::logout(),
        _ => {}
    }
    let settings = settings::load(cli.config.as_deref())?;
    let timeout = match (cli.timeout, &settings.timeout) {
        (Some(t), _) => t,
        (None, Some(t)) => humantime::parse_duration(t).map_err(|e| anyhow::anyhow!("config timeout {t:?}: {e}"))?,
        (None, None) => Duration::from_secs(10),
    };
    let endpoint = endpoint_url(&cli.endpoint.or(settings.endpoint).unwrap_or_else(|| "127.0.0.1:8980".to_owned()));
    let tls =
        tls_config(&endpoint, cli.ca.or(settings.ca), cli.cert.or(settings.cert), cli.client_key.or(settings.key))?;
    // An explicit token wins over the one `prismctl login` kept.
    let authorization = match cli.token.or_else(|| login::cached().map(|c| c.access_token)) {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| anyhow::anyhow!("the token has characters a header cannot carry"))?,
        ),
        None => None,
    };
    let client = Client { endpoint, timeout, format: cli.output, tls, authorization };
    match cli.command {
        Command::Health => health(&client).await,
        Command::Kv(cmd) => kv::run(&client, cmd).await,
        Command::Ts(cmd) => ts::run(&client, cmd).await,
        Command::Graph(cmd) => graph::run(&client, cmd).await,
        Command::Namespace(cmd) => namespace::run(&client, cmd).await,
        Command::Plugins(cmd) => plugins::run(&client, cmd).await,
        Command::Schema(cmd) => schema::run(&client, cmd).await,
        Command::Shadow(cmd) => shadow::run(&client, cmd).await,
        Command::Migrate(args) => migrate::run(&client, args).await,
        Command::Completions { .. } | Command::Login(_) | Command::Logout => Ok(()),
    }
}

/// An endpoint as given: `host:port` (as grpcurl and redis-cli take it, and
/// as the proxy's `listen:` is written) is plaintext `http://host:port`.
fn endpoint_url(given: &str) -> String {
    if given.contains("://") { given.to_owned() } else { format!("http://{given}") }
}

/// What to check when a connection fails, from the error's words.
fn connect_hint(endpoint: &str, chain: &str) -> String {
    let authority = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest).trim_end_matches('/');
    if chain.contains("Connection refused") {
        format!(" (is prism-proxy running and listening on {authority}?)")
    } else if endpoint.starts_with("https://") {
        format!(" (does {authority} serve TLS? a plaintext port needs http://{authority})")
    } else {
        String::new()
    }
}

/// TLS settings for an `https://` endpoint: the proxy's CA (else the
/// system roots) and an optional client certificate.
fn tls_config(
    endpoint: &str,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<ClientTlsConfig>> {
    use anyhow::Context;
    if !endpoint.starts_with("https://") {
        anyhow::ensure!(ca.is_none() && cert.is_none(), "--ca and --cert need an https:// endpoint (got {endpoint})");
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(ca) = ca {
        let pem = std::fs::read(&ca).with_context(|| format!("reading --ca {}", ca.display()))?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    if let (Some(cert), Some(key)) = (cert, key) {
        let cert = std::fs::read(&cert).with_context(|| format!("reading --cert {}", cert.display()))?;
        let key = std::fs::read(&key).with_context(|| format!("reading --key {}", key.display()))?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(Some(tls))
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
    let format = cli.output;
    output::set_no_headers(cli.no_headers);
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
            output::report_error(format, &err);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        // Global flags must not clash with subcommand arguments of the same
        // name (--key and `kv get NAMESPACE KEY`).
        let cli =
            Cli::try_parse_from(["prismctl", "--cert", "c.pem", "--key", "k.pem", "kv", "get", "demo", "k"]).unwrap();
        assert_eq!(cli.client_key.as_deref(), Some(std::path::Path::new("k.pem")));
        assert!(matches!(cli.command, Command::Kv(kv::KvCommand::Get { ref key, .. }) if key == "k"));
        assert!(Cli::try_parse_from(["prismctl", "--cert", "c.pem", "health"]).is_err());
    }

    #[test]
    fn endpoints_take_host_and_port_and_failures_say_what_to_check() {
        assert_eq!(endpoint_url("127.0.0.1:8980"), "http://127.0.0.1:8980");
        assert_eq!(endpoint_url("https://prism:8443"), "https://prism:8443");
        let refused = connect_hint("http://127.0.0.1:1", "transport error: Connection refused (os error 111)");
        assert_eq!(refused, " (is prism-proxy running and listening on 127.0.0.1:1?)");
        let tls = connect_hint("https://127.0.0.1:8980", "transport error: received corrupt message");
        assert!(tls.contains("plaintext port needs http://127.0.0.1:8980"), "{tls}");
    }

    #[test]
    fn migrate_takes_a_start_or_a_step() {
        assert!(Cli::try_parse_from(["prismctl", "migrate", "orders", "--to", "postgres"]).is_ok());
        assert!(Cli::try_parse_from(["prismctl", "migrate", "status", "orders"]).is_ok());
        assert!(Cli::try_parse_from(["prismctl", "migrate", "promote", "orders", "--switch-timeout", "30s"]).is_ok());
        // The start needs its target; a step takes no --to.
        assert!(Cli::try_parse_from(["prismctl", "migrate", "orders"]).is_err());
        assert!(Cli::try_parse_from(["prismctl", "migrate", "backfill", "orders", "--to", "x"]).is_err());
        assert!(Cli::try_parse_from(["prismctl", "migrate", "verify", "orders", "--clean-window", "soon"]).is_err());
        assert!(Cli::try_parse_from(["prismctl", "migrate", "backfill", "orders", "--rate", "-1"]).is_err());
    }
}
