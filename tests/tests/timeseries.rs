//! The TimeSeries pattern through the real proxy, on every backend that
//! serves it: idempotent appends, paging in both orders, bucketed
//! aggregates, retention (expired events leave reads and storage), and the
//! refusal of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prism_proto::timeseries::v1::time_series_service_client::TimeSeriesServiceClient;
use prism_proto::timeseries::v1::{AggregateFunction, AggregateRequest, AppendRequest, Event, Order, QueryRequest};
use prism_tests::services::{self, POSTGRES, REDIS};
use prism_tests::{Proxy, ProxyConfig, eventually};
use tonic::Code;
use tonic::transport::Channel;

type Ts = TimeSeriesServiceClient<Channel>;

/// A fixed origin, so expected buckets do not depend on the clock.
const BASE: i64 = 1_700_000_000_000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn event(timestamp: i64, id: &str, value: Option<f64>) -> Event {
    Event {
        timestamp,
        event_id: id.to_owned(),
        value,
        payload: id.as_bytes().to_vec().into(),
        attributes: [("host".to_owned(), "web-1".to_owned())].into(),
    }
}

fn append(ns: &str, series: &str, events: Vec<Event>) -> AppendRequest {
    AppendRequest { namespace: ns.into(), series: series.into(), events }
}

fn query(ns: &str, series: &str, start: i64, end: i64, order: Order, limit: u32) -> QueryRequest {
    QueryRequest {
        namespace: ns.into(),
        series: series.into(),
        start,
        end,
        order: order as i32,
        limit,
        page_token: String::new(),
    }
}

/// Every page of a query: `(event ids, page sizes)`.
async fn all_pages(ts: &mut Ts, mut req: QueryRequest) -> (Vec<String>, Vec<usize>) {
    let (mut ids, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = ts.query(req.clone()).await.unwrap().into_inner();
        sizes.push(page.events.len());
        ids.extend(page.events.into_iter().map(|e| e.event_id));
        if page.next_page_token.is_empty() {
            return (ids, sizes);
        }
        req.page_token = page.next_page_token;
    }
}

fn aggregate(ns: &str, series: &str, function: AggregateFunction) -> AggregateRequest {
    AggregateRequest {
        namespace: ns.into(),
        series: series.into(),
        start: BASE,
        end: BASE + 250_000,
        bucket_ms: 100_000,
        function: function as i32,
    }
}

/// The scenario every backend must pass on namespace `ns`.
async fn scenario(proxy: &Proxy, ns: &str) {
    let mut ts = proxy.ts().await;
    // 250 events one second apart; every tenth has no value.
    let events: Vec<Event> =
        (0..250).map(|i| event(BASE + i * 1000, &format!("e{i:03}"), (i % 10 != 0).then_some(i as f64))).collect();
    let first = ts.append(append(ns, "cpu", events.clone())).await.unwrap().into_inner();
    assert_eq!((first.appended, first.duplicates), (250, 0));
    // A replay (a client retrying) stores nothing new.
    let replay = ts.append(append(ns, "cpu", events[..100].to_vec())).await.unwrap().into_inner();
    assert_eq!((replay.appended, replay.duplicates), (0, 100));
    // Same timestamp, another event id: a distinct event. Same id inside
    // one request: stored once.
    let twin = vec![event(BASE, "z", Some(1.0)), event(BASE, "z", Some(1.0))];
    let twin = ts.append(append(ns, "cpu", twin)).await.unwrap().into_inner();
    assert_eq!((twin.appended, twin.duplicates), (1, 1));
    // Another series in the same namespace stays apart.
    ts.append(append(ns, "mem", vec![event(BASE, "m", Some(5.0))])).await.unwrap();

    let (ids, sizes) = all_pages(&mut ts, query(ns, "cpu", BASE, BASE + 250_000, Order::Ascending, 100)).await;
    let mut expected: Vec<String> = (0..250).map(|i| format!("e{i:03}")).collect();
    expected.insert(1, "z".to_owned()); // same timestamp as e000, ordered by event id
    assert_eq!(ids, expected);
    assert_eq!(sizes, vec![100, 100, 51]);
    let (ids, _) = all_pages(&mut ts, query(ns, "cpu", BASE, BASE + 250_000, Order::Descending, 70)).await;
    expected.reverse();
    assert_eq!(ids, expected);

    // The end is exclusive; an empty range is empty, not an error.
    let page = ts.query(query(ns, "cpu", BASE + 5000, BASE + 8000, Order::Ascending, 0)).await.unwrap().into_inner();
    let got: Vec<_> = page.events.iter().map(|e| (e.event_id.as_str(), e.value)).collect();
    assert_eq!(got, vec![("e005", Some(5.0)), ("e006", Some(6.0)), ("e007", Some(7.0))]);
    assert_eq!(page.events[0].attributes["host"], "web-1");
    assert_eq!(&page.events[0].payload[..], b"e005");
    let empty = ts.query(query(ns, "cpu", BASE, BASE, Order::Ascending, 0)).await.unwrap().into_inner();
    assert!(empty.events.is_empty() && empty.next_page_token.is_empty());

    // Buckets of 100 s over 250 s: [0,100), [100,200), [200,250).
    let buckets = |f| {
        let mut ts = ts.clone();
        async move {
            let r = ts.aggregate(aggregate(ns, "cpu", f)).await.unwrap().into_inner();
            r.buckets.iter().map(|b| (b.start - BASE, b.count, b.value)).collect::<Vec<_>>()
        }
    };
    // Values 0..99 without the multiples of 10, plus z = 1.
    let sum0: f64 = (0..100).filter(|i| i % 10 != 0).sum::<i64>() as f64 + 1.0;
    let sum1: f64 = (100..200).filter(|i| i % 10 != 0).sum::<i64>() as f64;
    let sum2: f64 = (200..250).filter(|i| i % 10 != 0).sum::<i64>() as f64;
    assert_eq!(
        buckets(AggregateFunction::Count).await,
        vec![(0, 101, Some(101.0)), (100_000, 100, Some(100.0)), (200_000, 50, Some(50.0))]
    );
    assert_eq!(
        buckets(AggregateFunction::Sum).await,
        vec![(0, 101, Some(sum0)), (100_000, 100, Some(sum1)), (200_000, 50, Some(sum2))]
    );
    assert_eq!(
        buckets(AggregateFunction::Min).await,
        vec![(0, 101, Some(1.0)), (100_000, 100, Some(101.0)), (200_000, 50, Some(201.0))]
    );
    assert_eq!(
        buckets(AggregateFunction::Max).await,
        vec![(0, 101, Some(99.0)), (100_000, 100, Some(199.0)), (200_000, 50, Some(249.0))]
    );
    let avg = buckets(AggregateFunction::Avg).await;
    assert_eq!(avg[1], (100_000, 100, Some(sum1 / 90.0)));

    // Bad input, refused before anything is stored.
    let inverted = ts.query(query(ns, "cpu", BASE + 10, BASE, Order::Ascending, 0)).await.unwrap_err();
    assert_eq!(inverted.code(), Code::InvalidArgument);
    assert!(inverted.message().contains("inverted"), "{}", inverted.message());
    let mut bad = aggregate(ns, "cpu", AggregateFunction::Sum);
    bad.start = bad.end + 1;
    assert_eq!(ts.aggregate(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let mut bad = aggregate(ns, "cpu", AggregateFunction::Sum);
    bad.bucket_ms = 0;
    assert_eq!(ts.aggregate(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let mut bad = aggregate(ns, "cpu", AggregateFunction::Sum);
    bad.bucket_ms = 1;
    let too_many = ts.aggregate(bad).await.unwrap_err();
    assert!(too_many.message().contains("over the limit of 10000"), "{}", too_many.message());
    let bad = aggregate(ns, "cpu", AggregateFunction::Unspecified);
    assert_eq!(ts.aggregate(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let oversize: Vec<Event> = (0..501).map(|i| event(BASE + 900_000 + i, "big", None)).collect();
    let err = ts.append(append(ns, "cpu", oversize)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("over the limit of 500"), "{}", err.message());
    let err = ts.append(append(ns, "cpu", vec![event(BASE, "ok", None), event(BASE, "", None)])).await.unwrap_err();
    assert!(err.message().contains("events[1]"), "{}", err.message());
    let err = ts.append(append(ns, "", vec![event(BASE, "a", None)])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = ts.append(append(ns, "cpu", vec![event(-1, "neg", None)])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = ts.append(append(ns, "cpu", vec![event(BASE, "nan", Some(f64::NAN))])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // None of the refused events was stored.
    let (ids, _) = all_pages(&mut ts, query(ns, "cpu", BASE, BASE + 1_000_000, Order::Ascending, 1000)).await;
    assert_eq!(ids.len(), 251);
    // A token is tied to its query.
    let page = ts.query(query(ns, "cpu", BASE, BASE + 250_000, Order::Ascending, 10)).await.unwrap().into_inner();
    let mut other = query(ns, "cpu", BASE, BASE + 250_000, Order::Descending, 10);
    other.page_token = page.next_page_token;
    assert_eq!(ts.query(other).await.unwrap_err().code(), Code::InvalidArgument);
    let missing = ts.query(query("no-such-ns", "cpu", 0, 1, Order::Ascending, 0)).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

/// Retention on namespace `ns` (1 minute): old events are dropped on
/// arrival, and events that age past it leave reads.
async fn retention(proxy: &Proxy, ns: &str) {
    let mut ts = proxy.ts().await;
    let now = now_ms();
    let events = vec![
        event(now - 120_000, "too-old", Some(1.0)),
        // Ages out about a second from now.
        event(now - 59_000, "aging", Some(2.0)),
        event(now, "fresh", Some(3.0)),
    ];
    let r = ts.append(append(ns, "temp", events)).await.unwrap().into_inner();
    assert_eq!((r.appended, r.expired), (2, 1));
    let ids = |ts: Ts| async move {
        let mut ts = ts;
        all_pages(&mut ts, query(ns, "temp", 0, now + 1, Order::Ascending, 0)).await.0
    };
    let seen = ids(ts.clone()).await;
    assert!(seen == ["aging", "fresh"] || seen == ["fresh"], "{seen:?}");
    let ts2 = ts.clone();
    assert!(
        eventually(Duration::from_secs(30), || {
            let ts = ts2.clone();
            async move { ids(ts).await == ["fresh"] }
        })
        .await,
        "the aged event never left the query"
    );
    let agg = AggregateRequest {
        namespace: ns.into(),
        series: "temp".into(),
        start: 0,
        end: now + 1,
        bucket_ms: now + 1,
        function: AggregateFunction::Count as i32,
    };
    let buckets = ts.aggregate(agg).await.unwrap().into_inner().buckets;
    assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 1);
}

fn sqlite_rows(db: &Path, ns: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM ts_events WHERE ns = ?1", [ns], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn memstore() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .pattern_namespace("metrics", "timeseries", "memstore", "")
        .pattern_namespace("short", "timeseries", "memstore", "retention: 1m")
        .start();
    scenario(&proxy, "metrics").await;
    retention(&proxy, "short").await;
}

fn sqlite_config(db: &Path) -> ProxyConfig {
    ProxyConfig::new()
        .plugin(
            "sqlite",
            &format!(
                "command: [prism-plugin-sqlite]\nconfig: {{path: \"{}\", cleanup_interval_ms: 100}}",
                db.display()
            ),
        )
        .pattern_namespace("metrics", "timeseries", "sqlite", "")
        .pattern_namespace("short", "timeseries", "sqlite", "retention: 1m")
}

#[tokio::test]
async fn sqlite_with_retention_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ts.sqlite3");
    let mut proxy = sqlite_config(&db).start();
    scenario(&proxy, "metrics").await;
    retention(&proxy, "short").await;
    // Retention is enforced in storage too, not only hidden from reads.
    assert!(
        eventually(Duration::from_secs(30), || async { sqlite_rows(&db, "short") == 1 }).await,
        "expired rows were not deleted: {} left",
        sqlite_rows(&db, "short")
    );
    assert!(proxy.terminate(Duration::from_secs(30)).success());

    // The events survive a restart of the proxy and the plugin.
    let proxy = sqlite_config(&db).start();
    let mut ts = proxy.ts().await;
    let (ids, _) = all_pages(&mut ts, query("metrics", "cpu", BASE, BASE + 250_000, Order::Ascending, 1000)).await;
    assert_eq!(ids.len(), 251);
}

#[tokio::test]
async fn postgres() {
    if !services::require(POSTGRES) {
        return;
    }
    let schema = format!("prism_ts_{}", std::process::id());
    let plugin = format!(
        "command: [prism-plugin-postgres]\nconfig: {{url: \"{}\", schema: {schema}, cleanup_interval_ms: 100}}",
        services::postgres_url()
    );
    let proxy = ProxyConfig::new()
        .plugin("postgres", &plugin)
        .pattern_namespace("metrics", "timeseries", "postgres", "")
        .pattern_namespace("short", "timeseries", "postgres", "retention: 1m")
        .start();
    scenario(&proxy, "metrics").await;
    retention(&proxy, "short").await;
    drop(proxy);
    services::drop_postgres_schema(&schema).await;
}

#[tokio::test]
async fn redis() {
    if !services::require(REDIS) {
        return;
    }
    let prefix = format!("prism-ts-{}", std::process::id());
    let plugin = format!(
        "command: [prism-plugin-redis]\nconfig: {{url: \"redis://{}\", key_prefix: {prefix}, cleanup_interval_ms: 100}}",
        REDIS.1
    );
    let proxy = ProxyConfig::new()
        .plugin("redis", &plugin)
        .pattern_namespace("metrics", "timeseries", "redis", "")
        .pattern_namespace("short", "timeseries", "redis", "retention: 1m")
        .start();
    scenario(&proxy, "metrics").await;
    retention(&proxy, "short").await;
    // Dropping the namespaces removes their keys from the shared server.
    let mut admin = proxy.admin().await;
    for name in ["metrics", "short"] {
        let request =
            prism_proto::admin::v1::DeleteNamespaceRequest { name: name.into(), purge_data: true, force: false };
        admin.delete_namespace(request).await.unwrap();
    }
}

#[tokio::test]
async fn wrong_pattern_and_unsupported_backend() {
    let proxy = ProxyConfig::memstore().start();
    let mut ts = proxy.ts().await;
    let err = ts.append(append("demo", "cpu", vec![event(BASE, "a", None)])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("keyvalue"), "{}", err.message());
}
