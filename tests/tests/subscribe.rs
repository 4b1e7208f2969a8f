//! TimeSeries Subscribe through the real proxy: a subscriber follows a
//! series while it is written, loses its connection and resumes from its
//! last position without a gap; a subscriber that stops reading is told so
//! and resumes; the idle timeout, the subscription limit, shutdown, the
//! audit records of start and end, and the refusals (a backend that cannot
//! follow a series, bad positions, unknown namespaces).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::HashMap;
use std::time::Duration;

use prism_proto::timeseries::v1::subscribe_request::Start;
use prism_proto::timeseries::v1::time_series_service_client::TimeSeriesServiceClient;
use prism_proto::timeseries::v1::{AppendRequest, Event, SubscribeRequest, SubscribeResponse};
use prism_tests::{ProxyConfig, eventually};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

type Ts = TimeSeriesServiceClient<Channel>;

const BASE: i64 = 1_700_000_000_000;

fn event(timestamp: i64, id: String, payload: usize) -> Event {
    Event { timestamp, event_id: id, payload: vec![b'x'; payload].into(), ..Default::default() }
}

fn subscription(ns: &str, series: &str, start: Option<Start>) -> SubscribeRequest {
    SubscribeRequest { namespace: ns.into(), series: series.into(), start }
}

/// Opens a subscription and checks its first message: a position, no event.
async fn subscribe(ts: &mut Ts, request: SubscribeRequest) -> (Streaming<SubscribeResponse>, String) {
    let mut stream = ts.subscribe(request).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
    assert!(first.event.is_none(), "the first message carries an event");
    assert!(!first.position.is_empty());
    (stream, first.position)
}

/// A proxy with memstore TimeSeries namespace `events` (and whatever
/// `extra` config), and an audit file.
fn proxy(extra: &str) -> (prism_tests::Proxy, std::path::PathBuf) {
    let config = ProxyConfig::memstore().pattern_namespace("events", "timeseries", "memstore", "");
    let audit = config.dir().join("audit.jsonl");
    let proxy = config.extra(&format!("audit:\n  sink: {}\n{extra}", audit.display())).start();
    (proxy, audit)
}

fn audit_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// What one subscriber received of a series: event ids in order.
struct Followed {
    ids: Vec<String>,
    resumed: usize,
}

/// Follows `series` from `start` until it has `want` distinct events;
/// drops its connection (the whole channel) after `drop_at` events and
/// resumes from the last position on a new one.
async fn follow(endpoint: String, series: String, start: String, want: usize, drop_at: usize) -> Followed {
    let mut ids = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut position = start;
    let mut resumed = 0;
    loop {
        let channel = Channel::from_shared(endpoint.clone()).unwrap().connect().await.unwrap();
        let mut ts = TimeSeriesServiceClient::new(channel);
        let (mut stream, _) =
            subscribe(&mut ts, subscription("events", &series, Some(Start::FromPosition(position.clone())))).await;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .expect("no event for 20 s")
                .unwrap()
                .expect("the stream ended");
            let event = message.event.expect("an event");
            position = message.position;
            if seen.insert(event.event_id.clone()) {
                ids.push(event.event_id);
            }
            if seen.len() == want {
                return Followed { ids, resumed };
            }
            if resumed == 0 && seen.len() == drop_at {
                break;
            }
        }
        // The connection goes away with the client: stream, client and
        // channel dropped.
        drop(stream);
        resumed += 1;
    }
}

#[tokio::test]
async fn ten_thousand_events_followed_through_a_lost_connection_none_missing() {
    let (proxy, audit) = proxy("");
    ten_thousand_events(&proxy, &audit).await;
}

/// The same on Kafka: the subscription reads the topic from offsets.
#[tokio::test]
async fn on_kafka_ten_thousand_events_followed_through_a_lost_connection_none_missing() {
    let Some(tansu) = prism_tests::services::require_tansu() else { return };
    let mut broker = prism_tests::services::PrivateServer::tansu(&tansu, prism_tests::services::free_port());
    broker.start();
    let config = ProxyConfig::new()
        .plugin(
            "kafka",
            &format!("command: [prism-plugin-kafka]\nconfig: {{brokers: [\"127.0.0.1:{}\"]}}", broker.port),
        )
        .pattern_namespace("events", "timeseries", "kafka", "subscribe: true");
    let audit = config.dir().join("audit.jsonl");
    let proxy = config.extra(&format!("audit:\n  sink: {}\n", audit.display())).start();
    ten_thousand_events(&proxy, &audit).await;
}

/// The same on NATS JetStream: the subscription is an ordered consumer.
#[tokio::test]
async fn on_nats_ten_thousand_events_followed_through_a_lost_connection_none_missing() {
    if !prism_tests::services::require(prism_tests::services::NATS) {
        return;
    }
    let prefix = format!("sub{}", std::process::id());
    let config = ProxyConfig::new()
        .plugin(
            "nats",
            &format!("command: [prism-plugin-nats]\nconfig: {{url: \"nats://127.0.0.1:4222\", bucket_prefix: {prefix}, storage: memory}}"),
        )
        .pattern_namespace("events", "timeseries", "nats", "subscribe: true");
    let audit = config.dir().join("audit.jsonl");
    let proxy = config.extra(&format!("audit:\n  sink: {}\n", audit.display())).start();
    ten_thousand_events(&proxy, &audit).await;
    // The stream is the namespace's; leave the shared server clean.
    let mut admin = proxy.admin().await;
    let _ = admin
        .delete_namespace(prism_proto::admin::v1::DeleteNamespaceRequest {
            name: "events".into(),
            purge_data: true,
            force: false,
        })
        .await;
}

/// Two series of 5,000 events appended while a subscriber follows each;
/// each drops its connection halfway and resumes from its last position.
async fn ten_thousand_events(proxy: &prism_tests::Proxy, audit: &std::path::Path) {
    let mut ts = proxy.ts().await;
    let series = ["cpu", "mem"];
    let mut followers = Vec::new();
    for s in series {
        let (_, start) = subscribe(&mut ts, subscription("events", s, None)).await;
        followers.push(tokio::spawn(follow(proxy.endpoint(), s.to_owned(), start, 5_000, 2_500)));
    }
    // 10,000 events, in batches alternating between the two series, while
    // both subscribers follow.
    for batch in 0..100 {
        for s in series {
            let events = (0..50)
                .map(|i| {
                    let n = batch * 50 + i;
                    event(BASE + n, format!("{s}-{n:05}"), 16)
                })
                .collect();
            let r = ts.append(AppendRequest { namespace: "events".into(), series: s.into(), events }).await.unwrap();
            assert_eq!(r.into_inner().appended, 50);
        }
    }
    for (s, follower) in series.iter().zip(followers) {
        let followed = tokio::time::timeout(Duration::from_secs(120), follower).await.unwrap().unwrap();
        let expected: Vec<String> = (0..5_000).map(|n| format!("{s}-{n:05}")).collect();
        assert_eq!(followed.resumed, 1, "{s}: the subscriber resumed once");
        assert_eq!(followed.ids.len(), 5_000, "{s}: events received");
        assert!(followed.ids == expected, "{s}: events out of append order or missing");
    }
    // Every subscription has its start (the Subscribe call) and its end.
    let ended = |records: &[Value]| {
        records.iter().filter(|r| r["event"] == "subscription_end" && r["reason"] == "client").count()
    };
    assert!(eventually(Duration::from_secs(10), || async { ended(&audit_records(audit)) >= 4 }).await);
    let records = audit_records(audit);
    let starts = records
        .iter()
        .filter(|r| {
            r["event"] == "call"
                && r["operation"] == "prism.timeseries.v1.TimeSeriesService/Subscribe"
                && r["status"] == "Ok"
        })
        .count();
    assert!(starts >= 4, "Subscribe call records: {starts}");
    let end = records.iter().find(|r| r["event"] == "subscription_end").unwrap();
    assert_eq!(end["namespace"], "events");
    assert_eq!(end["operation"], "prism.timeseries.v1.TimeSeriesService/Subscribe");
    assert!(end["events"].as_u64().is_some() && end["latency_ms"].as_f64().is_some(), "{end}");
    let delivered: u64 =
        records.iter().filter(|r| r["event"] == "subscription_end").map(|r| r["events"].as_u64().unwrap()).sum();
    assert!(delivered >= 10_000, "end records count {delivered} events delivered");
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_told_and_resumes_without_a_gap() {
    let (proxy, _audit) = proxy(
        "limits:\n  subscription_buffer_bytes: 8192\n  subscription_stall_timeout: 1s\n  subscription_idle_timeout: 0s\n",
    );
    let mut ts = proxy.ts().await;
    // 4 MiB of events: more than every buffer between the plugin and the
    // client (HTTP/2 windows included) holds.
    let total = 2_000;
    for batch in 0..20 {
        let events =
            (0..100).map(|i| event(BASE + batch * 100 + i, format!("e{:05}", batch * 100 + i), 2048)).collect();
        ts.append(AppendRequest { namespace: "events".into(), series: "s".into(), events }).await.unwrap();
    }
    let (mut stream, _) = subscribe(&mut ts, subscription("events", "s", Some(Start::FromTimestamp(0)))).await;
    let mut ids = Vec::new();
    let mut position = String::new();
    for _ in 0..10 {
        let m = stream.message().await.unwrap().unwrap();
        ids.push(m.event.unwrap().event_id);
        position = m.position;
    }
    // Stop reading well past the stall timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = loop {
        match stream.message().await {
            Ok(Some(m)) => {
                ids.push(m.event.unwrap().event_id);
                position = m.position;
            }
            Ok(None) => panic!("the stream ended without a status after {} events", ids.len()),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("subscription_stall_timeout"), "{}", status.message());
    assert!(status.message().contains("last position"), "{}", status.message());
    assert!(ids.len() < total, "the slow subscriber was not ended before the end of the series");
    let (mut resumed, _) = subscribe(&mut ts, subscription("events", "s", Some(Start::FromPosition(position)))).await;
    while ids.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), resumed.message()).await.unwrap().unwrap().unwrap();
        ids.push(m.event.unwrap().event_id);
    }
    let expected: Vec<String> = (0..total).map(|n| format!("e{n:05}")).collect();
    assert!(ids == expected, "events missing or repeated across the resume");
}

#[tokio::test]
async fn idle_limit_shutdown_and_refusals() {
    let (proxy, audit) =
        proxy("limits:\n  max_subscriptions: 2\n  subscription_idle_timeout: 1s\nshutdown_delay: 0s\n");
    let mut ts = proxy.ts().await;

    // Idle: no event for 1 s ends it, resumably.
    let (mut idle, _) = subscribe(&mut ts, subscription("events", "quiet", None)).await;
    let status = tokio::time::timeout(Duration::from_secs(10), idle.message()).await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("subscription_idle_timeout"), "{}", status.message());

    // The limit counts open subscriptions; one ending frees its place.
    let appender = {
        let mut ts = ts.clone();
        tokio::spawn(async move {
            // Keeps both subscriptions busy, so the idle timeout does not
            // end them while the limit is checked.
            for n in 0..200 {
                let events = vec![event(BASE + n, format!("k{n}"), 1)];
                let _ = ts.append(AppendRequest { namespace: "events".into(), series: "busy".into(), events }).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (a, _) = subscribe(&mut ts, subscription("events", "busy", None)).await;
    let (_b, _) = subscribe(&mut ts, subscription("events", "busy", None)).await;
    let refused = ts.subscribe(subscription("events", "busy", None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("max_subscriptions"), "{}", refused.message());
    drop(a);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut ts = ts.clone();
            async move { ts.subscribe(subscription("events", "busy", None)).await.is_ok() }
        })
        .await,
        "a closed subscription's place was not freed"
    );

    // Refusals come back from the open call itself, with no stream.
    for (request, code) in [
        (subscription("nope", "s", None), Code::NotFound),
        (subscription("events", "", None), Code::InvalidArgument),
        (subscription("events", "s", Some(Start::FromTimestamp(-5))), Code::InvalidArgument),
        (subscription("events", "s", Some(Start::FromPosition(String::new()))), Code::InvalidArgument),
        (subscription("events", "s", Some(Start::FromPosition("garbage!".into()))), Code::InvalidArgument),
        (subscription("demo", "s", None), Code::FailedPrecondition),
    ] {
        let status = ts.subscribe(request.clone()).await.expect_err("refused");
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
    }

    // Shutdown ends open subscriptions at once, resumably.
    let (mut open, _) = subscribe(&mut ts, subscription("events", "busy", None)).await;
    appender.abort();
    let started = std::time::Instant::now();
    // Stopped on another thread: this one's runtime drives the client,
    // which must read the status (and see the connection close) meanwhile.
    let stopped = tokio::task::spawn_blocking(move || proxy.stop());
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), open.message()).await.unwrap() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status at shutdown"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "shutdown waited for a subscriber: {:?}", started.elapsed());
    drop((open, ts, _b));
    let _config = stopped.await.unwrap();
    let records = audit_records(&audit);
    let reasons: HashMap<String, usize> =
        records.iter().filter(|r| r["event"] == "subscription_end").fold(HashMap::new(), |mut m, r| {
            *m.entry(r["reason"].as_str().unwrap().to_owned()).or_default() += 1;
            m
        });
    assert!(reasons.contains_key("idle") && reasons.contains_key("shutdown"), "{reasons:?}");
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "subscription_end" && r["reason"] == "idle" && r["status"] == "DeadlineExceeded"),
        "{records:?}"
    );
}

#[tokio::test]
async fn a_backend_that_cannot_follow_a_series_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ts.db");
    let proxy = ProxyConfig::memstore()
        .plugin("sqlite", &format!("command: [prism-plugin-sqlite]\nconfig: {{path: \"{}\"}}", db.display()))
        .pattern_namespace("logs", "timeseries", "sqlite", "")
        .start();
    let mut ts = proxy.ts().await;
    let status = ts.subscribe(subscription("logs", "s", None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("subscribe"), "{}", status.message());
}
