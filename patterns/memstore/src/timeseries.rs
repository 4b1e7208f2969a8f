//! TimeSeries in memory: one ordered map per namespace, and an append log
//! per series for subscriptions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use prism_plugin_sdk::{
    BucketStats, Event, EventPage, LogPosition, Namespace, PluginError, PluginResult, RangeQuery, SubscribeFrom,
    Subscription, TimeSeriesStore,
};

use crate::{MemStore, NsData, read_lock, write_lock};

/// Most events a subscription copies out of the log per lock taken.
const SUBSCRIBE_CHUNK: usize = 256;

type Key = (String, i64, String);

struct Stored {
    value: Option<f64>,
    payload: Bytes,
    attributes: BTreeMap<String, String>,
}

/// A namespace's events.
pub(crate) struct Events {
    by_series: BTreeMap<Key, Stored>,
    // The same keys ordered by timestamp first, so expiry walks only what
    // is past the retention.
    by_time: BTreeSet<(i64, String, String)>,
    // Each series' events in append order, for subscriptions. An entry
    // whose event expired stays until it reaches the front (readers skip
    // it), so expiry does not search the logs.
    logs: HashMap<String, Log>,
    // This namespace's incarnation: the logs start over with the process,
    // so positions of an earlier one must not be read as places in these.
    epoch: u64,
}

/// One series' append log: the timestamp and event id of each event, the
/// first at sequence `first`.
struct Log {
    first: u64,
    entries: VecDeque<(i64, String)>,
}

impl Log {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

impl Default for Events {
    fn default() -> Self {
        // Unique per namespace instance: the clock (a restarted process)
        // and a counter (a namespace dropped and made again in one).
        static MADE: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Self {
            by_series: BTreeMap::new(),
            by_time: BTreeSet::new(),
            logs: HashMap::new(),
            epoch: nanos ^ MADE.fetch_add(1, Ordering::Relaxed).rotate_left(48),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Events {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_series.is_empty()
    }

    /// Drops every event older than `cutoff`.
    pub(crate) fn expire(&mut self, cutoff: i64) {
        while let Some(first) = self.by_time.first() {
            if first.0 >= cutoff {
                break;
            }
            if let Some((ts, series, id)) = self.by_time.pop_first() {
                self.by_series.remove(&(series, ts, id));
            }
        }
        let by_series = &self.by_series;
        for (series, log) in &mut self.logs {
            while let Some((ts, id)) = log.entries.front() {
                if by_series.contains_key(&(series.clone(), *ts, id.clone())) {
                    break;
                }
                log.entries.pop_front();
                log.first += 1;
            }
        }
    }

    /// Up to `limit` stored events of `series` from sequence `from` on, in
    /// append order, and the sequence to read next.
    fn read_log(&self, series: &str, from: u64, limit: usize) -> (Vec<(LogPosition, Event)>, u64) {
        let Some(log) = self.logs.get(series) else { return (Vec::new(), from) };
        let start = from.max(log.first);
        let skip = usize::try_from(start - log.first).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut next = start;
        for (ts, id) in log.entries.iter().skip(skip) {
            if out.len() == limit {
                break;
            }
            let key = (series.to_owned(), *ts, id.clone());
            if let Some(stored) = self.by_series.get(&key) {
                out.push((LogPosition { epoch: self.epoch, sequence: next }, event(&key, stored)));
            }
            next += 1;
        }
        (out, next)
    }

    /// The sequence a subscription from `from` reads first, and the
    /// position it starts after.
    fn start(&self, series: &str, from: SubscribeFrom) -> PluginResult<u64> {
        let (first, next) = self.logs.get(series).map_or((1, 1), |l| (l.first, l.next()));
        Ok(match from {
            SubscribeFrom::Now => next,
            SubscribeFrom::Timestamp(at) => self.logs.get(series).map_or(1, |log| {
                log.entries.iter().position(|(ts, _)| *ts >= at).map_or(next, |i| log.first + i as u64)
            }),
            // Another incarnation's position: everything this one holds
            // follows it (at least once, never a gap).
            SubscribeFrom::After(p) if p.epoch != self.epoch => first,
            SubscribeFrom::After(p) if p.sequence.saturating_add(1) < first => {
                return Err(PluginError::OutOfRange(format!(
                    "from_position is older than the oldest event series {series:?} still keeps (retention removed {} event(s) after it); subscribe from_timestamp instead",
                    first - p.sequence - 1
                )));
            }
            // A position past the end (from a log that grew and then
            // started over within one epoch cannot happen): read on from
            // the end.
            SubscribeFrom::After(p) => p.sequence.saturating_add(1).min(next),
        })
    }

    fn range(&self, series: &str, start: i64, end: i64) -> std::collections::btree_map::Range<'_, Key, Stored> {
        let lo = (series.to_owned(), start, String::new());
        let hi = (series.to_owned(), end, String::new());
        self.by_series.range((Bound::Included(lo), Bound::Excluded(hi)))
    }
}

fn event(key: &Key, stored: &Stored) -> Event {
    Event {
        timestamp: key.1,
        event_id: key.2.clone(),
        value: stored.value,
        payload: stored.payload.clone(),
        attributes: stored.attributes.clone(),
    }
}

impl TimeSeriesStore for MemStore {
    async fn append(&self, ns: &Namespace<Arc<NsData>>, series: &str, events: Vec<Event>) -> PluginResult<u64> {
        let mut data = write_lock(&ns.state.ts);
        let mut added = 0;
        for e in events {
            let key = (series.to_owned(), e.timestamp, e.event_id);
            if data.by_series.contains_key(&key) {
                continue;
            }
            data.by_time.insert((key.1, key.0.clone(), key.2.clone()));
            let log = data.logs.entry(series.to_owned()).or_insert_with(|| Log { first: 1, entries: VecDeque::new() });
            log.entries.push_back((key.1, key.2.clone()));
            data.by_series.insert(key, Stored { value: e.value, payload: e.payload, attributes: e.attributes });
            added += 1;
        }
        drop(data);
        if added > 0 {
            ns.state.appended.send_modify(|n| *n += 1);
        }
        Ok(added)
    }

    async fn subscribe(
        &self,
        ns: Arc<Namespace<Arc<NsData>>>,
        series: &str,
        from: SubscribeFrom,
    ) -> PluginResult<Subscription> {
        let (epoch, next) = {
            let data = read_lock(&ns.state.ts);
            (data.epoch, data.start(series, from)?)
        };
        let start = LogPosition { epoch, sequence: next - 1 };
        let series = series.to_owned();
        let appended = ns.state.appended.subscribe();
        // Lazy: a chunk is copied out of the log only when the last one was
        // taken, and an idle subscriber waits on the append signal.
        let events =
            futures::stream::unfold((ns, series, next, appended), |(ns, series, mut next, mut appended)| async move {
                loop {
                    // Marked seen before the read, so an append after it wakes
                    // the wait below.
                    appended.borrow_and_update();
                    let (chunk, after) = read_lock(&ns.state.ts).read_log(&series, next, SUBSCRIBE_CHUNK);
                    next = after;
                    if !chunk.is_empty() {
                        return Some((futures::stream::iter(chunk.into_iter().map(Ok)), (ns, series, next, appended)));
                    }
                    // Cannot fail: the stream holds the namespace, and so the
                    // sender.
                    appended.changed().await.ok()?;
                }
            })
            .flatten()
            .boxed();
        Ok(Subscription { start, events })
    }

    async fn query(&self, ns: &Namespace<Arc<NsData>>, q: RangeQuery) -> PluginResult<EventPage> {
        let data = read_lock(&ns.state.ts);
        let lo = (q.series.clone(), q.start, String::new());
        let hi = (q.series.clone(), q.end, String::new());
        let after = q.after.map(|(ts, id)| (q.series.clone(), ts, id));
        // The resume point narrows the range itself, so a page costs the
        // same wherever it starts.
        let (lower, upper) = match (after, q.descending) {
            // Past the end of the range (BTreeMap::range refuses inverted
            // bounds, so this is answered here).
            (Some(a), false) if a >= hi => return Ok(EventPage::default()),
            (Some(a), true) if a <= lo => return Ok(EventPage::default()),
            (Some(a), false) if a >= lo => (Bound::Excluded(a), Bound::Excluded(hi)),
            (Some(a), true) if a < hi => (Bound::Included(lo), Bound::Excluded(a)),
            _ => (Bound::Included(lo), Bound::Excluded(hi)),
        };
        let range = data.by_series.range((lower, upper));
        let mut it: Box<dyn Iterator<Item = (&Key, &Stored)>> =
            if q.descending { Box::new(range.rev()) } else { Box::new(range) };
        let events: Vec<Event> = it.by_ref().take(q.limit).map(|(k, v)| event(k, v)).collect();
        let more = it.next().is_some();
        Ok(EventPage { events, more })
    }

    async fn aggregate(
        &self,
        ns: &Namespace<Arc<NsData>>,
        series: &str,
        origin: i64,
        start: i64,
        end: i64,
        bucket_ms: i64,
    ) -> PluginResult<Vec<BucketStats>> {
        let data = read_lock(&ns.state.ts);
        let mut buckets: Vec<BucketStats> = Vec::new();
        for (key, stored) in data.range(series, start, end) {
            BucketStats::accumulate(&mut buckets, origin, bucket_ms, key.1, stored.value);
        }
        Ok(buckets)
    }
}
