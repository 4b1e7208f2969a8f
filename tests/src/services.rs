//! Real backend servers for tests: the shared ones on their standard
//! loopback ports, and private ones a test starts (and may stop) itself.
//!
//! A test that needs a server calls [`require`] first. Under `CI=true` a
//! missing server fails the test; elsewhere the test is skipped with a
//! message saying what to start.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The servers the test suite uses on this machine.
pub const POSTGRES: (&str, &str) = ("PostgreSQL", "127.0.0.1:5432");
pub const REDIS: (&str, &str) = ("Redis", "127.0.0.1:6379");
pub const NATS: (&str, &str) = ("NATS", "127.0.0.1:4222");

/// `postgres://` URL of the shared PostgreSQL (override with
/// `PRISM_TEST_POSTGRES_URL`).
pub fn postgres_url() -> String {
    std::env::var("PRISM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn skip_or_fail(what: &str, hint: &str) -> bool {
    assert!(!in_ci(), "{what}; CI=true requires it ({hint})");
    eprintln!("SKIPPED: {what} ({hint}); this test did not run");
    println!("SKIPPED: {what}");
    false
}

/// Whether `server = (name, addr)` accepts connections. See the module
/// docs for what happens when it does not.
pub fn require((name, addr): (&str, &str)) -> bool {
    let sock: SocketAddr = addr.parse().expect("socket address");
    if TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_ok() {
        return true;
    }
    skip_or_fail(&format!("{name} is not reachable at {addr}"), &format!("start {name} on {addr}"))
}

/// Drops a PostgreSQL schema a test created, with everything in it.
pub async fn drop_postgres_schema(schema: &str) {
    let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await.expect("drop schema");
}

/// The path of a server program, if installed (same rules as [`require`]).
pub fn require_program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip_or_fail(&format!("{name} is not installed"), "install its Debian package");
    }
    found
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn wait_listening(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A server process owned by one test, on its own port.
pub struct PrivateServer {
    program: PathBuf,
    args: Vec<String>,
    pub port: u16,
    child: Option<Child>,
}

impl PrivateServer {
    /// A `redis-server` keeping nothing on disk.
    pub fn redis(program: &Path, port: u16, dir: &Path) -> Self {
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([dir.display().to_string()])
            .collect();
        Self { program: program.to_owned(), args, port, child: None }
    }

    /// A `nats-server` with JetStream storing into `dir`.
    pub fn nats(program: &Path, port: u16, dir: &Path) -> Self {
        let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([dir.display().to_string()])
            .collect();
        Self { program: program.to_owned(), args, port, child: None }
    }

    /// A three-node `nats-server` cluster with JetStream, each node storing
    /// into its own directory under `dir`. The first node's client port is
    /// `servers[0].port`; `monitor` is each node's HTTP monitoring port.
    pub fn nats_cluster(program: &Path, dir: &Path) -> Vec<(Self, u16)> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        (0..3)
            .map(|i| {
                let (port, monitor) = (free_port(), free_port());
                let store = dir.join(format!("n{i}"));
                let args = [
                    "-a".to_owned(),
                    "127.0.0.1".to_owned(),
                    "-p".to_owned(),
                    port.to_string(),
                    "-m".to_owned(),
                    monitor.to_string(),
                    "-n".to_owned(),
                    format!("n{i}"),
                    "-js".to_owned(),
                    "-sd".to_owned(),
                    store.display().to_string(),
                    "--cluster_name".to_owned(),
                    "prism-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".to_owned(),
                    route_list.clone(),
                ]
                .to_vec();
                (Self { program: program.to_owned(), args, port, child: None }, monitor)
            })
            .collect()
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        self.child = Some(child);
        assert!(
            wait_listening(self.port, Duration::from_secs(20)),
            "{} did not listen on {}",
            self.program.display(),
            self.port
        );
    }

    /// The server's process id, while it runs (to pause it with SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}
