//! The `prism.plugin.v1.Lifecycle` service every plugin serves.

use std::sync::Arc;

use prism_proto::plugin::v1::lifecycle_server::Lifecycle;
use prism_proto::plugin::v1::{
    DescribeNamespaceRequest, DescribeNamespaceResponse, DrainRequest, DrainResponse, DropNamespaceRequest,
    DropNamespaceResponse, HealthRequest, HealthResponse, InitializeRequest, InitializeResponse,
    PrepareNamespaceRequest, PrepareNamespaceResponse, ProtocolVersion, health_response,
};
use tonic::{Request, Response, Status};

use crate::backend::{Backend, NamespaceSettings};
use crate::error::PluginError;
use crate::state::PluginState;

pub(crate) struct LifecycleService<B: Backend> {
    pub(crate) state: Arc<PluginState<B>>,
}

#[tonic::async_trait]
impl<B: Backend> Lifecycle for LifecycleService<B> {
    async fn initialize(&self, request: Request<InitializeRequest>) -> Result<Response<InitializeResponse>, Status> {
        let req = request.into_inner();
        if req.protocol_version != ProtocolVersion::ProtocolVersion1 as i32 {
            return Err(PluginError::FailedPrecondition(format!(
                "protocol version {} is not supported; this plugin speaks version {}",
                req.protocol_version,
                ProtocolVersion::ProtocolVersion1 as i32
            ))
            .into());
        }
        let (ready, opened) = self.state.initialize(&req.instance, &req.config_json).await?;
        if opened {
            tracing::info!(instance = %ready.instance, backend = B::KIND, "initialized");
        } else {
            // Asked again while unhealthy, every health interval: not news.
            tracing::debug!(instance = %ready.instance, backend = B::KIND, "already initialized");
        }
        Ok(Response::new(InitializeResponse {
            protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
            backend: B::KIND.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: Some(ready.capabilities.clone()),
        }))
    }

    async fn health(&self, _request: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        let (status, message) = match self.state.ready() {
            Err(err) => (health_response::Status::NotServing, err.to_string()),
            Ok(ready) => match ready.backend.health().await {
                Ok(()) => (health_response::Status::Serving, String::new()),
                Err(err) => (health_response::Status::NotServing, err.to_string()),
            },
        };
        Ok(Response::new(HealthResponse { status: status as i32, message }))
    }

    async fn drain(&self, _request: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        self.state.drain().await;
        Ok(Response::new(DrainResponse {}))
    }

    async fn prepare_namespace(
        &self,
        request: Request<PrepareNamespaceRequest>,
    ) -> Result<Response<PrepareNamespaceResponse>, Status> {
        let settings = request
            .into_inner()
            .settings
            .ok_or_else(|| PluginError::InvalidArgument("settings are required".to_owned()))?;
        let settings = NamespaceSettings::try_from(settings)?;
        let name = settings.name.clone();
        self.state.prepare(settings).await?;
        tracing::debug!(namespace = %name, "namespace prepared");
        Ok(Response::new(PrepareNamespaceResponse {}))
    }

    async fn drop_namespace(
        &self,
        request: Request<DropNamespaceRequest>,
    ) -> Result<Response<DropNamespaceResponse>, Status> {
        let name = request.into_inner().namespace;
        self.state.drop_namespace(&name).await?;
        tracing::info!(namespace = %name, "namespace dropped");
        Ok(Response::new(DropNamespaceResponse {}))
    }

    async fn describe_namespace(
        &self,
        request: Request<DescribeNamespaceRequest>,
    ) -> Result<Response<DescribeNamespaceResponse>, Status> {
        let ready = self.state.ready()?;
        let ns = self.state.namespace(&request.into_inner().namespace)?;
        let holds_data = ready.backend.holds_data(&ns).await?;
        Ok(Response::new(DescribeNamespaceResponse { holds_data }))
    }
}
