//! TimeSeries in memory: one ordered map per namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prism_plugin_sdk::{BucketStats, Event, EventPage, Namespace, PluginResult, RangeQuery, TimeSeriesStore};

use crate::{MemStore, NsData, read_lock, write_lock};

type Key = (String, i64, String);

struct Stored {
    value: Option<f64>,
    payload: Bytes,
    attributes: BTreeMap<String, String>,
}

/// A namespace's events.
#[derive(Default)]
pub(crate) struct Events {
    by_series: BTreeMap<Key, Stored>,
    // The same keys ordered by timestamp first, so expiry walks only what
    // is past the retention.
    by_time: BTreeSet<(i64, String, String)>,
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
            data.by_series.insert(key, Stored { value: e.value, payload: e.payload, attributes: e.attributes });
            added += 1;
        }
        Ok(added)
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
