//! Isolation between namespaces: enforced rate quotas (a token bucket per
//! namespace and operation class, RESOURCE_EXHAUSTED with a retry hint) and
//! fair concurrency (one namespace's flood cannot take every slot of
//! `limits.max_concurrent_requests`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use prism_proto::admin::v1::ApplyNamespaceRequest;
use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::keyvalue::v1::{GetRequest, PutRequest};
use prism_tests::services::{self, PrivateServer};
use prism_tests::{ProxyConfig, signal};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const MEMSTORE: &str = "command: [prism-plugin-memstore]\npool_size: 2";

fn namespace(name: &str, backend: &str, rest: &str) -> String {
    format!(
        "apiVersion: prism/v1\nkind: Namespace\nmetadata: {{name: {name}}}\nspec:\n  pattern: keyvalue\n  backend: {backend}\n{rest}"
    )
}

fn get(namespace: &str) -> GetRequest {
    GetRequest { namespace: namespace.into(), key: "k".into() }
}

/// Sends `n` gets to `namespace` at once; the statuses, in no order.
async fn burst(kv: &KeyValueServiceClient<Channel>, namespace: &str, n: usize) -> Vec<Result<(), tonic::Status>> {
    let calls = (0..n).map(|_| {
        let mut kv = kv.clone();
        let ns = namespace.to_owned();
        tokio::spawn(async move { kv.get(get(&ns)).await.map(|_| ()) })
    });
    let mut out = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        out.push(call.await.unwrap());
    }
    out
}

async fn metrics(proxy: &prism_tests::Proxy) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("{}/metrics", proxy.admin_url())).await.unwrap().text().await.unwrap()
}

/// A namespace that enforces its declared rates gets what its bucket holds
/// and is refused beyond it at once, with when to retry; its writes have a
/// bucket of their own, and a namespace next to it is not touched.
#[tokio::test]
async fn an_enforced_quota_refuses_the_excess_with_a_retry_hint() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", MEMSTORE)
        .namespace_file(
            "noisy.yaml",
            &namespace(
                "noisy",
                "memstore",
                "  needs: {read_rps: 20, write_rps: 5}\n  quota: {enforce: true, burst: 500ms}\n",
            ),
        )
        .namespace_file("quiet.yaml", &namespace("quiet", "memstore", "  needs: {read_rps: 20}\n"))
        .start();
    let kv = proxy.kv().await;
    let mut client = kv.clone();
    client
        .put(PutRequest {
            namespace: "quiet".into(),
            key: "k".into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // 20/s with 500 ms of burst: a bucket of 10 reads (and a few more come
    // back while the burst is sent).
    let started = Instant::now();
    let results = burst(&kv, "noisy", 200).await;
    let elapsed = started.elapsed();
    // An admitted get answers (the key is not found), one over the quota
    // is RESOURCE_EXHAUSTED, and nothing else happens.
    let over: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .inspect(|s| assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}"))
        .collect();
    let admitted = results.len() - over.len();
    assert!(
        (10..=10 + (elapsed.as_secs_f64() * 20.0).ceil() as usize).contains(&admitted),
        "{admitted} admitted in {elapsed:?}"
    );
    let status = over[0];
    assert!(status.message().contains("read quota of 20 calls/s"), "{}", status.message());
    assert!(status.message().contains("spec.needs.read_rps"), "{}", status.message());
    let pushback: u64 =
        status.metadata().get("grpc-retry-pushback-ms").expect("pushback").to_str().unwrap().parse().unwrap();
    assert!((1..=1000).contains(&pushback), "pushback {pushback} ms");
    let retry = status.get_details_retry_info().expect("RetryInfo").retry_delay.expect("a delay");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(1), "{retry:?}");

    // Writes have their own bucket: 5/s × 500 ms = 3 at once.
    let mut writes = 0;
    for i in 0..10 {
        let put = PutRequest {
            namespace: "noisy".into(),
            key: format!("k{i}"),
            value: b"v".to_vec().into(),
            ..Default::default()
        };
        match client.put(put).await {
            Ok(_) => writes += 1,
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}"),
        }
    }
    assert!((3..=5).contains(&writes), "{writes} writes admitted");

    // The neighbour declared a rate but enforces none: all 200 served.
    let quiet = burst(&kv, "quiet", 200).await;
    assert!(quiet.iter().all(Result::is_ok), "{:?}", quiet.iter().find(|r| r.is_err()));

    // After the hint, a read goes through again.
    tokio::time::sleep(Duration::from_millis(pushback.max(60))).await;
    client.get(get("noisy")).await.unwrap();

    let text = metrics(&proxy).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("prism_limit_hits_total") && l.contains("noisy") && l.contains("read_quota"))
        .expect("read_quota hits counted");
    let hits: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(hits >= over.len() as f64, "{line}");
    assert!(text.lines().any(|l| l.contains("write_quota") && l.contains("noisy")));
}

/// `limits.enforce_quotas` turns every namespace's declared rates into
/// quotas, except a namespace's `quota.enforce: false`; a namespace that
/// declares no rate is not limited. Applying a namespace that asks for an
/// enforced quota without a rate is refused, naming the field.
#[tokio::test]
async fn the_proxy_can_enforce_every_declared_rate() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", MEMSTORE)
        .extra("limits: {enforce_quotas: true, quota_burst: 100ms}")
        .namespace_file("limited.yaml", &namespace("limited", "memstore", "  needs: {read_rps: 10}\n"))
        .namespace_file(
            "exempt.yaml",
            &namespace("exempt", "memstore", "  needs: {read_rps: 10}\n  quota: {enforce: false}\n"),
        )
        .namespace_file("undeclared.yaml", &namespace("undeclared", "memstore", ""))
        .start();
    let kv = proxy.kv().await;
    let refused = |results: &[Result<(), tonic::Status>]| {
        results.iter().filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted)).count()
    };
    // 10/s × 100 ms: a bucket of one read.
    assert!(refused(&burst(&kv, "limited", 50).await) >= 40);
    assert_eq!(refused(&burst(&kv, "exempt", 50).await), 0);
    assert_eq!(refused(&burst(&kv, "undeclared", 50).await), 0);

    let mut admin = proxy.admin().await;
    for (yaml, field) in [
        (namespace("bad", "memstore", "  quota: {enforce: true}\n"), "spec.quota.enforce"),
        (namespace("bad", "memstore", "  needs: {read_rps: 0}\n  quota: {enforce: true}\n"), "spec.needs.read_rps"),
        (
            namespace("bad", "memstore", "  needs: {read_rps: 5}\n  quota: {enforce: yes-please}\n"),
            "spec.quota.enforce",
        ),
        (namespace("bad", "memstore", "  needs: {read_rps: 5}\n  quota: {burst: 5m}\n"), "spec.quota.burst"),
        (namespace("bad", "memstore", "  needs: {read_rps: 5}\n  quota: {brust: 1s}\n"), "spec.quota.brust"),
    ] {
        let status =
            admin.apply_namespace(ApplyNamespaceRequest { spec_yaml: yaml, ..Default::default() }).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
}

/// With the proxy's slots nearly all taken by one namespace whose backend
/// hangs, another namespace is still served: the flood holds at most its
/// fair share and its excess is refused at once. Redis is paused (SIGSTOP)
/// so the flood's calls hang until their deadline.
#[tokio::test]
async fn a_flood_cannot_take_every_slot() {
    let Some(program) = services::require_program("redis-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateServer::redis(&program, services::free_port(), dir.path());
    redis.start();
    let proxy = ProxyConfig::new()
        .plugin("memstore", MEMSTORE)
        .plugin("redis", &format!("command: [prism-plugin-redis]\nconfig:\n  url: redis://127.0.0.1:{}\n", redis.port))
        .extra("limits: {max_concurrent_requests: 8, request_timeout: 3s}")
        .keyvalue("flood", "redis")
        .keyvalue("calm", "memstore")
        .start();
    let kv = proxy.kv().await;
    kv.clone().get(get("flood")).await.unwrap(); // the route works

    let pid = redis.pid().unwrap();
    signal(pid, Signal::SIGSTOP);
    let hanging: Vec<_> = (0..6)
        .map(|_| {
            let mut kv = kv.clone();
            tokio::spawn(async move { kv.get(get("flood")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Alone, the flood holds half of the 8 slots (4); the other 2 of its 6
    // calls were refused at once.
    let started = Instant::now();
    let extra = kv.clone().get(get("flood")).await.unwrap_err();
    assert_eq!(extra.code(), Code::ResourceExhausted, "{extra:?}");
    assert!(extra.message().contains("fair share"), "{}", extra.message());
    assert!(started.elapsed() < Duration::from_secs(1), "refused, not queued");
    // The calm namespace is served beside it.
    for _ in 0..20 {
        kv.clone().get(get("calm")).await.unwrap();
    }
    signal(pid, Signal::SIGCONT);
    let mut codes = Vec::new();
    for call in hanging {
        codes.push(call.await.unwrap().map(|_| ()).map_err(|s| s.code()));
    }
    assert_eq!(codes.iter().filter(|c| **c == Err(Code::ResourceExhausted)).count(), 2, "{codes:?}");
    let text = metrics(&proxy).await;
    assert!(
        text.lines().any(|l| l.contains("namespace_concurrency") && l.contains("flood")),
        "fair-share refusals counted"
    );
}
