//! Isolation between namespaces: rate quotas and a fair share of the
//! proxy's concurrency (the seed's "no noisy neighbours").
//!
//! - **Quotas**: a namespace's declared `needs.read_rps` / `needs.write_rps`
//!   become token buckets (GCRA, `governor`) when `spec.quota.enforce` or
//!   the proxy's `limits.enforce_quotas` asks. One call takes one token of
//!   its class (a batch is one call, as its rate was declared in calls); a
//!   bucket holds `burst` worth of the rate (`spec.quota.burst`, else
//!   `limits.quota_burst`, at least one call). A call beyond the quota is
//!   refused at once with RESOURCE_EXHAUSTED and a retry hint (the wait
//!   until a token is back): queueing it would only make every later call
//!   of the namespace late too.
//! - **Fair concurrency**: once half of `limits.max_concurrent_requests`
//!   are in flight, a namespace that holds `max / (busy + 1)` calls or more
//!   (`busy`: namespaces with a call in flight, itself included) is refused
//!   with RESOURCE_EXHAUSTED. So however many namespaces flood the proxy,
//!   one share stays free for a namespace that has none in flight, and a
//!   flood cannot take every slot of the proxy-wide limit. Below half, a
//!   namespace may use as many slots as it needs.
//!
//! Both checks run in `DataPlane::forward` after authorization (an
//! unauthorized caller learns nothing about a namespace's load) and before
//! anything else is spent on the call.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as Gcra, RateLimiter};

use crate::config::Limits;
use crate::error::ProxyError;
use crate::namespace::NamespaceDoc;
use crate::security::Right;

/// The rate quotas of one namespace (per route; a new route, made when the
/// namespace is applied again, starts with full buckets).
#[derive(Debug, Default)]
pub struct Quotas {
    read: Option<Bucket>,
    write: Option<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    rate: u64,
    burst: Duration,
}

impl Bucket {
    fn new(rate: u64, burst: Duration) -> Option<Self> {
        let per_second = NonZeroU32::new(u32::try_from(rate).unwrap_or(u32::MAX))?;
        // The bucket holds `burst` of the rate, and never less than one call.
        let capacity = (rate as f64 * burst.as_secs_f64()).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        let capacity = NonZeroU32::new(capacity).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        let limiter = RateLimiter::direct_with_clock(Gcra::per_second(per_second).allow_burst(capacity), clock.clone());
        Some(Self { limiter, clock, rate, burst })
    }

    /// Takes a token, or says how long until one is back.
    fn take(&self) -> Result<(), Duration> {
        self.limiter.check().map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

impl Quotas {
    /// The quotas `doc` asks for under the proxy's `limits`; none when
    /// neither the namespace nor the proxy enforces them.
    pub fn new(doc: &NamespaceDoc, limits: &Limits) -> Self {
        let quota = doc.spec.quota.as_ref();
        let enforce = quota.and_then(|q| q.enforce).unwrap_or(limits.enforce_quotas);
        if !enforce {
            return Self::default();
        }
        let burst = quota.and_then(|q| q.burst).unwrap_or(limits.quota_burst);
        let needs = &doc.spec.needs;
        Self {
            read: needs.read_rps.and_then(|rate| Bucket::new(rate, burst)),
            write: needs.write_rps.and_then(|rate| Bucket::new(rate, burst)),
        }
    }

    /// Whether any class is limited.
    pub fn enforced(&self) -> bool {
        self.read.is_some() || self.write.is_some()
    }

    /// Takes a token for a call needing `right` (reads and PII reads count
    /// as reads), or refuses the call with when to retry.
    pub fn admit(&self, namespace: &str, right: Right) -> Result<(), ProxyError> {
        let (bucket, class, limit) = match right {
            Right::Write => (&self.write, "write", "write_quota"),
            _ => (&self.read, "read", "read_quota"),
        };
        let Some(bucket) = bucket else { return Ok(()) };
        bucket.take().map_err(|wait| {
            // Rounded up to a whole millisecond (the pushback trailer's unit):
            // a hint shorter than the wait would invite a retry that is
            // refused again.
            let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX).max(1);
            let retry_after = Duration::from_millis(ms);
            ProxyError::QuotaExceeded {
                limit,
                message: format!(
                    "namespace {namespace:?} is over its {class} quota of {} calls/s (spec.needs.{class}_rps, burst {}); retry in {} ms",
                    bucket.rate,
                    humantime::format_duration(bucket.burst),
                    ms,
                ),
                retry_after,
            }
        })
    }
}

/// The proxy-wide side of fair concurrency: calls in flight and how many
/// namespaces have one.
#[derive(Debug)]
pub struct Fairness {
    enabled: bool,
    max: usize,
    in_flight: AtomicUsize,
    /// Namespaces with a call in flight. Signed: a namespace's count going
    /// 0→1 on one thread and 1→0 on another may bump this in either order.
    busy: AtomicIsize,
}

impl Fairness {
    pub fn new(limits: &Limits) -> Self {
        Self {
            enabled: limits.namespace_fairness,
            max: limits.max_concurrent_requests,
            in_flight: AtomicUsize::new(0),
            busy: AtomicIsize::new(0),
        }
    }

    /// Admits a call of the namespace whose in-flight count is `held`, or
    /// refuses it when the proxy is busy and the namespace holds its share.
    /// The slot is given back when the returned guard drops.
    pub fn enter<'a>(&'a self, namespace: &str, held: &'a AtomicUsize) -> Result<Slot<'a>, ProxyError> {
        let before = held.fetch_add(1, Ordering::AcqRel);
        if before == 0 {
            self.busy.fetch_add(1, Ordering::AcqRel);
        }
        let slot = Slot { fairness: self, held };
        let total = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if self.enabled && total * 2 >= self.max {
            let busy = usize::try_from(self.busy.load(Ordering::Acquire)).unwrap_or(0).max(1);
            let share = (self.max / (busy + 1)).max(1);
            if before >= share {
                drop(slot);
                return Err(ProxyError::ResourceExhausted(format!(
                    "namespace {namespace:?} holds {before} of the proxy's {} concurrent requests, its fair share while {busy} namespaces are busy (limits.namespace_fairness); retry later",
                    self.max
                )));
            }
        }
        Ok(slot)
    }
}

/// A call's place in the fairness counts.
#[derive(Debug)]
pub struct Slot<'a> {
    fairness: &'a Fairness,
    held: &'a AtomicUsize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.fairness.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.held.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.fairness.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn doc(yaml: &str) -> NamespaceDoc {
        NamespaceDoc::parse(yaml).unwrap()
    }

    const KV: &str = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: orders}\nspec:\n  pattern: keyvalue\n";

    #[test]
    fn quotas_are_off_unless_asked() {
        let limits = Limits::default();
        let d = doc(&format!("{KV}  needs: {{read_rps: 1}}\n"));
        let q = Quotas::new(&d, &limits);
        assert!(!q.enforced());
        for _ in 0..100 {
            q.admit("orders", Right::Read).unwrap();
        }
        // The proxy asks: every namespace's declared rates are enforced...
        let enforcing = Limits { enforce_quotas: true, ..Limits::default() };
        assert!(Quotas::new(&d, &enforcing).enforced());
        // ...unless the namespace opts out.
        let out = doc(&format!("{KV}  needs: {{read_rps: 1}}\n  quota: {{enforce: false}}\n"));
        assert!(!Quotas::new(&out, &enforcing).enforced());
    }

    #[test]
    fn a_bucket_holds_its_burst_and_then_refuses_with_a_hint() {
        let d =
            doc(&format!("{KV}  needs: {{read_rps: 10, write_rps: 2}}\n  quota: {{enforce: true, burst: 500ms}}\n"));
        let q = Quotas::new(&d, &Limits::default());
        // 10/s with 500 ms of burst: 5 reads at once, then the sixth waits
        // about 100 ms for its token.
        for _ in 0..5 {
            q.admit("orders", Right::Read).unwrap();
        }
        let err = q.admit("orders", Right::Read).unwrap_err();
        let ProxyError::QuotaExceeded { limit, message, retry_after } = &err else { panic!("{err:?}") };
        assert_eq!(*limit, "read_quota");
        assert!(message.contains("read quota of 10 calls/s") && message.contains("retry in"), "{message}");
        // About 100 ms, in whole milliseconds, never shorter than the wait.
        assert!(
            *retry_after >= Duration::from_millis(1) && *retry_after <= Duration::from_millis(101),
            "{retry_after:?}"
        );
        assert_eq!(retry_after.subsec_nanos() % 1_000_000, 0, "{retry_after:?}");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        // Writes have their own bucket (2/s × 500 ms: one call).
        q.admit("orders", Right::Write).unwrap();
        assert!(matches!(q.admit("orders", Right::Write), Err(ProxyError::QuotaExceeded { limit: "write_quota", .. })));
        // PII reads are reads.
        assert!(q.admit("orders", Right::Pii).is_err());
    }

    #[test]
    fn an_undeclared_class_is_not_limited() {
        let d = doc(&format!("{KV}  needs: {{write_rps: 1}}\n  quota: {{enforce: true}}\n"));
        let q = Quotas::new(&d, &Limits::default());
        for _ in 0..1000 {
            q.admit("orders", Right::Read).unwrap();
        }
        q.admit("orders", Right::Write).unwrap();
        assert!(q.admit("orders", Right::Write).is_err());
    }

    #[test]
    fn a_flood_leaves_a_share_for_a_namespace_with_none() {
        let limits = Limits { max_concurrent_requests: 12, ..Limits::default() };
        let fair = Fairness::new(&limits);
        let (a, b, c) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        // A alone may pass half the proxy (6); its share while it alone is
        // busy is 12 / 2 = 6.
        let mut held_a = Vec::new();
        while let Ok(slot) = fair.enter("a", &a) {
            held_a.push(slot);
            assert!(held_a.len() <= 12);
        }
        assert_eq!(held_a.len(), 6);
        // B gets in, up to its share of 12 / 3 = 4 with two busy.
        let mut held_b = Vec::new();
        while let Ok(slot) = fair.enter("b", &b) {
            held_b.push(slot);
        }
        assert_eq!(held_b.len(), 4);
        // C, with none in flight, still gets in; A and B, over their share
        // of 12 / 4 = 3, are refused until theirs drain.
        let slot_c = fair.enter("c", &c).unwrap();
        let err = fair.enter("a", &a).unwrap_err();
        assert!(err.to_string().contains("fair share while 3 namespaces are busy"), "{err}");
        assert!(fair.enter("b", &b).is_err());
        drop(held_a);
        assert_eq!(a.load(Ordering::Acquire), 0);
        // A drained: two namespaces busy again, and A gets back in.
        fair.enter("a", &a).unwrap();
        drop((held_b, slot_c));
        assert_eq!(fair.in_flight.load(Ordering::Acquire), 0);
        assert_eq!(fair.busy.load(Ordering::Acquire), 0);
    }

    #[test]
    fn below_half_of_the_limit_a_namespace_takes_what_it_needs() {
        let limits = Limits { max_concurrent_requests: 100, ..Limits::default() };
        let fair = Fairness::new(&limits);
        let (a, b) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let _b = fair.enter("b", &b).unwrap();
        // Two busy: a share is 33, but below 50 in flight nobody is refused.
        let held: Vec<_> = (0..48).map(|_| fair.enter("a", &a).unwrap()).collect();
        assert_eq!(held.len(), 48);
        assert!(fair.enter("a", &a).is_err());
        let off = Fairness::new(&Limits { namespace_fairness: false, ..limits });
        let c = AtomicUsize::new(0);
        let all: Vec<_> = (0..100).map(|_| off.enter("c", &c).unwrap()).collect();
        assert_eq!(all.len(), 100);
    }
}
