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

use prism_namespace::SpecError;
use prism_namespace::duration;
pub use prism_namespace::is_dns_label;
use prism_namespace::yaml::Node;
use serde_saphyr::Spanned;

/// The whole proxy configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the client-facing gRPC listener. While no client
    /// authentication is configured (dev mode) it must be a loopback
    /// address, unless the proxy is started with `--allow-insecure-remote`.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// TLS on the client listener. Without it the listener is plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Client authentication (bearer tokens, which credentials are
    /// required) and the proxy-wide administrators. Without `auth` and
    /// without `tls.client_ca` the proxy runs in dev mode: every caller may
    /// do everything.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The audit log: one JSON line per data access or admin action.
    #[serde(default)]
    pub audit: AuditConfig,
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
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Limits applied to every client request.
    #[serde(default)]
    pub limits: Limits,
    /// How long shutdown waits for in-flight requests before stopping the
    /// plugins.
    #[serde(default = "defaults::shutdown_grace", deserialize_with = "duration::deserialize")]
    pub shutdown_grace: Duration,
    /// How long shutdown keeps serving after reporting NOT_SERVING, before
    /// it stops accepting calls: time for load balancers and clients that
    /// watch the health service to send new calls elsewhere.
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub shutdown_delay: Duration,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Traces: OpenTelemetry spans of every call, exported over OTLP/gRPC.
    /// Without this block the proxy exports no traces (and pays nothing
    /// for them).
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// The admin HTTP listener: Prometheus `/metrics`, `/healthz`,
    /// `/readyz` and the `/status` page.
    #[serde(default)]
    pub admin_http: AdminHttpConfig,
    /// Keys of PII field encryption (`spec.pii.encrypt`) and of the `hash`
    /// policy action. Without this block, namespaces that need them are
    /// refused.
    #[serde(default)]
    pub pii: Option<PiiConfig>,
    /// Directory of the config file: relative paths in it resolve here, and
    /// `command:` plugins run here.
    #[serde(skip, default = "defaults::base_dir")]
    pub base_dir: PathBuf,
}

/// TLS for the client listener. The files are re-read when they change
/// (checked every `reload_interval`); open connections keep the
/// certificate they started with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file of the CA certificates that sign client certificates.
    /// Setting it enables client certificates (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Whether clients must present a certificate: `required` or
    /// `optional` (verified when presented). Default: `required` when
    /// `client_ca` is set.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// How often the certificate, key and CA files are checked for changes.
    #[serde(default = "defaults::tls_reload", deserialize_with = "duration::deserialize")]
    pub reload_interval: Duration,
}

/// Client certificate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Required,
    Optional,
}

/// Client authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Which credentials a call must carry: `any` (a verified client
    /// certificate or a valid token), `mtls`, `jwt`, or `both`.
    #[serde(default)]
    pub require: Require,
    /// OAuth2 bearer tokens (JWT) in the `authorization` header.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Principal selectors (as in a namespace's `access`) that are
    /// administrators of the whole proxy: they may create namespaces, list
    /// plugins and administer every namespace.
    #[serde(default)]
    pub admins: Vec<String>,
}

/// Required credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    #[default]
    Any,
    Mtls,
    Jwt,
    Both,
}

/// How bearer tokens are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Expected `iss` claim; also the base URL for OIDC discovery.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// URL of the issuer's JWKS. Default: `jwks_uri` from
    /// `<issuer>/.well-known/openid-configuration` (OIDC discovery).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A local JWKS file instead of a URL (re-read on an unknown `kid`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Accepted signature algorithms. Only asymmetric ones are allowed:
    /// RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA.
    #[serde(default = "defaults::jwt_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "defaults::jwt_leeway", deserialize_with = "duration::deserialize")]
    pub leeway: Duration,
    /// Shortest time between two JWKS fetches caused by tokens with an
    /// unknown `kid`, so garbage tokens cannot hammer the issuer.
    #[serde(default = "defaults::jwks_refetch", deserialize_with = "duration::deserialize")]
    pub refetch_interval: Duration,
    /// Longest time fetched keys are used before they are fetched again.
    #[serde(default = "defaults::jwks_max_age", deserialize_with = "duration::deserialize")]
    pub max_key_age: Duration,
    /// Claim names that make up the principal.
    #[serde(default)]
    pub claims: ClaimNames,
}

/// Which token claims carry the subject, groups and scopes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    /// The subject (`user:` selectors).
    pub subject: String,
    /// A list of group names (`group:` selectors).
    pub groups: String,
    /// Scopes, a space-separated string or a list (`scope:` selectors).
    pub scopes: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self { subject: "sub".to_owned(), groups: "groups".to_owned(), scopes: "scope".to_owned() }
    }
}

/// Where audit records go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `off`, `stdout`, or a file path (appended to; relative to this
    /// file's directory).
    pub sink: AuditSink,
}

/// An audit destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuditSink {
    #[default]
    Off,
    Stdout,
    File(PathBuf),
}

impl<'de> Deserialize<'de> for AuditSink {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "off" => Self::Off,
            "stdout" => Self::Stdout,
            "" => return Err(serde::de::Error::custom("expected off, stdout or a file path")),
            path => Self::File(PathBuf::from(path)),
        })
    }
}

/// Signature algorithms a token may use: asymmetric only, so a public key
/// can never be abused as an HMAC secret.
pub const JWT_ALGORITHMS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

impl Config {
    /// Whether any client authentication is configured; without it the
    /// proxy is in dev mode.
    pub fn authenticates(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| a.jwt.is_some()) || self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
    }
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
    /// TimeSeries subscriptions open at once (they are not counted in
    /// `max_concurrent_requests`); beyond this, RESOURCE_EXHAUSTED.
    pub max_subscriptions: usize,
    /// A subscription that receives no event for this long is ended with
    /// DEADLINE_EXCEEDED (its client resumes from its last position); 0
    /// for never.
    #[serde(deserialize_with = "duration::deserialize")]
    pub subscription_idle_timeout: Duration,
    /// Bytes of events the proxy holds per subscription for a client that
    /// reads slower than they come; beyond this, it stops reading from the
    /// plugin (the backend keeps the events).
    pub subscription_buffer_bytes: usize,
    /// How long a subscription's buffer may stay full before it is ended
    /// with RESOURCE_EXHAUSTED (the client resumes from its last position).
    #[serde(deserialize_with = "duration::deserialize")]
    pub subscription_stall_timeout: Duration,
    /// Enforce every namespace's `needs.read_rps` / `needs.write_rps` as a
    /// quota (a namespace's `spec.quota.enforce` overrides this either way).
    pub enforce_quotas: bool,
    /// How much of its rate an enforced quota lets a namespace save up and
    /// spend at once (a namespace's `spec.quota.burst` overrides it).
    #[serde(deserialize_with = "duration::deserialize")]
    pub quota_burst: Duration,
    /// Once half of `max_concurrent_requests` are in flight, refuse calls
    /// of a namespace holding more than its share (max / (busy namespaces +
    /// 1)), so that one namespace's flood cannot take every slot.
    pub namespace_fairness: bool,
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
            max_subscriptions: 1024,
            subscription_idle_timeout: Duration::from_secs(300),
            subscription_buffer_bytes: 1024 * 1024,
            subscription_stall_timeout: Duration::from_secs(30),
            enforce_quotas: false,
            quota_burst: Duration::from_secs(1),
            namespace_fairness: true,
        }
    }
}

/// Traces of every call: the proxy's span for the call, the plugin call, and
/// the plugin's spans around its backend calls, one trace per request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC endpoint of a collector, e.g. `http://127.0.0.1:4317`.
    /// Plugins the proxy starts export to it too.
    pub otlp_endpoint: String,
    /// Share of the traces that start at the proxy that are kept, from 0
    /// to 1. A call that carries a W3C `traceparent` follows the caller's
    /// sampling decision instead.
    #[serde(default = "defaults::sampling_ratio")]
    pub sampling_ratio: f64,
    /// `service.name` of the proxy's spans; a plugin's spans carry
    /// `<service_name>-plugin-<plugin name>`.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// More resource attributes of every span, e.g.
    /// `deployment.environment: prod`.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// Longest wait for one export to the collector.
    #[serde(default = "defaults::export_timeout", deserialize_with = "duration::deserialize")]
    pub export_timeout: Duration,
}

/// The PII keyring: a directory of key files `<id>.key` (or one such file),
/// each holding 32 random bytes in base64 (`head -c 32 /dev/urandom |
/// base64`). Keep it readable by the proxy only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    /// The key directory or file. A relative path is resolved against this
    /// file's directory.
    pub keyring: PathBuf,
    /// The key new values are encrypted with; default the highest id. Pin
    /// it while a new key is being copied to every proxy, then move it.
    #[serde(default)]
    pub active_key: Option<u32>,
    /// The key the `hash` action derives its per-namespace keys from;
    /// default the lowest id. Changing it changes every hash.
    #[serde(default)]
    pub hash_key: Option<u32>,
}

/// The admin HTTP listener. On a loopback address it is open to the
/// machine; on any other address it follows the client listener's rules:
/// TLS (with client certificates) when `tls` is configured, and
/// `/metrics` and `/status` only for authenticated proxy administrators
/// (`auth.admins`) and `readers`. `/healthz` and `/readyz` stay open for
/// probes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminHttpConfig {
    /// Address of the listener. Loopback only while no client
    /// authentication is configured (dev mode), as for `listen`.
    pub listen: SocketAddr,
    /// Principal selectors (as in a namespace's `access`) that may read
    /// `/metrics` and `/status` on a non-loopback address, besides
    /// `auth.admins`: a Prometheus server's identity, for example.
    pub readers: Vec<String>,
}

impl Default for AdminHttpConfig {
    fn default() -> Self {
        Self { listen: defaults::admin_listen(), readers: Vec::new() }
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
    pub(super) fn admin_listen() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 9980))
    }
    pub(super) fn sampling_ratio() -> f64 {
        1.0
    }
    pub(super) fn service_name() -> String {
        "prism-proxy".to_owned()
    }
    pub(super) fn export_timeout() -> Duration {
        Duration::from_secs(10)
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
    pub(super) fn tls_reload() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn jwt_algorithms() -> Vec<String> {
        vec!["RS256".to_owned(), "ES256".to_owned()]
    }
    pub(super) fn jwt_leeway() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn jwks_refetch() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn jwks_max_age() -> Duration {
        Duration::from_secs(3600)
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
    /// Every problem found, each located in the file where it can be.
    #[error("config file {} is invalid:\n{}", path.display(), errors.iter().map(|e| format!("  - {}", at(path, e))).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, errors: Vec<SpecError> },
}

/// `file:line:column: field: message`, as compilers write it.
fn at(path: &Path, e: &SpecError) -> String {
    let what = if e.path.is_empty() { e.message.clone() } else { format!("{}: {}", e.path, e.message) };
    match e.line {
        0 => format!("{}: {what}", path.display()),
        line => format!("{}:{line}:{}: {what}", path.display(), e.column),
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it
    /// are resolved against the file's directory. Every problem is
    /// reported, not only the first.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let invalid = |errors| ConfigError::Invalid { path: path.to_owned(), errors };
        let mut config = Self::parse_all(&text).map_err(invalid)?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.base_dir = base.to_owned();
        config.resolve_paths(base);
        config.validate().map_err(|errors| invalid(locate(&text, errors)))?;
        Ok(config)
    }

    /// Parses YAML text without validating it; the errors joined.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_all(text).map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }

    /// Parses YAML text without validating it; every parse error, located.
    pub fn parse_all(text: &str) -> Result<Self, Vec<SpecError>> {
        if text.trim().is_empty() {
            return Err(vec![SpecError {
                path: String::new(),
                line: 0,
                column: 0,
                message: "the file is empty; it needs at least namespaces_dir (or registry) and plugins".to_owned(),
            }]);
        }
        serde_saphyr::from_str(text).map_err(|first| sections::problems(text, &first))
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(dir) = self.namespaces_dir.as_mut()
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = self.tls.as_mut() {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            if let Some(ca) = tls.client_ca.as_mut() {
                resolve(ca);
            }
        }
        if let Some(file) = self.auth.as_mut().and_then(|a| a.jwt.as_mut()).and_then(|j| j.jwks_file.as_mut()) {
            resolve(file);
        }
        if let AuditSink::File(path) = &mut self.audit.sink {
            resolve(path);
        }
        if let Some(pii) = self.pii.as_mut() {
            resolve(&mut pii.keyring);
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
            ("limits.max_subscriptions", l.max_subscriptions),
            ("limits.subscription_buffer_bytes", l.subscription_buffer_bytes),
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
        if l.subscription_stall_timeout.is_zero() {
            errors.push("limits.subscription_stall_timeout: must be above zero".to_owned());
        }
        if l.quota_burst.is_zero() || l.quota_burst > prism_namespace::validate::MAX_QUOTA_BURST {
            errors.push("limits.quota_burst: must be above zero and at most 60s".to_owned());
        }
        self.validate_security(&mut errors);
        if let Some(t) = &self.tracing {
            if !(t.otlp_endpoint.starts_with("http://") || t.otlp_endpoint.starts_with("https://")) {
                errors.push(format!("tracing.otlp_endpoint: {:?} is not an http(s) URL", t.otlp_endpoint));
            }
            if !(0.0..=1.0).contains(&t.sampling_ratio) {
                errors.push(format!("tracing.sampling_ratio: {} is not between 0 and 1", t.sampling_ratio));
            }
            if t.service_name.trim().is_empty() {
                errors.push("tracing.service_name: must not be empty".to_owned());
            }
            if t.export_timeout.is_zero() {
                errors.push("tracing.export_timeout: must be above zero".to_owned());
            }
        }
        if self.admin_http.listen == self.listen && self.listen.port() != 0 {
            errors.push(format!("admin_http.listen: {} is the client listener's address", self.listen));
        }
        for (i, selector) in self.admin_http.readers.iter().enumerate() {
            if let Err(why) = prism_namespace::validate::check_selector(selector) {
                errors.push(format!("admin_http.readers[{i}]: {why}"));
            }
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            errors.push(format!("log.level: {:?} is not one of error, warn, info, debug, trace", self.log.level));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

impl Config {
    fn validate_security(&self, errors: &mut Vec<String>) {
        if let Some(tls) = &self.tls {
            for (field, path) in
                [("tls.cert", Some(&tls.cert)), ("tls.key", Some(&tls.key)), ("tls.client_ca", tls.client_ca.as_ref())]
            {
                if let Some(path) = path
                    && !path.is_file()
                {
                    errors.push(format!("{field}: {} is not a readable file", path.display()));
                }
            }
            if tls.client_auth.is_some() && tls.client_ca.is_none() {
                errors.push("tls.client_auth: needs tls.client_ca to verify client certificates against".to_owned());
            }
            if tls.reload_interval < Duration::from_secs(1) {
                errors.push("tls.reload_interval: must be at least 1s".to_owned());
            }
        }
        let Some(auth) = &self.auth else { return };
        let has_ca = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if matches!(auth.require, Require::Mtls | Require::Both) && !has_ca {
            errors.push("auth.require: client certificates are required but tls.client_ca is not set".to_owned());
        }
        if matches!(auth.require, Require::Jwt | Require::Both) && auth.jwt.is_none() {
            errors.push("auth.require: tokens are required but auth.jwt is not set".to_owned());
        }
        if auth.jwt.is_none() && !has_ca {
            errors.push("auth: set auth.jwt or tls.client_ca; without either nobody can authenticate".to_owned());
        }
        for (i, selector) in auth.admins.iter().enumerate() {
            if let Err(why) = prism_namespace::validate::check_selector(selector) {
                errors.push(format!("auth.admins[{i}]: {why}"));
            }
        }
        if let Some(jwt) = &auth.jwt {
            if jwt.issuer.is_empty() {
                errors.push("auth.jwt.issuer: must not be empty".to_owned());
            }
            if jwt.audiences.is_empty() || jwt.audiences.iter().any(String::is_empty) {
                errors.push("auth.jwt.audiences: list at least one non-empty audience".to_owned());
            }
            if jwt.jwks_url.is_some() && jwt.jwks_file.is_some() {
                errors.push("auth.jwt: set jwks_url or jwks_file, not both".to_owned());
            }
            for url in jwt.jwks_url.iter().chain(jwt.jwks_file.is_none().then_some(&jwt.issuer)) {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    errors.push(format!("auth.jwt: {url:?} is not an http(s) URL"));
                }
            }
            if let Some(file) = &jwt.jwks_file
                && !file.is_file()
            {
                errors.push(format!("auth.jwt.jwks_file: {} is not a readable file", file.display()));
            }
            if jwt.algorithms.is_empty() {
                errors.push("auth.jwt.algorithms: list at least one algorithm".to_owned());
            }
            for alg in &jwt.algorithms {
                if !JWT_ALGORITHMS.contains(&alg.as_str()) {
                    let why = if alg.starts_with("HS") || alg.eq_ignore_ascii_case("none") {
                        "symmetric and unsigned tokens are never accepted"
                    } else {
                        "unknown algorithm"
                    };
                    errors.push(format!("auth.jwt.algorithms: {alg:?}: {why}; use {}", JWT_ALGORITHMS.join(", ")));
                }
            }
            if jwt.leeway > Duration::from_secs(300) {
                errors.push("auth.jwt.leeway: at most 5m".to_owned());
            }
        }
    }
}

mod sections;

/// Semantic errors (`field.path: message`) located at their field in
/// `text` (or its nearest parent) when the file sets it.
fn locate(text: &str, errors: Vec<String>) -> Vec<SpecError> {
    let tree = serde_saphyr::from_str::<Spanned<Node>>(text).ok();
    let sets = |field: &str| {
        let top = field.split(['.', '[']).next().unwrap_or_default();
        matches!(tree.as_ref().map(|t| &t.value), Some(Node::Map(entries)) if entries.iter().any(|(k, _)| k.value == top))
    };
    errors
        .into_iter()
        .map(|e| match (e.split_once(": "), &tree) {
            (Some((field, message)), Some(tree)) if !field.contains(' ') && sets(field) => {
                SpecError::at(tree, field, message)
            }
            (Some((field, message)), _) if !field.contains(' ') => {
                SpecError { path: field.to_owned(), line: 0, column: 0, message: message.to_owned() }
            }
            _ => SpecError { path: String::new(), line: 0, column: 0, message: e },
        })
        .collect()
}

#[cfg(test)]
mod tests;
