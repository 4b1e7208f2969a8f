#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Shadow traffic end to end: acknowledged writes replayed on a second
//! plugin (checked in its own database), reads compared, mismatches kept
//! without values, and a dead shadow that never touches the primary's
//! results.

use std::time::Duration;

use bytes::Bytes;
use prism_proto::admin::v1::{GetShadowStatusRequest, ListShadowDiffsRequest, ShadowStatus};
use prism_proto::keyvalue::v1::{DeleteRequest, GetRequest, PutRequest};
use prism_tests::services::{self, PrivateServer};
use prism_tests::{Proxy, ProxyConfig, eventually};
use tonic::Code;

fn shadowed(name: &str, primary: &str, shadow: &str) -> String {
    format!(
        "apiVersion: prism/v1\nkind: Namespace\nmetadata: {{name: {name}}}\nspec:\n  pattern: keyvalue\n  backend: {primary}\n  shadow: {shadow}\n"
    )
}

fn put(ns: &str, key: &str, value: &str, if_version: Option<u64>) -> PutRequest {
    PutRequest {
        namespace: ns.into(),
        key: key.into(),
        value: Bytes::from(value.to_owned()),
        ttl_seconds: 0,
        if_version,
    }
}

async fn status(proxy: &Proxy, ns: &str) -> ShadowStatus {
    let mut admin = proxy.admin().await;
    admin.get_shadow_status(GetShadowStatusRequest { namespace: ns.into() }).await.unwrap().into_inner().status.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_mirrored_in_order_and_reads_compared() {
    let config = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .plugin("lite", "command: [prism-plugin-sqlite]\nconfig:\n  path: shadow.sqlite3");
    let db = config.dir().join("shadow.sqlite3");
    let proxy = config
        .namespace_file("orders.yaml", &shadowed("orders", "memstore", "{backend: lite, compare_reads: 1}"))
        .start();
    let mut kv = proxy.kv().await;
    let mut writes = 0;
    for i in 0..40 {
        kv.put(put("orders", &format!("k{i:02}"), &format!("v{i}"), None)).await.unwrap();
        writes += 1;
    }
    // Overwrites with the primary's versions: the shadow's differ, so the
    // precondition is the primary's to check, not the shadow's.
    for i in 0..10 {
        let key = format!("k{i:02}");
        let version =
            kv.get(GetRequest { namespace: "orders".into(), key: key.clone() }).await.unwrap().into_inner().version;
        kv.put(put("orders", &key, &format!("w{i}"), Some(version))).await.unwrap();
        writes += 1;
    }
    // A refused write is not acknowledged, so it is not mirrored.
    let refused = kv.put(put("orders", "k00", "stale", Some(999))).await.unwrap_err();
    assert_eq!(refused.code(), Code::Aborted);
    for i in 35..40 {
        kv.delete(DeleteRequest { namespace: "orders".into(), key: format!("k{i:02}"), if_version: None })
            .await
            .unwrap();
        writes += 1;
    }
    assert!(
        eventually(Duration::from_secs(10), || async { status(&proxy, "orders").await.mirrored == writes }).await,
        "{:?}",
        status(&proxy, "orders").await
    );
    // The shadow's own database holds what the primary acknowledged.
    let rows: Vec<(String, Vec<u8>)> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT key, value FROM kv WHERE ns = 'orders' ORDER BY key").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(rows.len(), 35);
    assert_eq!(rows[0], ("k00".to_owned(), b"w0".to_vec()));
    assert_eq!(rows[20], ("k20".to_owned(), b"v20".to_vec()));

    // Reads: every one compared (the 10 version reads above matched too).
    for i in 0..40 {
        kv.get(GetRequest { namespace: "orders".into(), key: format!("k{i:02}") }).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || async { status(&proxy, "orders").await.matched == 50 }).await,
        "{:?}",
        status(&proxy, "orders").await
    );
    let s = status(&proxy, "orders").await;
    assert_eq!((s.mismatched, s.dropped, s.mirror_failed, s.compare_failed), (0, 0, 0, 0), "{s:?}");
    assert_eq!((s.primary.as_str(), s.backend.as_str(), s.mirror.as_str()), ("memstore", "lite", "writes"));

    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = reqwest::get(format!("{}/metrics", proxy.admin_url())).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(&format!("prism_shadow_copies_total{{namespace=\"orders\",outcome=\"mirrored\"}} {writes}")),
        "{metrics}"
    );
    // prismctl shows the same.
    let out = std::process::Command::new(prism_tests::bin_path("prismctl"))
        .args(["--endpoint", &proxy.endpoint(), "-o", "json", "shadow", "status", "orders"])
        .env("PRISMCTL_CONFIG", "/dev/null")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["writes"]["mirrored"], writes);
    assert_eq!(doc["reads"]["mismatched"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatches_are_counted_and_kept_without_values() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .plugin("other", "command: [prism-plugin-memstore]")
        // Nothing mirrored: every read the primary answers differs.
        .namespace_file(
            "cart.yaml",
            &shadowed("cart", "memstore", "{backend: other, mirror: none, compare_reads: 1.0}"),
        )
        .keyvalue("plain", "memstore")
        .start();
    let mut kv = proxy.kv().await;
    kv.put(put("cart", "secret-key", "card 4111 1111 1111 1234", None)).await.unwrap();
    kv.get(GetRequest { namespace: "cart".into(), key: "secret-key".into() }).await.unwrap();
    kv.get(GetRequest { namespace: "cart".into(), key: "missing".into() }).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let s = status(&proxy, "cart").await;
            s.mismatched == 1 && s.matched == 1
        })
        .await,
        "{:?}",
        status(&proxy, "cart").await
    );
    let mut admin = proxy.admin().await;
    let diffs =
        admin.list_shadow_diffs(ListShadowDiffsRequest { namespace: "cart".into() }).await.unwrap().into_inner().diffs;
    assert_eq!(diffs.len(), 1);
    assert_eq!(diffs[0].method, "Get");
    assert_eq!(diffs[0].difference, "found: primary true, shadow false");
    assert_eq!(diffs[0].key_hash, prism_proxy::security::audit::key_hash("secret-key"));
    let text = format!("{diffs:?}");
    assert!(!text.contains("secret-key") && !text.contains("4111"), "{text}");
    assert_eq!(status(&proxy, "cart").await.mirrored, 0, "mirror: none");
    // A namespace without a shadow says so.
    let err = admin.get_shadow_status(GetShadowStatusRequest { namespace: "plain".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("no shadow"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shadow_never_fails_or_slows_the_primary_and_mirroring_resumes() {
    let Some(program) = services::require_program("redis-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateServer::redis(&program, services::free_port(), dir.path());
    redis.start();
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .plugin(
            "cache",
            &format!(
                "command: [prism-plugin-redis]\nhealth_interval: 200ms\nconfig:\n  url: redis://127.0.0.1:{}\n  response_timeout_ms: 300",
                redis.port
            ),
        )
        .namespace_file("users.yaml", &shadowed("users", "memstore", "{backend: cache, queue: 20}"))
        .start();
    let mut kv = proxy.kv().await;
    kv.put(put("users", "before", "1", None)).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || async { status(&proxy, "users").await.mirrored == 1 }).await);

    redis.stop();
    // Every write still succeeds, with the primary's answer.
    let mut last = 0;
    for i in 0..300 {
        let reply = kv.put(put("users", &format!("u{i}"), "x", None)).await.unwrap().into_inner();
        assert!(reply.version > last, "the primary's versions");
        last = reply.version;
    }
    let got = kv.get(GetRequest { namespace: "users".into(), key: "u299".into() }).await.unwrap().into_inner();
    assert!(got.found && got.value == "x");
    let s = status(&proxy, "users").await;
    assert!(s.dropped > 0, "a full queue drops copies: {s:?}");
    assert!(
        eventually(Duration::from_secs(10), || async { status(&proxy, "users").await.mirror_failed > 0 }).await,
        "{:?}",
        status(&proxy, "users").await
    );
    assert!(!status(&proxy, "users").await.last_error.is_empty());

    redis.start();
    let mirrored = status(&proxy, "users").await.mirrored;
    assert!(
        eventually(Duration::from_secs(20), || async {
            let _ = kv.clone().put(put("users", "after", "2", None)).await;
            status(&proxy, "users").await.mirrored > mirrored + 1
        })
        .await,
        "mirroring did not resume: {:?}",
        status(&proxy, "users").await
    );
}
