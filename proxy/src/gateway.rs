//! The gateway's shared state: plugins and the namespace route table.
//!
//! The route table is an immutable snapshot behind an `ArcSwap`: the
//! request path loads it without locks, and a change publishes a new
//! snapshot, so in-flight requests finish on the table they started with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prism_proto::plugin::v1::{NamespaceSettings, Pattern};

use crate::config::Config;
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::namespace::{NamespaceDoc, PatternKind};
use crate::plugin::Plugin;
use crate::security::audit::key_hash;
use crate::security::{Principal, Right};

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
}

impl Route {
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
            pattern: match self.pattern() {
                PatternKind::Keyvalue => Pattern::Keyvalue,
                PatternKind::Timeseries => Pattern::Timeseries,
                PatternKind::Graph => Pattern::Graph,
            } as i32,
            max_value_bytes: self.max_value_bytes as u64,
            retention_seconds: self.doc.spec.needs.retention.map_or(0, |d| d.as_secs()),
        }
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

/// Plugins and routes.
pub struct Gateway {
    pub config: Config,
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    routes: ArcSwap<RouteTable>,
}

impl Gateway {
    pub fn new(config: Config) -> Self {
        let plugins = config
            .plugins
            .iter()
            .map(|(name, pc)| (name.clone(), Arc::new(Plugin::new(name.clone(), pc.clone()))))
            .collect();
        Self { config, plugins, routes: ArcSwap::default() }
    }

    /// The route of `doc` on `plugin`, with the limits that apply.
    pub fn route_for(
        &self,
        doc: NamespaceDoc,
        yaml: String,
        source: String,
        plugin: Arc<Plugin>,
        backend_reason: String,
    ) -> Route {
        let limits = &self.config.limits;
        let max_value_bytes =
            doc.spec.needs.max_value_bytes.map_or(limits.max_value_bytes, |n| {
                usize::try_from(n).unwrap_or(usize::MAX).min(limits.max_value_bytes)
            });
        let default_ttl_seconds = doc.spec.needs.ttl.map_or(0, |d| d.as_secs());
        Route {
            doc: Arc::new(doc),
            yaml,
            source,
            backend_reason,
            plugin,
            max_key_bytes: limits.max_key_bytes,
            max_value_bytes,
            default_ttl_seconds,
        }
    }

    /// Publishes a table where `name` maps to `route` (or is gone, for
    /// `None`). In-flight requests keep the route they started with.
    pub fn set_route(&self, name: &str, route: Option<Arc<Route>>) {
        self.routes.rcu(|table| {
            let mut routes = table.routes.clone();
            match &route {
                Some(r) => routes.insert(name.to_owned(), r.clone()),
                None => routes.remove(name),
            };
            RouteTable { routes }
        });
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    /// The route of a namespace that must use `pattern`, if the caller of
    /// `ctx` holds `right` on it. Records the namespace, the right, the
    /// keys (hashed) and a refusal for the audit log. Every data call goes
    /// through here; there is no other way to a route.
    pub fn authorize(
        &self,
        ctx: &RequestContext,
        namespace: &str,
        pattern: PatternKind,
        right: Right,
        keys: &[&str],
    ) -> Result<Arc<Route>, ProxyError> {
        if let Some(facts) = &ctx.facts
            && let Ok(mut facts) = facts.lock()
        {
            facts.namespace = Some(namespace.to_owned());
            facts.right = Some(right.as_str());
            facts.key_hash = keys.first().map(|k| key_hash(k));
            facts.keys = (keys.len() > 1).then_some(keys.len());
        }
        let route = self.lookup(namespace, pattern)?;
        if !ctx.principal.may(route.doc.spec.access.as_ref(), right) {
            let why = format!("{} lacks {} on namespace {namespace:?}", ctx.principal, right.as_str());
            if let Some(facts) = &ctx.facts
                && let Ok(mut facts) = facts.lock()
            {
                facts.denied = Some(why.clone());
            }
            return Err(ProxyError::PermissionDenied(why));
        }
        Ok(route)
    }

    /// Whether the caller administers the whole proxy (`auth.admins`).
    pub fn is_proxy_admin(&self, principal: &Principal) -> bool {
        principal.dev || self.config.auth.as_ref().is_some_and(|a| principal.matches_any(&a.admins))
    }

    /// Whether the caller may administer `route`: a proxy admin, or named
    /// in its `access.admin`.
    pub fn may_administer(&self, principal: &Principal, access: Option<&crate::namespace::Access>) -> bool {
        self.is_proxy_admin(principal) || principal.may(access, Right::Admin)
    }

    fn lookup(&self, namespace: &str, pattern: PatternKind) -> Result<Arc<Route>, ProxyError> {
        if namespace.is_empty() {
            return Err(ProxyError::InvalidArgument("namespace is required".to_owned()));
        }
        let route = self
            .routes
            .load()
            .get(namespace)
            .cloned()
            .ok_or_else(|| ProxyError::NamespaceNotFound(namespace.to_owned()))?;
        if route.pattern() != pattern {
            return Err(ProxyError::FailedPrecondition(format!(
                "namespace {namespace:?} uses the {} pattern, not {}",
                route.pattern().as_str(),
                pattern.as_str()
            )));
        }
        Ok(route)
    }

    /// Settings of every namespace served by `plugin`, to prepare on it.
    pub fn namespaces_of(&self, plugin: &str) -> Vec<NamespaceSettings> {
        self.routes.load().iter().filter(|r| r.plugin.name() == plugin).map(|r| r.settings()).collect()
    }
}
