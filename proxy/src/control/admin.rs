//! `prism.admin.v1.AdminService`: the namespace control plane over gRPC.
//! Who may do what is the [`AdminPolicy`]'s decision; every decision is
//! noted for the audit record.

use std::sync::Arc;

use prism_pii::{SchemaPool, SchemaVersion};
use prism_proto::admin::v1::admin_service_server::AdminService;
use prism_proto::admin::v1::{
    ApplyNamespaceRequest, ApplyNamespaceResponse, DeleteNamespaceRequest, DeleteNamespaceResponse,
    GetNamespaceRequest, GetNamespaceResponse, GetSchemaRequest, GetSchemaResponse, GetShadowStatusRequest,
    GetShadowStatusResponse, ListNamespacesRequest, ListNamespacesResponse, ListPluginsRequest, ListPluginsResponse,
    ListSchemasRequest, ListSchemasResponse, ListShadowDiffsRequest, ListShadowDiffsResponse, MessageInfo,
    MigrateNamespaceRequest, MigrateNamespaceResponse, MigrationBackfill, MigrationEvent, MigrationVerify,
    NamespaceInfo, PiiField, PluginInfo, PushSchemaRequest, PushSchemaResponse, SchemaInfo, ShadowDiff, ShadowStatus,
    migrate_namespace_request::Step,
};
use prism_proto::admin::v1::{GetMigrationRequest, GetMigrationResponse};
use tonic::{Request, Response, Status};

use super::Controller;
use super::migrate::{self, StartOptions};
use super::migration::Migration;
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::plugin::Plugins;
use crate::routes::{Route, Routes};
use crate::security::Right;
use crate::security::admin::AdminPolicy;
use crate::shadow::Shadow;

pub struct AdminApi {
    routes: Arc<Routes>,
    plugins: Arc<Plugins>,
    controller: Arc<Controller>,
    policy: AdminPolicy,
}

impl AdminApi {
    pub fn new(routes: Arc<Routes>, plugins: Arc<Plugins>, controller: Arc<Controller>, policy: AdminPolicy) -> Self {
        Self { routes, plugins, controller, policy }
    }

    /// Refuses unless the caller administers `name` (its `access.admin`, or
    /// `auth.admins`). Creating a namespace needs `auth.admins`: a new
    /// namespace has no admins yet.
    fn check_admin(&self, ctx: &RequestContext, name: &str, current: Option<&Route>) -> Result<(), ProxyError> {
        let allowed = match current {
            Some(route) => self.policy.may_administer(&ctx.principal, route.doc.spec.access.as_ref()),
            None => self.policy.is_proxy_admin(&ctx.principal),
        };
        self.record(ctx, Some(name), allowed)
    }

    fn check_proxy_admin(&self, ctx: &RequestContext) -> Result<(), ProxyError> {
        let allowed = self.policy.is_proxy_admin(&ctx.principal);
        self.record(ctx, None, allowed)
    }

    fn record(&self, ctx: &RequestContext, name: Option<&str>, allowed: bool) -> Result<(), ProxyError> {
        let why = (!allowed).then(|| match name {
            Some(name) => format!("{} may not administer namespace {name:?}", ctx.principal),
            None => format!("{} is not a proxy administrator (auth.admins)", ctx.principal),
        });
        ctx.note(|facts| {
            facts.namespace = name.map(str::to_owned);
            facts.right = Some(Right::Admin.as_str());
            facts.denied.clone_from(&why);
        });
        why.map_or(Ok(()), |why| Err(ProxyError::PermissionDenied(why)))
    }

    /// The shadow of a namespace the caller may see.
    fn shadowed(&self, ctx: &RequestContext, name: &str) -> Result<(Arc<Route>, Arc<Shadow>), ProxyError> {
        let route =
            self.routes.snapshot().get(name).cloned().ok_or_else(|| ProxyError::NamespaceNotFound(name.to_owned()))?;
        let allowed = self.may_see(ctx, &route);
        self.record(ctx, Some(name), allowed)?;
        let shadow = route
            .shadow
            .clone()
            .ok_or_else(|| ProxyError::FailedPrecondition(format!("namespace {name:?} has no shadow (spec.shadow)")))?;
        Ok((route, shadow))
    }

    /// Whether the caller may see `route` in get and list.
    fn may_see(&self, ctx: &RequestContext, route: &Route) -> bool {
        self.policy.may_see(&ctx.principal, route.doc.spec.access.as_ref())
    }
}

/// A namespace as the Admin API shows it; `invalid` says why its stored
/// document was skipped, if it was.
fn info(route: &Route, invalid: Option<&str>) -> NamespaceInfo {
    let mut info = served(route);
    if let Some(why) = invalid {
        info.status = "invalid".to_owned();
        info.status_message = why.to_owned();
    }
    info
}

/// The name a broken document at `source` would have: its file's stem, or
/// the registry row's name.
fn name_of_source(source: &str) -> String {
    let last = source.rsplit('/').next().unwrap_or(source);
    last.strip_suffix(".yaml").or_else(|| last.strip_suffix(".yml")).unwrap_or(last).to_owned()
}

fn served(route: &Route) -> NamespaceInfo {
    NamespaceInfo {
        name: route.name().to_owned(),
        pattern: route.pattern().as_str().to_owned(),
        backend: route.plugin.name().to_owned(),
        backend_reason: route.backend_reason.clone(),
        team: route.doc.metadata.team.clone().unwrap_or_default(),
        spec_yaml: route.yaml.clone(),
        source: route.source.clone(),
        status: route.plugin.phase().name().to_owned(),
        status_message: String::new(),
    }
}

/// What `version` of a schema holds: its messages, their tagged fields, the
/// namespaces using each (from `routes`). Messages are read from `pool`
/// when it holds this version, else from the version's own descriptors.
fn schema_info(version: &SchemaVersion, pool: &SchemaPool, routes: &Routes) -> SchemaInfo {
    let own;
    let source = if pool.latest(&version.name).is_some_and(|v| v.version == version.version) {
        pool
    } else {
        own = SchemaPool::build([version.clone()]).unwrap_or_default();
        &own
    };
    let table = routes.snapshot();
    let messages = source
        .messages_of(&version.name)
        .iter()
        .map(|name| {
            let pii_fields = source
                .plan(name)
                .map(|plan| {
                    plan.fields()
                        .iter()
                        .map(|f| PiiField { path: f.path.clone(), class: f.class.as_str().to_owned() })
                        .collect()
                })
                .unwrap_or_default();
            let mut namespaces: Vec<String> = table
                .iter()
                .filter(|r| r.doc.spec.schema.as_ref().is_some_and(|s| &s.message == name))
                .map(|r| r.name().to_owned())
                .collect();
            namespaces.sort();
            MessageInfo { name: name.clone(), pii_fields, namespaces }
        })
        .collect();
    SchemaInfo {
        name: version.name.clone(),
        version: version.version,
        pushed_at: version.pushed_at.clone(),
        pushed_by: version.pushed_by.clone(),
        messages,
        versions: Vec::new(),
    }
}

/// A stored migration as the Admin API shows it.
fn migration_info(m: &Migration) -> prism_proto::admin::v1::Migration {
    prism_proto::admin::v1::Migration {
        namespace: m.namespace.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        phase: m.phase.as_str().to_owned(),
        next: migrate::next_step(m),
        started_at: m.started_at.clone(),
        updated_at: m.updated_at.clone(),
        error: m.error.clone().unwrap_or_default(),
        revision: m.revision,
        backfill: m.backfill.as_ref().map(|b| {
            let left = b.total.saturating_sub(b.scanned);
            MigrationBackfill {
                total: b.total,
                scanned: b.scanned,
                copied: b.copied,
                skipped: b.skipped,
                undone: b.undone,
                rate: b.rate,
                keys_per_second: b.keys_per_second,
                eta_seconds: if b.finished_at.is_empty() && b.keys_per_second > 0.0 {
                    (left as f64 / b.keys_per_second).ceil() as u64
                } else {
                    0
                },
                started_at: b.started_at.clone(),
                finished_at: b.finished_at.clone(),
                owner: b.owner.clone(),
            }
        }),
        verify: m.verify.as_ref().map(|v| MigrationVerify {
            started_at: v.started_at.clone(),
            finished_at: v.finished_at.clone(),
            owner: v.owner.clone(),
            source_keys: v.source_keys,
            target_keys: v.target_keys,
            matched: v.matched,
            missing: v.missing,
            extra: v.extra,
            different: v.different,
            settled: v.settled,
            busy: v.busy,
            samples: v.samples.clone(),
            window_seconds: u32::try_from(v.window_seconds).unwrap_or(u32::MAX),
            reads_compared: v.reads_compared,
            read_mismatches: v.read_mismatches,
            clean: v.clean,
        }),
        history: m
            .history
            .iter()
            .map(|e| MigrationEvent {
                at: e.at.clone(),
                phase: e.phase.as_str().to_owned(),
                by: e.by.clone(),
                note: e.note.clone(),
            })
            .collect(),
    }
}

fn seconds_or(value: u32, default: std::time::Duration) -> std::time::Duration {
    if value == 0 { default } else { std::time::Duration::from_secs(u64::from(value)) }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn migrate_namespace(
        &self,
        request: Request<MigrateNamespaceRequest>,
    ) -> Result<Response<MigrateNamespaceResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let name = req.namespace.as_str();
        let current = self.routes.snapshot().get(name).cloned();
        let route = current.ok_or_else(|| ProxyError::NamespaceNotFound(name.to_owned()))?;
        self.check_admin(&ctx, name, Some(&route))?;
        let by = ctx.principal.to_string();
        let c = &self.controller;
        let timeout = seconds_or(req.timeout_seconds, migrate::DEFAULT_SWITCH_TIMEOUT);
        let step = Step::try_from(req.step).unwrap_or(Step::Unspecified);
        let stepped = match step {
            Step::Unspecified => {
                return Err(ProxyError::InvalidArgument(
                    "step must be one of start, backfill, verify, promote, finalize, rollback".to_owned(),
                )
                .into());
            }
            Step::Start => {
                if req.target.is_empty() {
                    return Err(
                        ProxyError::InvalidArgument("target: the plugin to migrate to is required".to_owned()).into()
                    );
                }
                if !(0.0..=1.0).contains(&req.compare_reads) {
                    return Err(ProxyError::InvalidArgument(format!(
                        "compare_reads must be between 0 and 1, not {}",
                        req.compare_reads
                    ))
                    .into());
                }
                let opts = StartOptions {
                    target: req.target.clone(),
                    compare_reads: req.compare_reads,
                    queue: req.queue as usize,
                    force: req.force,
                };
                c.start_migration(name, opts, req.dry_run, &by).await?
            }
            Step::Backfill => c.start_backfill(name, req.rate, req.dry_run, &by).await?,
            Step::Verify => {
                let window = seconds_or(req.clean_window_seconds, migrate::DEFAULT_WINDOW);
                c.start_verify(name, window, req.dry_run, &by).await?
            }
            Step::Promote => c.promote(name, timeout, req.dry_run, &by).await?,
            Step::Finalize => c.finalize(name, req.purge, req.dry_run, &by).await?,
            Step::Rollback => c.rollback(name, timeout, req.purge, req.dry_run, &by).await?,
        };
        Ok(Response::new(MigrateNamespaceResponse {
            migration: Some(migration_info(&stepped.migration)),
            message: stepped.message,
        }))
    }

    async fn get_migration(
        &self,
        request: Request<GetMigrationRequest>,
    ) -> Result<Response<GetMigrationResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let name = request.into_inner().namespace;
        let route =
            self.routes.snapshot().get(&name).cloned().ok_or_else(|| ProxyError::NamespaceNotFound(name.clone()))?;
        let allowed = self.may_see(&ctx, &route);
        self.record(&ctx, Some(&name), allowed)?;
        let m = self.controller.migration(&name).await?;
        Ok(Response::new(GetMigrationResponse { migration: Some(migration_info(&m)) }))
    }

    async fn apply_namespace(
        &self,
        request: Request<ApplyNamespaceRequest>,
    ) -> Result<Response<ApplyNamespaceResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        // An invalid document gets its errors; a valid one needs the right.
        let may_change = |name: &str, current: Option<&Route>| self.check_admin(&ctx, name, current);
        let (plan, applied) = self.controller.apply(&req.spec_yaml, req.dry_run, req.force, may_change).await?;
        Ok(Response::new(ApplyNamespaceResponse { plan: Some(plan), applied }))
    }

    async fn get_namespace(
        &self,
        request: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let name = request.into_inner().name;
        let table = self.routes.snapshot();
        let route = table.get(&name).ok_or_else(|| ProxyError::NamespaceNotFound(name.clone()))?;
        let allowed = self.may_see(&ctx, route);
        self.record(&ctx, Some(&name), allowed)?;
        let rejected = self.controller.rejected();
        let invalid = rejected.iter().find(|(source, _)| *source == route.source).map(|(_, why)| why.as_str());
        Ok(Response::new(GetNamespaceResponse { namespace: Some(info(route, invalid)) }))
    }

    async fn list_namespaces(
        &self,
        request: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        // Only what the caller may see; an empty list is not an error.
        let table = self.routes.snapshot();
        let rejected = self.controller.rejected();
        let invalid = |source: &str| rejected.iter().find(|(s, _)| s == source).map(|(_, why)| why.as_str());
        let mut namespaces: Vec<NamespaceInfo> =
            table.iter().filter(|r| self.may_see(&ctx, r)).map(|r| info(r, invalid(&r.source))).collect();
        // A broken document of no namespace served yet: shown by its source
        // to proxy administrators, who can fix it.
        if self.policy.is_proxy_admin(&ctx.principal) {
            for (source, why) in &rejected {
                if !table.iter().any(|r| r.source == *source) {
                    namespaces.push(NamespaceInfo {
                        name: name_of_source(source),
                        source: source.clone(),
                        status: "invalid".to_owned(),
                        status_message: why.clone(),
                        ..NamespaceInfo::default()
                    });
                }
            }
        }
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn delete_namespace(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<DeleteNamespaceResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let may_change = |name: &str, current: Option<&Route>| self.check_admin(&ctx, name, current);
        let data_purged = self.controller.delete(&req.name, req.purge_data, req.force, may_change).await?;
        Ok(Response::new(DeleteNamespaceResponse { data_purged }))
    }

    async fn push_schema(&self, request: Request<PushSchemaRequest>) -> Result<Response<PushSchemaResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        self.check_proxy_admin(&ctx)?;
        let req = request.into_inner();
        prism_pii::registry::check_name(&req.name).map_err(|e| ProxyError::InvalidArgument(e.to_string()))?;
        if req.file_descriptor_set.is_empty() {
            return Err(ProxyError::InvalidArgument("file_descriptor_set is empty".to_owned()).into());
        }
        let pushed_by = ctx.principal.to_string();
        let pushed =
            self.controller.push_schema(&req.name, req.file_descriptor_set, req.force, req.dry_run, &pushed_by).await?;
        let pool = self.controller.schemas();
        let mut schema = schema_info(&pushed.version, &pool, &self.routes);
        if !pushed.applied {
            // A dry run: the version is not in the pool; describe it alone.
            schema = schema_info(&pushed.version, &SchemaPool::default(), &self.routes);
        }
        Ok(Response::new(PushSchemaResponse {
            schema: Some(schema),
            applied: pushed.applied,
            breaking: pushed.breaking,
        }))
    }

    async fn list_schemas(
        &self,
        request: Request<ListSchemasRequest>,
    ) -> Result<Response<ListSchemasResponse>, Status> {
        // Schemas describe types, not data: any authenticated caller may
        // read them, as with server reflection.
        let _ctx = RequestContext::of(&request)?;
        let pool = self.controller.schemas();
        let schemas = pool.schemas().map(|v| schema_info(v, &pool, &self.routes)).collect();
        Ok(Response::new(ListSchemasResponse { schemas }))
    }

    async fn get_schema(&self, request: Request<GetSchemaRequest>) -> Result<Response<GetSchemaResponse>, Status> {
        let _ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let versions = self.controller.registry().schema_versions(&req.name).await?;
        let wanted = match req.version {
            0 => versions.last(),
            n => versions.iter().find(|v| v.version == n),
        };
        let Some(version) = wanted else {
            return Err(ProxyError::NotFound(match req.version {
                0 => format!("schema {:?} is not registered", req.name),
                n => format!(
                    "schema {:?} has no version {n} (versions: {})",
                    req.name,
                    versions.iter().map(|v| v.version.to_string()).collect::<Vec<_>>().join(", ")
                ),
            })
            .into());
        };
        let mut schema = schema_info(version, &self.controller.schemas(), &self.routes);
        schema.versions = versions.iter().map(|v| v.version).collect();
        Ok(Response::new(GetSchemaResponse { schema: Some(schema), file_descriptor_set: version.descriptor.clone() }))
    }

    async fn get_shadow_status(
        &self,
        request: Request<GetShadowStatusRequest>,
    ) -> Result<Response<GetShadowStatusResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let name = request.into_inner().namespace;
        let (route, shadow) = self.shadowed(&ctx, &name)?;
        let counts = shadow.counts();
        let status = ShadowStatus {
            namespace: name,
            primary: route.plugin.name().to_owned(),
            backend: shadow.plugin().name().to_owned(),
            backend_phase: shadow.plugin().phase().name().to_owned(),
            mirror: if shadow.mirrors() { "writes" } else { "none" }.to_owned(),
            compare_reads: shadow.compare_reads(),
            queue_depth: counts.queue_depth,
            queue_capacity: shadow.capacity() as u64,
            mirrored: counts.mirrored,
            mirror_failed: counts.mirror_failed,
            dropped: counts.dropped,
            matched: counts.matched,
            mismatched: counts.mismatched,
            compare_failed: counts.compare_failed,
            last_error: shadow.last_error().unwrap_or_default(),
            since: humantime::format_rfc3339_seconds(shadow.since()).to_string(),
        };
        Ok(Response::new(GetShadowStatusResponse { status: Some(status) }))
    }

    async fn list_shadow_diffs(
        &self,
        request: Request<ListShadowDiffsRequest>,
    ) -> Result<Response<ListShadowDiffsResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let name = request.into_inner().namespace;
        let (_, shadow) = self.shadowed(&ctx, &name)?;
        let diffs = shadow
            .diffs()
            .into_iter()
            .map(|d| ShadowDiff {
                time: humantime::format_rfc3339_millis(d.time).to_string(),
                method: d.method.to_owned(),
                key_hash: d.key_hash,
                difference: d.difference,
            })
            .collect();
        Ok(Response::new(ListShadowDiffsResponse { diffs }))
    }

    async fn list_plugins(
        &self,
        request: Request<ListPluginsRequest>,
    ) -> Result<Response<ListPluginsResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        self.check_proxy_admin(&ctx)?;
        let table = self.routes.snapshot();
        let plugins = self
            .plugins
            .values()
            .map(|plugin| {
                let status = plugin.status();
                let known = plugin.known();
                let mut namespaces: Vec<String> =
                    table.iter().filter(|r| r.plugin.name() == plugin.name()).map(|r| r.name().to_owned()).collect();
                namespaces.sort();
                PluginInfo {
                    name: status.name,
                    backend: known.as_ref().map(|k| k.backend.clone()).unwrap_or_default(),
                    version: known.as_ref().map(|k| k.version.clone()).unwrap_or_default(),
                    phase: status.phase.to_owned(),
                    message: status.message,
                    pid: status.pid.unwrap_or_default(),
                    target: status.target,
                    restarts: status.restarts,
                    capabilities: known.and_then(|k| k.capabilities.clone()),
                    namespaces,
                }
            })
            .collect();
        Ok(Response::new(ListPluginsResponse { plugins }))
    }
}
