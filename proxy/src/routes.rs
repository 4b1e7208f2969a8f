//! The namespace route table and authorization: which plugin serves each
//! namespace, with the limits that apply, and whether a caller may use it.
//!
//! The table is an immutable snapshot behind an `ArcSwap`: the request path
//! loads it without locks, and a change publishes a new snapshot, so
//! in-flight requests finish on the table they started with.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arc_swap::ArcSwap;
use prism_proto::plugin::v1::{NamespaceSettings, Pattern};
use tokio::sync::watch;

use crate::config::Limits;
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::metrics::{Metrics, RouteMetrics};
use crate::namespace::{NamespaceDoc, PatternKind};
use crate::plugin::Plugin;
use crate::quota::Quotas;
use crate::security::Right;
use crate::security::audit::key_hash;

/// How one namespace is served.
#[derive(Debug)]
pub struct Route {
    pub doc: Arc<NamespaceDoc>,
    /// The document as applied, and where it is stored.
    pub yaml: String,
    pub source: String,
    /// Why this plugin serves the namespace.
    pub backend_reason: String,
    pub plugin: Arc<Plugin>,
    /// Limits for this namespace: the proxy's, lowered by the namespace's
    /// needs.
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// TTL applied to writes that set none (`spec.needs.ttl`); 0 for none.
    pub default_ttl_seconds: u64,
    /// This namespace's metric handles.
    pub metrics: RouteMetrics,
    /// PII handling of a typed namespace (`spec.schema`): its values'
    /// message type, the policy and the keys; `None` for untyped ones,
    /// which pay nothing.
    pub codec: Option<Arc<prism_pii::Codec>>,
    /// The schema pool the codec was planned against: a newer pool means
    /// re-planning.
    pub schemas: Option<Arc<prism_pii::SchemaPool>>,
    /// The namespace's shadow (`spec.shadow`), fed by `DataPlane::forward`.
    pub shadow: Option<Arc<crate::shadow::Shadow>>,
    /// Its rate quotas, when enforced (`crate::quota`).
    pub quotas: Quotas,
    /// Its calls in flight, for fair concurrency between namespaces.
    pub in_flight: AtomicUsize,
}

impl Route {
    /// The route of `doc` on `plugin`, with the proxy's `limits` lowered by
    /// the namespace's needs.
    pub fn new(
        doc: NamespaceDoc,
        yaml: String,
        source: String,
        plugin: Arc<Plugin>,
        backend_reason: String,
        limits: &Limits,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let max_value_bytes =
            doc.spec.needs.max_value_bytes.map_or(limits.max_value_bytes, |n| {
                usize::try_from(n).unwrap_or(usize::MAX).min(limits.max_value_bytes)
            });
        let default_ttl_seconds = doc.spec.needs.ttl.map_or(0, |d| d.as_secs());
        let metrics = metrics.route(&doc.metadata.name, doc.spec.pattern.as_str(), plugin.name());
        let quotas = Quotas::new(&doc, limits);
        Self {
            metrics,
            doc: Arc::new(doc),
            yaml,
            source,
            backend_reason,
            plugin,
            max_key_bytes: limits.max_key_bytes,
            max_value_bytes,
            default_ttl_seconds,
            codec: None,
            schemas: None,
            shadow: None,
            quotas,
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.doc.metadata.name
    }

    pub fn pattern(&self) -> PatternKind {
        self.doc.spec.pattern
    }

    /// What the plugin is told when the namespace is prepared.
    pub fn settings(&self) -> NamespaceSettings {
        NamespaceSettings {
            name: self.name().to_owned(),
            pattern: proto_pattern(self.pattern()) as i32,
            max_value_bytes: self.max_value_bytes as u64,
            retention_seconds: self.doc.spec.needs.retention.map_or(0, |d| d.as_secs()),
        }
    }
}

/// A namespace document's pattern as the plugin protocol names it.
pub(crate) fn proto_pattern(kind: PatternKind) -> Pattern {
    match kind {
        PatternKind::Keyvalue => Pattern::Keyvalue,
        PatternKind::Timeseries => Pattern::Timeseries,
        PatternKind::Graph => Pattern::Graph,
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: HashMap<String, Arc<Route>>,
}

impl RouteTable {
    pub fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// A call [`Routes::authorize`] refused, and the route it named when the
/// namespace exists (for the metrics' namespace label).
#[derive(Debug)]
pub struct Refused {
    pub error: ProxyError,
    pub route: Option<Arc<Route>>,
}

/// The route table every request reads, and the one way to a route.
#[derive(Debug)]
pub struct Routes {
    table: ArcSwap<RouteTable>,
    /// Bumped on every change, for watchers (health, readiness).
    changed: watch::Sender<u64>,
}

impl Default for Routes {
    fn default() -> Self {
        Self { table: ArcSwap::default(), changed: watch::Sender::new(0) }
    }
}

impl Routes {
    /// Publishes a table where `name` maps to `route` (or is gone, for
    /// `None`). In-flight requests keep the route they started with.
    pub fn set(&self, name: &str, route: Option<Arc<Route>>) {
        self.set_many(&[(name.to_owned(), route)]);
    }

    /// Publishes all of `changes` as one new table: one copy of the map
    /// and one wake-up for the watchers however many namespaces change, so
    /// loading N namespaces costs O(N), not N copies of a growing table.
    pub fn set_many(&self, changes: &[(String, Option<Arc<Route>>)]) {
        if changes.is_empty() {
            return;
        }
        self.table.rcu(|table| {
            let mut routes = table.routes.clone();
            for (name, route) in changes {
                match route {
                    Some(r) => routes.insert(name.clone(), r.clone()),
                    None => routes.remove(name),
                };
            }
            RouteTable { routes }
        });
        self.changed.send_modify(|n| *n += 1);
    }

    /// The current table.
    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// A receiver that wakes on every change of the table.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many times the table changed since the proxy started.
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// The route of a namespace that must use `pattern`, if the caller of
    /// `ctx` holds `right` on it. Notes the namespace, the right, the keys
    /// (`first` hashed, and how many) and a refusal for the audit record.
    /// Every data call goes through here; there is no other way to a route.
    pub fn authorize(
        &self,
        ctx: &RequestContext,
        namespace: &str,
        pattern: PatternKind,
        right: Right,
        (first, keys): (Option<&str>, usize),
    ) -> Result<Arc<Route>, Refused> {
        ctx.note(|facts| {
            facts.namespace = Some(namespace.to_owned());
            facts.right = Some(right.as_str());
            facts.key_hash = first.map(key_hash);
            facts.keys = (keys > 1).then_some(keys);
        });
        if namespace.is_empty() {
            let error = ProxyError::InvalidArgument("namespace is required".to_owned());
            return Err(Refused { error, route: None });
        }
        let Some(route) = self.table.load().get(namespace).cloned() else {
            return Err(Refused { error: ProxyError::NamespaceNotFound(namespace.to_owned()), route: None });
        };
        if route.pattern() != pattern {
            let error = ProxyError::FailedPrecondition(format!(
                "namespace {namespace:?} uses the {} pattern, not {}",
                route.pattern().as_str(),
                pattern.as_str()
            ));
            return Err(Refused { error, route: Some(route) });
        }
        if !ctx.principal.may(route.doc.spec.access.as_ref(), right) {
            let why = format!("{} lacks {} on namespace {namespace:?}", ctx.principal, right.as_str());
            ctx.note(|facts| facts.denied = Some(why.clone()));
            route.metrics.denial(right.as_str());
            return Err(Refused { error: ProxyError::PermissionDenied(why), route: Some(route) });
        }
        Ok(route)
    }

    /// Settings of every namespace served or shadowed by `plugin`, to
    /// prepare on it.
    pub fn namespaces_of(&self, plugin: &str) -> Vec<NamespaceSettings> {
        self.table
            .load()
            .iter()
            .filter(|r| r.plugin.name() == plugin || r.shadow.as_ref().is_some_and(|s| s.plugin().name() == plugin))
            .map(|r| r.settings())
            .collect()
    }
}
