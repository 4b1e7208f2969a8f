//! The backend plugins behind the real proxy: the same calls give the same
//! answers on every backend, and a backend that is down (at start, or
//! later) gives UNAVAILABLE naming it, then recovers by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::Path;
use std::time::Duration;

use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchPutRequest, DeleteRequest, GetRequest, PutItem, PutRequest, ScanRequest,
};
use prism_tests::services::{self, NATS, POSTGRES, PrivateServer, REDIS};
use prism_tests::{Proxy, ProxyConfig, eventually};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Kv = KeyValueServiceClient<Channel>;

fn put(ns: &str, key: &str, value: &[u8]) -> PutRequest {
    PutRequest { namespace: ns.into(), key: key.into(), value: value.to_vec().into(), ..Default::default() }
}

/// `label: <what the call returned>`, or `label: <status code>`.
fn outcome<T>(label: &str, r: Result<tonic::Response<T>, Status>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(r) => format!("{label}: {}", ok(r.into_inner())),
        Err(s) => format!("{label}: {:?}", s.code()),
    }
}

/// Runs one client script against a namespace and returns what it saw,
/// with versions replaced by their order so backends can be compared.
async fn transcript(kv: &mut Kv, ns: &str, run: &str) -> Vec<String> {
    let k = |name: &str| format!("{run}/{name}");
    let get = |key: String| GetRequest { namespace: ns.into(), key };
    let del = |key: String, if_version| DeleteRequest { namespace: ns.into(), key, if_version };
    let mut t = Vec::new();
    let v1 = kv.put(put(ns, &k("a"), b"one")).await.unwrap().into_inner().version;
    let v2 = kv.put(put(ns, &k("a"), b"two")).await.unwrap().into_inner().version;
    t.push(format!("overwrite grows version: {}", v2 > v1));
    t.push(outcome("get a", kv.get(get(k("a"))).await, |r| {
        format!("{} {:?} current={}", r.found, r.value, r.version == v2)
    }));
    t.push(outcome("get missing", kv.get(get(k("missing"))).await, |r| r.found.to_string()));

    let mut create = put(ns, &k("b"), b"x");
    create.if_version = Some(0);
    let vb = kv.put(create.clone()).await.unwrap().into_inner().version;
    t.push(outcome("create again", kv.put(create).await, |_| "ok".into()));
    let mut stale = put(ns, &k("b"), b"y");
    stale.if_version = Some(vb + 1_000_000);
    t.push(outcome("stale cas", kv.put(stale).await, |_| "ok".into()));
    let mut fresh = put(ns, &k("b"), b"z");
    fresh.if_version = Some(vb);
    let vb2 = kv.put(fresh).await.unwrap().into_inner().version;
    t.push(format!("cas grows version: {}", vb2 > vb));
    t.push(outcome("stale delete", kv.delete(del(k("b"), Some(vb))).await, |r| r.deleted.to_string()));
    t.push(outcome("delete", kv.delete(del(k("b"), None)).await, |r| r.deleted.to_string()));
    t.push(outcome("delete again", kv.delete(del(k("b"), None)).await, |r| r.deleted.to_string()));

    let items = ["c", "d", "e"]
        .iter()
        .map(|n| PutItem { key: k(n), value: n.as_bytes().to_vec().into(), ttl_seconds: 0 })
        .collect();
    let versions = kv.batch_put(BatchPutRequest { namespace: ns.into(), items }).await.unwrap().into_inner().versions;
    t.push(format!("batch versions grow: {}", versions.windows(2).all(|w| w[0] < w[1])));
    let keys = vec![k("e"), k("nope"), k("c")];
    t.push(outcome("batch get", kv.batch_get(BatchGetRequest { namespace: ns.into(), keys }).await, |r| {
        format!("{:?}", r.items.iter().map(|i| (i.found, i.value.to_vec())).collect::<Vec<_>>())
    }));

    t.push(outcome("empty key", kv.put(put(ns, "", b"v")).await, |_| "ok".into()));
    t.push(outcome("empty value", kv.put(put(ns, &k("f"), b"")).await, |_| "ok".into()));
    t.push(outcome("oversize", kv.put(put(ns, &k("g"), &vec![0u8; 1024 * 1024 + 1])).await, |_| "ok".into()));
    t
}

/// The parts that depend on declared capabilities: scans and TTL.
async fn optional_transcript(kv: &mut Kv, ns: &str, run: &str) -> Vec<String> {
    let scan = ScanRequest { namespace: ns.into(), prefix: format!("{run}/"), page_size: 2, page_token: String::new() };
    let mut t = vec![outcome("scan page", kv.scan(scan).await, |r| {
        format!(
            "{:?} more={}",
            r.items.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            !r.next_page_token.is_empty()
        )
    })];
    let mut ttl = put(ns, &format!("{run}/ttl"), b"v");
    ttl.ttl_seconds = 30;
    t.push(outcome("ttl put", kv.put(ttl).await, |_| "ok".into()));
    t
}

fn copy_example(to: &Path) -> std::path::PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/config/examples/all-backends");
    std::fs::create_dir_all(to.join("namespaces")).unwrap();
    for entry in std::fs::read_dir(example.join("namespaces")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("namespaces").join(entry.file_name())).unwrap();
    }
    let text = std::fs::read_to_string(example.join("prism.yaml")).unwrap();
    assert!(text.contains("listen: 127.0.0.1:8980") && text.contains("format: text"));
    let text = text
        .replace("listen: 127.0.0.1:8980", "listen: 127.0.0.1:0\nadmin_http: {listen: \"127.0.0.1:0\"}")
        .replace("format: text", "format: json");
    let path = to.join("prism.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn same_calls_same_answers_on_every_backend() {
    if !(services::require(POSTGRES) & services::require(REDIS) & services::require(NATS)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_file(&copy_example(dir.path()));
    let mut kv = proxy.kv().await;
    // Keys unique to this run: the shared servers may hold other runs' data.
    let run = format!("run-{}", std::process::id());

    let mut transcripts = Vec::new();
    for backend in ["memstore", "sqlite", "postgres", "redis", "nats"] {
        let ns = format!("kv-{backend}");
        transcripts.push((
            backend,
            transcript(&mut kv, &ns, &run).await,
            optional_transcript(&mut kv, &ns, &run).await,
        ));
    }
    let (_, reference, reference_optional) = &transcripts[0];
    assert!(reference.iter().any(|l| l == "create again: Aborted"), "{reference:#?}");
    assert!(reference.iter().any(|l| l == "oversize: InvalidArgument"), "{reference:#?}");
    for (backend, t, optional) in &transcripts {
        assert_eq!(t, reference, "{backend} answers differently from memstore");
        if *backend == "nats" {
            // Declared: no ordered scans and no TTL, refused cleanly.
            assert_eq!(optional, &["scan page: Unimplemented", "ttl put: Unimplemented"], "nats");
        } else {
            assert_eq!(optional, reference_optional, "{backend} scans or TTL differ from memstore");
        }
    }
    assert_eq!(reference_optional[0], format!("scan page: [\"{run}/a\", \"{run}/c\"] more=true"));
    assert!(reference.iter().any(|l| l == "stale cas: Aborted"), "{reference:#?}");

    // Durable data lives on: the sqlite file sits next to the config.
    assert!(dir.path().join("data/prism.sqlite3").is_file());
    for backend in ["postgres", "redis", "nats", "sqlite"] {
        for key in ["a", "c", "d", "e", "ttl"] {
            let _ = kv
                .delete(DeleteRequest {
                    namespace: format!("kv-{backend}"),
                    key: format!("{run}/{key}"),
                    if_version: None,
                })
                .await;
        }
    }
}

/// Starts a proxy with one plugin of `backend` configured by `config_yaml`.
fn proxy_with(backend: &str, config_yaml: &str) -> Proxy {
    ProxyConfig::new()
        .plugin(
            backend,
            &format!(
                "command: [prism-plugin-{backend}]\nhealth_interval: 200ms\nrestart_backoff_min: 100ms\nrestart_backoff_max: 500ms\nconfig:\n{config_yaml}"
            ),
        )
        .keyvalue("data", backend)
        .start()
}

async fn put_works(kv: &Kv) -> bool {
    kv.clone().put(put("data", "k", b"v")).await.is_ok()
}

async fn unavailable_naming(kv: &Kv, name: &str) -> bool {
    matches!(kv.clone().put(put("data", "k", b"v")).await,
        Err(e) if e.code() == Code::Unavailable && e.message().contains(name))
}

#[tokio::test]
async fn redis_outage_gives_unavailable_and_recovers() {
    let Some(program) = services::require_program("redis-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateServer::redis(&program, services::free_port(), dir.path());
    redis.start();
    let proxy = proxy_with("redis", &format!("  url: redis://127.0.0.1:{}\n  response_timeout_ms: 500", redis.port));
    let kv = proxy.kv().await;
    assert!(put_works(&kv).await);

    redis.stop();
    assert!(
        eventually(Duration::from_secs(10), || unavailable_naming(&kv, "redis")).await,
        "no UNAVAILABLE naming redis"
    );
    assert!(eventually(Duration::from_secs(5), || async { proxy.logs.contains("plugin unhealthy") }).await);

    redis.start();
    assert!(eventually(Duration::from_secs(20), || put_works(&kv)).await, "no recovery after redis came back");
    assert!(eventually(Duration::from_secs(5), || async { proxy.logs.contains("plugin healthy") }).await);
}

#[tokio::test]
async fn redis_down_at_start_recovers_when_it_comes_up() {
    let Some(program) = services::require_program("redis-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateServer::redis(&program, services::free_port(), dir.path());
    let proxy = proxy_with("redis", &format!("  url: redis://127.0.0.1:{}\n  connect_timeout_ms: 300", redis.port));
    let kv = proxy.kv().await;
    let err = kv.clone().put(put("data", "k", b"v")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&format!("redis at 127.0.0.1:{} unreachable", redis.port)), "{}", err.message());
    quiet_while_down(&proxy).await;

    redis.start();
    assert!(eventually(Duration::from_secs(20), || put_works(&kv)).await, "no recovery after redis came up");
}

#[tokio::test]
async fn nats_outage_gives_unavailable_and_recovers_with_data() {
    let Some(program) = services::require_program("nats-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = PrivateServer::nats(&program, services::free_port(), dir.path());
    nats.start();
    let proxy = proxy_with("nats", &format!("  url: nats://127.0.0.1:{}\n  request_timeout_ms: 500", nats.port));
    let kv = proxy.kv().await;
    let version = kv.clone().put(put("data", "kept", b"v")).await.unwrap().into_inner().version;

    nats.stop();
    assert!(
        eventually(Duration::from_secs(10), || unavailable_naming(&kv, "nats")).await,
        "no UNAVAILABLE naming nats"
    );
    assert!(eventually(Duration::from_secs(5), || async { proxy.logs.contains("plugin unhealthy") }).await);

    nats.start();
    assert!(eventually(Duration::from_secs(30), || put_works(&kv)).await, "no recovery after nats came back");
    // JetStream file storage kept the data across the server restart.
    let got = kv.clone().get(GetRequest { namespace: "data".into(), key: "kept".into() }).await.unwrap().into_inner();
    assert!(got.found && got.version == version, "{got:?}");
}

#[tokio::test]
async fn postgres_down_at_start_gives_unavailable() {
    let port = services::free_port();
    let proxy = proxy_with(
        "postgres",
        &format!("  url: postgres://postgres@127.0.0.1:{port}/postgres\n  connect_timeout_ms: 300"),
    );
    let kv = proxy.kv().await;
    let err = kv.clone().get(GetRequest { namespace: "data".into(), key: "k".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // Which server, and why, each said once.
    let said = err.message();
    assert!(said.contains(&format!("postgres at 127.0.0.1:{port} unreachable")), "{said}");
    assert!(said.contains("Connection refused"), "{said}");
    assert_eq!(said.matches("error connecting to server").count(), 1, "{said}");
    assert!(eventually(Duration::from_secs(5), || async { proxy.logs.contains("plugin unhealthy") }).await);
    quiet_while_down(&proxy).await;
}

/// A plugin whose backend stays down says so at WARN through the proxy's
/// health checks; it does not log at INFO each time the proxy asks again.
async fn quiet_while_down(proxy: &Proxy) {
    // Several 200 ms health intervals.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let initialized = proxy.logs.lines_with(&["\"message\":\"initialized\""]);
    assert_eq!(initialized.len(), 1, "{initialized:#?}");
}

/// With nats-server gone and the plugin aware of it, every call fails with
/// UNAVAILABLE within the documented `request_timeout_ms` (2 s by default),
/// also on a namespace whose bucket was never opened and under concurrent
/// calls (which used to queue behind each other's bucket lookups).
#[tokio::test]
async fn nats_down_fails_fast_within_the_request_timeout() {
    let Some(program) = services::require_program("nats-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = PrivateServer::nats(&program, services::free_port(), dir.path());
    nats.start();
    let proxy = ProxyConfig::new()
        .plugin(
            "nats",
            &format!(
                "command: [prism-plugin-nats]\nhealth_interval: 200ms\nconfig:\n  url: nats://127.0.0.1:{}",
                nats.port
            ),
        )
        .keyvalue("data", "nats")
        .keyvalue("fresh", "nats")
        .start();
    let kv = proxy.kv().await;
    kv.clone().put(put("data", "k", b"v")).await.unwrap();

    nats.stop();
    assert!(eventually(Duration::from_secs(10), || async { proxy.logs.contains("plugin unhealthy") }).await);
    // The documented timeout plus a margin for the hop: a call still waiting
    // after that comes back DEADLINE_EXCEEDED instead of UNAVAILABLE.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..12 {
        let mut kv = kv.clone();
        let ns = if i % 2 == 0 { "data" } else { "fresh" };
        calls.spawn(async move {
            let mut request = tonic::Request::new(put(ns, &format!("k{i}"), b"v"));
            request.set_timeout(Duration::from_millis(3_000));
            match kv.put(request).await {
                Ok(_) => format!("{ns}: ok"),
                Err(e) => format!("{ns}: {:?} {}", e.code(), e.message()),
            }
        });
    }
    for outcome in calls.join_all().await {
        assert!(outcome.contains("Unavailable") && outcome.contains("nats"), "{outcome}");
    }
}

/// Writers putting distinct keys through the proxy until `run_for` has
/// passed since they started (or `until_recovered` stops them), recording
/// each acknowledged write and each failure.
struct Load {
    writers: tokio::task::JoinSet<()>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<(String, u64)>>>,
    /// When each writer last had a write acknowledged.
    last_ack: std::sync::Arc<std::sync::Mutex<Vec<Option<std::time::Instant>>>>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Load {
    fn start(kv: &Kv, ns: &'static str, writers: usize, run_for: Duration) -> Self {
        use std::sync::atomic::Ordering;
        let start = std::time::Instant::now();
        let mut load = Load {
            writers: tokio::task::JoinSet::new(),
            acked: Default::default(),
            last_ack: std::sync::Arc::new(std::sync::Mutex::new(vec![None; writers])),
            failures: Default::default(),
            stop: Default::default(),
        };
        for w in 0..writers {
            let (mut kv, acked, failures) = (kv.clone(), load.acked.clone(), load.failures.clone());
            let (last_ack, stop) = (load.last_ack.clone(), load.stop.clone());
            load.writers.spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < run_for && !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}/{i}");
                    let mut request = tonic::Request::new(put(ns, &key, key.as_bytes()));
                    request.set_timeout(Duration::from_secs(5));
                    match kv.put(request).await {
                        Ok(r) => {
                            acked.lock().unwrap().push((key, r.into_inner().version));
                            last_ack.lock().unwrap()[w] = Some(std::time::Instant::now());
                        }
                        Err(e) => {
                            let failure = (std::time::Instant::now(), format!("{:?}: {}", e.code(), e.message()));
                            failures.lock().unwrap().push(failure);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    i += 1;
                }
            });
        }
        load
    }

    /// Stops the writers once every writer has had a write acknowledged
    /// after the last failure (none is stuck in a call) and none has failed
    /// for `quiet`: the recovery `event` (a kill, say) started has ended.
    /// Returns how long after `event` that was, or `None` (writers stopped
    /// too) if it had not happened within `limit`.
    async fn until_recovered(&self, event: std::time::Instant, quiet: Duration, limit: Duration) -> Option<Duration> {
        let recovered = eventually(limit, || async {
            let last_failure = self.failures.lock().unwrap().iter().map(|(at, _)| *at).max();
            let last_failure = last_failure.unwrap_or(event).max(event);
            let all_acked = self.last_ack.lock().unwrap().iter().all(|ack| ack.is_some_and(|at| at > last_failure));
            all_acked && last_failure.elapsed() >= quiet
        })
        .await;
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        recovered.then(|| event.elapsed())
    }

    /// Waits for the writers; prints what happened since `event` (a kill,
    /// say) and returns the acknowledged writes, the failures and the time
    /// from `event` to the last failure.
    async fn finish(
        self,
        what: &str,
        event: std::time::Instant,
    ) -> (Vec<(String, u64)>, Vec<(std::time::Instant, String)>, Duration) {
        self.writers.join_all().await;
        let acked = self.acked.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        let window = failures.iter().map(|(at, _)| at.saturating_duration_since(event)).max().unwrap_or_default();
        println!(
            "{what}: {} writes acknowledged, {} failed, last failure {window:?} after the event",
            acked.len(),
            failures.len()
        );
        for (_, why) in failures.iter().take(5) {
            println!("  failed: {why}");
        }
        (acked, failures, window)
    }
}

/// Every acknowledged write reads back as it was written.
async fn assert_none_lost(kv: &Kv, ns: &str, acked: &[(String, u64)]) {
    let mut kv = kv.clone();
    let mut lost = Vec::new();
    for (key, version) in acked {
        let got = kv.get(GetRequest { namespace: ns.into(), key: key.clone() }).await.unwrap().into_inner();
        if !got.found || got.value != key.as_bytes() || got.version != *version {
            lost.push(key.clone());
        }
    }
    assert!(lost.is_empty(), "{} of {} acknowledged writes lost: {lost:?}", lost.len(), acked.len());
}

/// A node of a three-node JetStream cluster killed while clients write
/// through Prism to a bucket replicated three times: calls fail for a
/// window (UNAVAILABLE), then continue on the other nodes, and every write
/// that was acknowledged is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_node_killed_under_load_loses_no_acknowledged_write() {
    let Some(program) = services::require_program("nats-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = PrivateServer::nats_cluster(&program, dir.path());
    for (node, _) in &mut nodes {
        node.start();
    }
    let seeds = nodes.iter().map(|(n, _)| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",");
    let proxy = proxy_with("nats", &format!("  url: \"{seeds}\"\n  replicas: 3\n  bucket_prefix: failover"));
    let kv = proxy.kv().await;
    // The bucket is made on the first write, once the cluster has a leader.
    assert!(eventually(Duration::from_secs(30), || put_works(&kv)).await, "the cluster never took a write");

    // Writers run until they have recovered from the kill (or the limit
    // below has passed), so the run's length follows the election's.
    let load = Load::start(&kv, "data", 4, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The node that leads the bucket's stream: its loss needs an election.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let monitor = nodes[1].1;
    let jsz: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{monitor}/jsz?streams=true")).await.unwrap().json().await.unwrap();
    let leader = jsz["account_details"][0]["stream_detail"]
        .as_array()
        .and_then(|streams| streams.iter().find(|s| s["name"] == "KV_failover_data"))
        .and_then(|s| s["cluster"]["leader"].as_str())
        .and_then(|name| name.strip_prefix('n'))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no leader of the bucket's stream in {jsz}"));
    println!("killing n{leader}, the leader of the bucket's stream");
    let killed_at = std::time::Instant::now();
    nodes[leader].0.stop();
    // A follower waits 4-9 s for a lost leader before it campaigns
    // (nats-server's minElectionTimeoutDefault..maxElectionTimeoutDefault),
    // and a split vote takes another round: 30 s is three of the longest
    // waits. Every writer must then write again, without a failure for 2 s.
    let recovered = load.until_recovered(killed_at, Duration::from_secs(2), Duration::from_secs(30)).await;
    println!("writes recovered (every writer acknowledged, 2 s without a failure) {recovered:?} after the kill");
    let (acked, failures, window) = load.finish("nats cluster failover", killed_at).await;
    assert!(failures.iter().all(|(_, why)| why.starts_with("Unavailable")), "{failures:?}");
    assert!(recovered.is_some(), "no recovery in 30 s: last failure {window:?} after the kill");
    assert_none_lost(&kv, "data", &acked).await;
}

/// The master serving a namespace's slot in a Redis Cluster (three
/// masters, a replica each) killed while clients write through Prism with
/// `wait_replicas: 1`, then restarted the way an orchestrator restarts a
/// crashed pod: calls fail while the replica takes over and until the
/// restarted node has rejoined as its replica (a write needs a replica to
/// confirm it), then continue, and every acknowledged write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_master_killed_under_load_loses_no_acknowledged_write() {
    let Some(mut cluster) = services::RedisCluster::start() else { return };
    let config = format!("  url: \"{}\"\n  cluster: true\n  wait_replicas: 1\n  key_prefix: failover", cluster.url());
    let proxy = proxy_with("redis", &config);
    let kv = proxy.kv().await;
    assert!(eventually(Duration::from_secs(30), || put_works(&kv)).await, "the cluster never took a write");

    let run_for = Duration::from_secs(16);
    let load = Load::start(&kv, "data", 4, run_for);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seed = cluster.nodes[0].port;
    let master = cluster.master_of(seed, "{failover:data}").unwrap();
    println!("killing 127.0.0.1:{master}, the master of the namespace's slot");
    let killed_at = std::time::Instant::now();
    cluster.kill(master);
    let survivor = cluster.nodes.iter().find(|n| n.port != master).map(|n| n.port).unwrap();
    while cluster.master_of(survivor, "{failover:data}").is_none_or(|m| m == master) {
        assert!(killed_at.elapsed() < Duration::from_secs(15), "the replica did not take over in 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("the replica took over {:?} after the kill; restarting the old master", killed_at.elapsed());
    cluster.restart(master);
    let rejoined = std::time::Instant::now();
    while !cluster.cli(master, &["info", "replication"]).contains("master_link_status:up") {
        assert!(rejoined.elapsed() < Duration::from_secs(15), "the old master did not rejoin as a replica in 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("the old master is a replica in sync {:?} after the kill", killed_at.elapsed());
    let (acked, failures, window) = load.finish("redis cluster failover", killed_at).await;
    assert!(failures.iter().all(|(_, why)| why.starts_with("Unavailable")), "{failures:?}");
    assert!(
        window < run_for.saturating_sub(Duration::from_secs(5)),
        "no recovery: last failure {window:?} after the kill"
    );
    assert!(cluster.cli(master, &["role"]).starts_with("slave"), "the old master did not rejoin as a replica");
    assert_none_lost(&kv, "data", &acked).await;
}

/// The slot of a namespace moved to another master while clients write
/// (`CLUSTER SETSLOT ... MIGRATING/IMPORTING`, `MIGRATE`, then `NODE`):
/// the plugin follows the `ASK` and `MOVED` redirections; calls caught
/// mid-move fail with UNAVAILABLE (multi-key scripts get `TRYAGAIN`
/// while the slot's keys are split), and every acknowledged write is
/// readable afterwards on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_slot_moved_under_load_loses_no_acknowledged_write() {
    let Some(cluster) = services::RedisCluster::start() else { return };
    let config = format!("  url: \"{}\"\n  cluster: true\n  key_prefix: moving", cluster.url());
    let proxy = proxy_with("redis", &config);
    let kv = proxy.kv().await;
    assert!(eventually(Duration::from_secs(30), || put_works(&kv)).await, "the cluster never took a write");

    let load = Load::start(&kv, "data", 4, Duration::from_secs(8));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seed = cluster.nodes[0].port;
    let from = cluster.master_of(seed, "{moving:data}").unwrap();
    let moved_at = std::time::Instant::now();
    let to = cluster.move_slot("{moving:data}", from);
    println!("moved the slot from 127.0.0.1:{from} to 127.0.0.1:{to} in {:?}", moved_at.elapsed());
    let (acked, failures, _) = load.finish("redis cluster slot move", moved_at).await;
    assert!(failures.iter().all(|(_, why)| why.starts_with("Unavailable")), "{failures:?}");
    assert_eq!(cluster.master_of(seed, "{moving:data}"), Some(to));
    assert_none_lost(&kv, "data", &acked).await;
    // Scans still see the whole namespace in order.
    let mut kv = kv.clone();
    let page = kv
        .scan(ScanRequest {
            namespace: "data".into(),
            prefix: "w0/".into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.items.is_empty());
    assert!(page.items.windows(2).all(|w| w[0].key < w[1].key));
}

/// The redis plugin's BatchPut takes its versions and updates its indexes
/// once per batch: the versions are still consecutive, in item order, and
/// a key written twice in one batch ends as its last item says: value,
/// version and TTL (a key whose last write had no TTL outlives the first
/// write's TTL and the plugin's cleanup rounds; one whose last write had a
/// TTL expires), in Get and in Scan.
#[tokio::test]
async fn redis_batch_put_keeps_the_last_write_of_a_key() {
    let Some(program) = services::require_program("redis-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateServer::redis(&program, services::free_port(), dir.path());
    redis.start();
    let proxy = proxy_with("redis", &format!("  url: redis://127.0.0.1:{}\n  cleanup_interval_ms: 100", redis.port));
    let mut kv = proxy.kv().await;
    let item = |key: &str, value: &str, ttl_seconds| PutItem {
        key: key.into(),
        value: value.as_bytes().to_vec().into(),
        ttl_seconds,
    };
    let items = vec![
        item("kept", "first", 1),
        item("kept", "last", 0),
        item("plain", "p", 0),
        item("gone", "g", 1),
        item("later", "first", 0),
        item("later", "last", 1),
    ];
    let versions =
        kv.batch_put(BatchPutRequest { namespace: "data".into(), items }).await.unwrap().into_inner().versions;
    assert_eq!(versions.len(), 6, "{versions:?}");
    assert!(versions.windows(2).all(|w| w[1] == w[0] + 1), "not consecutive: {versions:?}");
    let get = |key: &str| GetRequest { namespace: "data".into(), key: key.into() };
    let kept = kv.get(get("kept")).await.unwrap().into_inner();
    assert!(kept.found && &kept.value[..] == b"last" && kept.version == versions[1], "{kept:?}");
    let later = kv.get(get("later")).await.unwrap().into_inner();
    assert!(later.found && &later.value[..] == b"last" && later.version == versions[5], "{later:?}");

    let scan = || ScanRequest { namespace: "data".into(), page_size: 100, ..Default::default() };
    let listed = |r: prism_proto::keyvalue::v1::ScanResponse| r.items.into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(listed(kv.scan(scan()).await.unwrap().into_inner()), ["gone", "kept", "later", "plain"]);

    // Past the one-second TTLs, and several cleanup rounds.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (key, found) in [("kept", true), ("plain", true), ("gone", false), ("later", false)] {
        assert_eq!(kv.get(get(key)).await.unwrap().into_inner().found, found, "{key}");
    }
    assert_eq!(listed(kv.scan(scan()).await.unwrap().into_inner()), ["kept", "plain"]);
}
