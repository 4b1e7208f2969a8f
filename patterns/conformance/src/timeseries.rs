//! The TimeSeries checks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prism_proto::plugin::v1::{DescribeNamespaceRequest, Pattern};
use prism_proto::timeseries::v1::subscribe_request::Start;
use prism_proto::timeseries::v1::{
    AggregateFunction, AggregateRequest, AppendRequest, Event, Order, QueryRequest, SubscribeRequest, SubscribeResponse,
};
use tonic::{Code, Streaming};

use crate::Declared;
use crate::runner::{Check, Recorder, Suite, expect_code, show};

/// Runs the TimeSeries checks, each as declared or refused.
pub(crate) async fn checks(suite: &Suite<'_>, r: &mut Recorder, declared: &Declared) {
    if declared.timeseries {
        r.claimed("ts.append_idempotent", "timeseries", suite.ts_append_idempotent()).await;
        r.claimed("ts.query_paging", "timeseries", suite.ts_query_paging()).await;
        r.claimed("ts.aggregate", "timeseries", suite.ts_aggregate()).await;
        r.claimed("ts.bad_input", "timeseries", suite.ts_bad_input()).await;
        r.claimed("ts.isolation", "timeseries", suite.ts_isolation()).await;
    } else {
        r.refused("ts.refused", "timeseries", suite.ts_refused()).await;
    }
    if declared.timeseries && declared.subscribe {
        r.claimed("ts.subscribe", "subscribe", suite.ts_subscribe()).await;
        r.claimed("ts.subscribe_bad_input", "subscribe", suite.ts_subscribe_bad_input()).await;
    } else {
        r.refused("ts.subscribe_refused", "subscribe", suite.ts_subscribe_refused()).await;
    }
    if declared.timeseries && declared.retention {
        r.claimed("ts.retention", "retention", suite.ts_retention()).await;
    } else {
        r.refused("ts.retention_refused", "retention", suite.ts_retention_refused()).await;
    }
}

/// A fixed origin, so buckets do not depend on the clock.
const BASE: i64 = 1_700_000_000_000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn event(timestamp: i64, id: &str, value: Option<f64>) -> Event {
    Event { timestamp, event_id: id.to_owned(), value, payload: id.as_bytes().to_vec().into(), ..Default::default() }
}

fn query(ns: &str, series: &str, start: i64, end: i64, descending: bool, limit: u32) -> QueryRequest {
    let order = if descending { Order::Descending } else { Order::Ascending };
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

/// How long a subscription may take to deliver an event appended.
const LIVE_WAIT: Duration = Duration::from_secs(10);

fn subscription(ns: &str, series: &str, start: Option<Start>) -> SubscribeRequest {
    SubscribeRequest { namespace: ns.into(), series: series.into(), start }
}

/// The next message of a subscription, within [`LIVE_WAIT`].
async fn next_message(stream: &mut Streaming<SubscribeResponse>, what: &str) -> Result<SubscribeResponse, String> {
    match tokio::time::timeout(LIVE_WAIT, stream.message()).await {
        Err(_) => Err(format!("{what}: no message within {LIVE_WAIT:?}")),
        Ok(Err(s)) => Err(format!("{what}: the stream failed: {}", show(&s))),
        Ok(Ok(None)) => Err(format!("{what}: the stream ended")),
        Ok(Ok(Some(m))) => {
            if m.position.is_empty() {
                return Err(format!("{what}: a message without a position"));
            }
            Ok(m)
        }
    }
}

/// The ids of the next `n` events of a subscription, with the position of
/// the last one.
async fn next_events(
    stream: &mut Streaming<SubscribeResponse>,
    n: usize,
    what: &str,
) -> Result<(Vec<String>, String), String> {
    let mut ids = Vec::with_capacity(n);
    let mut position = String::new();
    while ids.len() < n {
        let m = next_message(stream, what).await?;
        let event = m.event.ok_or_else(|| format!("{what}: a message without an event after the first"))?;
        ids.push(event.event_id);
        position = m.position;
    }
    Ok((ids, position))
}

impl Suite<'_> {
    /// Opens a subscription and reads its first message, which carries no
    /// event; returns the stream and that message's position.
    async fn subscribe(&self, request: SubscribeRequest) -> Result<(Streaming<SubscribeResponse>, String), String> {
        let mut stream = self
            .plugin
            .timeseries()
            .subscribe(request)
            .await
            .map_err(|s| format!("Subscribe: {}", show(&s)))?
            .into_inner();
        let first = next_message(&mut stream, "the first message").await?;
        if first.event.is_some() {
            return Err("the first message of a subscription carries an event; it must carry only a position".into());
        }
        Ok((stream, first.position))
    }

    /// Replay from a time, live events in append order, resume from a
    /// position (and from the first message's), and series isolation.
    pub(super) async fn ts_subscribe(&self) -> Check {
        let ns = self.ts_namespace(0).await?;
        // Appended out of timestamp order: a subscription follows append
        // order.
        let stored: Vec<Event> = [3, 0, 1, 2, 4].iter().map(|i| event(BASE + i, &format!("e{i}"), None)).collect();
        self.append(&ns, "s", stored).await?;
        let (mut all, _) = self.subscribe(subscription(&ns, "s", Some(Start::FromTimestamp(0)))).await?;
        let (ids, _) = next_events(&mut all, 5, "from_timestamp 0").await?;
        ensure!(ids == ["e3", "e0", "e1", "e2", "e4"], "from_timestamp 0 replayed {ids:?}, expected append order");
        let (mut now, _) = self.subscribe(subscription(&ns, "s", None)).await?;
        let (mut other, _) = self.subscribe(subscription(&ns, "t", None)).await?;
        self.append(&ns, "s", vec![event(BASE + 5, "e5", None), event(BASE + 6, "e6", None)]).await?;
        self.append(&ns, "s", vec![event(BASE + 7, "e7", None)]).await?;
        let (ids, _) = next_events(&mut all, 3, "live, after the replay").await?;
        ensure!(ids == ["e5", "e6", "e7"], "the replaying subscription went on with {ids:?}");
        let (ids, after_e5) = next_events(&mut now, 1, "live, from now").await?;
        ensure!(ids == ["e5"], "a subscription from now started with {ids:?}, expected e5");
        self.append(&ns, "t", vec![event(BASE, "t0", None)]).await?;
        let (ids, _) = next_events(&mut other, 1, "another series").await?;
        ensure!(ids == ["t0"], "a subscription to series t received {ids:?}");
        drop((all, now, other));
        let (mut resumed, at) = self.subscribe(subscription(&ns, "s", Some(Start::FromPosition(after_e5)))).await?;
        let (ids, _) = next_events(&mut resumed, 2, "from the position of e5").await?;
        ensure!(ids == ["e6", "e7"], "resuming after e5 read {ids:?}, expected e6, e7");
        let (mut again, _) = self.subscribe(subscription(&ns, "s", Some(Start::FromPosition(at)))).await?;
        let (ids, _) = next_events(&mut again, 2, "from a first message's position").await?;
        ensure!(ids == ["e6", "e7"], "resuming from the first message's position read {ids:?}, expected e6, e7");
        let (mut from_now, start) = self.subscribe(subscription(&ns, "s", None)).await?;
        drop(from_now);
        self.append(&ns, "s", vec![event(BASE + 8, "e8", None)]).await?;
        (from_now, _) = self.subscribe(subscription(&ns, "s", Some(Start::FromPosition(start)))).await?;
        let (ids, _) = next_events(&mut from_now, 1, "from the start of a subscription that saw no event").await?;
        ensure!(ids == ["e8"], "an event appended between two subscriptions was missed: read {ids:?}");
        let (mut middle, _) = self.subscribe(subscription(&ns, "s", Some(Start::FromTimestamp(BASE + 4)))).await?;
        let (ids, _) = next_events(&mut middle, 2, "from_timestamp").await?;
        ensure!(ids == ["e4", "e5"], "from_timestamp of e4 read {ids:?}, expected e4, e5");
        Ok(())
    }

    pub(super) async fn ts_subscribe_bad_input(&self) -> Check {
        let ns = self.ts_namespace(0).await?;
        let (_, position) = self.subscribe(subscription(&ns, "s", None)).await?;
        let open = |request: SubscribeRequest| async move {
            self.plugin.timeseries().subscribe(request).await.map(|_| "a stream")
        };
        let r = open(subscription(&ns, "other", Some(Start::FromPosition(position.clone())))).await;
        expect_code(r, Code::InvalidArgument, "Subscribe from another series' position")?;
        for bad in ["!!", "AAAA", "not a position"] {
            let r = open(subscription(&ns, "s", Some(Start::FromPosition(bad.into())))).await;
            expect_code(r, Code::InvalidArgument, &format!("Subscribe from position {bad:?}"))?;
        }
        let r = open(subscription(&ns, "s", Some(Start::FromTimestamp(-1)))).await;
        expect_code(r, Code::InvalidArgument, "Subscribe from_timestamp -1")?;
        let r = open(subscription(&ns, "", None)).await;
        expect_code(r, Code::InvalidArgument, "Subscribe to an empty series name")
    }

    pub(super) async fn ts_subscribe_refused(&self) -> Check {
        let ns = if self.caps.patterns.contains(&(Pattern::Timeseries as i32)) {
            self.ts_namespace(0).await?
        } else {
            self.namespace().await?
        };
        let r = self.plugin.timeseries().subscribe(subscription(&ns, "s", None)).await.map(|_| "a stream");
        expect_code(r, Code::Unimplemented, "Subscribe")
    }

    /// A fresh TimeSeries namespace, with a retention when `retention > 0`.
    async fn ts_namespace(&self, retention_seconds: u64) -> Result<String, String> {
        self.namespace_of(Pattern::Timeseries, retention_seconds).await
    }

    async fn append(&self, ns: &str, series: &str, events: Vec<Event>) -> Result<(u64, u64, u64), String> {
        let r = self
            .plugin
            .timeseries()
            .append(AppendRequest { namespace: ns.into(), series: series.into(), events })
            .await
            .map_err(|s| format!("Append: {}", show(&s)))?
            .into_inner();
        Ok((r.appended, r.duplicates, r.expired))
    }

    /// Every event id of a query, following page tokens.
    pub(super) async fn ts_ids(&self, mut req: QueryRequest) -> Result<Vec<String>, String> {
        let mut ids = Vec::new();
        for _ in 0..10_000 {
            let page = self
                .plugin
                .timeseries()
                .query(req.clone())
                .await
                .map_err(|s| format!("Query: {}", show(&s)))?
                .into_inner();
            ensure!(page.events.len() <= req.limit as usize, "a page of {} for limit {}", page.events.len(), req.limit);
            ids.extend(page.events.into_iter().map(|e| e.event_id));
            if page.next_page_token.is_empty() {
                return Ok(ids);
            }
            req.page_token = page.next_page_token;
        }
        Err("query did not end after 10000 pages".to_owned())
    }

    pub(super) async fn ts_append_idempotent(&self) -> Check {
        let ns = self.ts_namespace(0).await?;
        let events: Vec<Event> = (0..20).map(|i| event(BASE + i * 1000, &format!("e{i:02}"), Some(i as f64))).collect();
        let first = self.append(&ns, "s", events.clone()).await?;
        ensure!(first == (20, 0, 0), "first append answered {first:?}, expected (20, 0, 0)");
        let replay = self.append(&ns, "s", events).await?;
        ensure!(replay == (0, 20, 0), "a replay answered {replay:?}, expected (0, 20, 0)");
        let twins = vec![event(BASE, "twin", None), event(BASE, "twin", Some(9.0))];
        let twins = self.append(&ns, "s", twins).await?;
        ensure!(twins == (1, 1, 0), "the same event twice in one append answered {twins:?}");
        let ids = self.ts_ids(query(&ns, "s", BASE, BASE + 1, false, 100)).await?;
        ensure!(ids == ["e00", "twin"], "events at one timestamp are {ids:?}, expected [e00, twin]");
        Ok(())
    }

    pub(super) async fn ts_query_paging(&self) -> Check {
        let ns = self.ts_namespace(0).await?;
        // Written out of order, read back in order.
        let events: Vec<Event> = (0..57).rev().map(|i| event(BASE + i * 10, &format!("e{i:02}"), None)).collect();
        self.append(&ns, "s", events).await?;
        let expected: Vec<String> = (0..57).map(|i| format!("e{i:02}")).collect();
        let asc = self.ts_ids(query(&ns, "s", BASE, BASE + 570, false, 10)).await?;
        ensure!(asc == expected, "ascending pages read {asc:?}");
        let mut desc = self.ts_ids(query(&ns, "s", BASE, BASE + 570, true, 7)).await?;
        desc.reverse();
        ensure!(desc == expected, "descending pages read {desc:?} (reversed)");
        let middle = self.ts_ids(query(&ns, "s", BASE + 100, BASE + 130, false, 100)).await?;
        ensure!(middle == ["e10", "e11", "e12"], "[start, end) read {middle:?}");
        Ok(())
    }

    pub(super) async fn ts_aggregate(&self) -> Check {
        let ns = self.ts_namespace(0).await?;
        let events: Vec<Event> =
            (0..30).map(|i| event(BASE + i * 1000, &format!("e{i}"), (i % 3 != 0).then_some(i as f64))).collect();
        self.append(&ns, "s", events).await?;
        let agg = |function: AggregateFunction| AggregateRequest {
            namespace: ns.clone(),
            series: "s".into(),
            start: BASE,
            end: BASE + 30_000,
            bucket_ms: 10_000,
            function: function as i32,
        };
        let mut results = Vec::new();
        for f in [AggregateFunction::Count, AggregateFunction::Sum, AggregateFunction::Min, AggregateFunction::Max] {
            let r = self
                .plugin
                .timeseries()
                .aggregate(agg(f))
                .await
                .map_err(|s| format!("Aggregate: {}", show(&s)))?
                .into_inner();
            results.push(r.buckets.iter().map(|b| (b.start - BASE, b.count, b.value)).collect::<Vec<_>>());
        }
        let sum = |r: std::ops::Range<i64>| r.filter(|i| i % 3 != 0).sum::<i64>() as f64;
        let expected = vec![
            vec![(0, 10, Some(10.0)), (10_000, 10, Some(10.0)), (20_000, 10, Some(10.0))],
            vec![(0, 10, Some(sum(0..10))), (10_000, 10, Some(sum(10..20))), (20_000, 10, Some(sum(20..30)))],
            vec![(0, 10, Some(1.0)), (10_000, 10, Some(10.0)), (20_000, 10, Some(20.0))],
            vec![(0, 10, Some(8.0)), (10_000, 10, Some(19.0)), (20_000, 10, Some(29.0))],
        ];
        ensure!(results == expected, "count, sum, min, max buckets are {results:?}");
        Ok(())
    }

    pub(super) async fn ts_bad_input(&self) -> Check {
        let ns = self.ts_namespace(0).await?;
        let r = self.plugin.timeseries().query(query(&ns, "s", BASE + 1, BASE, false, 10)).await;
        expect_code(r, Code::InvalidArgument, "Query with start after end")?;
        let r = self
            .plugin
            .timeseries()
            .append(AppendRequest { namespace: ns.clone(), series: "s".into(), events: vec![event(BASE, "", None)] })
            .await;
        expect_code(r, Code::InvalidArgument, "Append with an empty event_id")?;
        let limit = if self.caps.max_append_events == 0 { 10_000 } else { self.caps.max_append_events as i64 };
        let over: Vec<Event> = (0..=limit).map(|i| event(BASE + i, "x", None)).collect();
        let r = self
            .plugin
            .timeseries()
            .append(AppendRequest { namespace: ns.clone(), series: "s".into(), events: over })
            .await;
        expect_code(r, Code::InvalidArgument, "Append over the declared event limit")?;
        let ids = self.ts_ids(query(&ns, "s", 0, i64::MAX, false, 100)).await?;
        ensure!(ids.is_empty(), "refused appends stored {} events", ids.len());
        Ok(())
    }

    pub(super) async fn ts_isolation(&self) -> Check {
        let a = self.ts_namespace(0).await?;
        let b = format!("{a}0");
        self.prepare_with(&b, Pattern::Timeseries, 0).await?;
        self.append(&a, "s", vec![event(BASE, "from-a", None)]).await?;
        self.append(&b, "s", vec![event(BASE, "from-b", None)]).await?;
        self.append(&a, "t", vec![event(BASE, "other-series", None)]).await?;
        let ids = self.ts_ids(query(&a, "s", 0, i64::MAX, false, 100)).await?;
        ensure!(ids == ["from-a"], "namespace a, series s reads {ids:?}");
        Ok(())
    }

    /// Events older than the retention are dropped on arrival, leave reads
    /// once they age out, and leave storage (DescribeNamespace).
    pub(super) async fn ts_retention(&self) -> Check {
        let ns = self.ts_namespace(60).await?;
        let now = now_ms();
        let r =
            self.append(&ns, "s", vec![event(now - 120_000, "old", None), event(now - 59_000, "aging", None)]).await?;
        ensure!(r == (1, 0, 1), "append answered {r:?}, expected (1 appended, 0, 1 expired)");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ids = self.ts_ids(query(&ns, "s", 0, now + 1, false, 100)).await?;
            let holds = self
                .plugin
                .lifecycle()
                .describe_namespace(DescribeNamespaceRequest { namespace: ns.clone() })
                .await
                .map_err(|s| format!("DescribeNamespace: {}", show(&s)))?
                .into_inner()
                .holds_data;
            if ids.is_empty() && !holds {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "30 s after expiry: query reads {ids:?}, holds_data={holds}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(super) async fn ts_retention_refused(&self) -> Check {
        let ns = self.ts_namespace(60).await?;
        let r = self
            .plugin
            .timeseries()
            .append(AppendRequest { namespace: ns, series: "s".into(), events: vec![event(now_ms(), "e", None)] })
            .await;
        expect_code(r, Code::Unimplemented, "Append to a namespace with a retention")
    }

    pub(super) async fn ts_refused(&self) -> Check {
        let ns = self.namespace().await?;
        let r = self
            .plugin
            .timeseries()
            .append(AppendRequest { namespace: ns.clone(), series: "s".into(), events: vec![event(BASE, "e", None)] })
            .await;
        expect_code(r, Code::Unimplemented, "Append")?;
        let r = self.plugin.timeseries().query(query(&ns, "s", 0, 1, false, 1)).await;
        expect_code(r, Code::Unimplemented, "Query")
    }

    /// Writes TimeSeries data to check after a restart; `None` when the
    /// pattern is not declared.
    pub(super) async fn ts_before_restart(&self) -> Result<Option<String>, String> {
        if !self.caps.patterns.contains(&(Pattern::Timeseries as i32)) {
            return Ok(None);
        }
        let ns = self.ts_namespace(0).await?;
        self.append(&ns, "s", (0..5).map(|i| event(BASE + i, &format!("d{i}"), None)).collect()).await?;
        Ok(Some(ns))
    }

    pub(super) async fn ts_after_restart(&self, ns: Option<String>) -> Check {
        let Some(ns) = ns else { return Ok(()) };
        self.prepare_with(&ns, Pattern::Timeseries, 0).await?;
        let ids = self.ts_ids(query(&ns, "s", 0, i64::MAX, false, 100)).await?;
        ensure!(ids == ["d0", "d1", "d2", "d3", "d4"], "after a restart the series reads {ids:?}");
        Ok(())
    }
}
