//! TimeSeries on Redis (ADR-008): per series, a sorted set of members
//! `<timestamp, 20 digits>:<event_id>`, all with score 0, so `ZRANGE ...
//! BYLEX` walks a time range in (timestamp, event_id) order either way and
//! resumes exactly after any event; `ZADD NX` makes appends idempotent. The
//! event bodies sit in a hash per series under the same member, and a set
//! per namespace lists its series for the retention sweep and for drops.
//! Every key shares the namespace's hash tag.

use std::sync::Arc;

use prism_plugin_sdk::proto::timeseries::v1::Event as WireEvent;
use prism_plugin_sdk::{
    BucketStats, Event, EventPage, Namespace, PluginError, PluginResult, RangeQuery, TimeSeriesStore,
};
use prost::Message;
use redis::Script;

use crate::conn::{Call, Conn};
use crate::{NsKeys, Redis, redis_error};

/// KEYS: zset, hash, series set. ARGV: series, then member and body pairs.
/// Returns how many events were new.
pub(crate) const APPEND: &str = r"
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], 'NX', 0, ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    added = added + 1
  end
end
if added > 0 then redis.call('SADD', KEYS[3], ARGV[1]) end
return added
";

/// KEYS: zset, hash, series set. ARGV: exclusive upper lex bound, batch,
/// series. Deletes up to `batch` events below the bound; forgets the
/// series once it is empty. Returns how many were deleted.
pub(crate) const EXPIRE: &str = r"
local old = redis.call('ZRANGE', KEYS[1], '-', ARGV[1], 'BYLEX', 'LIMIT', 0, tonumber(ARGV[2]))
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('HDEL', KEYS[2], unpack(old))
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
return #old
";

/// Events deleted per retention script call, and read per aggregate page.
pub(crate) const BATCH: usize = 1000;

impl NsKeys {
    pub(crate) fn ts_index(&self, series: &str) -> String {
        format!("{}:ts:{series}", self.tag)
    }
    pub(crate) fn ts_bodies(&self, series: &str) -> String {
        format!("{}:te:{series}", self.tag)
    }
    pub(crate) fn ts_series(&self) -> String {
        format!("{}:tss", self.tag)
    }
}

/// The sorted-set member of an event: zero-padded timestamps sort as
/// numbers (the SDK refuses negative ones).
fn member(timestamp: i64, event_id: &str) -> String {
    format!("{timestamp:020}:{event_id}")
}

/// The lex bound just before every member at `timestamp`.
fn at(timestamp: i64) -> String {
    format!("{timestamp:020}:")
}

/// One page of members and bodies, in the given lex bounds and order.
async fn page(
    conn: &mut Conn,
    keys: &NsKeys,
    series: &str,
    (lower, upper): (&str, &str),
    descending: bool,
    count: usize,
) -> PluginResult<Vec<Event>> {
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(keys.ts_index(series));
    if descending {
        cmd.arg(upper).arg(lower).arg("BYLEX").arg("REV");
    } else {
        cmd.arg(lower).arg(upper).arg("BYLEX");
    }
    let members: Vec<String> = cmd.arg("LIMIT").arg(0).arg(count).query_async(conn).await.map_err(redis_error)?;
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let bodies: Vec<Option<Vec<u8>>> =
        redis::cmd("HMGET").arg(keys.ts_bodies(series)).arg(&members).query_async(conn).await.map_err(redis_error)?;
    members
        .iter()
        .zip(bodies)
        // A member whose body is gone was deleted between the two reads.
        .filter_map(|(m, body)| body.map(|b| (m, b)))
        .map(|(m, body)| {
            let e = WireEvent::decode(body.as_slice()).map_err(PluginError::internal)?;
            let event_id = m.split_once(':').map_or_else(String::new, |(_, id)| id.to_owned());
            Ok(Event {
                timestamp: e.timestamp,
                event_id,
                value: e.value,
                payload: e.payload,
                attributes: e.attributes.into_iter().collect(),
            })
        })
        .collect()
}

/// Deletes the events of `keys`' namespace older than `cutoff`.
pub(crate) async fn expire(conn: &mut Conn, script: &Script, keys: &NsKeys, cutoff: i64) -> PluginResult<u64> {
    let series: Vec<String> =
        redis::cmd("SMEMBERS").arg(keys.ts_series()).query_async(conn).await.map_err(redis_error)?;
    let bound = format!("({}", at(cutoff));
    let mut total = 0;
    for s in series {
        loop {
            let n: u64 = script
                .key(keys.ts_index(&s))
                .key(keys.ts_bodies(&s))
                .key(keys.ts_series())
                .arg(&bound)
                .arg(BATCH)
                .arg(&s)
                .invoke_async(conn)
                .await
                .map_err(redis_error)?;
            total += n;
            if (n as usize) < BATCH {
                break;
            }
        }
    }
    Ok(total)
}

/// Deletes every series of a namespace.
pub(crate) async fn drop_all(conn: &mut Conn, keys: &NsKeys) -> PluginResult<()> {
    let series: Vec<String> =
        redis::cmd("SMEMBERS").arg(keys.ts_series()).query_async(conn).await.map_err(redis_error)?;
    let mut del = redis::cmd("DEL");
    del.arg(keys.ts_series());
    for s in &series {
        del.arg(keys.ts_index(s)).arg(keys.ts_bodies(s));
    }
    del.query_async::<()>(conn).await.map_err(redis_error)
}

impl TimeSeriesStore for Redis {
    async fn append(&self, ns: &Namespace<Arc<NsKeys>>, series: &str, events: Vec<Event>) -> PluginResult<u64> {
        let keys = &ns.state;
        let mut call = Call::new(&self.ts_append);
        call.key(keys.ts_index(series)).key(keys.ts_bodies(series)).key(keys.ts_series()).arg(series);
        for e in &events {
            let body = WireEvent {
                timestamp: e.timestamp,
                event_id: String::new(),
                value: e.value,
                payload: e.payload.clone(),
                attributes: e.attributes.clone().into_iter().collect(),
            }
            .encode_to_vec();
            call.arg(member(e.timestamp, &e.event_id)).arg(body);
        }
        self.write(&call).await
    }

    async fn query(&self, ns: &Namespace<Arc<NsKeys>>, q: RangeQuery) -> PluginResult<EventPage> {
        let mut lower = format!("[{}", at(q.start));
        let mut upper = format!("({}", at(q.end));
        if let Some((ts, id)) = &q.after {
            let resume = format!("({}", member(*ts, id));
            if q.descending {
                upper = resume;
            } else {
                lower = resume;
            }
        }
        let mut conn = self.conn.clone();
        let mut events = page(&mut conn, &ns.state, &q.series, (&lower, &upper), q.descending, q.limit + 1).await?;
        let more = events.len() > q.limit;
        events.truncate(q.limit);
        Ok(EventPage { events, more })
    }

    async fn aggregate(
        &self,
        ns: &Namespace<Arc<NsKeys>>,
        series: &str,
        origin: i64,
        start: i64,
        end: i64,
        bucket_ms: i64,
    ) -> PluginResult<Vec<BucketStats>> {
        // Page by page: memory holds one page and the buckets, never the
        // whole range.
        let mut conn = self.conn.clone();
        let upper = format!("({}", at(end));
        let mut lower = format!("[{}", at(start));
        let mut buckets: Vec<BucketStats> = Vec::new();
        loop {
            let events = page(&mut conn, &ns.state, series, (&lower, &upper), false, BATCH).await?;
            for e in &events {
                BucketStats::accumulate(&mut buckets, origin, bucket_ms, e.timestamp, e.value);
            }
            match events.last() {
                Some(last) if events.len() == BATCH => lower = format!("({}", member(last.timestamp, &last.event_id)),
                _ => return Ok(buckets),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_by_time_then_id() {
        let mut m = vec![member(10, "b"), member(9, "z"), member(10, "a"), member(100, "a"), member(10, "ab")];
        m.sort();
        assert_eq!(m, [member(9, "z"), member(10, "a"), member(10, "ab"), member(10, "b"), member(100, "a")]);
        assert!(at(10) < member(10, "a") && member(9, "zzz") < at(10));
    }
}
