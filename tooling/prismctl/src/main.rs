//! `prismctl`: operate and try out a Prism proxy from the shell.
//!
//! Exit codes: 0 success; 1 a call failed (the gRPC status is printed);
//! 2 usage error; 3 a namespace document is invalid (every error is
//! printed with its field and line).

mod complete;
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

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Exit code for invalid namespace documents.
const EXIT_INVALID: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "prismctl",
    version,
    about = "Command line client for the Prism data gateway",
    after_help = "Examples:\n  prismctl health\n  prismctl kv put demo user/1 alice\n  prismctl --endpoint prism.internal:8980 namespace list"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// The options every command takes (`prismctl options` lists them). Each
/// subcommand's help hides them and points to `prismctl options`, as
/// kubectl does; see [`command`].
#[derive(Debug, Clone, clap::Args)]
struct GlobalArgs {
    /// The proxy to talk to: http://HOST:PORT, https://HOST:PORT (TLS) or
    /// HOST:PORT (plaintext); several, comma-separated, are tried in order
    /// until one answers [default: http://127.0.0.1:8980, or `endpoint` in
    /// the config file].
    #[arg(long, global = true, env = "PRISM_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = output::Format::Table)]
    output: output::Format,
    /// Print tables and lists without their header row.
    #[arg(long, global = true)]
    no_headers: bool,
    /// Deadline for each call, e.g. 10s or 1m [default: 10s, or `timeout` in
    /// the config file].
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// prismctl's config file [default: ~/.config/prism/prismctl.yaml].
    #[arg(long, global = true, env = "PRISMCTL_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// PEM file of the CA that signs the proxy's certificate (needs an
    /// https:// endpoint) [default: the system's roots].
    #[arg(long, global = true, value_name = "PATH")]
    ca: Option<PathBuf>,
    /// PEM client certificate, for proxies that require mTLS (with --key).
    #[arg(long, global = true, value_name = "PATH", id = "client_cert", requires = "client_key")]
    cert: Option<PathBuf>,
    /// PEM private key of the client certificate (with --cert).
    // Its id differs from its flag so that it cannot clash with the `key`
    // argument of `kv` commands.
    #[arg(long = "key", global = true, value_name = "PATH", id = "client_key", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// OAuth2 bearer token sent with every call [default: the token kept by
    /// `prismctl login`].
    #[arg(long, global = true, env = "PRISM_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the proxy is serving (grpc.health.v1).
    #[command(
        after_help = "Examples:\n  prismctl health\n  prismctl --endpoint https://prism.internal:8980 health\n  prismctl -o json health"
    )]
    Health,
    /// Read and write KeyValue namespaces.
    #[command(
        subcommand,
        after_help = "Examples:\n  prismctl kv put demo user/1 alice\n  prismctl kv get demo user/1\n  prismctl kv scan demo --prefix user/"
    )]
    Kv(kv::KvCommand),
    /// Append to and read TimeSeries namespaces.
    #[command(
        subcommand,
        after_help = "Examples:\n  prismctl ts append metrics cpu --id web-1 --value 0.42\n  prismctl ts query metrics cpu --since 1h"
    )]
    Ts(ts::TsCommand),
    /// Read and write Graph namespaces.
    #[command(
        subcommand,
        after_help = "Examples:\n  prismctl graph put-vertex social alice --label person\n  prismctl graph neighbors social alice"
    )]
    Graph(graph::GraphCommand),
    /// Declare, inspect and remove namespaces.
    #[command(
        subcommand,
        alias = "ns",
        after_help = "Examples:\n  prismctl namespace apply -f orders.yaml\n  prismctl namespace list\n  prismctl ns get orders -o yaml"
    )]
    Namespace(namespace::NamespaceCommand),
    /// Inspect backend plugins.
    #[command(subcommand, after_help = "Examples:\n  prismctl plugins list\n  prismctl plugins list -o wide")]
    Plugins(plugins::PluginsCommand),
    /// Register and inspect the .proto schemas of typed namespaces (PII).
    #[command(
        subcommand,
        after_help = "Examples:\n  prismctl schema push acme/profile/v1/profile.proto -I protos\n  prismctl schema list"
    )]
    Schema(schema::SchemaCommand),
    /// Inspect a namespace's shadow traffic.
    #[command(subcommand, after_help = "Examples:\n  prismctl shadow status orders\n  prismctl shadow diffs orders")]
    Shadow(shadow::ShadowCommand),
    /// Move a KeyValue namespace to another backend without downtime.
    ///
    /// Start with `prismctl migrate NAMESPACE --to BACKEND`, then run the
    /// steps backfill, verify, promote and finalize (or rollback);
    /// `prismctl migrate status NAMESPACE` shows where it is.
    #[command(
        after_help = "Examples:\n  prismctl migrate orders --to postgres\n  prismctl migrate backfill orders\n  prismctl migrate status orders"
    )]
    Migrate(migrate::MigrateArgs),
    /// Get an access token from an OIDC issuer and keep it.
    ///
    /// Machines use the client-credentials grant (--client-secret); people
    /// the device grant: prismctl prints a URL and a code to approve in a
    /// browser. Later commands send the token until it expires.
    #[command(
        after_help = "Examples:\n  prismctl login --issuer https://id.example.com --client-id prismctl\n  PRISM_CLIENT_SECRET=s3cret prismctl login --issuer https://id.example.com --client-id ci-bot"
    )]
    Login(login::LoginArgs),
    /// Forget the kept access token.
    #[command(after_help = "Examples:\n  prismctl logout")]
    Logout,
    /// Print the options that every command takes.
    #[command(after_help = "Examples:\n  prismctl options")]
    Options,
    /// Print a shell completion script.
    ///
    /// For completion of live namespace names as well, load the completion
    /// from prismctl itself instead: `source <(COMPLETE=bash prismctl)` in
    /// ~/.bashrc (zsh: `source <(COMPLETE=zsh prismctl)`; fish:
    /// `COMPLETE=fish prismctl | source`).
    #[command(
        after_help = "Examples:\n  prismctl completions bash > ~/.local/share/bash-completion/completions/prismctl\n  prismctl completions zsh > \"${fpath[1]}/_prismctl\"\n  source <(COMPLETE=bash prismctl)"
    )]
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// How every subcommand's help ends: the global options are listed once,
/// by `prismctl options`, as kubectl does.
const OPTIONS_HINT: &str = "Use `prismctl options` for the global options (they work with every command).";

/// The command line as people see it: [`Cli`], with the global options
/// hidden from every subcommand's help (`prismctl options` and the top
/// level help list them) and each subcommand's help pointing there.
///
/// clap copies a global option into each subcommand when it builds the
/// command, unless the subcommand already has one with the same id; a
/// hidden copy added here takes its place, still global (so it is parsed
/// anywhere and copied further down, hidden), but not shown.
fn command() -> clap::Command {
    let root = Cli::command();
    let globals: Vec<clap::Arg> = root.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    hide_globals(root, &globals)
}

fn hide_globals(cmd: clap::Command, globals: &[clap::Arg]) -> clap::Command {
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    names.into_iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |mut sub| {
            for arg in globals {
                if sub.get_arguments().all(|a| a.get_id() != arg.get_id()) {
                    sub = sub.arg(arg.clone().hide(true));
                }
            }
            let after = match sub.get_after_help() {
                Some(help) => format!("{help}\n\n{OPTIONS_HINT}"),
                None => OPTIONS_HINT.to_owned(),
            };
            hide_globals(sub.after_help(after), globals)
        })
    })
}

/// What `prismctl options` prints: the global options, with the same
/// descriptions as in `prismctl --help`.
fn global_options_help() -> String {
    let root = Cli::command();
    let mut options = clap::Command::new("prismctl")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .help_template("The following options can be passed to any command, before or after it:\n\n{options}")
        .args(root.get_arguments().filter(|a| a.is_global_set()).map(|a| a.clone().global(false)));
    options.render_long_help().to_string()
}

/// Connection settings shared by every command.
pub struct Client {
    /// The proxies, in the order they are tried.
    endpoints: Vec<String>,
    pub timeout: Duration,
    pub format: output::Format,
    tls: Option<ClientTlsConfig>,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Client {
    /// Opens a channel to the first proxy that accepts one. Proxies share
    /// their namespaces through the registry, so any of them serves.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let mut failures = Vec::new();
        for url in &self.endpoints {
            match self.connect(url).await {
                Ok(channel) => return Ok(channel),
                Err(e) => failures.push(e),
            }
        }
        match failures.len() {
            1 => Err(failures.remove(0)),
            _ => Err(anyhow::anyhow!(
                "no proxy answered:\n{}",
                failures.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
            )),
        }
    }

    async fn connect(&self, url: &str) -> anyhow::Result<Channel> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| anyhow::anyhow!("invalid endpoint {url:?}: {e}"))?
            .connect_timeout(self.timeout.min(Duration::from_secs(5)));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
        }
        endpoint.connect().await.map_err(|e| {
            let chain = prism_proto::error_chain(&e);
            anyhow::anyhow!("cannot connect to {url}: {chain}{}", connect_hint(url, &chain))
        })
    }

    /// A request with the call deadline set.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.stream_request(message);
        request.set_timeout(self.timeout);
        request
    }

    /// A request that opens a stream which lasts as long as it is read
    /// (`ts tail`): no deadline.
    pub fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
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
            // The full command line, global options in every subcommand,
            // so that they complete everywhere.
            clap_complete::generate(shell, &mut Cli::command(), "prismctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Options => {
            print!("{}", global_options_help());
            return Ok(());
        }
        Command::Login(args) => return login::login(args).await,
        Command::Logout => return login::logout(),
        _ => {}
    }
    let client = client(cli.global)?;
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
        Command::Completions { .. } | Command::Options | Command::Login(_) | Command::Logout => Ok(()),
    }
}

/// The connection the global options, the environment and the config file
/// describe (in that order of precedence).
fn client(global: GlobalArgs) -> anyhow::Result<Client> {
    let settings = settings::load(global.config.as_deref())?;
    let timeout = match (global.timeout, &settings.timeout) {
        (Some(t), _) => t,
        (None, Some(t)) => humantime::parse_duration(t).map_err(|e| anyhow::anyhow!("config timeout {t:?}: {e}"))?,
        (None, None) => Duration::from_secs(10),
    };
    let given = global.endpoint.or(settings.endpoint).unwrap_or_else(|| "127.0.0.1:8980".to_owned());
    let endpoints: Vec<String> = given.split(',').map(str::trim).filter(|e| !e.is_empty()).map(endpoint_url).collect();
    anyhow::ensure!(!endpoints.is_empty(), "--endpoint names no proxy");
    // One TLS setting for all: every endpoint is https://, or none.
    let secure = endpoints.iter().filter(|e| e.starts_with("https://")).count();
    anyhow::ensure!(
        secure == 0 || secure == endpoints.len(),
        "--endpoint mixes https:// and plaintext proxies ({given}); use one kind"
    );
    let tls = tls_config(
        &endpoints[0],
        global.ca.or(settings.ca),
        global.cert.or(settings.cert),
        global.client_key.or(settings.key),
    )?;
    // An explicit token wins over the one `prismctl login` kept.
    let authorization = match global.token.or_else(|| login::cached().map(|c| c.access_token)) {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| anyhow::anyhow!("the token has characters a header cannot carry"))?,
        ),
        None => None,
    };
    Ok(Client { endpoints, timeout, format: global.output, tls, authorization })
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
    // `COMPLETE=bash prismctl` prints the shell's side of dynamic
    // completion, and the shell asks prismctl for candidates the same way;
    // neither goes further.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.format(&mut command()).exit(),
    };
    let format = cli.global.output;
    output::set_no_headers(cli.global.no_headers);
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
        assert_eq!(cli.global.client_key.as_deref(), Some(std::path::Path::new("k.pem")));
        assert!(matches!(cli.command, Command::Kv(kv::KvCommand::Get { ref key, .. }) if key == "k"));
        assert!(Cli::try_parse_from(["prismctl", "--cert", "c.pem", "health"]).is_err());
    }

    /// Every command of the command line as people see it, with its path
    /// (`prismctl kv get`), the built-in `help` subcommands left out.
    fn every_command() -> Vec<(String, clap::Command)> {
        fn walk(path: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
            out.push((path.to_owned(), cmd.clone()));
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(&format!("{path} {}", sub.get_name()), sub, out);
            }
        }
        let mut root = command();
        root.build();
        let mut out = Vec::new();
        walk("prismctl", &root, &mut out);
        out
    }

    #[test]
    fn every_command_has_examples_and_every_option_a_description() {
        let mut missing = Vec::new();
        for (path, cmd) in every_command() {
            if cmd.get_about().is_none_or(|a| a.to_string().trim().is_empty()) {
                missing.push(format!("{path}: no description"));
            }
            let after = cmd.get_after_help().map(ToString::to_string).unwrap_or_default();
            if !after.contains("Examples:\n  prismctl ") && !after.contains("Examples:\n  PRISM") {
                missing.push(format!("{path}: no Examples: section"));
            }
            if path != "prismctl" && !after.ends_with(OPTIONS_HINT) {
                missing.push(format!("{path}: does not point to `prismctl options`"));
            }
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path}: {} has no description", arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn global_options_are_listed_once_by_prismctl_options() {
        for (path, cmd) in every_command().into_iter().skip(1) {
            for arg in cmd.get_arguments().filter(|a| a.is_global_set()) {
                assert!(arg.is_hide_set(), "{path} shows the global option {}", arg.get_id());
            }
        }
        let options = global_options_help();
        for flag in
            ["--endpoint", "--output", "--no-headers", "--timeout", "--config", "--ca", "--cert", "--key", "--token"]
        {
            assert!(options.contains(flag), "prismctl options does not list {flag}:\n{options}");
        }
        // The top level help still shows them.
        let top = command().render_long_help().to_string();
        assert!(top.contains("--endpoint <URL>"), "{top}");
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
