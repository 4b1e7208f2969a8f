//! The namespace control plane end to end: prismctl against a real proxy
//! (apply, plan, validation errors, get/list/delete), hot reload under
//! load, and two proxies sharing one PostgreSQL registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prism_proto::admin::v1::{ApplyNamespaceRequest, DeleteNamespaceRequest, GetNamespaceRequest};
use prism_proto::keyvalue::v1::{GetRequest, PutRequest};
use prism_tests::services::{self, POSTGRES};
use prism_tests::{ProxyConfig, bin_path, eventually};
use serde_json::Value;

fn prismctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new(bin_path("prismctl"))
        .arg("--endpoint")
        .arg(endpoint)
        // Never pick up the developer's own prismctl config.
        .env("PRISMCTL_CONFIG", "/dev/null")
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?} stderr {:?}", text(&out.stdout), text(&out.stderr)))
}

fn kv_doc(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: prism/v1\nkind: Namespace\nmetadata:\n  name: {name}\n  team: shop\nspec:\n  pattern: keyvalue\n{extra}"
    )
}

fn write(dir: &Path, file: &str, body: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Names of the namespaces the proxy serves, via prismctl.
fn listed(endpoint: &str) -> Vec<String> {
    let out = prismctl(endpoint, &["-o", "json", "namespace", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    json(&out).as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect()
}

fn two_plugins() -> ProxyConfig {
    ProxyConfig::memstore()
        .plugin("sqlite", "command: [prism-plugin-sqlite]\npool_size: 2\nconfig: {path: data.sqlite3}")
}

#[test]
fn apply_plans_applies_and_deletes() {
    let proxy = two_plugins().start();
    let ep = proxy.endpoint();
    let work = tempfile::tempdir().unwrap();
    let orders = write(work.path(), "orders.yaml", &kv_doc("orders", "  needs:\n    durability: durable\n"));

    // A dry run plans (backend and why) and changes nothing.
    let out = prismctl(&ep, &["-o", "json", "namespace", "apply", "-f", &orders, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = &json(&out)[0];
    assert_eq!(plan["action"], "create");
    assert_eq!(plan["applied"], false);
    assert_eq!(plan["backend"], "sqlite", "durable needs must not land on memstore: {plan}");
    assert!(plan["backend_reason"].as_str().unwrap().contains("durable"), "{plan}");
    assert_eq!(listed(&ep), ["demo"]);

    // The table output says the same for people.
    let out = prismctl(&ep, &["namespace", "apply", "-f", &orders, "--dry-run"]);
    assert!(text(&out.stdout).contains("namespace orders would create on backend sqlite"), "{}", text(&out.stdout));

    let out = prismctl(&ep, &["-o", "json", "namespace", "apply", "-f", &orders]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)[0]["applied"], true);
    assert_eq!(listed(&ep), ["demo", "orders"]);
    // The directory registry now holds the document.
    assert!(proxy.config().unwrap().namespaces_dir().join("orders.yaml").is_file());
    let out = prismctl(&ep, &["kv", "put", "orders", "o-1", "paid"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Applying the same document again is a no-op.
    let out = prismctl(&ep, &["-o", "json", "namespace", "apply", "-f", &orders]);
    assert_eq!(json(&out)[0]["action"], "unchanged");

    // A change is shown as a diff against the current document.
    let changed = write(
        work.path(),
        "orders.yaml",
        &kv_doc("orders", "  needs:\n    durability: durable\n").replace("team: shop", "team: checkout"),
    );
    let out = prismctl(&ep, &["-o", "json", "namespace", "apply", "-f", &changed, "--dry-run"]);
    let plan = &json(&out)[0];
    assert_eq!(plan["action"], "update");
    let diff = plan["diff"].as_str().unwrap();
    assert!(diff.contains("-  team: shop") && diff.contains("+  team: checkout"), "{diff}");

    // Moving a namespace that holds data to another backend needs --force.
    let moved = write(work.path(), "moved.yaml", &kv_doc("orders", "  backend: memstore\n"));
    let out = prismctl(&ep, &["namespace", "apply", "-f", &moved]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("FailedPrecondition"), "{}", text(&out.stdout));
    let out = prismctl(&ep, &["-o", "json", "namespace", "get", "orders"]);
    assert_eq!(json(&out)["backend"], "sqlite", "a refused apply changed the namespace");

    // get shows the applied document and where it lives.
    let doc = json(&out);
    assert_eq!(doc["pattern"], "keyvalue");
    assert!(doc["spec_yaml"].as_str().unwrap().contains("durability: durable"));
    assert!(doc["source"].as_str().unwrap().ends_with("orders.yaml"), "{doc}");

    // Delete refuses while data would be orphaned; --purge deletes it too.
    let out = prismctl(&ep, &["namespace", "delete", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("holds data"), "{}", text(&out.stderr));
    assert_eq!(listed(&ep), ["demo", "orders"]);
    let out = prismctl(&ep, &["-o", "json", "namespace", "delete", "orders", "--purge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["data_purged"], true);
    assert_eq!(listed(&ep), ["demo"]);
    assert!(!proxy.config().unwrap().namespaces_dir().join("orders.yaml").exists());
    let out = prismctl(&ep, &["kv", "get", "orders", "o-1"]);
    assert!(text(&out.stderr).contains("NotFound"), "{}", text(&out.stderr));

    // Recreated on the same backend, the purged data is gone for good.
    let out = prismctl(&ep, &["namespace", "apply", "-f", &orders]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = prismctl(&ep, &["kv", "get", "orders", "o-1"]);
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));

    // An empty namespace can be deleted without --purge; --force leaves data.
    let out = prismctl(&ep, &["kv", "put", "orders", "o-2", "x"]);
    assert!(out.status.success());
    let out = prismctl(&ep, &["-o", "json", "namespace", "delete", "orders", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["data_purged"], false);
}

#[test]
fn apply_a_directory_and_list_plugins() {
    let proxy = two_plugins().start();
    let ep = proxy.endpoint();
    let work = tempfile::tempdir().unwrap();
    write(work.path(), "a.yaml", &kv_doc("alpha", "  backend: memstore\n"));
    write(work.path(), "b.yml", &kv_doc("beta", "  backend: sqlite\n"));
    write(work.path(), "notes.txt", "not a namespace");
    let out = prismctl(&ep, &["-o", "yaml", "namespace", "apply", "-f", work.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("namespace: alpha") && text(&out.stdout).contains("namespace: beta"));
    assert_eq!(listed(&ep), ["alpha", "beta", "demo"]);

    let out = prismctl(&ep, &["-o", "json", "plugins", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plugins = json(&out);
    let sqlite = plugins.as_array().unwrap().iter().find(|p| p["name"] == "sqlite").unwrap();
    assert_eq!(sqlite["backend"], "sqlite");
    assert_eq!(sqlite["phase"], "ready");
    assert_eq!(sqlite["restarts"], 0);
    assert_eq!(sqlite["namespaces"], serde_json::json!(["beta"]));
    let caps: Vec<&str> =
        sqlite["capabilities"]["list"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(caps.contains(&"durable") && caps.contains(&"ttl"), "{caps:?}");

    let out = prismctl(&ep, &["plugins", "list"]);
    let table = text(&out.stdout);
    assert!(table.lines().next().unwrap().contains("CAPABILITIES"), "{table}");
    assert!(table.lines().any(|l| l.contains("memstore") && l.contains("demo")), "{table}");
}

/// One malformed document and what the proxy must say about it.
struct Bad {
    name: &'static str,
    yaml: String,
    /// Expected field path of the error ("" for the document as a whole).
    field: &'static str,
    /// Expected words in its message.
    message: &'static str,
    /// Whether the local `validate` catches it (backend checks need a proxy).
    local: bool,
}

fn bad(name: &'static str, yaml: impl Into<String>, field: &'static str, message: &'static str) -> Bad {
    Bad { name, yaml: yaml.into(), field, message, local: true }
}

fn malformed() -> Vec<Bad> {
    let good = kv_doc("orders", "  backend: memstore\n");
    vec![
        bad("empty", "", "", "empty"),
        bad("not yaml", "apiVersion: prism/v1\nmetadata: [name\n", "", "line"),
        bad("a list, not a document", "- a\n- b\n", "", "mapping"),
        bad("wrong apiVersion", good.replace("prism/v1", "prism/v2"), "apiVersion", "prism/v1"),
        bad("wrong kind", good.replace("kind: Namespace", "kind: Table"), "kind", "Namespace"),
        bad("missing name", good.replace("  name: orders\n", ""), "metadata.name", "required"),
        bad("name with capitals", good.replace("name: orders", "name: Orders_1"), "metadata.name", "not a valid name"),
        bad("name too long", good.replace("name: orders", &format!("name: {}", "a".repeat(64))), "metadata.name", "63"),
        bad("unknown field", good.replace("team: shop", "tema: shop"), "metadata.tema", "did you mean `team`"),
        bad("unknown pattern", good.replace("keyvalue", "keyvalu"), "spec.pattern", "keyvalue, timeseries, graph"),
        bad("bad duration", good.clone() + "  needs:\n    ttl: 5x\n", "spec.needs.ttl", "invalid duration"),
        bad("wrong type", good.clone() + "  needs:\n    read_rps: fast\n", "spec.needs.read_rps", "integer"),
        bad(
            "unknown consistency",
            good.clone() + "  needs:\n    consistency: total\n",
            "spec.needs.consistency",
            "strong",
        ),
        bad("bad principal", good.clone() + "  access:\n    read: [bob]\n", "spec.access.read[0]", "bob"),
        bad("schema without a message", good.clone() + "  schema: {}\n", "spec.schema.message", "required"),
        bad(
            "schema message not a name",
            good.clone() + "  schema: {message: 'acme profile'}\n",
            "spec.schema.message",
            "not a message name",
        ),
        bad("pii without schema", good.clone() + "  pii: {encrypt: true}\n", "spec.pii", "needs spec.schema"),
        bad(
            "unknown pii class",
            good.clone() + "  schema: {message: acme.P}\n  pii: {policy: {e_mail: mask}}\n",
            "spec.pii.policy.e_mail",
            "not a PII class",
        ),
        Bad {
            name: "unregistered message",
            yaml: good.clone() + "  schema: {message: acme.Nope}\n",
            field: "spec.schema.message",
            message: "not registered",
            local: false,
        },
        bad("shadow without a backend", good.clone() + "  shadow: {queue: 10}\n", "spec.shadow.backend", "required"),
        bad(
            "shadow share out of range",
            good.clone() + "  shadow: {backend: lite, compare_reads: 2}\n",
            "spec.shadow.compare_reads",
            "from 0 to 1",
        ),
        Bad {
            name: "shadow plugin unknown",
            yaml: good.clone() + "  shadow: {backend: sqlite}\n",
            field: "spec.shadow.backend",
            message: "not a plugin of this proxy",
            local: false,
        },
        bad(
            "shadow is the namespace's own plugin",
            good.clone() + "  shadow: {backend: memstore}\n",
            "spec.shadow.backend",
            "another plugin",
        ),
        bad(
            "retention on a keyvalue namespace",
            good.clone() + "  needs:\n    retention: 30d\n",
            "spec.needs.retention",
            "applies to timeseries namespaces",
        ),
        bad("labels not a map", good.replace("team: shop", "team: shop\n  labels: [a]"), "metadata.labels", "mapping"),
        bad("too large", good.clone() + &format!("# {}\n", "x".repeat(70 * 1024)), "", "over the limit"),
        Bad {
            name: "unknown backend",
            yaml: good.replace("backend: memstore", "backend: mongo"),
            field: "spec.backend",
            message: "mongo",
            local: false,
        },
        Bad {
            name: "durability the backend lacks",
            yaml: good.clone() + "  needs:\n    durability: durable\n",
            field: "spec.needs.durability",
            message: "does not keep data across restarts",
            local: false,
        },
        Bad {
            name: "values larger than the backend takes",
            yaml: good.clone() + "  needs:\n    max_value_bytes: 536870912\n",
            field: "spec.needs.max_value_bytes",
            message: "accepts values up to",
            local: false,
        },
    ]
}

#[test]
fn malformed_specs_are_refused_with_field_and_line() {
    let proxy = ProxyConfig::memstore().start();
    let ep = proxy.endpoint();
    let work = tempfile::tempdir().unwrap();
    let cases = malformed();
    assert!(cases.len() >= 15);
    let mut misses = 0;
    for (i, case) in cases.iter().enumerate() {
        let file = write(work.path(), &format!("case{i}.yaml"), &case.yaml);
        let out = prismctl(&ep, &["-o", "json", "namespace", "apply", "-f", &file]);
        assert_eq!(out.status.code(), Some(3), "{}: exit code; stdout {}", case.name, text(&out.stdout));
        let errors = json(&out)[0]["errors"].as_array().unwrap().clone();
        let hit = errors.iter().find(|e| e["field"] == case.field);
        let Some(hit) = hit else {
            eprintln!("{}: no error on {:?} in {errors:?}", case.name, case.field);
            misses += 1;
            continue;
        };
        let description = hit["description"].as_str().unwrap();
        assert!(description.contains(case.message), "{}: {description:?} lacks {:?}", case.name, case.message);
        if !case.name.starts_with("empty") && !case.name.starts_with("too large") {
            assert!(description.starts_with("line "), "{}: no line in {description:?}", case.name);
        }

        let out = prismctl(&ep, &["-o", "json", "namespace", "validate", "-f", &file]);
        if case.local {
            assert_eq!(out.status.code(), Some(3), "{}: validate passed", case.name);
            let errors = json(&out)[0]["errors"].as_array().unwrap().clone();
            assert!(errors.iter().any(|e| e["field"] == case.field), "{}: validate disagrees: {errors:?}", case.name);
        } else {
            assert!(out.status.success(), "{}: structurally valid, validate must pass", case.name);
        }
    }
    assert_eq!(misses, 0, "some documents got the wrong errors (above)");
    // Nothing of the above was applied.
    assert_eq!(listed(&ep), ["demo"]);
    let files: Vec<_> = std::fs::read_dir(proxy.config().unwrap().namespaces_dir()).unwrap().collect();
    assert_eq!(files.len(), 1);

    // Every error of a document comes back at once, in the table output too.
    let many = kv_doc("Bad_Name", "  backend: memstore\n  needs:\n    ttl: 5x\n  extra: 1\n").replace("prism/v1", "v9");
    let file = write(work.path(), "many.yaml", &many);
    let out = prismctl(&ep, &["namespace", "apply", "-f", &file]);
    assert_eq!(out.status.code(), Some(3));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with(&format!("{file}:"))), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with(&format!("{file}:4:9: metadata.name:"))), "{lines:?}");
}

#[test]
fn prismctl_usage_errors_and_config_file() {
    let proxy = ProxyConfig::memstore().start();
    // Usage errors exit 2.
    let out = prismctl(&proxy.endpoint(), &["namespace", "apply"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = prismctl(&proxy.endpoint(), &["-o", "xml", "namespace", "list"]);
    assert_eq!(out.status.code(), Some(2));
    // A missing file is a failure naming it.
    let out = prismctl(&proxy.endpoint(), &["namespace", "validate", "-f", "/nonexistent/ns.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/ns.yaml"));

    // The endpoint can come from the config file.
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "prismctl.yaml", &format!("endpoint: {}\ntimeout: 5s\n", proxy.endpoint()));
    let out = Command::new(bin_path("prismctl")).args(["--config", &config, "namespace", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("demo"));
    // A config file with a typo is refused, naming the field.
    let config = write(dir.path(), "typo.yaml", "endpoitn: http://127.0.0.1:1\n");
    let out = Command::new(bin_path("prismctl")).args(["--config", &config, "health"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("endpoitn"), "{}", text(&out.stderr));

    // Completions are generated for the common shells.
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin_path("prismctl")).args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("namespace"), "{shell}");
    }
}

/// Counts of a load loop's calls.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    not_found: AtomicU64,
    other: AtomicU64,
}

/// Puts and reads back keys of `namespace` until `stop`, tallying results.
async fn load_loop(proxy_endpoint: String, namespace: &'static str, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let channel = tonic::transport::Endpoint::from_shared(proxy_endpoint).unwrap().connect().await.unwrap();
    let mut kv = prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient::new(channel);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("k{}", i % 50);
        let put = kv
            .put(PutRequest {
                namespace: namespace.into(),
                key: key.clone(),
                value: b"v".to_vec().into(),
                ..Default::default()
            })
            .await;
        let result = match put {
            Ok(_) => kv.get(GetRequest { namespace: namespace.into(), key }).await.map(|r| r.into_inner().found),
            Err(e) => Err(e),
        };
        match result {
            Ok(true) => tally.ok.fetch_add(1, Ordering::Relaxed),
            Err(s) if s.code() == tonic::Code::NotFound => tally.not_found.fetch_add(1, Ordering::Relaxed),
            Ok(false) | Err(_) => {
                if let Err(s) = &result {
                    eprintln!("{namespace}: {s:?}");
                }
                tally.other.fetch_add(1, Ordering::Relaxed)
            }
        };
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load() {
    let proxy = two_plugins().keyvalue("victim", "memstore").start();
    let ep = proxy.endpoint();
    let dir = proxy.config().unwrap().namespaces_dir();
    let stop = Arc::new(AtomicBool::new(false));
    let steady = Arc::new(Tally::default());
    let victim = Arc::new(Tally::default());
    let loops = [
        tokio::spawn(load_loop(ep.clone(), "demo", stop.clone(), steady.clone())),
        tokio::spawn(load_loop(ep.clone(), "demo", stop.clone(), steady.clone())),
        tokio::spawn(load_loop(ep.clone(), "victim", stop.clone(), victim.clone())),
    ];
    let mut admin = proxy.admin().await;
    let before = |t: &Tally| t.ok.load(Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(10), || async { before(&steady) > 20 && before(&victim) > 20 }).await);

    // Changes through the API while requests flow: new namespaces, updates
    // of the loaded one (same backend), and re-applies.
    for round in 0..5 {
        let yaml = kv_doc(&format!("extra{round}"), "  backend: sqlite\n");
        admin.apply_namespace(ApplyNamespaceRequest { spec_yaml: yaml, ..Default::default() }).await.unwrap();
        let demo = kv_doc("demo", &format!("  backend: memstore\n  access:\n    read: [\"group:round{round}\"]\n"));
        let plan = admin.apply_namespace(ApplyNamespaceRequest { spec_yaml: demo, ..Default::default() }).await;
        assert!(plan.unwrap().into_inner().applied);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A file edited on disk is picked up too, and a broken one is skipped.
    std::fs::write(dir.join("disk.yaml"), kv_doc("disk", "  backend: memstore\n")).unwrap();
    std::fs::write(dir.join("broken.yaml"), "apiVersion: prism/v1\nkind: [\n").unwrap();
    let mut kv = proxy.kv().await;
    let served = eventually(Duration::from_secs(10), || {
        let mut kv = kv.clone();
        async move { kv.get(GetRequest { namespace: "disk".into(), key: "k".into() }).await.is_ok() }
    })
    .await;
    assert!(served, "a namespace file written to the directory was not picked up");
    assert!(proxy.logs.contains("broken.yaml"), "the broken file was not reported");

    // The victim is deleted while its loop runs.
    let victim_ok_before = before(&victim);
    admin
        .delete_namespace(DeleteNamespaceRequest { name: "victim".into(), purge_data: true, force: false })
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || async { victim.not_found.load(Ordering::Relaxed) > 10 }).await);
    let steady_mid = before(&steady);
    assert!(eventually(Duration::from_secs(10), || async { before(&steady) > steady_mid + 50 }).await);
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }

    // Removing the file on disk unroutes the namespace.
    std::fs::remove_file(dir.join("disk.yaml")).unwrap();
    let gone = eventually(Duration::from_secs(10), || {
        let mut kv = kv.clone();
        async move {
            kv.get(GetRequest { namespace: "disk".into(), key: "k".into() })
                .await
                .is_err_and(|s| s.code() == tonic::Code::NotFound)
        }
    })
    .await;
    assert!(gone, "a removed namespace file kept its namespace");
    let _ = kv.get(GetRequest { namespace: "demo".into(), key: "k0".into() }).await.unwrap();

    assert_eq!(steady.other.load(Ordering::Relaxed), 0, "requests failed on a namespace that was only updated");
    assert_eq!(steady.not_found.load(Ordering::Relaxed), 0);
    assert_eq!(
        victim.other.load(Ordering::Relaxed),
        0,
        "the deleted namespace failed with something other than NOT_FOUND"
    );
    assert!(victim_ok_before > 0 && before(&steady) > 100);
}

/// A fresh schema name, so parallel and repeated runs never share a
/// registry.
fn schema_name() -> String {
    format!(
        "prism_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000
    )
}

/// Two proxies with one plugin `name` (configured by `plugin`) sharing a
/// PostgreSQL registry in `schema`.
/// A postgres plugin entry on the shared PostgreSQL, in `schema`.
fn postgres_plugin(schema: &str) -> String {
    let url = services::postgres_url();
    format!("command: [prism-plugin-postgres]\npool_size: 2\nconfig:\n  url: \"{url}\"\n  schema: {schema}")
}

fn two_proxies(name: &str, plugin: &str, schema: &str) -> (prism_tests::Proxy, prism_tests::Proxy) {
    let url = services::postgres_url();
    let config = || ProxyConfig::new().plugin(name, plugin).postgres_registry(&url, schema, "1s");
    (config().start(), config().start())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_a_postgres_registry() {
    if !services::require(POSTGRES) {
        return;
    }
    let schema = schema_name();
    let url = services::postgres_url();
    let (a, b) = two_proxies("memstore", "command: [prism-plugin-memstore]\npool_size: 2", &schema);
    let (ea, eb) = (a.endpoint(), b.endpoint());
    assert!(listed(&ea).is_empty() && listed(&eb).is_empty());

    // Applied through A, served by B (LISTEN/NOTIFY).
    let work = tempfile::tempdir().unwrap();
    let file = write(work.path(), "shared.yaml", &kv_doc("shared", "  backend: memstore\n"));
    let out = prismctl(&ea, &["namespace", "apply", "-f", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut kv_b = b.kv().await;
    let put = |mut kv: prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient<_>| async move {
        kv.put(PutRequest {
            namespace: "shared".into(),
            key: "k".into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })
        .await
    };
    assert!(eventually(Duration::from_secs(10), || put(kv_b.clone()).map_ok()).await, "B never served the namespace");
    let got = b.admin().await.get_namespace(GetNamespaceRequest { name: "shared".into() }).await.unwrap().into_inner();
    assert!(got.namespace.unwrap().source.starts_with("postgres:"));

    // A row written behind the proxies' backs (no NOTIFY) arrives with the
    // periodic resync.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .execute(
            &format!("INSERT INTO \"{schema}\".namespaces (name, spec) VALUES ($1, $2)"),
            &[&"quiet", &kv_doc("quiet", "  backend: memstore\n")],
        )
        .await
        .unwrap();
    // And an invalid row is reported and skipped, never taking others down.
    client
        .execute(&format!("INSERT INTO \"{schema}\".namespaces (name, spec) VALUES ('broken', 'kind: [')"), &[])
        .await
        .unwrap();
    for endpoint in [&ea, &eb] {
        let ok = eventually(Duration::from_secs(10), || async { listed(endpoint).contains(&"quiet".to_owned()) }).await;
        assert!(ok, "{endpoint}: the resync did not pick up a row written without NOTIFY");
    }
    // The broken row is listed as invalid, with why; the others serve.
    assert!(
        eventually(Duration::from_secs(10), || async { listed(&eb) == ["broken", "quiet", "shared"] }).await,
        "{:?}",
        listed(&eb)
    );
    let all = json(&prismctl(&eb, &["-o", "json", "namespace", "list"]));
    let broken = all.as_array().unwrap().iter().find(|n| n["name"] == "broken").unwrap().clone();
    assert_eq!(broken["status"], "invalid", "{broken}");
    assert!(!broken["status_message"].as_str().unwrap().is_empty(), "{broken}");
    assert!(b.logs.contains("broken"), "the invalid registry row was not reported");

    // Deleted through B, gone from A.
    let out = prismctl(&eb, &["namespace", "delete", "shared", "--purge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gone = eventually(Duration::from_secs(10), || async { !listed(&ea).contains(&"shared".to_owned()) }).await;
    assert!(gone, "A still serves a namespace deleted through B");
    kv_b = a.kv().await;
    let err = put(kv_b).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    drop(a);
    drop(b);
    services::drop_postgres_schema(&schema).await;
}

/// `Result` to "it worked", for [`eventually`].
trait MapOk {
    fn map_ok(self) -> impl std::future::Future<Output = bool>;
}

impl<F, T, E> MapOk for F
where
    F: std::future::Future<Output = Result<T, E>>,
{
    async fn map_ok(self) -> bool {
        self.await.is_ok()
    }
}

/// A broken document in the watched directory is visible: `namespace list`
/// and `get` show it `invalid` with what is wrong, while the namespace keeps
/// serving its last good version; fixing the file brings it back to ready.
#[tokio::test]
async fn a_broken_namespace_file_shows_as_invalid_until_it_is_fixed() {
    let proxy = ProxyConfig::memstore().start();
    let ep = proxy.endpoint();
    let dir = proxy.config().unwrap().namespaces_dir();
    let good = kv_doc("orders", "  backend: memstore\n");
    std::fs::write(dir.join("orders.yaml"), &good).unwrap();
    let status = |name: &'static str| {
        let ep = ep.clone();
        async move {
            let out = prismctl(&ep, &["-o", "json", "namespace", "list"]);
            json(&out).as_array().unwrap().iter().find(|n| n["name"] == name).cloned()
        }
    };
    assert!(eventually(Duration::from_secs(10), || async { status("orders").await.is_some() }).await);

    std::fs::write(dir.join("orders.yaml"), good.replace("pattern: keyvalue", "pattern: keyvalu")).unwrap();
    std::fs::write(dir.join("fresh.yaml"), "apiVersion: prism/v1\nkind: [\n").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            status("orders").await.is_some_and(|n| n["status"] == "invalid")
        })
        .await,
        "{:?}",
        status("orders").await
    );
    let orders = status("orders").await.unwrap();
    assert!(orders["status_message"].as_str().unwrap().contains("keyvalu"), "{orders}");
    // A broken file of no namespace yet is listed by its file name.
    let fresh = status("fresh").await.expect("the broken new file is listed");
    assert_eq!(fresh["status"], "invalid");
    // It keeps serving the last good version meanwhile.
    let mut kv = proxy.kv().await;
    let put =
        PutRequest { namespace: "orders".into(), key: "k".into(), value: b"v".to_vec().into(), ..Default::default() };
    kv.put(put).await.unwrap();
    let out = prismctl(&ep, &["namespace", "get", "orders"]);
    assert!(
        text(&out.stdout).contains("status:   invalid: ") && text(&out.stdout).contains("last good version"),
        "{}",
        text(&out.stdout)
    );
    let out = prismctl(&ep, &["namespace", "list"]);
    assert!(text(&out.stdout).contains("invalid"), "{}", text(&out.stdout));

    std::fs::write(dir.join("orders.yaml"), &good).unwrap();
    std::fs::remove_file(dir.join("fresh.yaml")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            status("orders").await.is_some_and(|n| n["status"] == "ready") && status("fresh").await.is_none()
        })
        .await
    );
}

/// `namespace delete --purge` through one proxy while clients write
/// through another: the purge runs only once every proxy has stopped
/// routing the namespace, so nothing written before or during the delete
/// is left in the backend, and the namespace applied again starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_purge_across_proxies_leaves_nothing_behind() {
    if !services::require(POSTGRES) {
        return;
    }
    let schema = schema_name();
    let url = services::postgres_url();
    let plugin = postgres_plugin(&schema);
    let (a, b) = two_proxies("postgres", &plugin, &format!("{schema}reg"));
    let (ea, eb) = (a.endpoint(), b.endpoint());
    let work = tempfile::tempdir().unwrap();
    let file = write(work.path(), "doomed.yaml", &kv_doc("doomed", "  backend: postgres\n"));
    let out = prismctl(&eb, &["namespace", "apply", "-f", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kv_a = a.kv().await;
    let put = |mut kv: prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient<_>, key: String| async move {
        kv.put(PutRequest { namespace: "doomed".into(), key, value: b"v".to_vec().into(), ..Default::default() }).await
    };
    assert!(eventually(Duration::from_secs(10), || put(kv_a.clone(), "first".into()).map_ok()).await);

    // Four writers through A, as fast as they can, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (kv, stop, acked) = (kv_a.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if put(kv.clone(), format!("w{w}-{i}")).await.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || async { acked.load(Ordering::Relaxed) > 200 }).await);

    let out = prismctl(&eb, &["namespace", "delete", "doomed", "--purge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The writers go on a while against the deleted namespace.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let left: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".kv WHERE ns = 'doomed'"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "rows of the purged namespace left in PostgreSQL");

    // Applied again, it starts empty, through either proxy.
    let out = prismctl(&eb, &["namespace", "apply", "-f", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let served = eventually(Duration::from_secs(10), || async {
        let mut kv = a.kv().await;
        kv.get(GetRequest { namespace: "doomed".into(), key: "first".into() }).await.is_ok()
    })
    .await;
    assert!(served, "A does not serve the namespace applied again");
    let scan = prismctl(&ea, &["-o", "json", "kv", "scan", "doomed"]);
    assert!(scan.status.success(), "{}", text(&scan.stderr));
    assert_eq!(json(&scan).as_array().map(Vec::len), Some(0), "{}", text(&scan.stdout));

    // A delete that stopped half way (its proxy died after marking the
    // namespace) leaves it unrouted; applying it is refused until a delete
    // finishes the job.
    client
        .execute(&format!("UPDATE \"{schema}reg\".namespaces SET deleting = revision WHERE name = 'doomed'"), &[])
        .await
        .unwrap();
    client.execute(&format!("NOTIFY \"prism_namespaces_{schema}reg\""), &[]).await.ok();
    let unrouted = eventually(Duration::from_secs(10), || async {
        let mut kv = a.kv().await;
        kv.get(GetRequest { namespace: "doomed".into(), key: "first".into() })
            .await
            .is_err_and(|e| e.code() == tonic::Code::NotFound)
    })
    .await;
    assert!(unrouted, "a namespace marked deleted is still served");
    let out = prismctl(&eb, &["namespace", "apply", "-f", &file]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success() && said.contains("is being deleted"), "{said}");
    let out = prismctl(&eb, &["namespace", "delete", "doomed", "--purge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = prismctl(&eb, &["namespace", "apply", "-f", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    drop(a);
    drop(b);
    services::drop_postgres_schema(&schema).await;
    services::drop_postgres_schema(&format!("{schema}reg")).await;
}

/// A file of several documents (`---`) is validated and applied document by
/// document, errors at the file's own lines; a file too large or not text
/// is an invalid document (exit code 3), not a failure to run.
#[test]
fn multi_document_files_and_unreadable_documents() {
    let proxy = ProxyConfig::memstore().start();
    let ep = proxy.endpoint();
    let work = tempfile::tempdir().unwrap();
    let good = kv_doc("first", "  backend: memstore\n");
    let bad = kv_doc("second", "  backend: memstore\n  needs:\n    ttl: 5x\n");
    // Line 1 is a marker, then 8 lines of the first document, a marker on
    // line 10, the second from line 11: its ttl is on line 20.
    let file = write(work.path(), "two.yaml", &format!("---\n{good}---\n{bad}"));
    let out = prismctl(&ep, &["-o", "json", "namespace", "validate", "-f", &file]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let results = json(&out);
    assert_eq!(results.as_array().unwrap().len(), 2, "{results}");
    assert_eq!(results[0]["valid"], true, "{results}");
    assert_eq!(results[0]["document"], 1);
    assert_eq!(results[1]["document"], 2);
    assert_eq!(results[1]["errors"][0]["field"], "spec.needs.ttl", "{results}");
    assert_eq!(results[1]["errors"][0]["line"], 20, "{results}");
    let out = prismctl(&ep, &["namespace", "validate", "-f", &file]);
    assert!(text(&out.stdout).contains(&format!("{file}:20:10: spec.needs.ttl:")), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("from_str_multiple"), "{}", text(&out.stdout));

    // Apply takes each document: the good one is created, the bad one is
    // refused at its file line.
    let out = prismctl(&ep, &["namespace", "apply", "-f", &file]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("namespace first created"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(&format!("{file}:20:")), "{}", text(&out.stdout));
    assert!(listed(&ep).contains(&"first".to_owned()));

    let huge = work.path().join("huge.yaml");
    std::fs::write(&huge, vec![b'#'; 10 * 1024 * 1024]).unwrap();
    let binary = work.path().join("binary.yaml");
    std::fs::write(&binary, [0xff_u8, 0xfe, 0x00, 0x9f, 0x92, 0x96]).unwrap();
    for (path, says) in [(&huge, "over the limit"), (&binary, "not UTF-8 text")] {
        let path = path.to_str().unwrap();
        for verb in ["validate", "apply"] {
            let out = prismctl(&ep, &["namespace", verb, "-f", path]);
            assert_eq!(out.status.code(), Some(3), "{verb} {path}: {}", text(&out.stderr));
            assert!(text(&out.stdout).contains(says), "{verb} {path}: {}", text(&out.stdout));
        }
    }
}

/// Three proxies on one PostgreSQL registry and one PostgreSQL backend; a
/// client balancing its calls over all three (`prism_proto::balance`:
/// tonic's balancer fed by each proxy's gRPC health). One proxy killed (SIGKILL) under load: the
/// calls in flight on it fail (UNAVAILABLE), the rest go to the other two,
/// every acknowledged write is readable, and the proxy started again at
/// its address serves the same namespaces and gets calls again. A proxy
/// stopped cleanly with `shutdown_delay` fails no call: it reports
/// NOT_SERVING, the client stops sending to it, then it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_under_load_clients_continue_on_the_others() {
    use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
    use std::sync::Mutex;
    use std::time::Instant;
    if !services::require(POSTGRES) {
        return;
    }
    let schema = schema_name();
    let url = services::postgres_url();
    let plugin = postgres_plugin(&schema);
    let config = |port| {
        ProxyConfig::new()
            .port(port)
            .plugin("postgres", &plugin)
            .postgres_registry(&url, &format!("{schema}reg"), "1s")
            .extra("shutdown_delay: 1s\n")
    };
    let ports: Vec<u16> = (0..3).map(|_| services::free_port()).collect();
    let mut proxies: Vec<Option<prism_tests::Proxy>> = ports.iter().map(|p| Some(config(*p).start())).collect();
    let endpoints: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let work = tempfile::tempdir().unwrap();
    let file = write(work.path(), "spread.yaml", &kv_doc("spread", "  backend: postgres\n"));
    let out = prismctl(&endpoints[0], &["namespace", "apply", "-f", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let put = |mut kv: KeyValueServiceClient<tonic::transport::Channel>, key: String| async move {
        let mut request = tonic::Request::new(PutRequest {
            namespace: "spread".into(),
            key: key.clone(),
            value: key.into_bytes().into(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(5));
        kv.put(request).await.map(|r| r.into_inner().version)
    };
    for proxy in proxies.iter().flatten() {
        let kv = proxy.kv().await;
        assert!(eventually(Duration::from_secs(10), || async { put(kv.clone(), "ready".into()).await.is_ok() }).await);
    }

    // The client: one channel over the three proxies.
    let channel = prism_proto::balance::balanced_channel(
        endpoints.iter().map(|e| tonic::transport::Endpoint::from_shared(e.clone()).unwrap()),
        Duration::from_millis(500),
    );
    let kv = KeyValueServiceClient::new(channel);
    let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let failures = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (kv, acked, failures, stop) = (kv.clone(), acked.clone(), failures.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("w{w}/{i}");
                    match put(kv.clone(), key.clone()).await {
                        Ok(version) => acked.lock().unwrap().push((key, version)),
                        Err(e) => {
                            failures.lock().unwrap().push((Instant::now(), format!("{:?}: {}", e.code(), e.message())));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    let acked_before = acked.lock().unwrap().len();
    let stopped = proxies[1].take().unwrap().kill().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let acked_while_down = acked.lock().unwrap().len() - acked_before;
    // Started again at the same address, like a restarted pod.
    let restarted_at = Instant::now();
    proxies[1] = Some(stopped.start());
    println!("proxy restarted in {:?}", restarted_at.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A clean stop (SIGTERM), as in a rolling update.
    let failed_before_stop = failures.lock().unwrap().len();
    let stopping_at = Instant::now();
    let stopping = proxies[2].take().unwrap();
    let logs = stopping.logs.clone();
    stopping.stop();
    println!("proxy stopped cleanly in {:?}", stopping_at.elapsed());
    // Health watchers (the balancing client's) end at shutdown rather than
    // holding it for the whole grace period.
    assert!(!logs.contains("did not finish in time"), "{}", logs.text());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    let (killed, stopped): (Vec<_>, Vec<_>) = failures.iter().partition(|(at, _)| *at < stopping_at);
    let window = killed.iter().map(|(at, _)| at.saturating_duration_since(killed_at)).max().unwrap_or_default();
    assert_eq!(killed.len(), failed_before_stop);
    println!(
        "proxy failover: {} writes acknowledged ({acked_while_down} while a proxy was down), {} failed after \
         the kill (the last {window:?} after it), {} during the clean stop",
        acked.len(),
        killed.len(),
        stopped.len()
    );
    for (_, why) in failures.iter().take(5) {
        println!("  failed: {why}");
    }
    // Calls in flight on the killed proxy: tonic reports a connection cut
    // mid-call as UNKNOWN "transport error", or CANCELLED when the call was
    // still queued on it; none of them was acknowledged.
    let cut = |why: &str| {
        why.starts_with("Unavailable")
            || why == "Unknown: transport error"
            || why == "Cancelled: operation was canceled"
    };
    assert!(killed.iter().all(|(_, why)| cut(why)), "{killed:?}");
    assert!(stopped.is_empty(), "calls failed while a proxy stopped cleanly: {stopped:?}");
    assert!(acked_while_down > 0, "no write succeeded while one proxy of three was down");
    assert!(window < Duration::from_secs(4), "calls kept failing after the kill: last failure {window:?} after it");

    // The restarted proxy serves the shared namespaces and is used again by
    // the balancing client.
    let restarted = proxies[1].as_ref().unwrap();
    assert!(listed(&endpoints[1]).contains(&"spread".to_owned()));
    let metrics = reqwest_metrics(&restarted.admin_url()).await;
    let served = metrics
        .lines()
        .filter(|l| l.starts_with("prism_requests_total{") && l.contains("namespace=\"spread\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(served > 0.0, "the balancing client never used the restarted proxy:\n{metrics}");

    let mut kv = kv.clone();
    let mut lost = Vec::new();
    for (key, version) in &acked {
        let got = kv.get(GetRequest { namespace: "spread".into(), key: key.clone() }).await.unwrap().into_inner();
        if !got.found || got.value != key.as_bytes() || got.version != *version {
            lost.push(key.clone());
        }
    }
    assert!(lost.is_empty(), "{} of {} acknowledged writes lost: {lost:?}", lost.len(), acked.len());
    drop(proxies);
    services::drop_postgres_schema(&schema).await;
    services::drop_postgres_schema(&format!("{schema}reg")).await;
}

async fn reqwest_metrics(admin: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap()
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// How many namespaces `/metrics` says the proxy serves.
fn served(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("prism_namespaces{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Namespaces loaded together are published as one route table: a proxy
/// starting with 200 namespace files swaps its table once, not once per
/// namespace (each swap copies the whole table, so one per namespace made
/// loading N namespaces quadratic). A reload that finds one file changed
/// and one added among 200 unchanged ones serves both changes (unchanged
/// documents are not parsed again) and keeps the rest.
#[tokio::test]
async fn namespaces_loaded_together_swap_the_route_table_once() {
    // 200, and the usual `demo` namespace.
    const N: usize = 201;
    let mut config = ProxyConfig::memstore();
    for i in 0..N - 1 {
        config = config.keyvalue(&format!("many{i:03}"), "memstore");
    }
    let dir = config.namespaces_dir();
    let proxy = config.start();
    let admin = proxy.admin_url();
    let loaded = eventually(Duration::from_secs(30), || {
        let admin = admin.clone();
        async move { served(&reqwest_metrics(&admin).await) == N as f64 }
    })
    .await;
    assert!(loaded, "the proxy never served {N} namespaces");
    let text = reqwest_metrics(&admin).await;
    assert_eq!(metric(&text, "prism_route_table_version"), Some(1.0), "{text}");

    // One file edited and one added: the reload publishes both at once.
    std::fs::write(
        dir.join("many000.yaml"),
        "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: many000}\nspec:\n  pattern: keyvalue\n  backend: memstore\n  needs: {ttl: 1h}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("added.yaml"),
        "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: added}\nspec:\n  pattern: keyvalue\n  backend: memstore\n",
    )
    .unwrap();
    let reloaded = eventually(Duration::from_secs(60), || {
        let admin = admin.clone();
        async move { served(&reqwest_metrics(&admin).await) == (N + 1) as f64 }
    })
    .await;
    assert!(reloaded, "the proxy never served the added namespace");
    // Both writes usually land in one debounced reload (one swap); a
    // reload that fell between them makes two, never one per namespace.
    let text = reqwest_metrics(&admin).await;
    let version = metric(&text, "prism_route_table_version").unwrap_or(0.0);
    assert!((2.0..=3.0).contains(&version), "{text}");
    let out = prismctl(&proxy.endpoint(), &["-o", "json", "namespace", "get", "many000"]);
    assert!(text_of(&out).contains("ttl"), "{}", text_of(&out));
    let out = prismctl(&proxy.endpoint(), &["namespace", "get", "many199"]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
}

fn text_of(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}
