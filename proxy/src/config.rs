//! The proxy's own configuration file (YAML).
//!
//! Every field is documented here; this is the reference the docs are
//! checked against. Unknown fields are rejected with the file, line and
//! column, and semantic errors are all reported together, so an operator
//! fixes a file in one pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration;

/// The whole proxy configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the client-facing gRPC listener. While no authentication
    /// is configured it must be a loopback address.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Directory of namespace files (`*.yaml`, `*.yml`), one namespace per
    /// file, watched for changes. A relative path is resolved against this
    /// file's directory. Set this or `registry.postgres`.
    #[serde(default)]
    pub namespaces_dir: Option<PathBuf>,
    /// A namespace registry shared by many proxies, instead of
    /// `namespaces_dir`.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// Plugin that serves a namespace which names no `spec.backend`.
    #[serde(default)]
    pub default_backend: Option<String>,
    /// Backend plugins by name. A namespace's `spec.backend` names one.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Limits applied to every client request.
    #[serde(default)]
    pub limits: Limits,
    /// How long shutdown waits for in-flight requests before stopping the
    /// plugins.
    #[serde(default = "defaults::shutdown_grace", deserialize_with = "duration::deserialize")]
    pub shutdown_grace: Duration,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Directory of the config file: relative paths in it resolve here, and
    /// `command:` plugins run here.
    #[serde(skip, default = "defaults::base_dir")]
    pub base_dir: PathBuf,
}

/// A shared namespace registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Namespaces in a PostgreSQL table; every proxy using the same table
    /// learns of changes through LISTEN/NOTIFY.
    pub postgres: PostgresRegistry,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresRegistry {
    /// Connection string, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: String,
    /// Schema of the `namespaces` table, created if missing.
    #[serde(default = "defaults::registry_schema")]
    pub schema: String,
    /// How often the proxy reloads the whole table, in case a notification
    /// was lost (e.g. while its listening connection was down).
    #[serde(default = "defaults::resync_interval", deserialize_with = "duration::deserialize")]
    pub resync_interval: Duration,
}

/// How to reach one backend plugin: exactly one of `command` or `address`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Program and arguments the proxy starts and supervises. A bare program
    /// name is looked up next to the proxy binary, then on `PATH`; a path
    /// with a `/` is resolved against this file's directory. The proxy adds
    /// `--socket PATH --exit-on-stdin-eof`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `host:port` of a plugin the proxy does not start (a container,
    /// another host). The proxy only connects and checks health.
    #[serde(default)]
    pub address: Option<String>,
    /// Number of HTTP/2 connections to the plugin. Calls are spread over
    /// them; one connection serializes on one task.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// How KeyValue calls travel to the plugin: `multiplex` (default) sends
    /// them on one long-lived stream per connection, `unary` makes one gRPC
    /// call each. Multiplexing costs far less per call (ADR-007); a plugin
    /// that does not serve the stream gets unary calls either way.
    #[serde(default)]
    pub transport: PluginTransport,
    /// How long a starting plugin has to accept connections and initialize.
    #[serde(default = "defaults::start_timeout", deserialize_with = "duration::deserialize")]
    pub start_timeout: Duration,
    /// How often the proxy checks the plugin's health.
    #[serde(default = "defaults::health_interval", deserialize_with = "duration::deserialize")]
    pub health_interval: Duration,
    /// First delay before restarting a crashed plugin; doubles per crash.
    #[serde(default = "defaults::backoff_min", deserialize_with = "duration::deserialize")]
    pub restart_backoff_min: Duration,
    /// Longest delay between restarts.
    #[serde(default = "defaults::backoff_max", deserialize_with = "duration::deserialize")]
    pub restart_backoff_max: Duration,
    /// How long a stopping plugin has to drain before it is killed.
    #[serde(default = "defaults::drain_timeout", deserialize_with = "duration::deserialize")]
    pub drain_timeout: Duration,
    /// Extra environment variables for a `command` plugin.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The plugin's own settings (connection strings, pool sizes), passed
    /// to it on Initialize. Each plugin documents its keys.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// Limits on client requests. A namespace may lower `max_value_bytes`; a
/// plugin may declare lower key and value limits, and the lowest wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most keys or items in one BatchGet or BatchPut.
    pub max_batch_items: usize,
    /// Scan page size when a request asks for 0.
    pub default_page_size: u32,
    /// Largest scan page; larger requests are lowered to it.
    pub max_page_size: u32,
    /// Largest gRPC message accepted from a client, in bytes.
    pub max_message_bytes: usize,
    /// Deadline of a request whose client sets none, and the longest
    /// deadline a client may ask for.
    #[serde(deserialize_with = "duration::deserialize")]
    pub request_timeout: Duration,
    /// Requests served at once; beyond this, calls fail fast with
    /// RESOURCE_EXHAUSTED instead of queueing.
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_items: 500,
            default_page_size: 100,
            max_page_size: 1000,
            max_message_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 4096,
        }
    }
}

/// Logging settings. `PRISM_LOG` (an `EnvFilter` directive such as
/// `info,prism_proxy=debug`) overrides `level`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// Default level: `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// How the proxy sends KeyValue calls to a plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginTransport {
    #[default]
    Multiplex,
    Unary,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// The value passed to plugins in `PRISM_LOG_FORMAT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    pub(super) fn listen() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8980))
    }
    pub(super) fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn pool_size() -> usize {
        4
    }
    pub(super) fn start_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub(super) fn health_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn backoff_min() -> Duration {
        Duration::from_millis(100)
    }
    pub(super) fn backoff_max() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn drain_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn registry_schema() -> String {
        "prism_registry".to_owned()
    }
    pub(super) fn resync_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn base_dir() -> std::path::PathBuf {
        std::path::PathBuf::from(".")
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} is invalid:\n{}", errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it
    /// are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.base_dir = base.to_owned();
        config.resolve_paths(base);
        config.validate().map_err(|errors| ConfigError::Invalid { path: path.to_owned(), errors })?;
        Ok(config)
    }

    /// Parses YAML text without validating it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("the file is empty; it needs at least namespaces_dir (or registry) and plugins".to_owned());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(dir) = self.namespaces_dir.as_mut()
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
        for plugin in self.plugins.values_mut() {
            if let Some(program) = plugin.command.as_mut().and_then(|c| c.first_mut())
                && program.contains('/')
                && Path::new(program.as_str()).is_relative()
            {
                *program = base.join(&*program).to_string_lossy().into_owned();
            }
        }
    }

    /// Checks the rules serde cannot express; returns every violation.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.plugins.is_empty() {
            errors.push("plugins: at least one plugin is required".to_owned());
        }
        match (&self.namespaces_dir, &self.registry) {
            (Some(_), Some(_)) => errors.push("set either namespaces_dir or registry, not both".to_owned()),
            (None, None) => {
                errors.push(
                    "namespaces_dir (a directory of namespace files) or registry.postgres is required".to_owned(),
                );
            }
            _ => {}
        }
        if let Some(r) = &self.registry {
            let schema = &r.postgres.schema;
            let valid = !schema.is_empty()
                && schema.len() <= 40
                && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                errors.push(format!(
                    "registry.postgres.schema: {schema:?} must be 1 to 40 lowercase letters, digits or '_', starting with a letter"
                ));
            }
            if r.postgres.resync_interval < Duration::from_secs(1) {
                errors.push("registry.postgres.resync_interval: must be at least 1s".to_owned());
            }
        }
        for (name, plugin) in &self.plugins {
            let at = format!("plugins.{name}");
            if !is_dns_label(name) {
                errors.push(format!(
                    "{at}: plugin names are lowercase letters, digits and '-', 1 to 63 characters, starting with a letter"
                ));
            }
            match (&plugin.command, &plugin.address) {
                (Some(_), Some(_)) => errors.push(format!("{at}: set either command or address, not both")),
                (None, None) => errors.push(format!("{at}: set command (a plugin the proxy starts) or address")),
                (Some(cmd), None) if cmd.first().is_none_or(|p| p.trim().is_empty()) => {
                    errors.push(format!("{at}.command: the program name is missing"));
                }
                (None, Some(addr)) if !addr.contains(':') => {
                    errors.push(format!("{at}.address: expected host:port, got {addr:?}"));
                }
                _ => {}
            }
            if plugin.pool_size == 0 || plugin.pool_size > 64 {
                errors.push(format!("{at}.pool_size: must be between 1 and 64, got {}", plugin.pool_size));
            }
            if plugin.restart_backoff_min > plugin.restart_backoff_max {
                errors.push(format!("{at}: restart_backoff_min is larger than restart_backoff_max"));
            }
            if !(plugin.config.is_object() || plugin.config.is_null()) {
                errors.push(format!("{at}.config: must be a mapping of plugin settings"));
            }
            for (field, value) in [
                ("start_timeout", plugin.start_timeout),
                ("health_interval", plugin.health_interval),
                ("restart_backoff_min", plugin.restart_backoff_min),
            ] {
                if value.is_zero() {
                    errors.push(format!("{at}.{field}: must be above zero"));
                }
            }
        }
        if let Some(default) = &self.default_backend
            && !self.plugins.contains_key(default)
        {
            errors.push(format!("default_backend: {default:?} is not one of the plugins"));
        }
        let l = &self.limits;
        for (field, value) in [
            ("limits.max_key_bytes", l.max_key_bytes),
            ("limits.max_value_bytes", l.max_value_bytes),
            ("limits.max_batch_items", l.max_batch_items),
            ("limits.max_concurrent_requests", l.max_concurrent_requests),
            ("limits.default_page_size", l.default_page_size as usize),
        ] {
            if value == 0 {
                errors.push(format!("{field}: must be above zero"));
            }
        }
        if l.default_page_size > l.max_page_size {
            errors.push("limits.default_page_size: larger than limits.max_page_size".to_owned());
        }
        if l.max_message_bytes < l.max_value_bytes + l.max_key_bytes + 1024 {
            errors.push(
                "limits.max_message_bytes: must leave room for the largest key and value (max_value_bytes + max_key_bytes + 1 KiB)"
                    .to_owned(),
            );
        }
        if l.request_timeout.is_zero() {
            errors.push("limits.request_timeout: must be above zero".to_owned());
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            errors.push(format!("log.level: {:?} is not one of error, warn, info, debug, trace", self.log.level));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// DNS-label names: lowercase letters, digits and `-`, starting with a
/// letter, not ending with `-`, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests;
