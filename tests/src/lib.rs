//! Test harness: start the real `prism-proxy` (which starts real plugin
//! processes) on `127.0.0.1:0`, talk to it over gRPC, inspect its process
//! tree, and stop it with real signals.
//!
//! The binaries are built on first use (see [`bin_path`]), so
//! `cargo nextest run --workspace` is all it takes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a test failure

pub mod otlp;
pub mod pki;
pub mod services;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prism_proto::graph::v1::graph_service_client::GraphServiceClient;
use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::timeseries::v1::time_series_service_client::TimeSeriesServiceClient;
use tonic::transport::{Channel, Endpoint};

/// `target/<profile>/`, the directory of the running test executable's
/// `deps/` folder, where cargo puts the workspace binaries.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).expect("target/<profile> directory").to_owned()
}

/// Builds every workspace binary (and example) once per test run, so the end-to-end tests
/// always start binaries built from the current sources.
///
/// `cargo test` and `cargo nextest run` build test executables but not the
/// binaries of other packages, which these tests spawn. Test processes of
/// one nextest run share `NEXTEST_RUN_ID`; the first builds under a file
/// lock and leaves a stamp, the others wait on the lock and find the stamp.
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = profile_dir();
        let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        let stamp = dir.join(format!(".prism-bins-built-{run}"));
        if stamp.exists() {
            return;
        }
        let lock = std::fs::File::create(dir.join(".prism-bins.lock")).expect("create build lock");
        lock.lock().expect("take build lock");
        if stamp.exists() {
            return;
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let target_dir = dir.parent().expect("target dir");
        let profile = dir.file_name().and_then(|n| n.to_str()).expect("profile name");
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo
            .args(["build", "--workspace", "--bins", "--examples", "--manifest-path"])
            .arg(workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cargo.arg("--release");
            }
            other => {
                cargo.args(["--profile", other]);
            }
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "building the workspace binaries failed");
        for old in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if old.file_name().to_string_lossy().starts_with(".prism-bins-built-") {
                let _ = std::fs::remove_file(old.path());
            }
        }
        std::fs::write(&stamp, b"").expect("write build stamp");
    });
}

/// Path of a workspace binary, built from the current sources.
pub fn bin_path(name: &str) -> PathBuf {
    ensure_built();
    let path = profile_dir().join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Path of a workspace example program (such as the SDK's `minimal_kv`),
/// built from the current sources.
pub fn example_path(name: &str) -> PathBuf {
    ensure_built();
    let path = profile_dir().join("examples").join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Captured log lines of a child process, parsed as JSON where possible.
#[derive(Clone, Default)]
pub struct Logs {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logs {
    /// Reads `stream` on a thread, echoing each line to the test's stderr
    /// (shown when a test fails) and sending JSON lines to `tx`.
    fn capture(
        &self,
        stream: impl std::io::Read + Send + 'static,
        tag: &'static str,
        tx: mpsc::Sender<serde_json::Value>,
    ) {
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{tag}] {line}");
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(value);
                }
                lines.lock().unwrap().push(line);
            }
        });
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The lines that contain every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.lines.lock().unwrap().iter().filter(|l| needles.iter().all(|n| l.contains(n))).cloned().collect()
    }

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// Waits for a JSON log line with message `message` and an `addr` field.
fn wait_for_addr(rx: &mpsc::Receiver<serde_json::Value>, message: &str, timeout: Duration, logs: &Logs) -> SocketAddr {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => {
                let fields = &v["fields"];
                if fields["message"] == message
                    && let Some(addr) = fields["addr"].as_str()
                {
                    return addr.parse().expect("addr field");
                }
            }
            Err(_) => panic!("no {message:?} log line within {timeout:?}; logs:\n{}", logs.text()),
        }
    }
}

/// A proxy configuration under construction.
pub struct ProxyConfig {
    dir: tempfile::TempDir,
    plugins: Vec<String>,
    extra: String,
    default_backend: Option<String>,
    /// Where namespaces come from: the `namespaces_dir` or `registry` line.
    source: String,
    /// Environment of the proxy process (and so of its plugins).
    env: Vec<(String, String)>,
    /// The gRPC listener's address (`127.0.0.1:0`: any free port).
    listen: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyConfig {
    /// An empty config in a fresh temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("namespaces")).unwrap();
        Self {
            dir,
            plugins: Vec::new(),
            extra: String::new(),
            default_backend: None,
            source: "namespaces_dir: namespaces\n".to_owned(),
            env: Vec::new(),
            listen: "127.0.0.1:0".to_owned(),
        }
    }

    /// Listens on this port of 127.0.0.1, so the proxy started again from
    /// this config is at the same address.
    pub fn port(mut self, port: u16) -> Self {
        self.listen = format!("127.0.0.1:{port}");
        self
    }

    /// Sets an environment variable of the proxy process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The usual setup: a `memstore` plugin and a `demo` KeyValue namespace.
    pub fn memstore() -> Self {
        Self::new().plugin("memstore", "command: [prism-plugin-memstore]\npool_size: 2").keyvalue("demo", "memstore")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a plugin entry; `body` is its YAML mapping (indented by us).
    pub fn plugin(mut self, name: &str, body: &str) -> Self {
        let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
        self.plugins.push(format!("  {name}:\n{indented}"));
        self
    }

    pub fn default_backend(mut self, name: &str) -> Self {
        self.default_backend = Some(name.to_owned());
        self
    }

    /// Adds top-level YAML (e.g. a `limits:` block).
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self.extra.push('\n');
        self
    }

    /// Keeps namespaces in a PostgreSQL registry instead of the directory.
    pub fn postgres_registry(mut self, url: &str, schema: &str, resync: &str) -> Self {
        self.source = format!(
            "registry:\n  postgres:\n    url: \"{url}\"\n    schema: {schema}\n    resync_interval: {resync}\n"
        );
        self
    }

    /// The namespace directory (when not using a registry).
    pub fn namespaces_dir(&self) -> PathBuf {
        self.dir.path().join("namespaces")
    }

    /// Writes a namespace file.
    pub fn namespace_file(self, file: &str, yaml: &str) -> Self {
        std::fs::write(self.dir.path().join("namespaces").join(file), yaml).unwrap();
        self
    }

    pub fn keyvalue(self, name: &str, backend: &str) -> Self {
        let yaml = format!(
            "apiVersion: prism/v1\nkind: Namespace\nmetadata: {{name: {name}}}\nspec:\n  pattern: keyvalue\n  backend: {backend}\n"
        );
        self.namespace_file(&format!("{name}.yaml"), &yaml)
    }

    /// Adds a namespace of any pattern; `needs` is a YAML flow mapping body
    /// such as `retention: 1m` (empty for none).
    pub fn pattern_namespace(self, name: &str, pattern: &str, backend: &str, needs: &str) -> Self {
        let needs = if needs.is_empty() { String::new() } else { format!("  needs: {{{needs}}}\n") };
        let yaml = format!(
            "apiVersion: prism/v1\nkind: Namespace\nmetadata: {{name: {name}}}\nspec:\n  pattern: {pattern}\n  backend: {backend}\n{needs}"
        );
        self.namespace_file(&format!("{name}.yaml"), &yaml)
    }

    /// Writes `prism.yaml` and returns its path.
    pub fn write(&self) -> PathBuf {
        let mut text = format!(
            "listen: {}\nadmin_http: {{listen: \"127.0.0.1:0\"}}\nshutdown_grace: 5s\nlog: {{format: json, level: info}}\n",
            self.listen
        );
        text.push_str(&self.source);
        if let Some(d) = &self.default_backend {
            text.push_str(&format!("default_backend: {d}\n"));
        }
        text.push_str("plugins:\n");
        for p in &self.plugins {
            text.push_str(p);
        }
        text.push_str(&self.extra);
        let path = self.dir.path().join("prism.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts a proxy with this config and waits until it listens.
    pub fn start(self) -> Proxy {
        Proxy::start(self)
    }
}

/// A running `prism-proxy` process.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    /// The admin HTTP listener (`/metrics`, `/readyz`, ...).
    pub admin_addr: SocketAddr,
    pub logs: Logs,
    // Keeps the config directory alive while the proxy runs.
    config: Option<ProxyConfig>,
}

impl Proxy {
    fn start(config: ProxyConfig) -> Self {
        let path = config.write();
        let mut proxy = Self::start_with_env(&path, &config.env);
        proxy.config = Some(config);
        proxy
    }

    /// Starts a proxy from any config file. The file should set
    /// `listen: 127.0.0.1:0`, `admin_http: {listen: 127.0.0.1:0}` and
    /// `log: {format: json}`.
    pub fn start_file(path: &Path) -> Self {
        Self::start_with_env(path, &[])
    }

    fn start_with_env(path: &Path, env: &[(String, String)]) -> Self {
        let mut child = Command::new(bin_path("prism-proxy"))
            .arg("--config")
            .arg(path)
            .env("PRISM_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            // Its own process group, like a shell's job: a test can signal
            // the group as a terminal's Ctrl-C does.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prism-proxy");
        let logs = Logs::default();
        let (tx, rx) = mpsc::channel();
        logs.capture(child.stderr.take().unwrap(), "proxy", tx);
        let admin_addr = wait_for_addr(&rx, "admin http listening", Duration::from_secs(60), &logs);
        let addr = wait_for_addr(&rx, "listening", Duration::from_secs(60), &logs);
        Self { child, addr, admin_addr, logs, config: None }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR` of the admin HTTP listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.endpoint()).unwrap().connect().await.expect("connect to proxy")
    }

    pub async fn kv(&self) -> KeyValueServiceClient<Channel> {
        KeyValueServiceClient::new(self.channel().await)
    }

    pub async fn ts(&self) -> TimeSeriesServiceClient<Channel> {
        TimeSeriesServiceClient::new(self.channel().await)
    }

    pub async fn graph(&self) -> GraphServiceClient<Channel> {
        GraphServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> prism_proto::admin::v1::admin_service_client::AdminServiceClient<Channel> {
        prism_proto::admin::v1::admin_service_client::AdminServiceClient::new(self.channel().await)
    }

    /// The config directory this proxy was started from, if the harness
    /// wrote it.
    /// Stops the proxy and hands back its config (and directory), to start
    /// it again.
    pub fn stop(mut self) -> Option<ProxyConfig> {
        self.terminate(Duration::from_secs(20));
        self.config.take()
    }

    /// Kills the proxy with SIGKILL (no drain, no cleanup) and gives back
    /// its config, to start it again.
    pub fn kill(mut self) -> Option<ProxyConfig> {
        self.signal(Signal::SIGKILL);
        self.wait(Duration::from_secs(10)).expect("proxy did not exit after SIGKILL");
        self.config.take()
    }

    pub fn config(&self) -> Option<&ProxyConfig> {
        self.config.as_ref()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Process ids of the proxy's live child processes named `name`.
    pub fn children(&self, name: &str) -> Vec<u32> {
        children_of(self.pid()).into_iter().filter(|pid| comm(*pid).as_deref() == Some(truncate_comm(name))).collect()
    }

    /// Waits until exactly one child named `name` runs and returns its pid.
    pub fn wait_child(&self, name: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let [pid] = self.children(name)[..] {
                return pid;
            }
            assert!(Instant::now() < deadline, "no single {name} child within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait(timeout).expect("proxy did not exit after SIGTERM")
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Plugins exit by themselves when the proxy's end of their stdin
        // closes, so killing the proxy cleans up the whole tree.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends a signal to any process.
pub fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap();
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
                // Fields after the command name (which may hold spaces).
                let rest = stat.rsplit_once(')')?.1;
                let mut fields = rest.split_whitespace();
                let state = fields.next()?;
                let ppid: u32 = fields.next()?.parse().ok()?;
                Some(ppid == parent && state != "Z")
            }) == Some(true)
        })
        .collect()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_owned())
}

/// The kernel keeps only 15 bytes of a process name.
fn truncate_comm(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// A plugin binary run on its own at a TCP address, as a container would.
pub struct PluginProcess {
    child: Child,
    pub addr: SocketAddr,
    pub logs: Logs,
}

impl PluginProcess {
    /// Starts `binary --listen 127.0.0.1:0` and waits until it listens.
    pub fn start_tcp(binary: &str) -> Self {
        let mut child = Command::new(bin_path(binary))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start plugin");
        let logs = Logs::default();
        let (tx, rx) = mpsc::channel();
        logs.capture(child.stderr.take().unwrap(), "plugin", tx);
        let addr = wait_for_addr(&rx, "listening", Duration::from_secs(30), &logs);
        Self { child, addr, logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
