//! An in-memory view of a log of TimeSeries events, for plugins whose
//! backend is an append log with no index by series and time and no
//! uniqueness (a Kafka topic, a JetStream stream).
//!
//! The plugin reads its log in order and hands every record to the view;
//! the view keeps each series' events by `(timestamp, event_id)` (the first
//! copy of an event in the log wins, so a log holding an event twice reads as
//! holding it once) and each series' log positions in order. `Query`,
//! `Aggregate` and the start of a subscription from a time are then answered
//! from memory, exactly; the log stays the only store, and the view is
//! rebuilt from it when the plugin starts.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;

use crate::backend::{BucketStats, Event, EventPage, RangeQuery};

/// One event as the view keeps it.
struct Stored {
    value: Option<f64>,
    payload: Bytes,
    attributes: BTreeMap<String, String>,
}

/// One series: its events by `(timestamp, event_id)`, and the log position
/// and timestamp of each in log order.
#[derive(Default)]
struct Series {
    events: BTreeMap<(i64, String), Stored>,
    order: Vec<(u64, i64)>,
}

/// What a plugin has read of one log.
#[derive(Default)]
pub struct LogView {
    next: u64,
    series: HashMap<String, Series>,
    foreign: u64,
}

impl LogView {
    /// A view that has read nothing; the log's first position is `first`.
    pub fn starting_at(first: u64) -> Self {
        Self { next: first, ..Self::default() }
    }

    /// The log position to read next.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Whether the view has read any record.
    pub fn has_read(&self, first: u64) -> bool {
        self.next > first
    }

    /// Records of the log that were not events (another producer's),
    /// skipped.
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    /// A record at `position` that is not an event.
    pub fn skip(&mut self, position: u64) {
        self.next = self.next.max(position + 1);
        self.foreign += 1;
    }

    /// An event of `series` read at `position`. Returns whether it is new:
    /// a second copy of an event (same series, timestamp and id) is
    /// skipped. Positions must be handed in order; one already read is
    /// ignored.
    pub fn apply(&mut self, position: u64, series: String, event: Event) -> bool {
        if position < self.next {
            return false;
        }
        self.next = position + 1;
        let s = self.series.entry(series).or_default();
        let key = (event.timestamp, event.event_id);
        if s.events.contains_key(&key) {
            return false;
        }
        s.order.push((position, key.0));
        s.events.insert(key, Stored { value: event.value, payload: event.payload, attributes: event.attributes });
        true
    }

    /// The events of an append to `series` that the log does not hold yet,
    /// each once (the first of two with the same timestamp and id).
    pub fn fresh(&self, series: &str, events: Vec<Event>) -> Vec<Event> {
        let mut fresh: Vec<Event> = Vec::with_capacity(events.len());
        for e in events {
            let twice = fresh.iter().any(|f| f.timestamp == e.timestamp && f.event_id == e.event_id);
            if !twice && !self.holds(series, e.timestamp, &e.event_id) {
                fresh.push(e);
            }
        }
        fresh
    }

    /// Whether the view holds this event.
    pub fn holds(&self, series: &str, timestamp: i64, event_id: &str) -> bool {
        self.series.get(series).is_some_and(|s| s.events.contains_key(&(timestamp, event_id.to_owned())))
    }

    /// One page of a range read, as [`crate::TimeSeriesStore::query`]
    /// answers it.
    pub fn query(&self, q: &RangeQuery) -> EventPage {
        let Some(s) = self.series.get(&q.series) else { return EventPage::default() };
        let lo = (q.start, String::new());
        let hi = (q.end, String::new());
        let (lower, upper) = match (&q.after, q.descending) {
            (Some(after), false) => (Bound::Excluded(after.clone()), Bound::Excluded(hi)),
            (Some(after), true) => (Bound::Included(lo), Bound::Excluded(after.clone())),
            (None, _) => (Bound::Included(lo), Bound::Excluded(hi)),
        };
        // A resume point outside the range leaves nothing (BTreeMap refuses
        // inverted bounds).
        let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) = (&lower, &upper)
        else {
            return EventPage::default();
        };
        if a >= b {
            return EventPage::default();
        }
        let walk = s.events.range((lower, upper));
        let mut it: Box<dyn Iterator<Item = (&(i64, String), &Stored)>> =
            if q.descending { Box::new(walk.rev()) } else { Box::new(walk) };
        let events = it
            .by_ref()
            .take(q.limit)
            .map(|((timestamp, event_id), st)| Event {
                timestamp: *timestamp,
                event_id: event_id.clone(),
                value: st.value,
                payload: st.payload.clone(),
                attributes: st.attributes.clone(),
            })
            .collect();
        EventPage { events, more: it.next().is_some() }
    }

    /// The bucket figures of a range, as
    /// [`crate::TimeSeriesStore::aggregate`] answers them.
    pub fn aggregate(&self, series: &str, origin: i64, start: i64, end: i64, bucket_ms: i64) -> Vec<BucketStats> {
        let mut buckets = Vec::new();
        if let Some(s) = self.series.get(series) {
            for ((timestamp, _), st) in s.events.range((start, String::new())..(end, String::new())) {
                BucketStats::accumulate(&mut buckets, origin, bucket_ms, *timestamp, st.value);
            }
        }
        buckets
    }

    /// The log position of the first event of `series`, in log order, whose
    /// timestamp is at or after `at`.
    pub fn first_at_or_after(&self, series: &str, at: i64) -> Option<u64> {
        self.series.get(series)?.order.iter().find(|(_, ts)| *ts >= at).map(|(position, _)| *position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(timestamp: i64, id: &str) -> Event {
        Event {
            timestamp,
            event_id: id.to_owned(),
            value: Some(timestamp as f64),
            payload: Bytes::new(),
            attributes: BTreeMap::new(),
        }
    }

    fn ids(page: &EventPage) -> Vec<&str> {
        page.events.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[test]
    fn the_first_copy_wins_and_reads_are_ordered() {
        let mut view = LogView::starting_at(1);
        assert!(view.apply(1, "s".into(), event(30, "c")));
        assert!(view.apply(2, "s".into(), event(10, "a")));
        assert!(!view.apply(3, "s".into(), event(10, "a")), "a second copy");
        assert!(!view.apply(2, "s".into(), event(99, "z")), "a position already read");
        view.skip(4);
        assert!(view.apply(5, "t".into(), event(20, "b")));
        assert_eq!((view.next(), view.foreign()), (6, 1));
        assert!(view.holds("s", 10, "a") && !view.holds("t", 10, "a"));
        let fresh = view.fresh("s", vec![event(10, "a"), event(11, "n"), event(11, "n")]);
        assert_eq!(fresh.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["n"]);
        let q = |after: Option<(i64, String)>, descending| RangeQuery {
            series: "s".into(),
            start: 0,
            end: 100,
            descending,
            after,
            limit: 1,
        };
        let page = view.query(&q(None, false));
        assert_eq!((ids(&page), page.more), (vec!["a"], true));
        assert_eq!(ids(&view.query(&q(Some((10, "a".into())), false))), ["c"]);
        assert_eq!(ids(&view.query(&q(None, true))), ["c"]);
        assert!(view.query(&q(Some((100, String::new())), false)).events.is_empty());
        assert_eq!(view.first_at_or_after("s", 15), Some(1));
        assert_eq!(view.first_at_or_after("s", 31), None);
        let buckets = view.aggregate("s", 0, 0, 100, 50);
        assert_eq!(buckets.len(), 1);
        assert_eq!((buckets[0].count, buckets[0].sum), (2, 40.0));
    }
}
