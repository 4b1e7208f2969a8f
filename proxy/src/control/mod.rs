//! The namespace control plane: validating and planning namespace
//! documents, applying and deleting them, and keeping the route table in
//! step with the registry (files edited on disk, other proxies' changes).
//!
//! All changes go through one lock, so a plan is always made against the
//! table it will change. A route becomes live only after its plugin has
//! prepared the namespace (see `Plugin::prepare_lock`), and a change
//! publishes a new route table: requests already running keep the route
//! they started with.

pub mod admin;
pub mod migrate;
pub mod migration;
pub mod registry;
pub mod select;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use prism_pii::{Codec, Keyring, SchemaPool, SchemaVersion};
use prism_proto::admin::v1::{Plan, plan};
use prism_proto::plugin::v1::{DescribeNamespaceRequest, DropNamespaceRequest, PrepareNamespaceRequest};
use serde_saphyr::Spanned;
use tokio::sync::{Mutex, mpsc};

use crate::config::{Config, Limits};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::namespace::yaml::Node;
use crate::namespace::{Mirror, NamespaceDoc, SpecError};
use crate::plugin::{Plugin, Plugins};
use crate::routes::{Route, Routes};
use crate::shadow::Shadow;
use registry::{Registry, Stored};
use select::Offer;

/// The result of planning one document.
pub struct Planned {
    pub plan: Plan,
    pub route: Route,
}

pub struct Controller {
    routes: Arc<Routes>,
    plugins: Arc<Plugins>,
    registry: Registry,
    lock: Mutex<()>,
    limits: Limits,
    default_backend: Option<String>,
    /// Whether access rules are enforced (false in dev mode).
    auth_enabled: bool,
    metrics: Arc<Metrics>,
    /// Whether the registry was read once (readiness).
    loaded: std::sync::atomic::AtomicBool,
    /// The registered schemas typed namespaces are planned against.
    schemas: ArcSwap<SchemaPool>,
    /// The PII keyring (`pii.keyring`), if configured.
    keyring: Option<Arc<Keyring>>,
    /// This proxy's name among those sharing the registry.
    id: String,
    /// Migrations as last loaded, the switches this proxy acknowledged,
    /// and the background steps it runs (`migrate.rs`).
    migrations: std::sync::Mutex<migrate::Known>,
    acked: std::sync::Mutex<migrate::Acked>,
    tasks: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Stored documents the last reload skipped: `(source, why)`.
    rejected: std::sync::Mutex<Vec<(String, String)>>,
}

/// What [`Controller::check`] found: the plugin chosen and why, the PII
/// handling of a typed namespace, the shadow plugin.
struct Checked {
    chosen: Option<(Arc<Plugin>, String)>,
    codec: Option<(Arc<Codec>, Arc<SchemaPool>)>,
    shadow: Option<Arc<Plugin>>,
}

/// What pushing a schema did.
pub struct Pushed {
    pub version: SchemaVersion,
    /// The breaking changes pushed with force (empty otherwise).
    pub breaking: Vec<String>,
    pub applied: bool,
    /// The typed namespaces that now use the new version.
    pub namespaces: Vec<String>,
}

/// What a reconcile changed.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// Documents that were skipped, with why (the namespace keeps its last
    /// good version, if it had one).
    pub rejected: Vec<(String, String)>,
}

fn summarize(errors: &[SpecError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Controller {
    /// A controller of `routes`, over `plugins`, with what it needs of the
    /// proxy's `config`: the limits routes get, the default backend, and
    /// whether callers are authenticated (so access rules are enforced).
    pub fn new(
        routes: Arc<Routes>,
        plugins: Arc<Plugins>,
        registry: Registry,
        keyring: Option<Arc<Keyring>>,
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Self {
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "proxy".to_owned());
        Self {
            id: format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]),
            migrations: std::sync::Mutex::default(),
            acked: std::sync::Mutex::default(),
            tasks: std::sync::Mutex::default(),
            rejected: std::sync::Mutex::default(),
            schemas: ArcSwap::default(),
            keyring,
            metrics,
            loaded: std::sync::atomic::AtomicBool::new(false),
            routes,
            plugins,
            registry,
            lock: Mutex::new(()),
            limits: config.limits.clone(),
            default_backend: config.default_backend.clone(),
            auth_enabled: config.authenticates(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Stored documents the last reload skipped, with why: `(source,
    /// problem)`. A namespace whose document is among them serves its last
    /// good version.
    pub fn rejected(&self) -> Vec<(String, String)> {
        self.rejected.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// This proxy's name in the registry.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The registered schemas.
    pub fn schemas(&self) -> Arc<SchemaPool> {
        self.schemas.load_full()
    }

    /// Uses `pool` from now on (`--check`, which reads the registry once).
    pub fn set_schemas(&self, pool: SchemaPool) {
        self.schemas.store(Arc::new(pool));
    }

    /// Plugins whose capabilities are known, for selection.
    fn offers(&self) -> Vec<Offer> {
        self.plugins
            .values()
            .filter_map(|p| {
                let info = p.known()?;
                Some(Offer { plugin: p.clone(), kind: info.backend.clone(), caps: info.capabilities.clone()? })
            })
            .collect()
    }

    /// Checks a parsed document against the plugins and plans it against
    /// `current`. Every problem found is returned.
    fn plan_doc(
        &self,
        doc: NamespaceDoc,
        tree: &Spanned<Node>,
        yaml: &str,
        source: String,
        current: Option<&Arc<Route>>,
    ) -> Result<Planned, Vec<SpecError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let Checked { chosen, codec, shadow } = self.check(&doc, tree, &mut errors, &mut warnings);
        let Some((plugin, reason)) = chosen else { return Err(errors) };
        if !errors.is_empty() {
            return Err(errors);
        }
        let name = doc.name().to_owned();
        let (action, diff) = match current {
            None => (plan::Action::Create, String::new()),
            Some(cur) if cur.yaml == yaml && Arc::ptr_eq(&cur.plugin, &plugin) => {
                (plan::Action::Unchanged, String::new())
            }
            Some(cur) => {
                if !Arc::ptr_eq(&cur.plugin, &plugin) {
                    warnings.push(format!(
                        "the namespace moves from plugin {} to {}: data in {} is not copied",
                        cur.plugin.name(),
                        plugin.name(),
                        cur.plugin.name()
                    ));
                }
                let diff = similar::TextDiff::from_lines(cur.yaml.as_str(), yaml)
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("{name} (current)"), &format!("{name} (applied)"))
                    .to_string();
                (plan::Action::Update, diff)
            }
        };
        let plan = Plan {
            namespace: name,
            action: action as i32,
            backend: plugin.name().to_owned(),
            backend_reason: reason.clone(),
            diff,
            warnings,
        };
        let mut route = Route::new(doc, yaml.to_owned(), source, plugin, reason, &self.limits, &self.metrics);
        if let Some((codec, pool)) = codec {
            route.codec = Some(codec);
            route.schemas = Some(pool);
        }
        if let (Some(spec), Some(shadow_plugin)) = (&route.doc.spec.shadow, shadow) {
            // The same shadow carries on (queue, counters, kept diffs) when
            // only its sampling or mirroring changes.
            let same = current
                .filter(|c| Arc::ptr_eq(&c.plugin, &route.plugin))
                .and_then(|c| c.shadow.clone())
                .filter(|s| Arc::ptr_eq(s.plugin(), &shadow_plugin) && s.capacity() == spec.queue);
            let shadow = same.unwrap_or_else(|| {
                Shadow::start(
                    route.name(),
                    shadow_plugin,
                    spec.queue,
                    self.limits.request_timeout,
                    self.metrics.clone(),
                )
            });
            shadow.configure(spec.mirror == Mirror::Writes, spec.compare_reads);
            route.shadow = Some(shadow);
        }
        Ok(Planned { plan, route })
    }

    /// Checks a document against the proxy: its backend exists and meets
    /// its needs (when the plugin's capabilities are known), the limits,
    /// the fields that only some patterns have. Returns the plugin chosen
    /// and why, and the PII handling of a typed namespace, and adds every
    /// problem to `errors` and every caveat to `warnings`.
    fn check(
        &self,
        doc: &NamespaceDoc,
        tree: &Spanned<Node>,
        errors: &mut Vec<SpecError>,
        warnings: &mut Vec<String>,
    ) -> Checked {
        let spec = &doc.spec;
        let limits = &self.limits;

        let chosen: Option<(Arc<Plugin>, String)> = match &spec.backend {
            Some(name) => match self.plugins.get(name) {
                None => {
                    errors.push(SpecError::at(
                        tree,
                        "spec.backend",
                        format!(
                            "{name:?} is not a plugin of this proxy (it has: {})",
                            self.plugins.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                    None
                }
                Some(plugin) => {
                    match plugin.known().and_then(|i| i.capabilities.clone().map(|c| (i.backend.clone(), c))) {
                        Some((kind, caps)) => {
                            for (path, why) in select::unmet(spec.pattern, &spec.needs, &caps) {
                                errors.push(SpecError::at(tree, path, format!("plugin {name} ({kind}) {why}")));
                            }
                        }
                        None => warnings.push(format!(
                            "plugin {name} has not started yet, so the needs could not be checked against it"
                        )),
                    }
                    Some((plugin.clone(), "named by spec.backend".to_owned()))
                }
            },
            None => match select::choose(spec.pattern, &spec.needs, &self.offers(), self.default_backend.as_deref()) {
                Ok((offer, reason)) => Some((offer.plugin, reason)),
                Err(why) => {
                    errors.push(SpecError::at(
                        tree,
                        "spec.needs",
                        format!("no backend can serve this namespace: {why}"),
                    ));
                    None
                }
            },
        };

        if let Some(max) = spec.needs.max_value_bytes
            && max > limits.max_value_bytes as u64
        {
            errors.push(SpecError::at(
                tree,
                "spec.needs.max_value_bytes",
                format!(
                    "{max} is above the proxy's limit of {} bytes (limits.max_value_bytes)",
                    limits.max_value_bytes
                ),
            ));
        }
        if spec.access.is_some() && !self.auth_enabled {
            warnings.push("spec.access is not enforced: the proxy runs without authentication (dev mode)".to_owned());
        }
        if spec.schema.is_none() && spec.access.as_ref().is_some_and(|a| !a.pii.is_empty()) {
            warnings.push("spec.access.pii has no effect: without spec.schema no field is PII".to_owned());
        }
        let codec = self.codec(doc, &self.schemas.load_full(), tree, errors);
        let shadow = spec.shadow.as_ref().and_then(|shadow| {
            let at = "spec.shadow.backend";
            let Some(plugin) = self.plugins.get(&shadow.backend) else {
                errors.push(SpecError::at(
                    tree,
                    at,
                    format!(
                        "{:?} is not a plugin of this proxy (it has: {})",
                        shadow.backend,
                        self.plugins.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
                return None;
            };
            if chosen.as_ref().is_some_and(|(primary, _)| Arc::ptr_eq(primary, plugin)) {
                errors.push(SpecError::at(
                    tree,
                    at,
                    format!("the shadow must be another plugin than the namespace's own ({})", shadow.backend),
                ));
                return None;
            }
            match plugin.known().and_then(|i| i.capabilities.clone().map(|c| (i.backend.clone(), c))) {
                Some((kind, caps)) => {
                    for (_, why) in select::unmet(spec.pattern, &spec.needs, &caps) {
                        errors.push(SpecError::at(
                            tree,
                            at,
                            format!("shadow plugin {} ({kind}) {why}", shadow.backend),
                        ));
                    }
                }
                None => warnings.push(format!(
                    "shadow plugin {} has not started yet, so the needs could not be checked against it",
                    shadow.backend
                )),
            }
            Some(plugin.clone())
        });
        Checked { chosen, codec, shadow }
    }

    /// The PII handling of a typed namespace against `pool`; adds why not
    /// to `errors`.
    fn codec(
        &self,
        doc: &NamespaceDoc,
        pool: &Arc<SchemaPool>,
        tree: &Spanned<Node>,
        errors: &mut Vec<SpecError>,
    ) -> Option<(Arc<Codec>, Arc<SchemaPool>)> {
        let schema = doc.spec.schema.as_ref()?;
        let Ok(plan) = pool.plan(&schema.message) else {
            let known: Vec<&str> = pool.schemas().flat_map(|v| pool.messages_of(&v.name)).map(String::as_str).collect();
            errors.push(SpecError::at(
                tree,
                "spec.schema.message",
                format!(
                    "message {} is not registered; push its .proto file with `prismctl schema push` ({})",
                    schema.message,
                    if known.is_empty() {
                        "no schema is registered".to_owned()
                    } else {
                        format!("registered: {}", known.join(", "))
                    }
                ),
            ));
            return None;
        };
        match Codec::new(plan, doc.name(), doc.spec.pii.as_ref(), self.keyring.as_ref()) {
            Ok(codec) => Some((Arc::new(codec), pool.clone())),
            Err(problems) => {
                for why in problems {
                    errors.push(SpecError::at(tree, "spec.pii", why));
                }
                None
            }
        }
    }

    /// Plans a document without changing anything, for `prism-proxy
    /// --check`, where no plugin has started: a named backend must exist,
    /// and one to be chosen is chosen at start, from the capabilities the
    /// plugins declare then. Returns the plan's warnings, or every error.
    pub fn dry_check(&self, yaml: &str) -> Result<(String, String, Vec<String>), Vec<SpecError>> {
        let (doc, tree) = NamespaceDoc::parse_with_tree(yaml)?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let backend = if doc.spec.backend.is_none() && self.offers().is_empty() {
            // The selection needs the plugins' capabilities; they are known
            // once the plugins run.
            let mut ignored = Vec::new();
            let _ = self.check(&doc, &tree, &mut ignored, &mut warnings);
            errors.extend(ignored.into_iter().filter(|e| e.path != "spec.needs"));
            "chosen at start from the plugins' capabilities".to_owned()
        } else {
            match self.check(&doc, &tree, &mut errors, &mut warnings).chosen {
                Some((plugin, _)) => format!("plugin {}", plugin.name()),
                None => String::new(),
            }
        };
        if errors.is_empty() { Ok((doc.name().to_owned(), backend, warnings)) } else { Err(errors) }
    }

    /// Makes a route live: prepared on its plugin, then published.
    async fn activate(&self, route: Arc<Route>) {
        self.activate_all(vec![route]).await;
    }

    /// Makes routes live: each prepared on its plugin (its shadow first,
    /// so the shadow is prepared before it gets its first copy), then all
    /// published as one table, so loading N namespaces copies the table
    /// once rather than N times. Under the prepare locks of every plugin
    /// involved, so a plugin (re)connecting concurrently either sees the
    /// routes in the table or has already shown itself connected here.
    /// Every caller takes the locks in name order and the supervisor only
    /// ever holds one, so no two of them can deadlock.
    async fn activate_all(&self, routes: Vec<Arc<Route>>) {
        if routes.is_empty() {
            return;
        }
        let mut plugins: Vec<Arc<Plugin>> = routes
            .iter()
            .flat_map(|r| std::iter::once(r.plugin.clone()).chain(r.shadow.as_ref().map(|s| s.plugin().clone())))
            .collect();
        plugins.sort_by(|a, b| a.name().cmp(b.name()));
        plugins.dedup_by(|a, b| a.name() == b.name());
        let mut guards = Vec::with_capacity(plugins.len());
        for plugin in &plugins {
            guards.push(plugin.prepare_lock.lock().await);
        }
        futures::stream::iter(&routes)
            .for_each_concurrent(crate::plugin::PREPARE_CONCURRENCY, |route| async move {
                if let Some(shadow) = &route.shadow {
                    Self::prepare(shadow.plugin(), route).await;
                }
                Self::prepare(&route.plugin, route).await;
            })
            .await;
        self.publish_all(routes.into_iter().map(|r| (r.name().to_owned(), Some(r))).collect());
    }

    /// Publishes the route of `name` (or removes it).
    fn publish(&self, name: &str, route: Option<Arc<Route>>) {
        self.publish_all(vec![(name.to_owned(), route)]);
    }

    /// Publishes routes (`None` removes one) as one new table. Writes held
    /// at the fence of a shadow a change replaces look their route up
    /// again, so they follow a switched primary.
    fn publish_all(&self, changes: Vec<(String, Option<Arc<Route>>)>) {
        let table = self.routes.snapshot();
        let replaced: Vec<Arc<Shadow>> = changes
            .iter()
            .filter_map(|(name, route)| {
                let old = table.get(name).and_then(|r| r.shadow.clone())?;
                let new = route.as_ref().and_then(|r| r.shadow.clone());
                new.is_none_or(|new| !Arc::ptr_eq(&old, &new)).then_some(old)
            })
            .collect();
        self.routes.set_many(&changes);
        for old in replaced {
            old.open_writes();
        }
    }

    /// Prepares `route`'s namespace on `plugin`, if it is connected.
    async fn prepare(plugin: &Plugin, route: &Route) {
        if let Ok(mut lifecycle) = plugin.lifecycle() {
            let request = PrepareNamespaceRequest { settings: Some(route.settings()) };
            if let Err(status) = lifecycle.prepare_namespace(request).await {
                // The supervisor prepares it again when the plugin reconnects.
                tracing::warn!(namespace = route.name(), plugin = plugin.name(), error = %status.message(), "prepare failed");
            }
        }
    }

    /// Waits until no request holds `route` any more (the caller's clone
    /// aside), at most one request timeout: requests never run longer.
    async fn drain(&self, route: &Arc<Route>) {
        let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
        while Arc::strong_count(route) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether `route`'s plugin says the namespace holds data.
    async fn holds_data(route: &Route) -> Result<bool, ProxyError> {
        let mut lifecycle = route.plugin.lifecycle()?;
        let response = lifecycle
            .describe_namespace(DescribeNamespaceRequest { namespace: route.name().to_owned() })
            .await
            .map_err(|s| ProxyError::from_plugin(route.plugin.name(), &s))?;
        Ok(response.into_inner().holds_data)
    }

    /// Validates, plans and (unless `dry_run`) applies a document.
    /// `may_change(name, current)` decides whether the caller may change
    /// the namespace; it runs under the change lock, once the document
    /// parses, so the decision is about the namespace as it is changed.
    pub async fn apply(
        &self,
        yaml: &str,
        dry_run: bool,
        force: bool,
        may_change: impl FnOnce(&str, Option<&Route>) -> Result<(), ProxyError>,
    ) -> Result<(Plan, bool), ProxyError> {
        let _changes = self.lock.lock().await;
        let (doc, tree) = NamespaceDoc::parse_with_tree(yaml).map_err(ProxyError::InvalidSpec)?;
        let current = self.routes.snapshot().get(doc.name()).cloned();
        may_change(doc.name(), current.as_deref())?;
        // During a migration its backend and shadow are the migration's:
        // a document applied meanwhile (from a repository that does not
        // know about it) keeps them.
        let managed = match (self.active_migration(doc.name()), &current) {
            (Some(m), Some(cur)) => Some((m, migrate::keep_managed(yaml, cur)?)),
            _ => None,
        };
        let (doc, tree, yaml) = match &managed {
            Some((_, edited)) if edited != yaml => {
                let (doc, tree) = NamespaceDoc::parse_with_tree(edited).map_err(ProxyError::InvalidSpec)?;
                (doc, tree, edited.as_str())
            }
            _ => (doc, tree, yaml),
        };
        let source = current.as_ref().map(|c| c.source.clone()).unwrap_or_default();
        let mut planned = self.plan_doc(doc, &tree, yaml, source, current.as_ref()).map_err(ProxyError::InvalidSpec)?;
        if let Some((m, _)) = &managed {
            planned.plan.warnings.push(format!(
                "spec.backend and spec.shadow are managed by the migration of this namespace to {} ({}); they keep their current values",
                m.target, m.phase
            ));
        }
        if let Some(cur) = &current
            && !Arc::ptr_eq(&cur.plugin, &planned.route.plugin)
            && !force
        {
            let holds = Self::holds_data(cur).await.unwrap_or(true);
            if holds {
                return Err(ProxyError::FailedPrecondition(format!(
                    "namespace {} holds data in plugin {}; moving it to {} would leave that data behind. Apply with force to move it anyway",
                    cur.name(),
                    cur.plugin.name(),
                    planned.route.plugin.name()
                )));
            }
        }
        let unchanged = planned.plan.action == plan::Action::Unchanged as i32;
        if dry_run || unchanged {
            return Ok((planned.plan, false));
        }
        let name = planned.plan.namespace.clone();
        let source = self.registry.put(&name, yaml, current.as_ref().map(|c| c.source.as_str())).await?;
        let mut route = planned.route;
        route.source = source;
        self.activate(Arc::new(route)).await;
        tracing::info!(namespace = %name, plugin = %planned.plan.backend, "namespace applied");
        Ok((planned.plan, true))
    }

    /// Removes a namespace; see `DeleteNamespace` in admin.proto.
    /// `may_change` as for [`Controller::apply`].
    pub async fn delete(
        &self,
        name: &str,
        purge_data: bool,
        force: bool,
        may_change: impl FnOnce(&str, Option<&Route>) -> Result<(), ProxyError>,
    ) -> Result<bool, ProxyError> {
        let _changes = self.lock.lock().await;
        let current = match self.routes.snapshot().get(name).cloned() {
            Some(route) => Some(route),
            None => self.marked_route(name).await?,
        };
        may_change(name, current.as_deref())?;
        let route = current.ok_or_else(|| ProxyError::NamespaceNotFound(name.to_owned()))?;
        if let Some(m) = self.active_migration(name)
            && !force
        {
            return Err(ProxyError::FailedPrecondition(format!(
                "namespace {name} is being migrated to {} ({}); finish or roll back the migration first (prismctl migrate rollback {name}), or delete with force",
                m.target, m.phase
            )));
        }
        if !purge_data && !force {
            let holds = Self::holds_data(&route).await.map_err(|e| {
                ProxyError::FailedPrecondition(format!(
                    "cannot tell whether namespace {name} holds data ({e}); delete with purge to delete its data, or force to leave it"
                ))
            })?;
            if holds {
                return Err(ProxyError::FailedPrecondition(format!(
                    "namespace {name} holds data in plugin {}; delete with purge to delete it, or force to leave it orphaned",
                    route.plugin.name()
                )));
            }
        }
        // Unroute first so new requests get NOT_FOUND, and let the ones in
        // flight finish before the plugin forgets the namespace; purging
        // under them would fail them with an error they cannot act on.
        self.publish(name, None);
        if purge_data {
            // Every proxy sharing the registry stops routing it and finishes
            // its calls in flight before anything is purged: a write landing
            // after the purge would outlive the namespace, and come back
            // when it is applied again.
            let marked = match self.registry.mark_deleting(name).await {
                Ok(marked) => marked,
                Err(e) => {
                    self.publish(name, Some(route));
                    return Err(e);
                }
            };
            self.drain(&route).await;
            if let Some(revision) = marked
                && let Err(why) = self.await_others(name, revision).await
            {
                self.undo_delete(name, route).await;
                return Err(ProxyError::Unavailable(format!(
                    "namespace {name} was not deleted and serves again: {why}; retry the delete"
                )));
            }
            let purged = async {
                let mut lifecycle = route.plugin.lifecycle()?;
                lifecycle
                    .drop_namespace(DropNamespaceRequest { namespace: name.to_owned() })
                    .await
                    .map_err(|s| ProxyError::from_plugin(route.plugin.name(), &s))
            };
            if let Err(e) = purged.await {
                // Nothing has changed: serve it again; the call can be retried.
                if marked.is_some() {
                    self.undo_delete(name, route).await;
                } else {
                    self.publish(name, Some(route));
                }
                return Err(e);
            }
            // The shadow's copy goes too; what it fails to drop is only a
            // copy, so it is logged, not fatal.
            if let Some(shadow) = &route.shadow
                && let Ok(mut lifecycle) = shadow.plugin().lifecycle()
                && let Err(status) = lifecycle.drop_namespace(DropNamespaceRequest { namespace: name.to_owned() }).await
            {
                tracing::warn!(namespace = %name, plugin = shadow.plugin().name(), error = %status.message(), "the shadow's copy was not dropped");
            }
        }
        if let Err(e) = self.registry.delete(name, &route.source).await {
            // Still declared: bring it back (prepared again if purged).
            self.activate(route).await;
            return Err(e);
        }
        // A migration of a namespace deleted with force ends with it.
        if let Some(mut m) = self.active_migration(name) {
            m.phase = migration::Phase::RolledBack;
            m.history.push(migration::Event {
                at: migration::now(),
                phase: m.phase,
                by: "delete".to_owned(),
                note: "the namespace was deleted".to_owned(),
            });
            if let Err(e) = self.registry.put_migration(&mut m, None, true).await {
                tracing::warn!(namespace = %name, error = %e, "the migration of the deleted namespace was not ended");
            }
        }
        tracing::info!(namespace = %name, purged = purge_data, "namespace deleted");
        Ok(purge_data)
    }

    /// The route of a namespace left marked deleted by a delete that did
    /// not finish (no proxy routes it), so that a delete can finish it.
    async fn marked_route(&self, name: &str) -> Result<Option<Arc<Route>>, ProxyError> {
        if !self.registry.shared() {
            return Ok(None);
        }
        let snapshot = self.registry.load().await?;
        let Some(stored) = snapshot.docs.into_iter().find(|d| d.deleting.as_ref().is_some_and(|m| m.name == name))
        else {
            return Ok(None);
        };
        let (doc, tree) = NamespaceDoc::parse_with_tree(&stored.yaml).map_err(|errors| {
            ProxyError::FailedPrecondition(format!(
                "namespace {name} is being deleted, but its document is invalid: {}",
                summarize(&errors)
            ))
        })?;
        let planned = self.plan_doc(doc, &tree, &stored.yaml, stored.source, None).map_err(|errors| {
            ProxyError::FailedPrecondition(format!(
                "namespace {name} is being deleted, but cannot be planned: {}",
                summarize(&errors)
            ))
        })?;
        Ok(Some(Arc::new(planned.route)))
    }

    /// Acknowledges deletion mark `revision` of `name` for this proxy (its
    /// calls in flight are done) and waits for every other live proxy's.
    async fn await_others(&self, name: &str, revision: u64) -> Result<(), String> {
        let key = registry::Deleting::ack_key(name);
        self.registry.ack(&key, revision, &self.id, "ok").await.map_err(|e| e.to_string())?;
        // A live proxy answers within its drain (one request timeout); a
        // dead one drops out of the wait when its lease runs out.
        self.await_acks(&key, revision, self.limits.request_timeout + migrate::PROXY_LEASE).await
    }

    /// Serves a namespace again after its delete failed half way.
    async fn undo_delete(&self, name: &str, route: Arc<Route>) {
        if let Err(e) = self.registry.unmark_deleting(name).await {
            // The namespace stays unrouted on the other proxies until the
            // delete is retried (or the mark is cleared by hand).
            tracing::error!(namespace = %name, error = %e, "the namespace stays marked deleted");
        }
        self.activate(route).await;
    }

    /// Brings the route table in line with the registry. Invalid documents
    /// are reported and skipped; a namespace whose document became invalid
    /// keeps serving its last good version.
    pub async fn reconcile(self: &Arc<Self>) -> Result<Reconciled, ProxyError> {
        let result = self.reconcile_once().await.map(|(reconciled, migrations, deleting)| {
            self.acknowledge_deletes(deleting);
            if let Ok(mut rejected) = self.rejected.lock() {
                rejected.clone_from(&reconciled.rejected);
            }
            // Routes first, then what the migrations ask of them.
            self.follow_switches(&migrations);
            self.resume_steps(&migrations);
            if let Ok(mut known) = self.migrations.lock() {
                *known = migrations.into_iter().map(|m| (m.namespace.clone(), m)).collect();
            }
            reconciled
        });
        self.metrics.registry_reload(result.is_ok(), result.as_ref().map_or(0, |r| r.rejected.len()));
        if result.is_ok() {
            self.loaded.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// This proxy's part of every `delete --purge` under way: once the
    /// unrouted namespace's calls in flight are done, acknowledge the mark
    /// so the deleting proxy may purge.
    fn acknowledge_deletes(self: &Arc<Self>, deleting: Vec<(Option<Arc<Route>>, registry::Deleting)>) {
        for (route, mark) in deleting {
            let controller = self.clone();
            tokio::spawn(async move {
                if let Some(route) = route {
                    controller.drain(&route).await;
                }
                let key = registry::Deleting::ack_key(&mark.name);
                if let Err(e) = controller.registry.ack(&key, mark.revision, &controller.id, "ok").await {
                    tracing::warn!(namespace = %mark.name, error = %e, "could not acknowledge the deletion");
                }
            });
        }
    }

    /// Whether the namespaces were loaded from the registry at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[allow(clippy::type_complexity)]
    async fn reconcile_once(
        &self,
    ) -> Result<(Reconciled, Vec<migration::Migration>, Vec<(Option<Arc<Route>>, registry::Deleting)>), ProxyError>
    {
        let snapshot = self.registry.load().await?;
        let migrations = snapshot.migrations;
        let _changes = self.lock.lock().await;
        let schemas_changed = self.reload_schemas(snapshot.schemas);
        let pool = self.schemas.load_full();
        let table = self.routes.snapshot();
        let mut report = Reconciled::default();
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut keep_sources: Vec<String> = Vec::new();
        let mut changes: Vec<Arc<Route>> = Vec::new();
        let mut deleting = Vec::new();
        let by_source: HashMap<&str, &Arc<Route>> = table.iter().map(|r| (r.source.as_str(), r)).collect();
        // A typed namespace is planned again against a new schema pool.
        let stale = |route: &Route| route.schemas.as_ref().is_some_and(|p| !Arc::ptr_eq(p, &pool));

        for (source, why) in snapshot.unreadable {
            keep_sources.push(source.clone());
            report.rejected.push((source, why));
        }
        for Stored { source, yaml, deleting: marked } in snapshot.docs {
            if let Some(mark) = marked {
                // Not routed from now on (the removal below unroutes it);
                // acknowledged once its calls in flight are done.
                deleting.push((table.get(&mark.name).cloned(), mark));
                continue;
            }
            // A document served as it is needs no parsing: a reload after
            // one change would otherwise parse every namespace again.
            if let Some(cur) = by_source.get(source.as_str())
                && cur.yaml == yaml
                && !stale(cur)
            {
                let name = cur.name();
                if let Some(first) = seen.get(name) {
                    report.rejected.push((source, format!("namespace {name} is already defined by {first}")));
                } else {
                    seen.insert(name.to_owned(), source);
                }
                continue;
            }
            let (doc, tree) = match NamespaceDoc::parse_with_tree(&yaml) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    keep_sources.push(source.clone());
                    report.rejected.push((source, summarize(&errors)));
                    continue;
                }
            };
            let name = doc.name().to_owned();
            if let Some(first) = seen.get(&name) {
                report.rejected.push((source, format!("namespace {name} is already defined by {first}")));
                continue;
            }
            seen.insert(name.clone(), source.clone());
            let current = table.get(&name);
            let stale = current.is_some_and(|c| stale(c));
            if let Some(cur) = current
                && cur.yaml == yaml
                && cur.source == source
                && !stale
            {
                continue;
            }
            match self.plan_doc(doc, &tree, &yaml, source.clone(), current) {
                Ok(planned) => {
                    match planned.plan.action() {
                        plan::Action::Create => report.added.push(name),
                        plan::Action::Unchanged => {}
                        _ => report.updated.push(name),
                    }
                    if planned.plan.action() != plan::Action::Unchanged
                        || current.is_none_or(|c| c.source != source)
                        || stale
                    {
                        changes.push(Arc::new(planned.route));
                    }
                }
                Err(errors) => report.rejected.push((source, summarize(&errors))),
            }
        }
        // A namespace is removed when its document is gone, unless the
        // document is merely unreadable or invalid right now.
        for route in table.iter() {
            let name = route.name();
            if !seen.contains_key(name) && !keep_sources.contains(&route.source) {
                report.removed.push(name.to_owned());
            }
        }
        self.activate_all(changes).await;
        self.publish_all(report.removed.iter().map(|name| (name.clone(), None)).collect());
        for (source, why) in &report.rejected {
            tracing::error!(%source, error = %why, "namespace document skipped");
        }
        if schemas_changed {
            tracing::info!(
                schemas = ?pool.schemas().map(|v| format!("{}@{}", v.name, v.version)).collect::<Vec<_>>(),
                "schemas reloaded"
            );
        }
        if !(report.added.is_empty() && report.updated.is_empty() && report.removed.is_empty()) {
            tracing::info!(
                added = ?report.added,
                updated = ?report.updated,
                removed = ?report.removed,
                namespaces = self.routes.snapshot().len(),
                "namespaces reloaded"
            );
        }
        Ok((report, migrations, deleting))
    }

    /// Uses the registry's latest schema versions, if they differ from the
    /// current pool's. A set that does not load keeps the current pool.
    fn reload_schemas(&self, latest: Vec<SchemaVersion>) -> bool {
        let current = self.schemas.load();
        let same = latest.len() == current.schemas().count()
            && latest.iter().all(|v| current.latest(&v.name).is_some_and(|c| c.version == v.version));
        if same {
            return false;
        }
        match SchemaPool::build(latest) {
            Ok(pool) => {
                self.schemas.store(Arc::new(pool));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "registered schemas do not load; keeping the previous ones");
                false
            }
        }
    }

    /// Registers `descriptor` (an encoded `FileDescriptorSet`) as the next
    /// version of schema `name`: refused if it does not load, has unknown
    /// PII classes, conflicts with another schema, breaks a typed
    /// namespace, or (unless `force`) is incompatible with the previous
    /// version. Typed namespaces switch to it at once.
    pub async fn push_schema(
        &self,
        name: &str,
        descriptor: bytes::Bytes,
        force: bool,
        dry_run: bool,
        pushed_by: &str,
    ) -> Result<Pushed, ProxyError> {
        let _changes = self.lock.lock().await;
        let old = self.schemas.load_full();
        let previous = old.latest(name).map_or(0, |v| v.version);
        let candidate = SchemaVersion {
            name: name.to_owned(),
            version: previous + 1,
            descriptor: descriptor.clone(),
            pushed_at: String::new(),
            pushed_by: pushed_by.to_owned(),
        };
        let new = old.with(candidate.clone()).map_err(|e| ProxyError::InvalidArgument(e.to_string()))?;
        let table = self.routes.snapshot();
        let typed: Vec<&Arc<Route>> = table.iter().filter(|r| r.codec.is_some()).collect();
        let in_use: Vec<(String, String)> = typed
            .iter()
            .filter_map(|r| r.doc.spec.schema.as_ref().map(|s| (r.name().to_owned(), s.message.clone())))
            .collect();
        let breaking = prism_pii::compat::breaking(&old, &new, name, &in_use);
        if !breaking.is_empty() && !force {
            return Err(ProxyError::FailedPrecondition(format!(
                "schema {name}: {} breaking change(s) from version {previous}: {}. Push with force to register it anyway",
                breaking.len(),
                breaking.join("; ")
            )));
        }
        // Every typed namespace must still be servable with the new pool,
        // whatever force says: a namespace without a plan cannot serve.
        let new = Arc::new(new);
        let mut replanned = Vec::new();
        let mut problems = Vec::new();
        for route in &typed {
            let (doc, tree) = NamespaceDoc::parse_with_tree(&route.yaml).map_err(ProxyError::InvalidSpec)?;
            let mut errors = Vec::new();
            if self.codec(&doc, &new, &tree, &mut errors).is_none() {
                problems.extend(errors.iter().map(|e| format!("namespace {}: {}", route.name(), e.message)));
            }
            replanned.push((doc, tree, Arc::clone(route)));
        }
        if !problems.is_empty() {
            return Err(ProxyError::FailedPrecondition(format!(
                "schema {name}: typed namespaces could not use this version: {}",
                problems.join("; ")
            )));
        }
        let namespaces: Vec<String> = replanned
            .iter()
            .filter(|(doc, _, _)| doc.spec.schema.as_ref().is_some_and(|s| new.schema_of(&s.message) == Some(name)))
            .map(|(doc, _, _)| doc.name().to_owned())
            .collect();
        if dry_run {
            return Ok(Pushed { version: candidate, breaking, applied: false, namespaces });
        }
        let stored = self.registry.put_schema(name, previous, &descriptor, pushed_by).await?;
        let pool = Arc::new(old.with(stored.clone()).map_err(|e| ProxyError::Internal(e.to_string()))?);
        self.schemas.store(pool.clone());
        for (doc, tree, route) in replanned {
            match self.plan_doc(doc, &tree, &route.yaml, route.source.clone(), Some(&route)) {
                Ok(planned) => self.activate(Arc::new(planned.route)).await,
                Err(errors) => {
                    tracing::error!(namespace = route.name(), errors = %summarize(&errors), "namespace keeps its previous schema");
                }
            }
        }
        tracing::info!(schema = %name, version = stored.version, forced = !breaking.is_empty(), "schema pushed");
        Ok(Pushed { version: stored, breaking, applied: true, namespaces })
    }

    /// Reconciles whenever the registry signals a change, until the
    /// returned task is aborted.
    pub fn watch(self: &Arc<Self>) -> Result<tokio::task::JoinHandle<()>, ProxyError> {
        let (tx, mut rx) = mpsc::channel(16);
        let watcher = self.registry.watch(tx)?;
        let controller = self.clone();
        let heartbeat = self.registry.shared().then(|| {
            let controller = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(migrate::HEARTBEAT_EVERY);
                loop {
                    tick.tick().await;
                    if let Err(e) = controller.registry.heartbeat(&controller.id).await {
                        tracing::debug!(error = %e, "heartbeat not recorded");
                    }
                }
            })
        });
        Ok(tokio::spawn(async move {
            // Stops with the watch.
            let _heartbeat = heartbeat.map(AbortOnDrop);
            while rx.recv().await.is_some() {
                // Coalesce a burst of signals into one reload.
                while rx.try_recv().is_ok() {}
                if let Err(e) = controller.reconcile().await {
                    tracing::warn!(error = %e, "namespace reload failed; retrying on the next change");
                }
            }
            watcher.abort();
        }))
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
