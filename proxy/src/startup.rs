//! What start loads from the config before it serves, in one place: the
//! loopback policy, the TLS files, the audit sink, the JWKS source and the
//! namespace registry. `prism-proxy --check` runs the same loaders (and a
//! dry-run plan of every namespace), so a config that `--check` accepts is
//! not refused at start; `--check` also refuses a plugin program that is
//! not there. What only start can find out (the listen address is taken, a
//! plugin starts but fails) is not checked.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Require};
use crate::control::Controller;
use crate::control::registry::Registry;
use crate::plugin;
use crate::routes::Routes;
use crate::security::audit::{self, AuditError};
use crate::security::authn::Authenticator;
use crate::security::jwt::{self, JwtVerifier, KeySourceError};
use crate::security::tls::{self, TlsError};

/// How the proxy was asked to start, beyond its config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Serve a non-loopback address without client authentication.
    pub allow_insecure_remote: bool,
}

/// Why the proxy will not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0}: client authentication is not configured (dev mode), so the proxy only serves loopback addresses (127.0.0.1, ::1); configure tls.client_ca or auth.jwt, or start with --allow-insecure-remote"
    )]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("auth.jwt: {0}")]
    Jwks(#[from] KeySourceError),
    #[error("auth.jwt: {url:?} is not a valid URL: {source}")]
    JwksUrl { url: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("namespaces_dir: {path} is not a readable directory: {source}")]
    NamespacesDir { path: PathBuf, source: std::io::Error },
    #[error("registry.postgres.url: not a PostgreSQL connection string: {0}")]
    RegistryUrl(#[source] tokio_postgres::Error),
    #[error("pii.keyring: {0}")]
    Keyring(#[from] prism_pii::KeyringError),
    #[error("no namespace registry configured (namespaces_dir or registry.postgres)")]
    NoRegistry,
    #[error("namespace registry: {0}")]
    Registry(String),
    #[error("cannot create the plugin socket directory: {0}")]
    SocketDir(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Every problem the loaders found in the config.
    #[error("{0}")]
    Refused(Problems),
}

/// The problems of a config that start refuses, each on its own line.
#[derive(Debug)]
pub struct Problems(pub Vec<StartError>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// What the loaders produced, for start to use.
pub struct Loaded {
    pub tls: Option<Arc<tls::Reloading>>,
    pub registry: Registry,
    /// The PII keyring (`pii.keyring`), when configured.
    pub keyring: Option<Arc<prism_pii::Keyring>>,
}

/// Runs every loader on `config`, for a listener on `listen`. Returns all
/// the problems found, not only the first.
pub fn load(config: &Config, options: Options, listen: SocketAddr) -> Result<Loaded, Problems> {
    let mut problems = Vec::new();
    for addr in [listen, config.admin_http.listen] {
        if let Err(e) = check_listen(config, options, addr) {
            problems.push(e);
        }
    }
    let tls =
        config.tls.clone().map(|t| tls::Reloading::new(t, tls::Protocols::Grpc)).transpose().unwrap_or_else(|e| {
            problems.push(e.into());
            None
        });
    if let Err(e) = audit::check(&config.audit.sink) {
        problems.push(e.into());
    }
    if let Some(jwt) = config.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
        match &jwt.jwks_file {
            Some(file) => {
                if let Err(e) = jwt::read_jwks_file(file) {
                    problems.push(e.into());
                }
            }
            None => {
                for url in jwt.jwks_url.iter().chain([&jwt.issuer]) {
                    if let Err(e) = reqwest::Url::parse(url) {
                        problems.push(StartError::JwksUrl { url: url.clone(), source: Box::new(e) });
                    }
                }
            }
        }
    }
    let keyring = match keyring(config) {
        Ok(keyring) => keyring,
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let registry = match registry(config) {
        Ok(registry) => Some(registry),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    match registry {
        Some(registry) if problems.is_empty() => Ok(Loaded { tls, registry, keyring }),
        _ => Err(Problems(problems)),
    }
}

/// The loopback policy: without client authentication (dev mode) the proxy
/// serves loopback addresses only, unless started with
/// `--allow-insecure-remote`. Checked before the address is even bound.
pub fn check_listen(config: &Config, options: Options, listen: SocketAddr) -> Result<(), StartError> {
    if !config.authenticates() && !listen.ip().is_loopback() && !options.allow_insecure_remote {
        return Err(StartError::NotLoopback(listen));
    }
    Ok(())
}

/// Loads the PII keyring; warns when its files are readable by others.
fn keyring(config: &Config) -> Result<Option<Arc<prism_pii::Keyring>>, StartError> {
    let Some(pii) = &config.pii else { return Ok(None) };
    let keyring = prism_pii::Keyring::load(&pii.keyring, pii.active_key, pii.hash_key)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&pii.keyring)
            && meta.permissions().mode() & 0o007 != 0
        {
            tracing::warn!(keyring = %pii.keyring.display(), "the PII keyring is readable by every user of this machine; restrict it to the proxy's user");
        }
    }
    tracing::info!(keyring = %pii.keyring.display(), keys = ?keyring.ids().collect::<Vec<_>>(), active = keyring.active(), "PII keyring loaded");
    Ok(Some(Arc::new(keyring)))
}

fn registry(config: &Config) -> Result<Registry, StartError> {
    match (&config.namespaces_dir, &config.registry) {
        (Some(dir), _) => match std::fs::read_dir(dir) {
            Ok(_) => Ok(Registry::Directory(dir.clone())),
            Err(source) => Err(StartError::NamespacesDir { path: dir.clone(), source }),
        },
        (None, Some(r)) => {
            tokio_postgres::Config::from_str(&r.postgres.url).map_err(StartError::RegistryUrl)?;
            Ok(Registry::postgres(r.postgres.clone()))
        }
        (None, None) => Err(StartError::NoRegistry),
    }
}

/// The authenticator the config asks for. Fetches the token signing keys
/// once (an issuer that is down now is not fatal).
pub async fn authenticator(config: &Config) -> Result<Authenticator, StartError> {
    Ok(match &config.auth {
        Some(auth) if config.authenticates() => Authenticator::new(
            true,
            auth.require,
            match &auth.jwt {
                Some(jwt) => Some(JwtVerifier::new(jwt.clone()).await?),
                None => None,
            },
        ),
        // Client certificates alone.
        None if config.authenticates() => Authenticator::new(true, Require::Mtls, None),
        _ => Authenticator::dev(),
    })
}

/// How long `--check` waits for a PostgreSQL registry.
const CHECK_REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);

/// Plugins whose `command` names no executable file (next to
/// `prism-proxy`, on `PATH`, or at the path written). Start runs without
/// them (their namespaces answer UNAVAILABLE while the supervisor retries);
/// `--check` refuses them, as they cannot run.
pub fn missing_programs(config: &Config) -> Vec<String> {
    config
        .plugins
        .iter()
        .filter_map(|(name, plugin)| {
            let program = plugin.command.as_ref()?.first()?;
            plugin::find_program(program).is_none().then(|| {
                let places = if program.contains('/') {
                    "no executable file there"
                } else {
                    "not next to prism-proxy nor on PATH"
                };
                format!("plugins.{name}.command: program {program:?} not found ({places})")
            })
        })
        .collect()
}

/// `prism-proxy --check`: the loaders of start, then a dry-run plan of
/// every namespace in the registry. Prints one line per finding; returns
/// whether start would accept the config and could run every plugin.
pub async fn check(config: &Config, options: Options, path: &std::path::Path) -> bool {
    let loaded = match load(config, options, config.listen) {
        Ok(loaded) => loaded,
        Err(problems) => {
            for problem in &problems.0 {
                println!("error {problem}");
            }
            return false;
        }
    };
    println!("ok    config {}", path.display());
    let missing = missing_programs(config);
    for problem in &missing {
        println!("error {problem}");
    }
    let snapshot = match tokio::time::timeout(CHECK_REGISTRY_TIMEOUT, loaded.registry.load()).await {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err(e)) => {
            // Start retries a registry it cannot read yet.
            println!("warn  cannot read the {} now: {e}", loaded.registry.describe());
            return missing.is_empty();
        }
        Err(_) => {
            println!("warn  the {} did not answer within {CHECK_REGISTRY_TIMEOUT:?}", loaded.registry.describe());
            return missing.is_empty();
        }
    };
    // Plans against the plugins of the config, none of them started.
    let plugins = Arc::new(plugin::plugins(&config.plugins));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let controller =
        Controller::new(Arc::new(Routes::default()), plugins, loaded.registry, loaded.keyring, config, metrics);
    let mut ok = missing.is_empty();
    match prism_pii::SchemaPool::build(snapshot.schemas) {
        Ok(pool) => {
            for schema in pool.schemas() {
                println!("ok    schema {} version {}", schema.name, schema.version);
            }
            controller.set_schemas(pool);
        }
        Err(e) => {
            println!("error {e}");
            ok = false;
        }
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    for (source, why) in &snapshot.unreadable {
        println!("error {source}: {why}");
        ok = false;
    }
    for stored in &snapshot.docs {
        match controller.dry_check(&stored.yaml) {
            Ok((name, backend, warnings)) => {
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                    println!("error {}: namespace {name:?} is already defined by {first}", stored.source);
                    ok = false;
                    continue;
                }
                println!("ok    {name} ({}): {backend}", stored.source);
                for warning in warnings {
                    println!("warn  {name}: {warning}");
                }
                seen.push((name, stored.source.clone()));
            }
            Err(errors) => {
                for e in errors {
                    println!("error {}: {e}", stored.source);
                }
                ok = false;
            }
        }
    }
    ok
}
