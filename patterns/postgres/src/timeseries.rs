//! TimeSeries on PostgreSQL: one table for every namespace, whose primary
//! key `(ns, series, ts, event_id)` is the `(namespace, series, ts)` index
//! every range read and aggregate walks. A second index on `(ns, ts)` lets
//! retention delete the oldest events of a namespace without a scan.

use bytes::Bytes;
use prism_plugin_sdk::retention::{map_from_json, map_to_json};
use prism_plugin_sdk::{BucketStats, Event, EventPage, Namespace, PluginResult, RangeQuery, TimeSeriesStore};

use crate::{Postgres, db_error};

/// The statements that create the TimeSeries table in schema `s` (quoted).
pub(crate) fn schema(s: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.ts_events (
                ns         text COLLATE \"C\" NOT NULL,
                series     text COLLATE \"C\" NOT NULL,
                ts         bigint NOT NULL,
                event_id   text COLLATE \"C\" NOT NULL,
                value      double precision,
                payload    bytea NOT NULL,
                attributes text NOT NULL,
                PRIMARY KEY (ns, series, ts, event_id))"
        ),
        format!("CREATE INDEX IF NOT EXISTS ts_events_by_time ON {s}.ts_events (ns, ts)"),
    ]
}

/// Rows deleted per retention statement.
pub(crate) const EXPIRE_BATCH: i64 = 1000;

/// The statement deleting one batch of a namespace's events older than a
/// cutoff (`$1` namespace, `$2` cutoff in milliseconds).
pub(crate) fn expire_sql(s: &str) -> String {
    format!(
        "DELETE FROM {s}.ts_events WHERE ctid IN
           (SELECT ctid FROM {s}.ts_events WHERE ns = $1 AND ts < $2 LIMIT {EXPIRE_BATCH})"
    )
}

impl TimeSeriesStore for Postgres {
    async fn append(&self, ns: &Namespace<()>, series: &str, events: Vec<Event>) -> PluginResult<u64> {
        let client = self.client().await?;
        let s = self.quoted_schema();
        // One statement for the whole append: atomic, one round trip, and
        // ON CONFLICT DO NOTHING skips events stored before (or twice in
        // this request).
        let sql = format!(
            "INSERT INTO {s}.ts_events (ns, series, ts, event_id, value, payload, attributes)
             SELECT $1, $2, * FROM unnest($3::bigint[], $4::text[], $5::float8[], $6::bytea[], $7::text[])
             ON CONFLICT DO NOTHING"
        );
        let ts: Vec<i64> = events.iter().map(|e| e.timestamp).collect();
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        let values: Vec<Option<f64>> = events.iter().map(|e| e.value).collect();
        let payloads: Vec<&[u8]> = events.iter().map(|e| &e.payload[..]).collect();
        let attributes: Vec<String> = events.iter().map(|e| map_to_json(&e.attributes)).collect();
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let added = client
            .execute(&stmt, &[&ns.name(), &series, &ts, &ids, &values, &payloads, &attributes])
            .await
            .map_err(db_error)?;
        Ok(added)
    }

    async fn query(&self, ns: &Namespace<()>, q: RangeQuery) -> PluginResult<EventPage> {
        let client = self.client().await?;
        let s = self.quoted_schema();
        let (cmp, order) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        let resume = if q.after.is_some() { format!("AND (ts, event_id) {cmp} ($6, $7)") } else { String::new() };
        let sql = format!(
            "SELECT ts, event_id, value, payload, attributes FROM {s}.ts_events
             WHERE ns = $1 AND series = $2 AND ts >= $3 AND ts < $4 {resume}
             ORDER BY ts {order}, event_id {order} LIMIT $5"
        );
        let fetch = (q.limit + 1) as i64;
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let rows = match &q.after {
            Some((ts, id)) => client.query(&stmt, &[&ns.name(), &q.series, &q.start, &q.end, &fetch, ts, id]).await,
            None => client.query(&stmt, &[&ns.name(), &q.series, &q.start, &q.end, &fetch]).await,
        }
        .map_err(db_error)?;
        let mut events: Vec<Event> = rows
            .into_iter()
            .map(|r| Event {
                timestamp: r.get(0),
                event_id: r.get(1),
                value: r.get(2),
                payload: Bytes::from(r.get::<_, Vec<u8>>(3)),
                attributes: map_from_json(r.get::<_, &str>(4)),
            })
            .collect();
        let more = events.len() > q.limit;
        events.truncate(q.limit);
        Ok(EventPage { events, more })
    }

    async fn aggregate(
        &self,
        ns: &Namespace<()>,
        series: &str,
        origin: i64,
        start: i64,
        end: i64,
        bucket_ms: i64,
    ) -> PluginResult<Vec<BucketStats>> {
        let client = self.client().await?;
        let s = self.quoted_schema();
        let sql = format!(
            "SELECT (ts - $3) / $6 AS bucket, count(*), count(value), coalesce(sum(value), 0), min(value), max(value)
             FROM {s}.ts_events WHERE ns = $1 AND series = $2 AND ts >= $4 AND ts < $5
             GROUP BY bucket ORDER BY bucket"
        );
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let rows =
            client.query(&stmt, &[&ns.name(), &series, &origin, &start, &end, &bucket_ms]).await.map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| BucketStats {
                index: r.get(0),
                count: r.get::<_, i64>(1) as u64,
                values: r.get::<_, i64>(2) as u64,
                sum: r.get(3),
                min: r.get::<_, Option<f64>>(4).unwrap_or_default(),
                max: r.get::<_, Option<f64>>(5).unwrap_or_default(),
            })
            .collect())
    }
}
