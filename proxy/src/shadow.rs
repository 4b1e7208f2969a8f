//! Shadow traffic (`spec.shadow`): copies of a namespace's acknowledged
//! writes, and of a sampled share of its reads, replayed on a second plugin
//! after the primary has answered.
//!
//! The client never waits for the shadow: `DataPlane::forward` hands a copy
//! to [`Shadow::offer`], which puts it on a bounded queue or, when the queue
//! is full, drops and counts it. One worker per namespace replays the copies
//! in the order the primary acknowledged them, so the writes of one client
//! reach the shadow in the order it made them. Read answers are compared
//! (found, value; never the backend's version numbers) and the last
//! mismatches kept; they name keys and values by hash and length only, so
//! they never hold a value, PII or not.
//!
//! A migration (ADR-014) also uses the shadow as its write fence: closing
//! it holds new writes, and [`Shadow::drained`] tells when every write that
//! got in has been replayed, so the primary can change with nothing in
//! flight. The keys of KeyValue copies that were dropped or failed are
//! remembered ([`Shadow::take_lost`]) so that they can be copied again.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::metrics::{Metrics, ShadowOutcome};
use crate::plugin::{CallOptions, Plugin};

/// Mismatches kept per namespace.
pub const KEPT_DIFFS: usize = 100;

/// Keys whose lost copies are remembered per namespace; past this the
/// shadow only knows that it lost more (and a migration refuses to switch).
pub const KEPT_LOST_KEYS: usize = 100_000;

/// A copy waiting for the shadow: the call, replayed under the options the
/// worker gives it (a fresh deadline; the client's has nothing to do with
/// the shadow). Answers `Ok(None)` when it went through (or the answers
/// matched), `Ok(Some(difference))` for a read whose answers differ.
pub type Replay = Box<
    dyn FnOnce(Arc<Plugin>, CallOptions) -> Pin<Box<dyn Future<Output = Result<Option<String>, ProxyError>> + Send>>
        + Send,
>;

struct Copy {
    kind: Kind,
    method: &'static str,
    key_hash: String,
    /// The keys a KeyValue write changes (empty for other calls).
    keys: Vec<String>,
    replay: Replay,
}

/// Keys whose write copies never reached the shadow.
#[derive(Debug, Default)]
struct Lost {
    keys: HashSet<String>,
    /// Copies lost that named no key (not KeyValue) or did not fit.
    untracked: u64,
}

/// What the shadow lost since it was last asked.
#[derive(Debug, Default)]
pub struct LostKeys {
    pub keys: Vec<String>,
    pub untracked: u64,
}

fn lose(lost: &Mutex<Lost>, keys: Vec<String>) {
    if let Ok(mut lost) = lost.lock() {
        if keys.is_empty() {
            lost.untracked += 1;
        }
        for key in keys {
            if lost.keys.len() < KEPT_LOST_KEYS || lost.keys.contains(&key) {
                lost.keys.insert(key);
            } else {
                lost.untracked += 1;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Write,
    Read,
}

/// One kept mismatch.
#[derive(Debug, Clone)]
pub struct Diff {
    pub time: SystemTime,
    pub method: &'static str,
    pub key_hash: String,
    pub difference: String,
}

#[derive(Debug, Default)]
struct Counters {
    mirrored: AtomicU64,
    mirror_failed: AtomicU64,
    dropped: AtomicU64,
    matched: AtomicU64,
    mismatched: AtomicU64,
    compare_failed: AtomicU64,
}

/// The counters of a shadow, as a status reports them.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub mirrored: u64,
    pub mirror_failed: u64,
    pub dropped: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub compare_failed: u64,
    pub queue_depth: u64,
}

/// The shadow of one namespace.
pub struct Shadow {
    namespace: Arc<str>,
    plugin: Arc<Plugin>,
    queue: mpsc::Sender<Copy>,
    capacity: usize,
    mirror: AtomicBool,
    /// Share of reads compared, in millionths (0 to 1,000,000).
    compare_ppm: AtomicU64,
    counters: Arc<Counters>,
    diffs: Arc<Mutex<VecDeque<Diff>>>,
    last_error: Arc<Mutex<Option<String>>>,
    metrics: Arc<Metrics>,
    depth: Gauge,
    since: SystemTime,
    /// The write fence: closed while a migration switches primaries.
    closed: AtomicBool,
    fence: tokio::sync::watch::Sender<bool>,
    /// Writes past the fence whose copy is not offered yet.
    inflight: AtomicU64,
    /// Copies offered and not yet replayed.
    pending: Arc<AtomicU64>,
    /// Copies queued, and copies replayed, since the start: the worker is
    /// first in, first out, so `replayed >= n` means the first `n` queued
    /// are done.
    queued: AtomicU64,
    replayed: Arc<AtomicU64>,
    lost: Arc<Mutex<Lost>>,
}

/// A write past the fence; the fence waits for it to be dropped.
pub struct Entered(Arc<Shadow>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("namespace", &self.namespace)
            .field("plugin", &self.plugin.name())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Shadow {
    /// The shadow of `namespace` on `plugin`, with a queue of `capacity`
    /// copies and its worker, which gives each replay `timeout`. The worker
    /// stops once the shadow is dropped and its queue is empty.
    pub fn start(
        namespace: &str,
        plugin: Arc<Plugin>,
        capacity: usize,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let namespace: Arc<str> = Arc::from(namespace);
        let shadow = Arc::new(Self {
            depth: metrics.shadow_queue(&namespace),
            namespace,
            plugin,
            queue: tx,
            capacity,
            mirror: AtomicBool::new(true),
            compare_ppm: AtomicU64::new(0),
            counters: Arc::default(),
            diffs: Arc::default(),
            last_error: Arc::default(),
            metrics,
            since: SystemTime::now(),
            closed: AtomicBool::new(false),
            fence: tokio::sync::watch::Sender::new(false),
            inflight: AtomicU64::new(0),
            pending: Arc::default(),
            queued: AtomicU64::new(0),
            replayed: Arc::default(),
            lost: Arc::default(),
        });
        tokio::spawn(Worker::from(&shadow).run(rx, timeout));
        shadow
    }

    /// Applies the parts of `spec.shadow` that can change without a new
    /// queue.
    pub fn configure(&self, mirror: bool, compare_reads: f64) {
        self.mirror.store(mirror, Ordering::Relaxed);
        // Clamped by validation already; the cast keeps 0..=1e6.
        let ppm = (compare_reads.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.compare_ppm.store(ppm, Ordering::Relaxed);
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn mirrors(&self) -> bool {
        self.mirror.load(Ordering::Relaxed)
    }

    pub fn compare_reads(&self) -> f64 {
        self.compare_ppm.load(Ordering::Relaxed) as f64 / 1_000_000.0
    }

    /// Whether a call of `kind` gets a copy: writes when mirroring, a
    /// sampled share of reads.
    pub fn wants(&self, kind: Kind) -> bool {
        match kind {
            Kind::Write => self.mirrors(),
            Kind::Read => {
                let ppm = self.compare_ppm.load(Ordering::Relaxed);
                ppm > 0 && (ppm >= 1_000_000 || fastrand::u64(..1_000_000) < ppm)
            }
        }
    }

    /// Hands a copy to the worker; never waits. A full queue drops it.
    pub fn offer(&self, kind: Kind, method: &'static str, key_hash: String, keys: Vec<String>, replay: Replay) {
        // Counted before it is sent: the worker may finish it first.
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(Copy { kind, method, key_hash, keys, replay }) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::SeqCst);
                self.depth.inc();
            }
            Err(mpsc::error::TrySendError::Full(copy) | mpsc::error::TrySendError::Closed(copy)) => {
                self.replayed.fetch_add(1, Ordering::SeqCst);
                self.pending.fetch_sub(1, Ordering::SeqCst);
                if copy.kind == Kind::Write {
                    lose(&self.lost, copy.keys);
                }
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.shadow(&self.namespace, ShadowOutcome::Dropped);
            }
        }
    }

    /// Notes keys on which the two sides may differ: a write whose outcome
    /// on the primary is unknown (it failed after it was sent), or keys a
    /// repair could not copy.
    pub fn uncertain(&self, keys: Vec<String>) {
        lose(&self.lost, keys);
    }

    /// Lets a write through the fence, or, while it is closed, answers what
    /// to wait on before trying again (the fence reopening, or the route
    /// changing: either way the caller looks its route up again).
    pub fn enter_write(self: &Arc<Self>) -> Result<Entered, tokio::sync::watch::Receiver<bool>> {
        // SeqCst with `close_writes`: either this write sees the fence
        // closed, or the closer sees it in flight.
        self.inflight.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(self.fence.subscribe());
        }
        Ok(Entered(self.clone()))
    }

    /// Holds new writes until [`Shadow::open_writes`].
    pub fn close_writes(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.fence.send_replace(true);
    }

    /// Lets writes through again; the ones held look their route up again
    /// (after a switch, the new route's).
    pub fn open_writes(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.fence.send_replace(false);
    }

    pub fn writes_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until no write is between the fence and its copy and every
    /// copy offered has been replayed; false if that takes over `timeout`.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if self.inflight.load(Ordering::SeqCst) == 0 && self.pending.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A mark of the copies queued so far, for [`Shadow::caught_up`].
    pub fn mark(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Waits until every copy queued before `mark` has been replayed;
    /// false if that takes over `timeout`.
    pub async fn caught_up(&self, mark: u64, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while self.replayed.load(Ordering::SeqCst) < mark {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The keys whose copies were lost since the last call, forgetting them.
    pub fn take_lost(&self) -> LostKeys {
        self.lost
            .lock()
            .map(|mut lost| LostKeys {
                keys: std::mem::take(&mut lost.keys).into_iter().collect(),
                untracked: std::mem::take(&mut lost.untracked),
            })
            .unwrap_or_default()
    }

    /// The namespace this shadow mirrors.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        Counts {
            mirrored: c.mirrored.load(Ordering::Relaxed),
            mirror_failed: c.mirror_failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            matched: c.matched.load(Ordering::Relaxed),
            mismatched: c.mismatched.load(Ordering::Relaxed),
            compare_failed: c.compare_failed.load(Ordering::Relaxed),
            queue_depth: (self.capacity.max(1) - self.queue.capacity()) as u64,
        }
    }

    /// The kept mismatches, newest first.
    pub fn diffs(&self) -> Vec<Diff> {
        self.diffs.lock().map(|d| d.iter().rev().cloned().collect()).unwrap_or_default()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn since(&self) -> SystemTime {
        self.since
    }
}

/// What the worker holds: everything but the queue's sender, so that
/// dropping the shadow ends it.
struct Worker {
    namespace: Arc<str>,
    plugin: Arc<Plugin>,
    counters: Arc<Counters>,
    diffs: Arc<Mutex<VecDeque<Diff>>>,
    last_error: Arc<Mutex<Option<String>>>,
    metrics: Arc<Metrics>,
    depth: Gauge,
    pending: Arc<AtomicU64>,
    replayed: Arc<AtomicU64>,
    lost: Arc<Mutex<Lost>>,
}

impl From<&Arc<Shadow>> for Worker {
    fn from(s: &Arc<Shadow>) -> Self {
        Self {
            namespace: s.namespace.clone(),
            plugin: s.plugin.clone(),
            counters: s.counters.clone(),
            diffs: s.diffs.clone(),
            last_error: s.last_error.clone(),
            metrics: s.metrics.clone(),
            depth: s.depth.clone(),
            pending: s.pending.clone(),
            replayed: s.replayed.clone(),
            lost: s.lost.clone(),
        }
    }
}

impl Worker {
    async fn run(self, mut queue: mpsc::Receiver<Copy>, timeout: Duration) {
        while let Some(copy) = queue.recv().await {
            self.depth.dec();
            let options = CallOptions::new(Instant::now() + timeout, crate::context::new_request_id());
            let result = tokio::time::timeout(timeout, (copy.replay)(self.plugin.clone(), options)).await;
            let result = result.unwrap_or_else(|_| {
                Err(ProxyError::DeadlineExceeded(format!(
                    "shadow plugin {} did not answer in time",
                    self.plugin.name()
                )))
            });
            let outcome = match (copy.kind, result) {
                (Kind::Write, Ok(_)) => ShadowOutcome::Mirrored,
                (Kind::Read, Ok(None)) => ShadowOutcome::Matched,
                (Kind::Read, Ok(Some(difference))) => {
                    if let Ok(mut diffs) = self.diffs.lock() {
                        if diffs.len() == KEPT_DIFFS {
                            diffs.pop_front();
                        }
                        diffs.push_back(Diff {
                            time: SystemTime::now(),
                            method: copy.method,
                            key_hash: copy.key_hash,
                            difference,
                        });
                    }
                    ShadowOutcome::Mismatched
                }
                (kind, Err(e)) => {
                    tracing::debug!(namespace = %self.namespace, plugin = self.plugin.name(), error = %e, "shadow call failed");
                    if let Ok(mut last) = self.last_error.lock() {
                        *last = Some(e.to_string());
                    }
                    if kind == Kind::Write {
                        lose(&self.lost, copy.keys);
                        ShadowOutcome::MirrorFailed
                    } else {
                        ShadowOutcome::CompareFailed
                    }
                }
            };
            self.replayed.fetch_add(1, Ordering::SeqCst);
            self.pending.fetch_sub(1, Ordering::SeqCst);
            let counter = match outcome {
                ShadowOutcome::Mirrored => &self.counters.mirrored,
                ShadowOutcome::MirrorFailed => &self.counters.mirror_failed,
                ShadowOutcome::Matched => &self.counters.matched,
                ShadowOutcome::Mismatched => &self.counters.mismatched,
                ShadowOutcome::CompareFailed => &self.counters.compare_failed,
                ShadowOutcome::Dropped => &self.counters.dropped,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.metrics.shadow(&self.namespace, outcome);
        }
    }
}

/// How two read answers' values differ, by length and hash: the diff says
/// that they differ and lets two diffs be matched up, never what they hold.
pub fn describe_values(what: &str, primary: &[u8], shadow: &[u8]) -> String {
    format!("{what} differs: primary {}, shadow {}", fingerprint(primary), fingerprint(shadow))
}

fn fingerprint(value: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value);
    let hex: String = digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{} bytes sha256:{hex}", value.len())
}
