//! Moving a KeyValue namespace to another backend without downtime
//! (ADR-014): mirror → backfill → verify → promote → finalize, or rollback.
//!
//! Every step is a registry change that all proxies sharing the registry
//! follow. The namespace document itself says which plugin is the primary
//! and which the shadow, so routing never depends on anything else; the
//! migration record (see `migration.rs`) holds the phase, the backfill's
//! checkpoint and the verify report. Backfill and verify run in the
//! background on the proxy that was asked (or, if it dies, on whichever
//! proxy notices its lease has expired) and report progress in the record.
//!
//! A switch of primary (promote, or rollback after promote) is fenced: the
//! record enters `switching`, every live proxy holds new writes to the
//! namespace, waits for its writes in flight and its shadow queue to
//! drain, copies again the keys whose mirrored copies it lost, and
//! acknowledges; only then is the new document stored, in the same
//! transaction as the record's next phase. Held writes then go to the new
//! primary. No acknowledged write is lost and none is applied twice; a
//! switch that cannot complete in time is undone and the writes go on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prism_proto::keyvalue::v1::{BatchGetRequest, DeleteRequest, Entry, PutRequest, ScanRequest, ScanResponse};
use prism_proto::plugin::v1::{DescribeNamespaceRequest, DropNamespaceRequest};
use tokio::time::Instant;

use super::Controller;
use super::migration::{Backfill, Event, Migration, Phase, Switch, VerifyReport, now, now_unix};
use crate::error::ProxyError;
use crate::namespace::{DEFAULT_SHADOW_QUEUE, NamespaceDoc, PatternKind};
use crate::plugin::{CallOptions, Plugin};
use crate::routes::Route;
use crate::security::audit::key_hash;
use crate::shadow::Shadow;

/// A switch this proxy is draining for, not yet acknowledged.
const PENDING: &str = "pending";
/// Keys per scan page of a backfill or verify.
const PAGE: u32 = 500;
/// Target writes a backfill runs at once.
const COPY_CONCURRENCY: usize = 16;
/// How often a background step stores its progress.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A background step whose owner has not reported for this long is taken
/// over by another proxy.
const STEP_LEASE: Duration = Duration::from_secs(15);
/// A proxy not heard from for this long does not hold up a switch.
pub const PROXY_LEASE: Duration = Duration::from_secs(10);
/// How often a proxy reports that it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// Differences a verify re-checks one by one; past this they count as
/// found without a second look.
const RECHECK_LIMIT: usize = 100_000;
/// How many times a verify looks again at a difference before it counts.
const RECHECKS: usize = 3;
/// How long a verify lets writes in flight settle before re-checking.
const SETTLE: Duration = Duration::from_secs(1);
/// Sample differences kept in a verify report.
const SAMPLES: usize = 20;
/// Default backfill rate, keys per second.
pub const DEFAULT_RATE: u64 = 2_000;
/// Default clean window of a verify.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Default time a switch may take before it is undone.
pub const DEFAULT_SWITCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What a migration step asks for, beyond the namespace.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub target: String,
    pub compare_reads: f64,
    pub queue: usize,
    pub force: bool,
}

/// The outcome of a step: the migration as it stands, and what happened
/// (or, for a dry run, what would).
pub struct Stepped {
    pub migration: Migration,
    pub message: String,
}

fn refused(message: String) -> ProxyError {
    ProxyError::FailedPrecondition(message)
}

/// What to run after a phase, for error messages and `migrate status`.
pub fn next_step(m: &Migration) -> String {
    let ns = &m.namespace;
    match m.phase {
        Phase::Mirroring => format!("prismctl migrate backfill {ns}"),
        Phase::Backfilling => format!("wait for the backfill (prismctl migrate status {ns})"),
        Phase::Backfilled => format!("prismctl migrate verify {ns}"),
        Phase::Verifying => format!("wait for the verify (prismctl migrate status {ns})"),
        Phase::Verified => format!("prismctl migrate promote {ns}"),
        Phase::Switching => format!("wait for the switch (prismctl migrate status {ns})"),
        Phase::Promoted => format!("prismctl migrate finalize {ns} (or rollback)"),
        Phase::Finalized | Phase::RolledBack => "nothing: the migration is over".to_owned(),
    }
}

fn out_of_order(m: &Migration, step: &str) -> ProxyError {
    refused(format!(
        "cannot {step} namespace {}: its migration to {} is {}; next: {}",
        m.namespace,
        m.target,
        m.phase,
        next_step(m)
    ))
}

fn event(m: &mut Migration, by: &str, note: impl Into<String>) {
    m.history.push(Event { at: now(), phase: m.phase, by: by.to_owned(), note: note.into() });
}

/// Rewrites `spec.backend` and `spec.shadow` of a namespace document. The
/// document is re-serialized (comments are not kept).
fn edit_doc(yaml: &str, backend: &str, shadow: Option<serde_json::Value>) -> Result<String, ProxyError> {
    let mut doc: serde_json::Value =
        serde_saphyr::from_str(yaml).map_err(|e| ProxyError::Internal(format!("re-reading the document: {e}")))?;
    let spec = doc
        .get_mut("spec")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or_else(|| ProxyError::Internal("the document has no spec".to_owned()))?;
    spec.insert("backend".to_owned(), serde_json::Value::String(backend.to_owned()));
    match shadow {
        Some(shadow) => spec.insert("shadow".to_owned(), shadow),
        None => spec.remove("shadow"),
    };
    let text = serde_saphyr::to_string(&doc).map_err(|e| ProxyError::Internal(format!("writing the document: {e}")))?;
    Ok(format!("# spec.backend and spec.shadow are managed by `prismctl migrate`.\n{text}"))
}

/// `yaml` with the backend and shadow of `current`: a document applied
/// during a migration keeps what the migration set.
pub fn keep_managed(yaml: &str, current: &Route) -> Result<String, ProxyError> {
    let shadow = current.shadow.as_ref().map(|s| shadow_spec(s.plugin().name(), current));
    edit_doc(yaml, current.plugin.name(), shadow)
}

fn shadow_spec(backend: &str, route: &Route) -> serde_json::Value {
    let (compare_reads, queue) =
        route.doc.spec.shadow.as_ref().map_or((0.0, DEFAULT_SHADOW_QUEUE), |s| (s.compare_reads, s.queue));
    serde_json::json!({"backend": backend, "mirror": "writes", "compare_reads": compare_reads, "queue": queue})
}

fn options(timeout: Duration) -> CallOptions {
    CallOptions::new(Instant::now() + timeout, Arc::from(format!("migrate-{}", uuid::Uuid::new_v4())))
}

impl Controller {
    /// The current route of `name`, which must be a KeyValue namespace.
    fn migrating_route(&self, name: &str) -> Result<Arc<Route>, ProxyError> {
        let route =
            self.routes.snapshot().get(name).cloned().ok_or_else(|| ProxyError::NamespaceNotFound(name.to_owned()))?;
        if route.pattern() != PatternKind::Keyvalue {
            return Err(refused(format!(
                "namespace {name} is a {} namespace; migrations move keyvalue namespaces (the plugin protocol cannot list a {} namespace's data). spec.shadow mirrors its writes to another backend all the same",
                route.pattern().as_str(),
                route.pattern().as_str()
            )));
        }
        Ok(route)
    }

    /// The stored migration of `name`.
    pub async fn migration(&self, name: &str) -> Result<Migration, ProxyError> {
        self.registry.migration(name).await?.ok_or_else(|| {
            ProxyError::NotFound(format!(
                "namespace {name} has no migration; start one with `prismctl migrate {name} --to BACKEND`"
            ))
        })
    }

    /// Stores `m`, with the document `yaml` of its namespace if given, and
    /// reloads this proxy at once (others follow the notification).
    async fn store(self: &Arc<Self>, m: &mut Migration, yaml: Option<&str>, notify: bool) -> Result<(), ProxyError> {
        let source = self.routes.snapshot().get(&m.namespace).map(|r| r.source.clone());
        self.registry.put_migration(m, yaml.map(|y| (y, source.as_deref())), notify).await?;
        self.remember(m.clone());
        if notify || yaml.is_some() {
            self.reconcile().await?;
        }
        Ok(())
    }

    fn remember(&self, m: Migration) {
        if let Ok(mut known) = self.migrations.lock() {
            known.insert(m.namespace.clone(), m);
        }
    }

    /// The migration of `name` this proxy last loaded, if one is under way.
    pub(super) fn active_migration(&self, name: &str) -> Option<Migration> {
        self.migrations.lock().ok().and_then(|m| m.get(name).filter(|m| !m.phase.ended()).cloned())
    }

    /// **mirror**: starts mirroring the namespace's writes to `target`.
    pub async fn start_migration(
        self: &Arc<Self>,
        name: &str,
        opts: StartOptions,
        dry_run: bool,
        by: &str,
    ) -> Result<Stepped, ProxyError> {
        let route = self.migrating_route(name)?;
        let stored = self.registry.migration(name).await?;
        if let Some(m) = stored.as_ref().filter(|m| !m.phase.ended()) {
            return Err(refused(format!(
                "namespace {name} is already being migrated to {} ({}); next: {}",
                m.target,
                m.phase,
                next_step(m)
            )));
        }
        let target = self.plugins.get(&opts.target).cloned().ok_or_else(|| {
            ProxyError::InvalidArgument(format!(
                "{:?} is not a plugin of this proxy (it has: {})",
                opts.target,
                self.plugins.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if Arc::ptr_eq(&target, &route.plugin) {
            return Err(ProxyError::InvalidArgument(format!("namespace {name} is already served by {}", opts.target)));
        }
        if let Some(shadow) = &route.shadow
            && !Arc::ptr_eq(shadow.plugin(), &target)
        {
            return Err(refused(format!(
                "namespace {name} already has a shadow on {}; remove spec.shadow or migrate to that plugin",
                shadow.plugin().name()
            )));
        }
        for (plugin, role, needs_cas) in [(&route.plugin, "source", false), (&target, "target", true)] {
            let caps = plugin.known().and_then(|i| i.capabilities.clone()).ok_or_else(|| {
                ProxyError::Unavailable(format!("plugin {} ({role}) has not started; try again", plugin.name()))
            })?;
            if !caps.scan {
                return Err(refused(format!(
                    "plugin {} ({role}) cannot scan keys in order, which a migration needs",
                    plugin.name()
                )));
            }
            if needs_cas && !caps.cas {
                return Err(refused(format!(
                    "plugin {} cannot write only when a key is absent (no compare-and-set), which the backfill needs not to overwrite newer writes",
                    plugin.name()
                )));
            }
        }
        if !opts.force && route.shadow.is_none() {
            let holds = async {
                let mut lifecycle = target.lifecycle()?;
                let answer = lifecycle
                    .describe_namespace(DescribeNamespaceRequest { namespace: name.to_owned() })
                    .await
                    .map_err(|s| ProxyError::from_plugin(target.name(), &s))?;
                Ok::<bool, ProxyError>(answer.into_inner().holds_data)
            };
            if holds.await.unwrap_or(false) {
                return Err(refused(format!(
                    "plugin {} already holds data of namespace {name} (an earlier copy?); the backfill would keep it. Start with force to keep it anyway",
                    opts.target
                )));
            }
        }
        let mut shadow = shadow_spec(&opts.target, &route);
        shadow["compare_reads"] = serde_json::json!(opts.compare_reads);
        if opts.queue > 0 {
            shadow["queue"] = serde_json::json!(opts.queue);
        }
        let yaml = edit_doc(&route.yaml, route.plugin.name(), Some(shadow))?;
        // The edited document must plan like any applied one.
        let (doc, tree) = NamespaceDoc::parse_with_tree(&yaml).map_err(ProxyError::InvalidSpec)?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let _ = self.check(&doc, &tree, &mut errors, &mut warnings);
        if !errors.is_empty() {
            return Err(ProxyError::InvalidSpec(errors));
        }
        let mut m = Migration {
            namespace: name.to_owned(),
            source: route.plugin.name().to_owned(),
            target: opts.target.clone(),
            phase: Phase::Mirroring,
            revision: stored.as_ref().map_or(0, |s| s.revision),
            started_at: now(),
            updated_at: now(),
            backfill: None,
            verify: None,
            switch: None,
            error: None,
            history: Vec::new(),
        };
        let message = format!(
            "namespace {name}: mirroring writes from {} to {}, comparing {}% of reads",
            m.source,
            m.target,
            opts.compare_reads * 100.0
        );
        if dry_run {
            return Ok(Stepped { migration: m, message: format!("would start {message}") });
        }
        let note = format!("mirroring to {}", m.target);
        event(&mut m, by, note);
        // Compare-and-set on the stored revision (that of an ended
        // migration, or none) refuses a concurrent start.
        self.store(&mut m, Some(&yaml), true).await?;
        Ok(Stepped { migration: m, message })
    }

    /// **backfill**: copies every key of the primary to the target, in the
    /// background. Runs again from the start after `backfilled`, and
    /// resumes from its checkpoint when it was interrupted.
    pub async fn start_backfill(
        self: &Arc<Self>,
        name: &str,
        rate: u64,
        dry_run: bool,
        by: &str,
    ) -> Result<Stepped, ProxyError> {
        self.migrating_route(name)?;
        let mut m = self.migration(name).await?;
        let resume = m.phase == Phase::Backfilling;
        match m.phase {
            Phase::Mirroring | Phase::Backfilled | Phase::Verified => {}
            Phase::Backfilling
                if self.owns_or_may_take(name, m.backfill.as_ref().map(|b| (&b.owner, b.heartbeat_unix))) => {}
            Phase::Backfilling => {
                return Err(refused(format!(
                    "the backfill of namespace {name} is running on proxy {}; follow it with `prismctl migrate status {name}`",
                    m.backfill.as_ref().map_or("?", |b| b.owner.as_str())
                )));
            }
            _ => return Err(out_of_order(&m, "backfill")),
        }
        let rate =
            if rate == 0 { m.backfill.as_ref().filter(|_| resume).map_or(DEFAULT_RATE, |b| b.rate) } else { rate };
        let message = if resume {
            format!("backfill of {name} resumes from its checkpoint at up to {rate} keys/s")
        } else {
            format!("backfill of {name} copies every key from {} to {} at up to {rate} keys/s", m.source, m.target)
        };
        if dry_run {
            return Ok(Stepped { migration: m, message: format!("would start: {message}") });
        }
        let previous = m.backfill.take().filter(|_| resume);
        m.backfill = Some(Backfill {
            rate,
            owner: self.id.clone(),
            heartbeat_unix: now_unix(),
            started_at: now(),
            ..previous.unwrap_or_default()
        });
        m.phase = Phase::Backfilling;
        m.error = None;
        m.verify = None;
        event(&mut m, by, if resume { "backfill resumed" } else { "backfill started" });
        self.store(&mut m, None, true).await?;
        self.spawn_step(m.clone());
        Ok(Stepped { migration: m, message })
    }

    /// **verify**: compares both sides in full, then watches the compared
    /// reads for a clean window, in the background.
    pub async fn start_verify(
        self: &Arc<Self>,
        name: &str,
        window: Duration,
        dry_run: bool,
        by: &str,
    ) -> Result<Stepped, ProxyError> {
        self.migrating_route(name)?;
        let mut m = self.migration(name).await?;
        match m.phase {
            Phase::Backfilled | Phase::Verified => {}
            Phase::Verifying
                if self.owns_or_may_take(name, m.verify.as_ref().map(|v| (&v.owner, v.heartbeat_unix))) => {}
            _ => return Err(out_of_order(&m, "verify")),
        }
        let message = format!(
            "verify of {name} compares every key of {} and {}, then watches compared reads for {}s",
            m.source,
            m.target,
            window.as_secs()
        );
        if dry_run {
            return Ok(Stepped { migration: m, message: format!("would start: {message}") });
        }
        m.phase = Phase::Verifying;
        m.error = None;
        m.verify = Some(VerifyReport {
            started_at: now(),
            owner: self.id.clone(),
            heartbeat_unix: now_unix(),
            window_seconds: window.as_secs(),
            ..VerifyReport::default()
        });
        event(&mut m, by, "verify started");
        self.store(&mut m, None, true).await?;
        self.spawn_step(m.clone());
        Ok(Stepped { migration: m, message })
    }

    /// Whether this proxy may run a background step owned by `owner`
    /// (reported at `heartbeat`, unix seconds; 0 for unknown): its own
    /// when nothing runs it here, or one whose owner went quiet.
    fn owns_or_may_take(&self, name: &str, owner: Option<(&String, u64)>) -> bool {
        match owner {
            None => true,
            Some((owner, _)) if *owner == self.id => !self.step_running(name),
            Some((_, heartbeat)) => heartbeat > 0 && now_unix().saturating_sub(heartbeat) > STEP_LEASE.as_secs(),
        }
    }

    /// Whether a background step of namespace `name` runs on this proxy.
    fn step_running(&self, name: &str) -> bool {
        self.tasks.lock().is_ok_and(|t| t.get(name).is_some_and(|t| !t.is_finished()))
    }

    /// Runs `m`'s background step (backfill or verify) on this proxy.
    fn spawn_step(self: &Arc<Self>, m: Migration) {
        let name = m.namespace.clone();
        let name_key = name.clone();
        let Ok(mut tasks) = self.tasks.lock() else { return };
        if tasks.get(&name).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let controller = self.clone();
        let task = tokio::spawn(async move {
            let phase = m.phase;
            let result = match phase {
                Phase::Backfilling => controller.run_backfill(m).await,
                Phase::Verifying => controller.run_verify(m).await,
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(namespace = %name, %phase, error = %e, "migration step stopped");
                // Record why, unless someone else changed the migration.
                if !matches!(e, ProxyError::Conflict(_))
                    && let Ok(mut m) = controller.migration(&name).await
                    && m.phase == phase
                {
                    m.error = Some(e.to_string());
                    let _ = controller.store(&mut m, None, false).await;
                }
            }
        });
        tasks.insert(name_key, task);
    }

    /// Takes over background steps that stopped: this proxy's own after a
    /// restart, another's whose lease expired. Called after every reload.
    pub(super) fn resume_steps(self: &Arc<Self>, migrations: &[Migration]) {
        for m in migrations {
            let owner = match m.phase {
                Phase::Backfilling if m.error.is_none() => m.backfill.as_ref().map(|b| (&b.owner, b.heartbeat_unix)),
                _ => continue,
            };
            if self.step_running(&m.namespace) {
                continue;
            }
            // This proxy's own steps run until they end: never taken over.
            // A previous run of a directory registry's only proxy cannot
            // be running any more; another proxy's step is taken over when
            // its lease expired.
            if owner.is_some_and(|(o, _)| *o == self.id) {
                continue;
            }
            let expired = owner.is_none_or(|(_, hb)| now_unix().saturating_sub(hb) > STEP_LEASE.as_secs());
            if !expired && self.registry.shared() {
                continue;
            }
            let mut m = m.clone();
            let controller = self.clone();
            tokio::spawn(async move {
                if let Some(b) = m.backfill.as_mut() {
                    b.owner.clone_from(&controller.id);
                    b.heartbeat_unix = now_unix();
                }
                event(&mut m, &controller.id, "backfill taken over from its checkpoint");
                // Compare-and-set: of several proxies noticing, one wins.
                if controller.store(&mut m, None, false).await.is_ok() {
                    tracing::info!(namespace = %m.namespace, "resuming the backfill from its checkpoint");
                    controller.spawn_step(m);
                }
            });
        }
    }

    /// Copies the primary's keys page by page from the checkpoint, never
    /// overwriting a key the target already has (a mirrored write got there
    /// first), and deleting a copy again when the primary deleted the key
    /// meanwhile (its mirrored delete may have come before the copy).
    async fn run_backfill(self: &Arc<Self>, mut m: Migration) -> Result<(), ProxyError> {
        let name = m.namespace.clone();
        let timeout = self.limits.request_timeout;
        let (source, target) = self.sides(&m)?;
        let ttl = self.routes.snapshot().get(&name).map_or(0, |r| r.default_ttl_seconds);
        let mut b = m.backfill.clone().unwrap_or_default();
        if b.total == 0 && b.checkpoint.is_empty() {
            b.total = count_keys(&source, &name, timeout).await?;
        }
        let started = Instant::now();
        let copied_at_start = b.copied + b.skipped;
        let mut last_checkpoint = Instant::now();
        // The rate limit: key n of this run starts no earlier than n/rate
        // seconds after the run began.
        let mut n: u64 = 0;
        let pace = |n: u64| (b.rate > 0).then(|| started + Duration::from_secs_f64(n as f64 / b.rate as f64));
        loop {
            let page = scan_page(&source, &name, &b.checkpoint, timeout).await?;
            let copies = futures::stream::iter(page.items.iter().cloned())
                .map(|entry| {
                    let target = target.clone();
                    let name = name.clone();
                    let due = pace(n);
                    n += 1;
                    async move {
                        if let Some(due) = due {
                            tokio::time::sleep_until(due).await;
                        }
                        copy_absent(&target, &name, entry, ttl, timeout).await
                    }
                })
                .buffer_unordered(COPY_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut created: Vec<(String, u64)> = Vec::new();
            for copy in copies {
                match copy? {
                    Some(made) => created.push(made),
                    None => b.skipped += 1,
                }
            }
            b.copied += created.len() as u64;
            b.undone += undo_deleted(&source, &target, &name, created, timeout).await?;
            b.scanned += page.items.len() as u64;
            b.checkpoint = page.next_page_token;
            let done = b.checkpoint.is_empty();
            let elapsed = started.elapsed().as_secs_f64();
            let moved = (b.copied + b.skipped).saturating_sub(copied_at_start);
            if elapsed > 0.0 {
                b.keys_per_second = moved as f64 / elapsed;
            }
            if done || last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                b.heartbeat_unix = now_unix();
                if done {
                    b.finished_at = now();
                    m.phase = Phase::Backfilled;
                    event(
                        &mut m,
                        &self.id,
                        format!("{} keys copied, {} already there, {} undone", b.copied, b.skipped, b.undone),
                    );
                }
                m.backfill = Some(b.clone());
                // Fails with Conflict if the migration was rolled back (or
                // taken over) meanwhile: then this run stops.
                self.store(&mut m, None, done).await?;
                last_checkpoint = Instant::now();
            }
            if done {
                tracing::info!(namespace = %name, copied = b.copied, skipped = b.skipped, undone = b.undone, "backfill done");
                return Ok(());
            }
        }
    }

    /// The source (current primary) and target plugins of a migration.
    fn sides(&self, m: &Migration) -> Result<(Arc<Plugin>, Arc<Plugin>), ProxyError> {
        let get = |name: &str| {
            self.plugins
                .get(name)
                .cloned()
                .ok_or_else(|| refused(format!("plugin {name} of the migration is not configured on this proxy")))
        };
        Ok((get(&m.source)?, get(&m.target)?))
    }

    /// Compares both sides key by key (a merge of two ordered scans), then
    /// re-checks each difference after writes in flight settled, then
    /// watches this proxy's compared reads for the clean window.
    async fn run_verify(self: &Arc<Self>, mut m: Migration) -> Result<(), ProxyError> {
        let name = m.namespace.clone();
        let timeout = self.limits.request_timeout;
        let (source, target) = self.sides(&m)?;
        let mut report = m.verify.clone().unwrap_or_default();
        // Keys that differed at first sight; what they are is decided on
        // the last look.
        let mut candidates: Vec<String> = Vec::new();
        let mut over: u64 = 0;
        let mut left = Pages::new(source.clone(), name.clone(), timeout);
        let mut right = Pages::new(target.clone(), name.clone(), timeout);
        let mut last_checkpoint = Instant::now();
        let mut note = |key: &str, over: &mut u64| {
            if candidates.len() < RECHECK_LIMIT {
                candidates.push(key.to_owned());
            } else {
                *over += 1;
            }
        };
        loop {
            let (l, r) = (left.peek().await?, right.peek().await?);
            match (l, r) {
                (None, None) => break,
                (Some(a), None) => {
                    note(&a.key, &mut over);
                    report.source_keys += 1;
                    left.next();
                }
                (None, Some(b)) => {
                    note(&b.key, &mut over);
                    report.target_keys += 1;
                    right.next();
                }
                (Some(a), Some(b)) => match a.key.as_bytes().cmp(b.key.as_bytes()) {
                    std::cmp::Ordering::Less => {
                        note(&a.key, &mut over);
                        report.source_keys += 1;
                        left.next();
                    }
                    std::cmp::Ordering::Greater => {
                        note(&b.key, &mut over);
                        report.target_keys += 1;
                        right.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if a.value == b.value {
                            report.matched += 1;
                        } else {
                            note(&a.key, &mut over);
                        }
                        report.source_keys += 1;
                        report.target_keys += 1;
                        left.next();
                        right.next();
                    }
                },
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                report.heartbeat_unix = now_unix();
                m.verify = Some(report.clone());
                self.store(&mut m, None, false).await?;
                last_checkpoint = Instant::now();
            }
        }
        // A difference may be a write the shadow has not replayed yet, or
        // one between the two reads: look again once the copies queued so
        // far have landed, a few times.
        let shadow = self.routes.snapshot().get(&name).and_then(|r| r.shadow.clone());
        for round in 0..RECHECKS {
            if candidates.is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(SETTLE).await;
            }
            let last = round + 1 == RECHECKS;
            let mut still = Vec::new();
            for chunk in candidates.chunks(PAGE as usize) {
                // The primary's value, then the target's once the shadow has
                // replayed every copy queued by then, then the primary's
                // again: a key that did not change meanwhile must be equal.
                let ours = batch_get_versions(&source, &name, chunk.to_vec(), timeout).await?;
                if let Some(shadow) = &shadow {
                    // A write acknowledged just before the read is queued
                    // just after its reply.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    shadow.caught_up(shadow.mark(), timeout * 4).await;
                }
                let theirs = batch_get(&target, &name, chunk.to_vec(), timeout).await?;
                let again = batch_get_versions(&source, &name, chunk.to_vec(), timeout).await?;
                for (((key, (a, before)), b), (_, after)) in chunk.iter().zip(ours).zip(theirs).zip(again) {
                    if before != after {
                        // Written during the look: look again.
                        if last {
                            report.busy += 1;
                        } else {
                            still.push(key.clone());
                        }
                        continue;
                    }
                    let kind = match (a, b) {
                        (Some(a), Some(b)) if a == b => {
                            report.settled += 1;
                            continue;
                        }
                        (None, None) => {
                            report.settled += 1;
                            continue;
                        }
                        (Some(_), None) => "missing",
                        (None, Some(_)) => "extra",
                        (Some(_), Some(_)) => "different",
                    };
                    if !last {
                        still.push(key.clone());
                        continue;
                    }
                    match kind {
                        "missing" => report.missing += 1,
                        "extra" => report.extra += 1,
                        _ => report.different += 1,
                    }
                    if report.samples.len() < SAMPLES {
                        report.samples.push(format!("{kind} key-sha256:{}", key_hash(key)));
                    }
                }
            }
            candidates = still;
        }
        report.different += over;
        // The clean window: this proxy's compared reads.
        let before = shadow.as_ref().map(|s| s.counts());
        let window_ends = Instant::now() + Duration::from_secs(report.window_seconds);
        loop {
            report.heartbeat_unix = now_unix();
            m.verify = Some(report.clone());
            self.store(&mut m, None, false).await?;
            if Instant::now() >= window_ends {
                break;
            }
            tokio::time::sleep_until(window_ends.min(Instant::now() + CHECKPOINT_EVERY * 2)).await;
        }
        if let (Some(shadow), Some(before)) = (shadow, before) {
            let after = shadow.counts();
            report.reads_compared =
                (after.matched + after.mismatched).saturating_sub(before.matched + before.mismatched);
            report.read_mismatches = after.mismatched.saturating_sub(before.mismatched);
        }
        report.clean = report.missing + report.extra + report.different + report.read_mismatches == 0;
        report.finished_at = now();
        m.phase = if report.clean { Phase::Verified } else { Phase::Backfilled };
        let summary = format!(
            "{} keys on {}, {} on {}: {} missing, {} extra, {} different; {} of {} compared reads differed",
            report.source_keys,
            m.source,
            report.target_keys,
            m.target,
            report.missing,
            report.extra,
            report.different,
            report.read_mismatches,
            report.reads_compared
        );
        event(&mut m, &self.id, summary);
        m.verify = Some(report);
        self.store(&mut m, None, true).await
    }

    /// **promote**: the target becomes the primary and the old primary
    /// the shadow, for every proxy at once.
    pub async fn promote(
        self: &Arc<Self>,
        name: &str,
        timeout: Duration,
        dry_run: bool,
        by: &str,
    ) -> Result<Stepped, ProxyError> {
        let route = self.migrating_route(name)?;
        let m = self.migration(name).await?;
        if m.phase != Phase::Verified {
            return Err(out_of_order(&m, "promote"));
        }
        let message = format!("namespace {name}: {} becomes the primary and {} its shadow", m.target, m.source);
        if dry_run {
            return Ok(Stepped { migration: m, message: format!("would switch: {message}") });
        }
        let yaml = edit_doc(&route.yaml, &m.target, Some(shadow_spec(&m.source, &route)))?;
        let target = m.target.clone();
        let m = self.switch(m, Phase::Promoted, &target, yaml, timeout, by).await?;
        Ok(Stepped { migration: m, message })
    }

    /// **finalize**: stops mirroring to the old primary; with `purge`,
    /// deletes the namespace's data there.
    pub async fn finalize(
        self: &Arc<Self>,
        name: &str,
        purge: bool,
        dry_run: bool,
        by: &str,
    ) -> Result<Stepped, ProxyError> {
        let route = self.migrating_route(name)?;
        let mut m = self.migration(name).await?;
        if m.phase != Phase::Promoted {
            return Err(out_of_order(&m, "finalize"));
        }
        let message = format!(
            "namespace {name} is served by {} alone; {}",
            m.target,
            if purge {
                format!("its data in {} is deleted", m.source)
            } else {
                format!("its data in {} is left in place", m.source)
            }
        );
        if dry_run {
            return Ok(Stepped { migration: m, message: format!("would finalize: {message}") });
        }
        let yaml = edit_doc(&route.yaml, &m.target, None)?;
        m.phase = Phase::Finalized;
        event(&mut m, by, "finalized");
        self.store(&mut m, Some(&yaml), true).await?;
        if purge {
            self.purge(name, &m.source).await;
        }
        Ok(Stepped { migration: m, message })
    }

    /// **rollback**: back to the old primary alone. Before promote the
    /// target's copy is deleted; after, the primary switches back (fenced
    /// like a promote) and the target's data is left in place.
    pub async fn rollback(
        self: &Arc<Self>,
        name: &str,
        timeout: Duration,
        purge: bool,
        dry_run: bool,
        by: &str,
    ) -> Result<Stepped, ProxyError> {
        let route = self.migrating_route(name)?;
        let mut m = self.migration(name).await?;
        match m.phase {
            Phase::Mirroring | Phase::Backfilling | Phase::Backfilled | Phase::Verifying | Phase::Verified => {
                let message = format!(
                    "namespace {name} is served by {} alone again; the copy in {} is deleted",
                    m.source, m.target
                );
                if dry_run {
                    return Ok(Stepped { migration: m, message: format!("would roll back: {message}") });
                }
                self.stop_step(name);
                let yaml = edit_doc(&route.yaml, &m.source, None)?;
                m.phase = Phase::RolledBack;
                event(&mut m, by, "rolled back before promote");
                self.store(&mut m, Some(&yaml), true).await?;
                // The shadow's last copies drain before its data goes.
                if let Some(shadow) = &route.shadow {
                    shadow.drained(self.limits.request_timeout).await;
                }
                self.purge(name, &m.target).await;
                Ok(Stepped { migration: m, message })
            }
            Phase::Promoted => {
                let message = format!(
                    "namespace {name}: {} is the primary again, with every write it mirrored; the data in {} is {}",
                    m.source,
                    m.target,
                    if purge { "deleted" } else { "left in place (it no longer gets writes)" }
                );
                if dry_run {
                    return Ok(Stepped { migration: m, message: format!("would switch back: {message}") });
                }
                let yaml = edit_doc(&route.yaml, &m.source, None)?;
                let source = m.source.clone();
                let m = self.switch(m, Phase::RolledBack, &source, yaml, timeout, by).await?;
                if purge {
                    if let Some(shadow) = &self.routes.snapshot().get(name).and_then(|r| r.shadow.clone()) {
                        shadow.drained(self.limits.request_timeout).await;
                    }
                    self.purge(name, &m.target).await;
                }
                Ok(Stepped { migration: m, message })
            }
            _ => Err(out_of_order(&m, "roll back")),
        }
    }

    /// Deletes the namespace's data on plugin `name` (not the primary);
    /// a failure is logged: what is left is a copy.
    async fn purge(&self, namespace: &str, plugin: &str) {
        let Some(plugin) = self.plugins.get(plugin) else { return };
        let dropped = async {
            let mut lifecycle = plugin.lifecycle()?;
            lifecycle
                .drop_namespace(DropNamespaceRequest { namespace: namespace.to_owned() })
                .await
                .map_err(|s| ProxyError::from_plugin(plugin.name(), &s))
        };
        if let Err(e) = dropped.await {
            tracing::warn!(namespace, plugin = plugin.name(), error = %e, "the old copy was not deleted");
        }
    }

    fn stop_step(&self, name: &str) {
        if let Ok(mut tasks) = self.tasks.lock()
            && let Some(task) = tasks.remove(name)
        {
            task.abort();
        }
    }

    /// The fenced switch of primary to `primary`, ending in phase `to` with
    /// document `yaml`; undone if the proxies do not all acknowledge in
    /// `timeout`.
    async fn switch(
        self: &Arc<Self>,
        mut m: Migration,
        to: Phase,
        primary: &str,
        yaml: String,
        timeout: Duration,
        by: &str,
    ) -> Result<Migration, ProxyError> {
        let name = m.namespace.clone();
        let from = m.phase;
        m.phase = Phase::Switching;
        m.switch = Some(Switch { revision: m.revision + 1, to, from, primary: primary.to_owned() });
        m.error = None;
        event(&mut m, by, format!("switching the primary to {primary}"));
        self.store(&mut m, None, true).await?;
        let revision = m.revision;
        let waited = self.await_acks(&name, revision, timeout).await;
        match waited {
            Ok(()) => {
                m.phase = to;
                m.switch = None;
                event(&mut m, by, format!("{primary} is the primary"));
                self.store(&mut m, Some(&yaml), true).await?;
                tracing::info!(namespace = %name, %primary, "primary switched");
                Ok(m)
            }
            Err(why) => {
                m.phase = from;
                m.switch = None;
                m.error = Some(why.clone());
                event(&mut m, by, format!("switch undone: {why}"));
                self.store(&mut m, None, true).await?;
                Err(ProxyError::Unavailable(format!(
                    "namespace {name}: the switch was undone and writes go on as before: {why}"
                )))
            }
        }
    }

    /// Waits until every live proxy has acknowledged revision `revision` of
    /// `name` (a migration's switch, or a deletion's mark).
    pub(super) async fn await_acks(&self, name: &str, revision: u64, timeout: Duration) -> Result<(), String> {
        let until = Instant::now() + timeout;
        loop {
            let (waiting, failed) = if self.registry.shared() {
                match self.registry.acks(name, revision, PROXY_LEASE).await {
                    Ok(acks) => {
                        let failed: Vec<String> = acks
                            .acked
                            .into_iter()
                            .filter(|(_, d)| d != "ok")
                            .map(|(p, d)| format!("proxy {p}: {d}"))
                            .collect();
                        (acks.waiting, failed)
                    }
                    Err(e) => (vec![format!("(registry: {e})")], Vec::new()),
                }
            } else {
                match self.local_ack(name, revision) {
                    Some(d) if d == "ok" => (Vec::new(), Vec::new()),
                    Some(d) if d == PENDING => (vec![self.id.clone()], Vec::new()),
                    Some(d) => (Vec::new(), vec![d]),
                    None => (vec![self.id.clone()], Vec::new()),
                }
            };
            if !failed.is_empty() {
                return Err(failed.join("; "));
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "proxies {} did not finish their writes in flight within {}s",
                    waiting.join(", "),
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn local_ack(&self, name: &str, revision: u64) -> Option<String> {
        self.acked.lock().ok().and_then(|a| a.get(name).filter(|(r, _)| *r == revision).map(|(_, d)| d.clone()))
    }

    /// This proxy's part of every switch under way: hold the namespace's
    /// writes, drain, repair what the shadow lost, acknowledge. And open
    /// the fence of a switch that was undone. Called after every reload.
    pub(super) fn follow_switches(self: &Arc<Self>, migrations: &[Migration]) {
        let table = self.routes.snapshot();
        for m in migrations {
            let Some(route) = table.get(&m.namespace) else { continue };
            let Some(shadow) = route.shadow.clone() else { continue };
            let switch = m.switch.as_ref().filter(|_| m.phase == Phase::Switching);
            let Some(switch) = switch else {
                if shadow.writes_closed() {
                    shadow.open_writes();
                    tracing::info!(namespace = %m.namespace, "writes resume: the switch was undone");
                }
                continue;
            };
            // Claimed before the drain starts: two reloads close together
            // must not run two drains (one would acknowledge while the
            // other still repairs).
            let claimed = self.acked.lock().is_ok_and(|mut acked| {
                if acked.get(&m.namespace).is_some_and(|(r, _)| *r == switch.revision) {
                    return false;
                }
                acked.insert(m.namespace.clone(), (switch.revision, PENDING.to_owned()));
                true
            });
            if !claimed {
                continue;
            }
            shadow.close_writes();
            let controller = self.clone();
            let route = route.clone();
            let (name, revision, primary) = (m.namespace.clone(), switch.revision, switch.primary.clone());
            tokio::spawn(async move {
                let detail = controller.drain_for_switch(&route, &shadow, &primary).await;
                tracing::info!(namespace = %name, revision, %detail, "switch acknowledged");
                if let Ok(mut acked) = controller.acked.lock() {
                    acked.insert(name.clone(), (revision, detail.clone()));
                }
                if let Err(e) = controller.registry.ack(&name, revision, &controller.id, &detail).await {
                    tracing::warn!(namespace = %name, error = %e, "could not acknowledge the switch");
                }
            });
        }
    }

    /// Waits for `route`'s writes in flight and shadow queue, then copies
    /// again from the primary every key whose mirrored copy was lost.
    /// Answers `ok` or why the switch must not happen.
    async fn drain_for_switch(&self, route: &Route, shadow: &Arc<Shadow>, primary: &str) -> String {
        if shadow.plugin().name() != primary {
            return format!("its shadow is {}, not {primary}", shadow.plugin().name());
        }
        let timeout = self.limits.request_timeout;
        if !shadow.drained(timeout * 2).await {
            return format!("its shadow queue did not drain within {}s", (timeout * 2).as_secs());
        }
        let lost = shadow.take_lost();
        if lost.untracked > 0 {
            return format!(
                "{} mirrored writes were lost without a key to repair them by; run `prismctl migrate verify {}` again",
                lost.untracked,
                route.name()
            );
        }
        if lost.keys.is_empty() {
            return "ok".to_owned();
        }
        let count = lost.keys.len();
        match repair(&route.plugin, shadow.plugin(), route.name(), &lost.keys, route.default_ttl_seconds, timeout).await
        {
            Ok(()) => {
                tracing::info!(
                    namespace = route.name(),
                    keys = count,
                    "copied again the keys whose mirrored writes were lost"
                );
                "ok".to_owned()
            }
            Err(e) => {
                shadow.uncertain(lost.keys);
                format!("{count} keys whose mirrored writes were lost could not be copied again: {e}")
            }
        }
    }
}

/// Counts the keys of `namespace` on `plugin` (one scan).
async fn count_keys(plugin: &Plugin, namespace: &str, timeout: Duration) -> Result<u64, ProxyError> {
    let mut token = String::new();
    let mut total = 0;
    loop {
        let page = scan_page(plugin, namespace, &token, timeout).await?;
        total += page.items.len() as u64;
        if page.next_page_token.is_empty() {
            return Ok(total);
        }
        token = page.next_page_token;
    }
}

async fn scan_page(
    plugin: &Plugin,
    namespace: &str,
    token: &str,
    timeout: Duration,
) -> Result<ScanResponse, ProxyError> {
    let request = ScanRequest {
        namespace: namespace.to_owned(),
        prefix: String::new(),
        page_size: PAGE,
        page_token: token.to_owned(),
    };
    plugin.keyvalue()?.scan(&options(timeout), request).await
}

/// Writes `entry` to the target only if the key is absent there. `Some`
/// with the version written, `None` if the key was there already.
async fn copy_absent(
    target: &Plugin,
    namespace: &str,
    entry: Entry,
    ttl: u64,
    timeout: Duration,
) -> Result<Option<(String, u64)>, ProxyError> {
    let request = PutRequest {
        namespace: namespace.to_owned(),
        key: entry.key.clone(),
        value: entry.value,
        ttl_seconds: ttl,
        if_version: Some(0),
    };
    match target.keyvalue()?.put(&options(timeout), request).await {
        Ok(reply) => Ok(Some((entry.key, reply.version))),
        Err(ProxyError::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes again the copies whose key the primary no longer has, unless
/// the target's version moved on (a newer mirrored write). Returns how
/// many it deleted.
async fn undo_deleted(
    source: &Plugin,
    target: &Plugin,
    namespace: &str,
    created: Vec<(String, u64)>,
    timeout: Duration,
) -> Result<u64, ProxyError> {
    if created.is_empty() {
        return Ok(0);
    }
    let keys: Vec<String> = created.iter().map(|(k, _)| k.clone()).collect();
    let present = batch_get(source, namespace, keys, timeout).await?;
    let mut undone = 0;
    for ((key, version), now) in created.into_iter().zip(present) {
        if now.is_some() {
            continue;
        }
        let request = DeleteRequest { namespace: namespace.to_owned(), key, if_version: Some(version) };
        match target.keyvalue()?.delete(&options(timeout), request).await {
            Ok(reply) if reply.deleted => undone += 1,
            Ok(_) | Err(ProxyError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(undone)
}

/// The values of `keys` (None where absent), in order.
async fn batch_get(
    plugin: &Plugin,
    namespace: &str,
    keys: Vec<String>,
    timeout: Duration,
) -> Result<Vec<Option<bytes::Bytes>>, ProxyError> {
    Ok(batch_get_versions(plugin, namespace, keys, timeout).await?.into_iter().map(|(value, _)| value).collect())
}

/// The values of `keys` with their versions (0 where absent), in order.
async fn batch_get_versions(
    plugin: &Plugin,
    namespace: &str,
    keys: Vec<String>,
    timeout: Duration,
) -> Result<Vec<(Option<bytes::Bytes>, u64)>, ProxyError> {
    let request = BatchGetRequest { namespace: namespace.to_owned(), keys };
    let reply = plugin.keyvalue()?.batch_get(&options(timeout), request).await?;
    Ok(reply.items.into_iter().map(|i| if i.found { (Some(i.value), i.version) } else { (None, 0) }).collect())
}

/// Makes `shadow` hold what `primary` holds for each of `keys`, while
/// writes are held (so the primary's answer is final).
async fn repair(
    primary: &Plugin,
    shadow: &Plugin,
    namespace: &str,
    keys: &[String],
    ttl: u64,
    timeout: Duration,
) -> Result<(), ProxyError> {
    for chunk in keys.chunks(PAGE as usize) {
        let values = batch_get(primary, namespace, chunk.to_vec(), timeout).await?;
        for (key, value) in chunk.iter().zip(values) {
            match value {
                Some(value) => {
                    let request = PutRequest {
                        namespace: namespace.to_owned(),
                        key: key.clone(),
                        value,
                        ttl_seconds: ttl,
                        if_version: None,
                    };
                    shadow.keyvalue()?.put(&options(timeout), request).await?;
                }
                None => {
                    let request = DeleteRequest { namespace: namespace.to_owned(), key: key.clone(), if_version: None };
                    shadow.keyvalue()?.delete(&options(timeout), request).await?;
                }
            }
        }
    }
    Ok(())
}

/// One side of a verify: its keys in order, a page at a time.
struct Pages {
    plugin: Arc<Plugin>,
    namespace: String,
    timeout: Duration,
    page: std::collections::VecDeque<Entry>,
    token: String,
    done: bool,
}

impl Pages {
    fn new(plugin: Arc<Plugin>, namespace: String, timeout: Duration) -> Self {
        Self { plugin, namespace, timeout, page: Default::default(), token: String::new(), done: false }
    }

    async fn peek(&mut self) -> Result<Option<&Entry>, ProxyError> {
        while self.page.is_empty() && !self.done {
            let page = scan_page(&self.plugin, &self.namespace, &self.token, self.timeout).await?;
            self.page.extend(page.items);
            self.done = page.next_page_token.is_empty();
            self.token = page.next_page_token;
        }
        Ok(self.page.front())
    }

    fn next(&mut self) {
        self.page.pop_front();
    }
}

/// Migrations by namespace, as this proxy last loaded them.
pub type Known = HashMap<String, Migration>;

/// Acknowledged switches by namespace: `(revision, detail)`.
pub type Acked = HashMap<String, (u64, String)>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DOC: &str = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: orders, team: shop}\n# a comment\nspec:\n  pattern: keyvalue\n  backend: redis\n  needs: {ttl: 1h}\n  access: {read: [group:web]}\n";

    #[test]
    fn edited_documents_keep_everything_but_backend_and_shadow() {
        let shadow =
            serde_json::json!({"backend": "postgres", "mirror": "writes", "compare_reads": 0.05, "queue": 100});
        let edited = edit_doc(DOC, "redis", Some(shadow)).unwrap();
        let doc = NamespaceDoc::parse(&edited).unwrap();
        let original = NamespaceDoc::parse(DOC).unwrap();
        assert_eq!(doc.metadata, original.metadata);
        assert_eq!(doc.spec.needs, original.spec.needs);
        assert_eq!(doc.spec.access, original.spec.access);
        let s = doc.spec.shadow.as_ref().unwrap();
        assert_eq!((s.backend.as_str(), s.queue), ("postgres", 100));
        assert!((s.compare_reads - 0.05).abs() < 1e-9);

        let promoted = edit_doc(&edited, "postgres", None).unwrap();
        let doc = NamespaceDoc::parse(&promoted).unwrap();
        assert_eq!(doc.spec.backend.as_deref(), Some("postgres"));
        assert!(doc.spec.shadow.is_none());
        assert!(promoted.starts_with("# spec.backend and spec.shadow are managed"));
    }

    #[test]
    fn a_document_without_spec_is_refused() {
        assert!(edit_doc("a: 1\n", "x", None).is_err());
        assert!(edit_doc("not: [yaml", "x", None).is_err());
    }

    #[test]
    fn next_steps_follow_the_phases() {
        let mut m = Migration {
            namespace: "orders".into(),
            source: "redis".into(),
            target: "postgres".into(),
            phase: Phase::Mirroring,
            revision: 1,
            started_at: String::new(),
            updated_at: String::new(),
            backfill: None,
            verify: None,
            switch: None,
            error: None,
            history: Vec::new(),
        };
        assert_eq!(next_step(&m), "prismctl migrate backfill orders");
        m.phase = Phase::Verified;
        assert_eq!(next_step(&m), "prismctl migrate promote orders");
        let refused = out_of_order(&m, "finalize").to_string();
        assert!(refused.contains("is verified") && refused.contains("promote orders"), "{refused}");
        // Stored as JSON and read back the same.
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Migration>(&text).unwrap(), m);
        assert!(text.contains("\"phase\":\"verified\""));
    }
}
