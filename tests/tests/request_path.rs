//! The request path end to end: what a call carries to the plugin (its
//! request id and deadline, on both plugin transports), a plugin call past
//! its deadline cancelled in the plugin, the per-service health, and plans
//! that tell the truth about access enforcement.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::time::Duration;

use nix::sys::signal::Signal;
use prism_proto::admin::v1::ApplyNamespaceRequest;
use prism_proto::keyvalue::v1::{GetRequest, PutRequest};
use prism_tests::services::{self, PrivateServer};
use prism_tests::{ProxyConfig, eventually, signal};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A request with an id and, when given, a client deadline.
fn with_id<T>(message: T, id: &str, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

/// The `timeout_ms` the plugin logged when it abandoned call `id`.
fn abandoned_after(proxy: &prism_tests::Proxy, id: &str) -> Option<u64> {
    let line = proxy.logs.lines_with(&["deadline exceeded; call abandoned", id]).into_iter().next()?;
    serde_json::from_str::<serde_json::Value>(&line).ok()?["fields"]["timeout_ms"].as_u64()
}

/// The redis plugin's entry on `transport` (plus `more` keys), with a 60 s
/// Redis timeout so only deadlines end a call to a paused Redis.
fn redis_plugin(redis_port: u16, transport: &str, more: &str) -> String {
    format!(
        "command: [prism-plugin-redis]\ntransport: {transport}\n{more}config:\n  url: redis://127.0.0.1:{redis_port}\n  response_timeout_ms: 60000\n"
    )
}

/// A redis-backed namespace whose plugin logs every call (debug), on the
/// given plugin transport, with calls given at most 400 ms.
fn proxy_on(redis_port: u16, transport: &str) -> prism_tests::Proxy {
    ProxyConfig::new()
        .extra("limits: {request_timeout: 400ms}")
        .plugin("redis", &redis_plugin(redis_port, transport, "env: {PRISM_LOG: \"info,prism_plugin_sdk=debug\"}\n"))
        .keyvalue("data", "redis")
        .start()
}

/// The request id and the deadline reach the plugin on both transports;
/// a call past its deadline is abandoned in the plugin, not only in the
/// proxy. Redis is paused (SIGSTOP) so the backend call hangs.
#[tokio::test]
async fn request_id_and_deadline_reach_the_plugin() {
    let Some(program) = services::require_program("redis-server") else { return };
    for transport in ["multiplex", "unary"] {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = PrivateServer::redis(&program, services::free_port(), dir.path());
        redis.start();
        let proxy = proxy_on(redis.port, transport);
        let mut kv = proxy.kv().await;

        let id = format!("rid-fast-{transport}");
        let put =
            PutRequest { namespace: "data".into(), key: "k".into(), value: b"v".to_vec().into(), ..Default::default() };
        let answer = kv.put(with_id(put, &id, Some(Duration::from_secs(5)))).await.unwrap();
        assert_eq!(answer.metadata().get("x-request-id").unwrap(), id.as_str());
        assert!(
            eventually(Duration::from_secs(5), || async { !proxy.logs.lines_with(&["call done", &id]).is_empty() })
                .await,
            "{transport}: the plugin did not log the call with its request id"
        );

        let pid = redis.pid().unwrap();
        signal(pid, Signal::SIGSTOP);
        // Without a client deadline the proxy's 400 ms apply; the proxy
        // answers DEADLINE_EXCEEDED and the plugin abandons the call.
        let id = format!("rid-slow-{transport}");
        let get = || GetRequest { namespace: "data".into(), key: "k".into() };
        let err = kv.get(with_id(get(), &id, None)).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{transport}: {err:?}");
        let abandoned = match transport {
            "multiplex" => "deadline exceeded; call abandoned",
            _ => "call abandoned before it finished",
        };
        let seen =
            eventually(Duration::from_secs(5), || async { !proxy.logs.lines_with(&[abandoned, &id]).is_empty() }).await;
        // A client deadline below the proxy's is the one the plugin gets
        // (the client gives up at the same moment, so its error is its own).
        let short = format!("rid-short-{transport}");
        let _ = kv.get(with_id(get(), &short, Some(Duration::from_millis(150)))).await.unwrap_err();
        let short_seen =
            eventually(Duration::from_secs(5), || async { !proxy.logs.lines_with(&[abandoned, &short]).is_empty() })
                .await;
        signal(pid, Signal::SIGCONT);
        assert!(seen, "{transport}: the plugin did not abandon the call past its deadline:\n{}", proxy.logs.text());
        assert!(short_seen, "{transport}: the plugin did not abandon the call past the client's deadline");
        if transport == "multiplex" {
            // What is left of each deadline when the call reaches the plugin:
            // never more than the proxy's limit or the client's deadline
            // (without them the plugin would wait for its 60 s Redis timeout).
            let proxy_deadline = abandoned_after(&proxy, &id).unwrap();
            assert!(proxy_deadline <= 400, "the plugin was given {proxy_deadline} ms");
            let client_deadline = abandoned_after(&proxy, &short).unwrap();
            assert!(client_deadline <= 150, "the plugin was given {client_deadline} ms");
        }
    }
}

/// Calls that give up (their deadline passes) while they wait on one
/// multiplexed stream leave it working for the calls still waiting: those
/// get their own replies once the backend answers. Redis is paused so every
/// call waits; one connection, so every call shares one stream.
#[tokio::test]
async fn calls_that_give_up_on_a_multiplexed_stream_do_not_strand_the_others() {
    let Some(program) = services::require_program("redis-server") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateServer::redis(&program, services::free_port(), dir.path());
    redis.start();
    let proxy = ProxyConfig::new()
        .plugin("redis", &redis_plugin(redis.port, "multiplex", "pool_size: 1\n"))
        .keyvalue("data", "redis")
        .start();
    let kv = proxy.kv().await;
    for i in 0..8 {
        let put = PutRequest {
            namespace: "data".into(),
            key: format!("k{i}"),
            value: format!("v{i}").into_bytes().into(),
            ..Default::default()
        };
        kv.clone().put(put).await.unwrap();
    }

    let pid = redis.pid().unwrap();
    signal(pid, Signal::SIGSTOP);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let mut kv = kv.clone();
        // Alternate: every other call gives up after 150 ms, the rest wait.
        let timeout = if i % 2 == 0 { Duration::from_millis(150) } else { Duration::from_secs(10) };
        calls.spawn(async move {
            let get = GetRequest { namespace: "data".into(), key: format!("k{i}") };
            (i, kv.get(with_id(get, &format!("rid-{i}"), Some(timeout))).await)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(pid, Signal::SIGCONT);
    while let Some(done) = calls.join_next().await {
        let (i, answer) = done.unwrap();
        if i % 2 == 0 {
            // The client gives up at the same moment as the proxy, so the
            // error may be the client's own (CANCELLED) or DEADLINE_EXCEEDED.
            let code = answer.unwrap_err().code();
            assert!(matches!(code, Code::DeadlineExceeded | Code::Cancelled), "call {i}: {code:?}");
        } else {
            let value = answer.unwrap_or_else(|e| panic!("call {i}: {e:?}")).into_inner().value;
            assert_eq!(&value[..], format!("v{i}").as_bytes(), "call {i} got another call's reply");
        }
    }
}

async fn health(proxy: &prism_tests::Proxy, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(proxy.channel().await);
    let response = client.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
    ServingStatus::try_from(response.status).unwrap()
}

/// Every pattern service has a health status, NOT_SERVING while none of
/// its plugins serves, back to SERVING when one does.
#[tokio::test]
async fn health_per_service_follows_the_plugins() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]\nhealth_interval: 200ms\nrestart_backoff_min: 1s\nrestart_backoff_max: 1s")
        .keyvalue("demo", "memstore")
        .pattern_namespace("events", "timeseries", "memstore", "")
        .pattern_namespace("social", "graph", "memstore", "")
        .start();
    for service in [
        "",
        "prism.keyvalue.v1.KeyValueService",
        "prism.timeseries.v1.TimeSeriesService",
        "prism.graph.v1.GraphService",
        "prism.admin.v1.AdminService",
    ] {
        assert!(
            eventually(Duration::from_secs(5), || async { health(&proxy, service).await == ServingStatus::Serving })
                .await,
            "{service:?} is not SERVING"
        );
    }
    // Kill the only plugin: every pattern service stops serving until the
    // supervisor has restarted it; the proxy itself and the admin API stay.
    let plugin = proxy.wait_child("prism-plugin-memstore", Duration::from_secs(10));
    signal(plugin, Signal::SIGKILL);
    let kv = "prism.keyvalue.v1.KeyValueService";
    assert!(
        eventually(Duration::from_secs(5), || async { health(&proxy, kv).await == ServingStatus::NotServing }).await,
        "KeyValue still SERVING with its plugin dead"
    );
    assert_eq!(health(&proxy, "prism.admin.v1.AdminService").await, ServingStatus::Serving);
    assert!(
        eventually(Duration::from_secs(10), || async { health(&proxy, kv).await == ServingStatus::Serving }).await,
        "KeyValue not SERVING again after the restart"
    );
}

const WITH_ACCESS: &str = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: guarded}\nspec:\n  pattern: keyvalue\n  backend: memstore\n  access: {read: [\"group:readers\"], admin: [\"user:owner\"]}\n";

async fn plan_warnings(
    admin: &mut prism_proto::admin::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    token: Option<&str>,
) -> Vec<String> {
    let mut request =
        tonic::Request::new(ApplyNamespaceRequest { spec_yaml: WITH_ACCESS.into(), dry_run: true, force: false });
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    admin.apply_namespace(request).await.unwrap().into_inner().plan.unwrap().warnings
}

/// In dev mode the plan says `spec.access` is not enforced; with
/// authentication on it does not, because it is.
#[tokio::test]
async fn plans_say_whether_access_is_enforced() {
    let dev = ProxyConfig::memstore().start();
    let warnings = plan_warnings(&mut dev.admin().await, None).await;
    assert!(warnings.iter().any(|w| w.contains("spec.access is not enforced")), "dev mode: {warnings:?}");

    let issuer = prism_tests::pki::OidcIssuer::start("k1").await;
    let secured = ProxyConfig::memstore()
        .extra(&format!(
            "auth:\n  admins: [\"group:platform\"]\n  jwt: {{issuer: \"{}\", audiences: [prism]}}\n",
            issuer.url
        ))
        .start();
    let claims = serde_json::json!({ "iss": issuer.url, "aud": "prism", "exp": prism_tests::pki::now() + 300, "sub": "ops", "groups": ["platform"] });
    let token = prism_tests::pki::token("k1", &claims);
    let warnings = plan_warnings(&mut secured.admin().await, Some(&token)).await;
    assert!(!warnings.iter().any(|w| w.contains("not enforced")), "authenticated: {warnings:?}");
}
