#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Moving a KeyValue namespace to another backend while clients keep
//! writing and reading: `prismctl migrate` through mirror, backfill,
//! verify, promote, finalize and rollback, with every acknowledged write
//! checked afterwards in both backends' own storage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prism_proto::admin::v1::{GetMigrationRequest, MigrateNamespaceRequest, Migration};
use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::keyvalue::v1::{DeleteRequest, GetRequest, PutRequest, ScanRequest};
use prism_tests::services;
use prism_tests::{Proxy, ProxyConfig, eventually};
use tonic::Code;
use tonic::transport::Channel;

fn namespace(name: &str, backend: &str) -> String {
    format!(
        "apiVersion: prism/v1\nkind: Namespace\nmetadata: {{name: {name}}}\n# owned by the orders team\nspec:\n  pattern: keyvalue\n  backend: {backend}\n"
    )
}

/// Runs prismctl against `proxy`; answers (success, stdout, stderr).
fn ctl(proxy: &Proxy, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(prism_tests::bin_path("prismctl"))
        .args(["--endpoint", &proxy.endpoint(), "--timeout", "60s"])
        .args(args)
        .env("PRISMCTL_CONFIG", "/dev/null")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(proxy: &Proxy, args: &[&str]) -> String {
    let (success, stdout, stderr) = ctl(proxy, args);
    assert!(success, "prismctl {args:?} failed:\n{stdout}\n{stderr}\n--- proxy logs ---\n{}", proxy.logs.text());
    stdout
}

async fn namespace_info(proxy: &Proxy, ns: &str) -> prism_proto::admin::v1::NamespaceInfo {
    let mut admin = proxy.admin().await;
    let request = prism_proto::admin::v1::GetNamespaceRequest { name: ns.into() };
    admin.get_namespace(request).await.unwrap().into_inner().namespace.unwrap()
}

async fn migration(proxy: &Proxy, ns: &str) -> Migration {
    let mut admin = proxy.admin().await;
    admin.get_migration(GetMigrationRequest { namespace: ns.into() }).await.unwrap().into_inner().migration.unwrap()
}

async fn step(proxy: &Proxy, request: MigrateNamespaceRequest) -> Result<Migration, tonic::Status> {
    let mut admin = proxy.admin().await;
    admin.migrate_namespace(request).await.map(|r| r.into_inner().migration.unwrap())
}

/// What one client did: the value of every key it last wrote (None:
/// deleted), its acknowledged writes, and every failed call.
#[derive(Default)]
struct Client {
    model: BTreeMap<String, Option<String>>,
    writes: u64,
    reads: u64,
    failures: Vec<String>,
}

/// A client writing, overwriting, deleting and reading keys `<prefix>NNNN`
/// until `stop`; every read must return its own last write.
fn client(
    mut kv: KeyValueServiceClient<Channel>,
    ns: &str,
    prefix: &str,
    keys: u64,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Client> {
    let (ns, prefix) = (ns.to_owned(), prefix.to_owned());
    tokio::spawn(async move {
        let mut c = Client::default();
        let mut i: u64 = 0;
        // About 400 calls a second: a steady load the debug build's
        // shadow keeps up with (a shadow that cannot keep up drops copies,
        // which the switch then repairs; `shadow.rs` tests that).
        let mut tick = tokio::time::interval(Duration::from_micros(2500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            i += 1;
            let key = format!("{prefix}{:04}", fastrand::u64(..keys));
            match i % 10 {
                0 | 1 => {
                    let request = DeleteRequest { namespace: ns.clone(), key: key.clone(), if_version: None };
                    match kv.delete(request).await {
                        Ok(_) => {
                            c.model.insert(key, None);
                            c.writes += 1;
                            writes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => c.failures.push(format!("delete {key}: {e}")),
                    }
                }
                2..=4 => match kv.get(GetRequest { namespace: ns.clone(), key: key.clone() }).await {
                    Ok(reply) => {
                        c.reads += 1;
                        let reply = reply.into_inner();
                        let got = reply.found.then(|| String::from_utf8_lossy(&reply.value).into_owned());
                        if let Some(expected) = c.model.get(&key)
                            && *expected != got
                        {
                            c.failures.push(format!("get {key}: expected {expected:?}, got {got:?}"));
                        }
                    }
                    Err(e) => c.failures.push(format!("get {key}: {e}")),
                },
                _ => {
                    let value = format!("{prefix}-{i}");
                    let request = PutRequest {
                        namespace: ns.clone(),
                        key: key.clone(),
                        value: Bytes::from(value.clone()),
                        ttl_seconds: 0,
                        if_version: None,
                    };
                    match kv.put(request).await {
                        Ok(_) => {
                            c.model.insert(key, Some(value));
                            c.writes += 1;
                            writes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => c.failures.push(format!("put {key}: {e}")),
                    }
                }
            }
        }
        c
    })
}

/// Writes `count` keys `<prefix>NNNN` before the migration starts.
async fn preload(kv: &mut KeyValueServiceClient<Channel>, ns: &str, prefix: &str, count: u64) -> Client {
    let mut c = Client::default();
    for i in 0..count {
        let key = format!("{prefix}{i:04}");
        let value = format!("{prefix}-pre{i}");
        let request = PutRequest {
            namespace: ns.into(),
            key: key.clone(),
            value: Bytes::from(value.clone()),
            ..Default::default()
        };
        kv.put(request).await.unwrap();
        c.model.insert(key, Some(value));
    }
    c
}

/// Every key the proxy serves for `ns` (its primary).
async fn scan_all(kv: &mut KeyValueServiceClient<Channel>, ns: &str) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    let mut token = String::new();
    loop {
        let request = ScanRequest { namespace: ns.into(), prefix: String::new(), page_size: 1000, page_token: token };
        let page = kv.scan(request).await.unwrap().into_inner();
        for e in page.items {
            all.insert(e.key, String::from_utf8_lossy(&e.value).into_owned());
        }
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// What the clients' acknowledged writes left: the expected contents.
fn expected(clients: &[&Client]) -> BTreeMap<String, String> {
    clients
        .iter()
        .flat_map(|c| c.model.iter())
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
        .collect()
}

/// The namespace's rows in PostgreSQL, read with psql.
fn postgres_rows(schema: &str, ns: &str) -> BTreeMap<String, String> {
    let psql = services::require_program("psql").unwrap();
    let out = std::process::Command::new(psql)
        .args([&services::postgres_url(), "-At", "-F", "\t", "-c"])
        .arg(format!("SELECT key, encode(value, 'escape') FROM \"{schema}\".kv WHERE ns = '{ns}' AND (expires_at IS NULL OR expires_at > now())"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The namespace's keys in Redis, read with redis-cli (the plugin stores a
/// key as a hash `{prefix:ns}:d:<key>` with its value in field `d`).
fn redis_rows(prefix: &str, ns: &str) -> BTreeMap<String, String> {
    let cli = services::require_program("redis-cli").unwrap();
    let script = "local r = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do table.insert(r, k) table.insert(r, redis.call('HGET', k, 'd')) end return r";
    let data = format!("{{{prefix}:{ns}}}:d:");
    let out = std::process::Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", "6379", "EVAL", script, "0", &format!("{data}*")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| (p[0].trim_start_matches(&data).to_owned(), p[1].to_owned()))
        .collect()
}

fn assert_same(what: &str, actual: &BTreeMap<String, String>, expected: &BTreeMap<String, String>) {
    if actual == expected {
        return;
    }
    let missing: Vec<_> = expected.keys().filter(|k| !actual.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    let different: Vec<_> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v))
        .take(5)
        .map(|(k, v)| format!("{k}: expected {v}, got {}", actual[k]))
        .collect();
    panic!(
        "{what}: {} keys, expected {}; missing {missing:?}, extra {extra:?}, different {different:?}",
        actual.len(),
        expected.len()
    );
}

fn redis_postgres(run: &str) -> ProxyConfig {
    ProxyConfig::new()
        .plugin(
            "redis",
            &format!("command: [prism-plugin-redis]\nconfig:\n  url: redis://127.0.0.1:6379\n  key_prefix: {run}"),
        )
        .plugin(
            "postgres",
            &format!(
                "command: [prism-plugin-postgres]\nconfig:\n  url: \"{}\"\n  schema: {run}",
                services::postgres_url()
            ),
        )
}

fn services_up() -> bool {
    services::require(("PostgreSQL", "127.0.0.1:5432")) && services::require(("Redis", "127.0.0.1:6379"))
}

/// Waits while the migration stays in `phase`.
async fn settle(proxy: &Proxy, ns: &str, phase: &str) -> Migration {
    let mut m = migration(proxy, ns).await;
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while m.phase == phase && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        m = migration(proxy, ns).await;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_moves_from_redis_to_postgres_under_load_and_back() {
    if !services_up() {
        return;
    }
    let run = format!("mig{}", std::process::id());
    let proxy = redis_postgres(&run).namespace_file("orders.yaml", &namespace("orders", "redis")).start();
    let mut kv = proxy.kv().await;
    let pre_a = preload(&mut kv, "orders", "a", 1500).await;
    let pre_b = preload(&mut kv, "orders", "b", 1500).await;

    // Two clients keep writing and reading through every step.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let a = client(proxy.kv().await, "orders", "a", 2000, stop.clone(), writes.clone());
    let b = client(proxy.kv().await, "orders", "b", 2000, stop.clone(), writes.clone());

    // Out of order: nothing to backfill before the migration starts.
    let (success, _, stderr) = ctl(&proxy, &["migrate", "backfill", "orders"]);
    assert!(!success && stderr.contains("has no migration"), "{stderr}");
    // A dry run changes nothing.
    let out = ok(&proxy, &["migrate", "orders", "--to", "postgres", "--dry-run"]);
    assert!(out.contains("would start"), "{out}");
    let (success, _, stderr) = ctl(&proxy, &["migrate", "status", "orders"]);
    assert!(!success && stderr.contains("has no migration"), "{stderr}");

    let out = ok(&proxy, &["migrate", "orders", "--to", "postgres", "--compare-reads", "0.2"]);
    assert!(out.contains("mirroring writes from redis to postgres"), "{out}");
    let (success, _, stderr) = ctl(&proxy, &["migrate", "promote", "orders"]);
    assert!(
        !success && stderr.contains("is mirroring") && stderr.contains("prismctl migrate backfill orders"),
        "{stderr}"
    );
    let (success, _, stderr) = ctl(&proxy, &["migrate", "orders", "--to", "postgres"]);
    assert!(!success && stderr.contains("already being migrated"), "{stderr}");

    let started = writes.load(Ordering::Relaxed);
    ok(&proxy, &["migrate", "backfill", "orders", "--rate", "3000"]);
    let m = migration(&proxy, "orders").await;
    assert_eq!(m.phase, "backfilled", "{m:?}");
    let backfill = m.backfill.clone().unwrap();
    assert!(backfill.total >= 2500 && backfill.scanned >= backfill.total.min(backfill.scanned), "{backfill:?}");
    assert!(backfill.copied > 0, "{backfill:?}");

    let out = ok(&proxy, &["migrate", "verify", "orders", "--clean-window", "2s"]);
    let m = migration(&proxy, "orders").await;
    assert_eq!(m.phase, "verified", "{out}\n{m:?}");
    let report = m.verify.unwrap();
    assert!(report.clean && report.matched > 2000, "{report:?}");
    assert_eq!((report.missing, report.extra, report.different), (0, 0, 0), "{report:?}");

    // The clients write at least 5,000 times during the migration.
    assert!(
        eventually(Duration::from_secs(60), || async { writes.load(Ordering::Relaxed) - started >= 5000 }).await,
        "the clients stalled"
    );
    let out = ok(&proxy, &["migrate", "promote", "orders"]);
    assert!(out.contains("postgres becomes the primary"), "{out}");
    let info = namespace_info(&proxy, "orders").await;
    assert_eq!(info.backend, "postgres");
    assert!(info.spec_yaml.contains("backend: redis"), "the old primary is the shadow: {}", info.spec_yaml);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(a.failures.is_empty() && b.failures.is_empty(), "failed calls: {:?} {:?}", a.failures, b.failures);
    assert!(a.reads + b.reads > 1000);
    let mut model = pre_a;
    for c in [pre_b, a, b] {
        model.model.extend(c.model);
    }
    // Both backends hold every acknowledged write: postgres as the
    // primary, redis as the shadow once its queue has drained.
    let want = expected(&[&model]);
    assert_same("the proxy's scan (postgres)", &scan_all(&mut kv, "orders").await, &want);
    assert_same("postgres", &postgres_rows(&run, "orders"), &want);
    assert!(
        eventually(Duration::from_secs(20), || async { redis_rows(&run, "orders") == want }).await,
        "redis, the shadow, did not get every write"
    );

    // Rollback under load: redis, which got every write as the shadow,
    // serves again, and nothing written meanwhile is lost.
    let stop = Arc::new(AtomicBool::new(false));
    let c = client(proxy.kv().await, "orders", "b", 2000, stop.clone(), writes.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(&proxy, &["migrate", "rollback", "orders"]);
    assert_eq!(migration(&proxy, "orders").await.phase, "rolled_back");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let c = c.await.unwrap();
    assert!(c.failures.is_empty(), "failed calls: {:?}", c.failures);
    model.model.extend(c.model);
    let want = expected(&[&model]);
    assert_same("the proxy's scan (redis)", &scan_all(&mut kv, "orders").await, &want);
    assert_same("redis", &redis_rows(&run, "orders"), &want);
    let mut pre = model;

    // Start again, all the way to finalize: postgres alone holds it all.
    let stop = Arc::new(AtomicBool::new(false));
    let c = client(proxy.kv().await, "orders", "a", 2000, stop.clone(), writes.clone());
    let (success, _, stderr) = ctl(&proxy, &["migrate", "orders", "--to", "postgres"]);
    assert!(!success && stderr.contains("already holds data"), "{stderr}");
    // Forced: the backfill keeps postgres's stale copy, and verify sees it.
    ok(&proxy, &["migrate", "orders", "--to", "postgres", "--force"]);
    ok(&proxy, &["migrate", "backfill", "orders", "--rate", "5000"]);
    let (success, _, stderr) = ctl(&proxy, &["migrate", "verify", "orders", "--clean-window", "1s"]);
    assert!(!success && stderr.contains("verify found differences"), "{stderr}");
    let m = migration(&proxy, "orders").await;
    let report = m.verify.unwrap();
    assert_eq!(m.phase, "backfilled");
    assert!(report.different + report.extra > 0 && !report.clean, "{report:?}");
    assert!(report.samples.iter().all(|s| s.contains("key-sha256:")), "keys only by hash: {:?}", report.samples);
    let (success, _, stderr) = ctl(&proxy, &["migrate", "promote", "orders"]);
    assert!(!success && stderr.contains("is backfilled"), "{stderr}");
    // Rolled back before promote, the copy goes; a new start finds none.
    ok(&proxy, &["migrate", "rollback", "orders"]);
    ok(&proxy, &["migrate", "orders", "--to", "postgres"]);
    ok(&proxy, &["migrate", "backfill", "orders", "--rate", "5000"]);
    ok(&proxy, &["migrate", "verify", "orders", "--clean-window", "1s"]);
    ok(&proxy, &["migrate", "promote", "orders"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = ok(&proxy, &["migrate", "finalize", "orders", "--dry-run"]);
    assert!(out.contains("would finalize"), "{out}");
    ok(&proxy, &["migrate", "finalize", "orders"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let c = c.await.unwrap();
    assert!(c.failures.is_empty(), "failed calls: {:?}", c.failures);
    pre.model.extend(c.model);
    let want = expected(&[&pre]);
    assert_same("postgres after finalize", &postgres_rows(&run, "orders"), &want);
    assert_same("the proxy's scan (postgres)", &scan_all(&mut kv, "orders").await, &want);
    let status = ok(&proxy, &["migrate", "status", "orders"]);
    assert!(status.contains("finalized") && status.contains("redis → postgres"), "{status}");
    let info = namespace_info(&proxy, "orders").await;
    assert_eq!(info.backend, "postgres");
    assert!(!info.spec_yaml.contains("shadow:"), "{}", info.spec_yaml);
    services::drop_postgres_schema(&run).await;
}

/// A proxy killed during the backfill resumes it from its checkpoint when
/// it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_resumes_from_its_checkpoint_after_the_proxy_is_killed() {
    if !services_up() {
        return;
    }
    let run = format!("migr{}", std::process::id());
    let config = redis_postgres(&run).namespace_file("items.yaml", &namespace("items", "redis"));
    let proxy = config.start();
    let mut kv = proxy.kv().await;
    let pre = preload(&mut kv, "items", "k", 3000).await;
    ok(&proxy, &["migrate", "items", "--to", "postgres"]);
    ok(&proxy, &["migrate", "backfill", "items", "--rate", "500", "--no-wait"]);
    assert!(
        eventually(Duration::from_secs(30), || async {
            migration(&proxy, "items").await.backfill.is_some_and(|b| b.scanned >= 1000)
        })
        .await
    );
    let before = migration(&proxy, "items").await.backfill.unwrap();
    let proxy = proxy.kill().unwrap().start();
    let m = settle(&proxy, "items", "backfilling").await;
    assert_eq!(m.phase, "backfilled", "{m:?}\n{}", proxy.logs.text());
    let b = m.backfill.unwrap();
    assert_eq!(b.scanned, 3000, "{b:?}");
    assert!(b.copied + b.skipped >= 3000 && b.copied <= 3000, "{b:?}");
    assert!(m.history.iter().any(|e| e.note.contains("taken over")), "{:?}", m.history);
    assert!(before.scanned < 3000);
    assert!(proxy.logs.contains("resuming the backfill from its checkpoint"), "{}", proxy.logs.text());
    let want = expected(&[&pre]);
    assert_same("postgres", &postgres_rows(&run, "items"), &want);
    // Rollback before promote deletes the copy.
    ok(&proxy, &["migrate", "rollback", "items"]);
    assert!(eventually(Duration::from_secs(10), || async { postgres_rows(&run, "items").is_empty() }).await);
    assert_same("redis", &redis_rows(&run, "items"), &want);
    services::drop_postgres_schema(&run).await;
}

/// Two proxies on one PostgreSQL registry: both follow the migration and
/// switch primaries together, with clients writing through both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_on_a_postgres_registry_switch_together() {
    if !services_up() {
        return;
    }
    let run = format!("migp{}", std::process::id());
    let start =
        || redis_postgres(&run).postgres_registry(&services::postgres_url(), &format!("{run}reg"), "2s").start();
    let (a, b) = (start(), start());
    a.admin()
        .await
        .apply_namespace(prism_proto::admin::v1::ApplyNamespaceRequest {
            spec_yaml: namespace("carts", "redis"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut kv_b = b.kv().await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut kv = kv_b.clone();
            async move { kv.get(GetRequest { namespace: "carts".into(), key: "x".into() }).await.is_ok() }
        })
        .await
    );
    let pre = preload(&mut kv_b, "carts", "p", 1000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let ca = client(a.kv().await, "carts", "a", 1000, stop.clone(), writes.clone());
    let cb = client(b.kv().await, "carts", "b", 1000, stop.clone(), writes.clone());

    ok(&a, &["migrate", "carts", "--to", "postgres"]);
    // B follows: its writes are mirrored too.
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.admin()
                .await
                .get_shadow_status(prism_proto::admin::v1::GetShadowStatusRequest { namespace: "carts".into() })
                .await
                .is_ok_and(|s| s.into_inner().status.is_some_and(|s| s.mirrored > 0))
        })
        .await,
        "{}",
        b.logs.text()
    );
    // Steps may be run through either proxy.
    ok(&b, &["migrate", "backfill", "carts", "--rate", "5000"]);
    ok(&a, &["migrate", "verify", "carts", "--clean-window", "1s"]);
    // A proxy that does not drain in time (stopped) makes the switch undo
    // itself; writes through the other go on.
    b.signal(nix::sys::signal::Signal::SIGSTOP);
    let (success, _, stderr) = ctl(&a, &["migrate", "promote", "carts", "--switch-timeout", "2s"]);
    b.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(!success && stderr.contains("the switch was undone") && stderr.contains("did not finish"), "{stderr}");
    let m = migration(&a, "carts").await;
    assert_eq!(m.phase, "verified", "{m:?}");
    assert!(m.error.contains("did not finish"), "{m:?}");
    let before = writes.load(Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(10), || async { writes.load(Ordering::Relaxed) > before + 100 }).await);
    let out = ok(&b, &["migrate", "promote", "carts"]);
    assert!(out.contains("postgres becomes the primary"), "{out}");
    for proxy in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                namespace_info(proxy, "carts").await.backend == "postgres"
            })
            .await
        );
    }
    let m = migration(&a, "carts").await;
    assert!(m.history.iter().any(|e| e.note.contains("postgres is the primary")), "{m:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (ca, cb) = (ca.await.unwrap(), cb.await.unwrap());
    assert!(ca.failures.is_empty() && cb.failures.is_empty(), "failed calls: {:?} {:?}", ca.failures, cb.failures);
    let mut all = pre;
    all.model.extend(ca.model);
    all.model.extend(cb.model);
    let want = expected(&[&all]);
    assert_same("postgres", &postgres_rows(&run, "carts"), &want);
    assert!(
        eventually(Duration::from_secs(10), || async { redis_rows(&run, "carts") == want }).await,
        "redis, the shadow now, got every write"
    );
    services::drop_postgres_schema(&run).await;
    services::drop_postgres_schema(&format!("{run}reg")).await;
}

/// Refusals: a namespace of another pattern, an unknown target, bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_refuse_what_they_cannot_do() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .plugin("lite", "command: [prism-plugin-sqlite]\nconfig:\n  path: m.sqlite3")
        .namespace_file("kv.yaml", &namespace("kv", "memstore"))
        .pattern_namespace("events", "timeseries", "memstore", "")
        .start();
    let (success, _, stderr) = ctl(&proxy, &["migrate", "events", "--to", "lite"]);
    assert!(!success && stderr.contains("migrations move keyvalue namespaces"), "{stderr}");
    let (success, _, stderr) = ctl(&proxy, &["migrate", "kv", "--to", "nope"]);
    assert!(!success && stderr.contains("\"nope\" is not a plugin"), "{stderr}");
    let (success, _, stderr) = ctl(&proxy, &["migrate", "kv", "--to", "memstore"]);
    assert!(!success && stderr.contains("already served by memstore"), "{stderr}");
    let (success, _, stderr) = ctl(&proxy, &["migrate", "kv", "--to", "lite", "--compare-reads", "2"]);
    assert!(!success && stderr.contains("between 0 and 1"), "{stderr}");
    let (success, _, stderr) = ctl(&proxy, &["migrate", "kv"]);
    assert!(!success && stderr.contains("--to"), "{stderr}");
    let (success, _, stderr) = ctl(&proxy, &["migrate", "missing", "--to", "lite"]);
    assert!(!success && stderr.contains("not found"), "{stderr}");
    let err = step(&proxy, MigrateNamespaceRequest { namespace: "kv".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = step(&proxy, MigrateNamespaceRequest { namespace: "kv".into(), step: 99, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // memstore to sqlite, no external server: the whole way, quickly.
    let mut kv = proxy.kv().await;
    let pre = preload(&mut kv, "kv", "k", 300).await;
    ok(&proxy, &["migrate", "kv", "--to", "lite", "--queue", "1"]);
    // A document applied meanwhile keeps the migration's backend and shadow.
    let plan = proxy
        .admin()
        .await
        .apply_namespace(prism_proto::admin::v1::ApplyNamespaceRequest {
            spec_yaml: namespace("kv", "memstore")
                .replace("pattern: keyvalue", "pattern: keyvalue\n  needs: {ttl: 1h}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert!(plan.warnings.iter().any(|w| w.contains("managed by the migration")), "{plan:?}");
    let (success, _, stderr) = ctl(&proxy, &["namespace", "delete", "kv", "--purge"]);
    assert!(!success && stderr.contains("being migrated"), "{stderr}");
    for (args, phase) in [
        (vec!["migrate", "backfill", "kv"], "backfilled"),
        (vec!["migrate", "verify", "kv", "--clean-window", "1s"], "verified"),
        (vec!["migrate", "promote", "kv", "--dry-run"], "verified"),
    ] {
        ok(&proxy, &args);
        assert_eq!(migration(&proxy, "kv").await.phase, phase, "after {args:?}");
    }
    // A burst the shadow's queue (of one copy) cannot hold: copies are
    // dropped, and the promote copies those keys again before it switches.
    let mut burst = Vec::new();
    for w in 0..8 {
        let mut kv = proxy.kv().await;
        burst.push(tokio::spawn(async move {
            let mut c = Client::default();
            for i in 0..40 {
                let (key, value) = (format!("k{:04}", w * 40 + i), format!("burst{w}-{i}"));
                let request = PutRequest {
                    namespace: "kv".into(),
                    key: key.clone(),
                    value: Bytes::from(value.clone()),
                    ..Default::default()
                };
                kv.put(request).await.unwrap();
                c.model.insert(key, Some(value));
            }
            c
        }));
    }
    let mut model = pre;
    for task in burst {
        model.model.extend(task.await.unwrap().model);
    }
    let dropped = proxy
        .admin()
        .await
        .get_shadow_status(prism_proto::admin::v1::GetShadowStatusRequest { namespace: "kv".into() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .dropped;
    assert!(dropped > 0, "the burst should overflow a queue of one");
    ok(&proxy, &["migrate", "promote", "kv"]);
    assert_eq!(migration(&proxy, "kv").await.phase, "promoted");
    assert!(proxy.logs.contains("copied again the keys whose mirrored writes were lost"), "{}", proxy.logs.text());
    let pre = model;
    let json = ok(&proxy, &["-o", "json", "migrate", "status", "kv"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["phase"], "promoted");
    assert_eq!(doc["verify"]["clean"], true);
    assert_eq!(doc["next"], "prismctl migrate finalize kv (or rollback)");
    assert_same("the proxy's scan (sqlite)", &scan_all(&mut kv, "kv").await, &expected(&[&pre]));
    ok(&proxy, &["migrate", "finalize", "kv", "--purge"]);
    let (success, _, stderr) = ctl(&proxy, &["migrate", "rollback", "kv"]);
    assert!(!success && stderr.contains("is finalized"), "{stderr}");
}
