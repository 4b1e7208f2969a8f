//! TimeSeries on SQLite: one table keyed by `(ns, series, ts, event_id)`,
//! so a range read or an aggregate is a walk of one primary-key range, and
//! `INSERT OR IGNORE` makes a replayed event a no-op.

use bytes::Bytes;
use prism_plugin_sdk::retention::{map_from_json, map_to_json};
use prism_plugin_sdk::{BucketStats, Event, EventPage, Namespace, PluginResult, RangeQuery, TimeSeriesStore};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::{Sqlite, db_error};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ts_events (
    ns         TEXT    NOT NULL,
    series     TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    event_id   TEXT    NOT NULL,
    value      REAL,
    payload    BLOB    NOT NULL,
    attributes TEXT    NOT NULL,
    PRIMARY KEY (ns, series, ts, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ts_events_by_time ON ts_events (ns, ts);
";

/// Rows deleted per retention statement, so the writer is never held long.
const EXPIRE_BATCH: i64 = 1000;

/// Deletes the events of `ns` older than `cutoff`, in batches; returns how
/// many.
pub(crate) fn expire(conn: &Connection, ns: &str, cutoff: i64) -> Result<usize, rusqlite::Error> {
    let mut total = 0;
    loop {
        let n = conn
            .prepare_cached(
                "DELETE FROM ts_events WHERE (ns, series, ts, event_id) IN
                   (SELECT ns, series, ts, event_id FROM ts_events WHERE ns = ?1 AND ts < ?2 LIMIT ?3)",
            )?
            .execute(params![ns, cutoff, EXPIRE_BATCH])?;
        total += n;
        if (n as i64) < EXPIRE_BATCH {
            return Ok(total);
        }
    }
}

impl TimeSeriesStore for Sqlite {
    async fn append(&self, ns: &Namespace<()>, series: &str, events: Vec<Event>) -> PluginResult<u64> {
        let (ns, series) = (ns.name().to_owned(), series.to_owned());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
            let mut added = 0;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO ts_events (ns, series, ts, event_id, value, payload, attributes)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(db_error)?;
                for e in &events {
                    added += stmt
                        .execute(params![
                            ns,
                            series,
                            e.timestamp,
                            e.event_id,
                            e.value,
                            &e.payload[..],
                            map_to_json(&e.attributes)
                        ])
                        .map_err(db_error)? as u64;
                }
            }
            tx.commit().map_err(db_error)?;
            Ok(added)
        })
        .await
    }

    async fn query(&self, ns: &Namespace<()>, q: RangeQuery) -> PluginResult<EventPage> {
        let ns = ns.name().to_owned();
        self.read(move |conn| {
            let (cmp, order) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
            let resume = if q.after.is_some() { format!("AND (ts, event_id) {cmp} (?5, ?6)") } else { String::new() };
            let sql = format!(
                "SELECT ts, event_id, value, payload, attributes FROM ts_events
                 WHERE ns = ?1 AND series = ?2 AND ts >= ?3 AND ts < ?4 {resume}
                 ORDER BY ts {order}, event_id {order} LIMIT ?7"
            );
            let (after_ts, after_id) = q.after.clone().unwrap_or_default();
            let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
            let mut events = stmt
                .query_map(params![ns, q.series, q.start, q.end, after_ts, after_id, (q.limit + 1) as i64], |r| {
                    let attributes: String = r.get(4)?;
                    Ok(Event {
                        timestamp: r.get(0)?,
                        event_id: r.get(1)?,
                        value: r.get(2)?,
                        payload: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                        attributes: map_from_json(&attributes),
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db_error)?;
            let more = events.len() > q.limit;
            events.truncate(q.limit);
            Ok(EventPage { events, more })
        })
        .await
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
        let (ns, series) = (ns.name().to_owned(), series.to_owned());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT (ts - ?3) / ?6 AS bucket, count(*), count(value), total(value), min(value), max(value)
                     FROM ts_events WHERE ns = ?1 AND series = ?2 AND ts >= ?4 AND ts < ?5
                     GROUP BY bucket ORDER BY bucket",
                )
                .map_err(db_error)?;
            stmt.query_map(params![ns, series, origin, start, end, bucket_ms], |r| {
                Ok(BucketStats {
                    index: r.get(0)?,
                    count: r.get::<_, i64>(1)? as u64,
                    values: r.get::<_, i64>(2)? as u64,
                    sum: r.get(3)?,
                    min: r.get::<_, Option<f64>>(4)?.unwrap_or_default(),
                    max: r.get::<_, Option<f64>>(5)?.unwrap_or_default(),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db_error)
        })
        .await
    }
}
