//! `prism.admin.v1.AdminService`: the namespace control plane over gRPC.

use std::sync::Arc;

use prism_proto::admin::v1::admin_service_server::AdminService;
use prism_proto::admin::v1::{
    ApplyNamespaceRequest, ApplyNamespaceResponse, DeleteNamespaceRequest, DeleteNamespaceResponse,
    GetNamespaceRequest, GetNamespaceResponse, ListNamespacesRequest, ListNamespacesResponse, ListPluginsRequest,
    ListPluginsResponse, NamespaceInfo, PluginInfo,
};
use tonic::{Request, Response, Status};

use crate::control::Controller;
use crate::error::ProxyError;
use crate::gateway::{Gateway, Route};

pub struct AdminApi {
    gateway: Arc<Gateway>,
    controller: Arc<Controller>,
}

impl AdminApi {
    pub fn new(gateway: Arc<Gateway>, controller: Arc<Controller>) -> Self {
        Self { gateway, controller }
    }
}

fn info(route: &Route) -> NamespaceInfo {
    NamespaceInfo {
        name: route.name().to_owned(),
        pattern: route.pattern().as_str().to_owned(),
        backend: route.plugin.name().to_owned(),
        backend_reason: route.backend_reason.clone(),
        team: route.doc.metadata.team.clone().unwrap_or_default(),
        spec_yaml: route.yaml.clone(),
        source: route.source.clone(),
        status: route.plugin.phase().name().to_owned(),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn apply_namespace(
        &self,
        request: Request<ApplyNamespaceRequest>,
    ) -> Result<Response<ApplyNamespaceResponse>, Status> {
        let req = request.into_inner();
        let (plan, applied) = self.controller.apply(&req.spec_yaml, req.dry_run, req.force).await?;
        Ok(Response::new(ApplyNamespaceResponse { plan: Some(plan), applied }))
    }

    async fn get_namespace(
        &self,
        request: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = request.into_inner().name;
        let table = self.gateway.routes();
        let route = table.get(&name).ok_or(ProxyError::NamespaceNotFound(name))?;
        Ok(Response::new(GetNamespaceResponse { namespace: Some(info(route)) }))
    }

    async fn list_namespaces(
        &self,
        _request: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let mut namespaces: Vec<NamespaceInfo> = self.gateway.routes().iter().map(|r| info(r)).collect();
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn delete_namespace(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<DeleteNamespaceResponse>, Status> {
        let req = request.into_inner();
        let data_purged = self.controller.delete(&req.name, req.purge_data, req.force).await?;
        Ok(Response::new(DeleteNamespaceResponse { data_purged }))
    }

    async fn list_plugins(
        &self,
        _request: Request<ListPluginsRequest>,
    ) -> Result<Response<ListPluginsResponse>, Status> {
        let table = self.gateway.routes();
        let plugins = self
            .gateway
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
