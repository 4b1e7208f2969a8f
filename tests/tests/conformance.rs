//! Every plugin passes the conformance suite against its real backend.
//!
//! Each test also writes its report as JSON next to the test binaries
//! (`target/<profile>/conformance/<plugin>.json`), which
//! `uv run tooling/conformance_report.py` turns into the matrix in
//! `docs-cms/reference/conformance.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use prism_plugin_conformance::{Report, Subject, run};
use prism_tests::bin_path;
use prism_tests::services::{self, NATS, POSTGRES, REDIS};
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
