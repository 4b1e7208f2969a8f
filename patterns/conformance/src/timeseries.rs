//! The TimeSeries checks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prism_proto::plugin::v1::{DescribeNamespaceRequest, Pattern};
use prism_proto::timeseries::v1::{AggregateFunction, AggregateRequest, AppendRequest, Event, Order, QueryRequest};
use tonic::Code;

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

impl Suite<'_> {
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
