//! Starting, watching and stopping plugins.
//!
//! One task per plugin. For a `command:` plugin it spawns the process on a
//! fresh Unix socket, connects, initializes it and prepares its namespaces,
//! then watches both the process and its health: a plugin that exits is
//! restarted with exponential backoff, and one that stops answering health
//! checks is killed and restarted. For an `address:` plugin it only
//! connects and watches health, reconnecting with backoff.
//!
//! Readiness is published through [`Plugin::set_phase`], which the request
//! path reads without locks; calls made while a plugin is down fail at once
//! with UNAVAILABLE instead of waiting on a dead socket.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use futures::TryStreamExt;
use prism_proto::error_chain;
use prism_proto::plugin::v1::lifecycle_client::LifecycleClient;
use prism_proto::plugin::v1::{
    DrainRequest, HealthRequest, InitializeRequest, NamespaceSettings, PrepareNamespaceRequest, ProtocolVersion,
    health_response,
};
use prism_proto::wire::{self, flags};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Connection, Phase, Plugin, Pool, Target};
use crate::config::PluginTransport;

/// The namespaces a plugin must have prepared, given its name.
pub type NamespaceSource = Arc<dyn Fn(&str) -> Vec<NamespaceSettings> + Send + Sync>;

/// The environment of a plugin the proxy starts, given its name.
pub type PluginEnv = Arc<dyn Fn(&str) -> Vec<(String, String)> + Send + Sync>;

/// A plugin that stayed up this long is considered stable: its next crash
/// restarts after the shortest backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Consecutive failed health checks before a plugin counts as hung (and a
/// `command:` plugin is killed and restarted).
const MAX_MISSED_HEALTH: u32 = 3;

pub struct Supervisor {
    /// Private directory (mode 0700) holding the plugins' sockets.
    pub socket_dir: PathBuf,
    /// Working directory of `command:` plugins (the config file's).
    pub work_dir: PathBuf,
    pub namespaces: NamespaceSource,
    /// Environment of the plugins it starts, by plugin name: log format,
    /// trace export (`crate::logging::plugin_env`).
    pub env: PluginEnv,
    pub stop: CancellationToken,
}

/// Why a plugin could not be started, connected or made ready.
#[derive(Debug, thiserror::Error)]
pub enum StartFailure {
    #[error("command is empty")]
    EmptyCommand,
    #[error("cannot run {program}: {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("exited during start ({0})")]
    Exited(String),
    #[error("did not become ready within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("cannot connect to {target}: {source}")]
    Socket { target: Target, source: std::io::Error },
    #[error("cannot connect to {target}: {}", error_chain(source))]
    Connect { target: Target, source: tonic::transport::Error },
    #[error("initialize failed: {}", .0.message())]
    Initialize(tonic::Status),
    #[error("plugin speaks protocol version {0}, the proxy speaks {PROTOCOL}", PROTOCOL = ProtocolVersion::ProtocolVersion1 as i32)]
    Protocol(i32),
    #[error("preparing namespace {namespace} failed: {}", status.message())]
    Prepare { namespace: String, status: tonic::Status },
}

enum Check {
    Healthy,
    Unhealthy(String),
    Unreachable(String),
}

fn backoff(plugin: &Plugin) -> impl Iterator<Item = Duration> {
    let c = plugin.config();
    backon::ExponentialBuilder::new()
        .with_min_delay(c.restart_backoff_min)
        .with_max_delay(c.restart_backoff_max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The executable a plugin `command` runs: a bare name next to
/// `prism-proxy` first (how a release ships its plugins), else on `PATH`;
/// a path as written. `None` when there is no such executable file.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if !program.contains('/')
        && let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent)
    {
        let sibling = dir.join(program);
        if sibling.is_file() {
            return Some(sibling);
        }
    }
    which::which(program).ok()
}

fn resolve_program(program: &str) -> PathBuf {
    // Not found: spawning it gives the OS's own error, reported as usual.
    find_program(program).unwrap_or_else(|| PathBuf::from(program))
}

impl Supervisor {
    /// Supervises `plugin` until the stop token fires, then stops it.
    pub async fn run(self: Arc<Self>, plugin: Arc<Plugin>) {
        if plugin.config().command.is_some() {
            self.run_command(&plugin).await;
        } else {
            self.run_address(&plugin).await;
        }
        plugin.set_phase(Phase::Stopped);
    }

    /// Sleeps for `delay`; returns true if asked to stop meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            () = self.stop.cancelled() => true,
        }
    }

    async fn run_command(&self, plugin: &Plugin) {
        let mut delays = backoff(plugin);
        let mut generation = 0u64;
        loop {
            generation += 1;
            let socket = self.socket_dir.join(format!("{}-{generation}.sock", plugin.name()));
            let started = Instant::now();
            let (mut child, stdin) = match self.spawn(plugin, &socket) {
                Ok(spawned) => spawned,
                Err(reason) => {
                    tracing::error!(plugin = plugin.name(), %reason, "cannot start plugin");
                    plugin.set_phase(Phase::Down(reason.to_string()));
                    if self.pause(delays.next().unwrap_or(Duration::from_secs(1))).await {
                        return;
                    }
                    continue;
                }
            };
            let pid = child.id();
            tracing::info!(plugin = plugin.name(), pid, socket = %socket.display(), "plugin process started");

            let timeout = plugin.config().start_timeout;
            let established = tokio::select! {
                r = tokio::time::timeout(timeout, self.establish(plugin, Target::Unix(socket.clone()), pid)) => {
                    r.unwrap_or(Err(StartFailure::Timeout(timeout)))
                }
                status = child.wait() => Err(StartFailure::Exited(describe_exit(status))),
                () = self.stop.cancelled() => {
                    stop_process(plugin, child, stdin, None).await;
                    return;
                }
            };

            let reason = match established {
                Ok(conn) => {
                    let stopped = self.monitor(plugin, conn.clone(), Some(&mut child)).await;
                    match stopped {
                        None => {
                            plugin.set_phase(Phase::Stopped);
                            stop_process(plugin, child, stdin, Some(conn)).await;
                            let _ = std::fs::remove_file(&socket);
                            return;
                        }
                        Some(reason) => reason,
                    }
                }
                Err(failure) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    failure.to_string()
                }
            };
            drop(stdin);
            let _ = std::fs::remove_file(&socket);
            plugin.count_restart();
            if started.elapsed() >= STABLE_AFTER {
                delays = backoff(plugin);
            }
            let delay = delays.next().unwrap_or(plugin.config().restart_backoff_max);
            tracing::warn!(
                plugin = plugin.name(),
                %reason,
                restart_in = ?round_ms(delay),
                "plugin down; restarting"
            );
            plugin.set_phase(Phase::Down(reason));
            if self.pause(delay).await {
                return;
            }
        }
    }

    async fn run_address(&self, plugin: &Plugin) {
        let Some(addr) = plugin.config().address.clone() else { return };
        let mut delays = backoff(plugin);
        loop {
            let timeout = plugin.config().start_timeout;
            let established = tokio::select! {
                r = tokio::time::timeout(timeout, self.establish(plugin, Target::Tcp(addr.clone()), None)) => {
                    r.unwrap_or(Err(StartFailure::Timeout(timeout)))
                }
                () = self.stop.cancelled() => return,
            };
            let reason = match established {
                Ok(conn) => {
                    delays = backoff(plugin);
                    match self.monitor(plugin, conn, None).await {
                        None => return,
                        Some(reason) => reason,
                    }
                }
                Err(failure) => failure.to_string(),
            };
            let delay = delays.next().unwrap_or(plugin.config().restart_backoff_max);
            tracing::warn!(plugin = plugin.name(), %addr, %reason, retry_in = ?round_ms(delay), "plugin unreachable");
            plugin.set_phase(Phase::Down(format!("{addr}: {reason}")));
            if self.pause(delay).await {
                return;
            }
        }
    }

    fn spawn(&self, plugin: &Plugin, socket: &Path) -> Result<(Child, Option<ChildStdin>), StartFailure> {
        let argv = plugin.config().command.as_deref().unwrap_or_default();
        let Some((program, args)) = argv.split_first() else {
            return Err(StartFailure::EmptyCommand);
        };
        let program = resolve_program(program);
        let mut child = Command::new(&program)
            .args(args)
            .arg(flags::long(flags::SOCKET))
            .arg(socket)
            // The plugin exits when this pipe closes, so it never outlives
            // the proxy, even one killed with SIGKILL.
            .arg(flags::long(flags::EXIT_ON_STDIN_EOF))
            .envs((self.env)(plugin.name()))
            .envs(&plugin.config().env)
            .current_dir(&self.work_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            // Its own process group: Ctrl-C in a terminal signals the
            // terminal's group, and the plugins must wait for the proxy to
            // drain them rather than stop under it.
            .process_group(0)
            .spawn()
            .map_err(|source| StartFailure::Spawn { program: program.clone(), source })?;
        let stdin = child.stdin.take();
        Ok((child, stdin))
    }

    /// Connects, initializes, and prepares namespaces. A namespace that
    /// cannot be prepared yet (backend down) leaves the plugin unhealthy;
    /// the monitor retries.
    async fn establish(
        &self,
        plugin: &Plugin,
        target: Target,
        pid: Option<u32>,
    ) -> Result<Arc<Connection>, StartFailure> {
        let size = plugin.config().pool_size;
        if let Target::Unix(socket) = &target {
            // A process just started: wait until it accepts, not only until
            // its socket file exists (the start timeout bounds the wait).
            wire::wait_accepting(socket, plugin.config().start_timeout)
                .await
                .map_err(|source| StartFailure::Socket { target: target.clone(), source })?;
        }
        let pool = Pool::connect(&target, size, Duration::from_secs(2))
            .await
            .map_err(|source| StartFailure::Connect { target: target.clone(), source })?;
        let mut lifecycle = LifecycleClient::new(pool.channel());
        let info = lifecycle
            .initialize(InitializeRequest {
                protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
                instance: plugin.name().to_owned(),
                config_json: config_json(plugin),
            })
            .await
            .map_err(StartFailure::Initialize)?
            .into_inner();
        if info.protocol_version != ProtocolVersion::ProtocolVersion1 as i32 {
            return Err(StartFailure::Protocol(info.protocol_version));
        }
        tracing::info!(plugin = plugin.name(), backend = %info.backend, version = %info.version, %target, "plugin initialized");
        let mut pool = pool;
        if plugin.config().transport == PluginTransport::Multiplex {
            pool.open_streams(prism_proto::wire::MAX_MESSAGE_BYTES).await;
        }
        let conn = Arc::new(Connection { pool, info, pid, target });
        // Under the prepare lock: a route published meanwhile is either in
        // the table read here, or is prepared by its publisher once this
        // plugin shows as connected.
        let _prepare = plugin.prepare_lock.lock().await;
        match self.prepare_all(plugin, &conn).await {
            Ok(()) => plugin.set_phase(Phase::Ready(conn.clone())),
            Err(failure) => plugin.set_phase(Phase::Unhealthy(conn.clone(), failure.to_string())),
        }
        Ok(conn)
    }

    async fn prepare_all(&self, plugin: &Plugin, conn: &Connection) -> Result<(), StartFailure> {
        let lifecycle = LifecycleClient::new(conn.pool.channel());
        futures::stream::iter((self.namespaces)(plugin.name()).into_iter().map(Ok))
            .try_for_each_concurrent(super::PREPARE_CONCURRENCY, |settings| {
                let mut lifecycle = lifecycle.clone();
                async move {
                    let namespace = settings.name.clone();
                    lifecycle
                        .prepare_namespace(PrepareNamespaceRequest { settings: Some(settings) })
                        .await
                        .map(drop)
                        .map_err(|status| StartFailure::Prepare { namespace, status })
                }
            })
            .await
    }

    async fn check(&self, plugin: &Plugin, conn: &Connection) -> Check {
        let timeout = plugin.config().health_interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
        let mut lifecycle = LifecycleClient::new(conn.pool.channel());
        match tokio::time::timeout(timeout, lifecycle.health(HealthRequest {})).await {
            Err(_) => Check::Unreachable("health check timed out".to_owned()),
            Ok(Err(status)) => Check::Unreachable(format!("health check failed: {}", status.message())),
            Ok(Ok(r)) => {
                let r = r.into_inner();
                if r.status == health_response::Status::Serving as i32 {
                    Check::Healthy
                } else {
                    Check::Unhealthy(r.message)
                }
            }
        }
    }

    /// Watches a connected plugin. Returns `None` when asked to stop, or
    /// why the plugin is gone.
    async fn monitor(&self, plugin: &Plugin, conn: Arc<Connection>, mut child: Option<&mut Child>) -> Option<String> {
        let mut tick = tokio::time::interval(plugin.config().health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut missed = 0;
        loop {
            let exited = async {
                match child.as_deref_mut() {
                    Some(c) => describe_exit(c.wait().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return None,
                how = exited => return Some(format!("process exited ({how})")),
                _ = tick.tick() => {}
            }
            let was_serving = matches!(plugin.phase(), Phase::Ready(_));
            match self.check(plugin, &conn).await {
                Check::Healthy => {
                    missed = 0;
                    if !was_serving {
                        // Coming back from unhealthy: the plugin may have lost
                        // its namespaces (an address plugin that restarted), so
                        // initialize and prepare again; both are idempotent.
                        match self.resync(plugin, &conn).await {
                            Ok(()) => set_healthy(plugin, &conn),
                            Err(failure) => plugin.set_phase(Phase::Unhealthy(conn.clone(), failure.to_string())),
                        }
                    }
                }
                Check::Unhealthy(reason) => {
                    missed = 0;
                    if was_serving {
                        tracing::warn!(plugin = plugin.name(), %reason, "plugin unhealthy");
                    }
                    // A plugin restarted behind an address reports itself
                    // uninitialized: resync right away.
                    if self.resync(plugin, &conn).await.is_ok()
                        && matches!(self.check(plugin, &conn).await, Check::Healthy)
                    {
                        set_healthy(plugin, &conn);
                    } else {
                        plugin.set_phase(Phase::Unhealthy(conn.clone(), reason));
                    }
                }
                Check::Unreachable(reason) => {
                    missed += 1;
                    tracing::warn!(plugin = plugin.name(), %reason, missed, "plugin missed a health check");
                    if missed >= MAX_MISSED_HEALTH {
                        if let Some(c) = child.as_deref_mut() {
                            // Hung: kill it; the exit is reported on the next loop.
                            let _ = c.start_kill();
                        } else {
                            return Some(reason);
                        }
                    }
                }
            }
        }
    }

    async fn resync(&self, plugin: &Plugin, conn: &Connection) -> Result<(), StartFailure> {
        let mut lifecycle = LifecycleClient::new(conn.pool.channel());
        lifecycle
            .initialize(InitializeRequest {
                protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
                instance: plugin.name().to_owned(),
                config_json: config_json(plugin),
            })
            .await
            .map_err(StartFailure::Initialize)?;
        let _prepare = plugin.prepare_lock.lock().await;
        self.prepare_all(plugin, conn).await
    }
}

/// Marks a connected plugin ready again after it was unhealthy.
fn set_healthy(plugin: &Plugin, conn: &Arc<Connection>) {
    tracing::info!(plugin = plugin.name(), "plugin healthy");
    plugin.set_phase(Phase::Ready(conn.clone()));
}

/// Drains and stops a plugin process: Drain, then close its stdin (the SDK
/// stops serving), then SIGKILL if it has not exited within the drain
/// timeout.
async fn stop_process(plugin: &Plugin, mut child: Child, stdin: Option<ChildStdin>, conn: Option<Arc<Connection>>) {
    let timeout = plugin.config().drain_timeout;
    if let Some(conn) = conn {
        let mut lifecycle = LifecycleClient::new(conn.pool.channel());
        let deadline_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        if let Err(e) = tokio::time::timeout(timeout, lifecycle.drain(DrainRequest { deadline_ms })).await {
            tracing::warn!(plugin = plugin.name(), error = %e, "drain did not finish in time");
        }
    }
    drop(stdin);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => tracing::info!(plugin = plugin.name(), exit = %describe_exit(status), "plugin stopped"),
        Err(_) => {
            tracing::warn!(plugin = plugin.name(), "plugin did not stop in time; killing it");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// The plugin's `config:` block as JSON; an absent block is an empty object.
fn config_json(plugin: &Plugin) -> String {
    match &plugin.config().config {
        serde_json::Value::Null => "{}".to_owned(),
        value => value.to_string(),
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}
