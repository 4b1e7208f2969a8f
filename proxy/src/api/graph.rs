//! `prism.graph.v1.GraphService`: validate against the proxy's limits, then
//! forward to the namespace's plugin, which runs traversals in bounded
//! batches (see the plugin SDK).

use std::sync::Arc;

use prism_proto::graph::v1::graph_service_server::GraphService;
use prism_proto::graph::v1::{
    DeleteEdgeRequest, DeleteEdgeResponse, DeleteVertexRequest, DeleteVertexResponse, GetVertexRequest,
    GetVertexResponse, NeighborsRequest, NeighborsResponse, PutEdgeRequest, PutEdgeResponse, PutVertexRequest,
    PutVertexResponse, TraverseRequest, TraverseResponse,
};
use tonic::{Request, Response, Status};

use super::{call_plugin, check_name};
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::gateway::{Gateway, Route};
use crate::namespace::PatternKind;
use crate::security::Right;

pub struct GraphApi {
    gateway: Arc<Gateway>,
}

impl GraphApi {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    fn route(
        &self,
        ctx: &RequestContext,
        namespace: &str,
        right: Right,
        vertex: &str,
    ) -> Result<Arc<Route>, ProxyError> {
        self.gateway.authorize(ctx, namespace, PatternKind::Graph, right, &[vertex])
    }
}

fn check_properties<'a>(
    route: &Route,
    properties: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<(), ProxyError> {
    let size: usize = properties.map(|(k, v)| k.len() + v.len()).sum();
    if size > route.max_value_bytes {
        return Err(ProxyError::InvalidArgument(format!(
            "properties are {size} bytes, over the limit of {} bytes for namespace {:?}",
            route.max_value_bytes,
            route.name()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl GraphService for GraphApi {
    async fn put_vertex(&self, request: Request<PutVertexRequest>) -> Result<Response<PutVertexResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Write, &req.id)?;
        check_name(&route, "id", &req.id)?;
        check_properties(&route, req.properties.iter())?;
        let mut client = route.plugin.graph()?;
        Ok(Response::new(call_plugin(&ctx, &route.plugin, client.put_vertex(ctx.outbound(req))).await?))
    }

    async fn get_vertex(&self, request: Request<GetVertexRequest>) -> Result<Response<GetVertexResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Read, &req.id)?;
        check_name(&route, "id", &req.id)?;
        let mut client = route.plugin.graph()?;
        Ok(Response::new(call_plugin(&ctx, &route.plugin, client.get_vertex(ctx.outbound(req))).await?))
    }

    async fn delete_vertex(
        &self,
        request: Request<DeleteVertexRequest>,
    ) -> Result<Response<DeleteVertexResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Write, &req.id)?;
        check_name(&route, "id", &req.id)?;
        let mut client = route.plugin.graph()?;
        Ok(Response::new(call_plugin(&ctx, &route.plugin, client.delete_vertex(ctx.outbound(req))).await?))
    }

    async fn put_edge(&self, request: Request<PutEdgeRequest>) -> Result<Response<PutEdgeResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Write, &req.from)?;
        check_name(&route, "from", &req.from)?;
        check_name(&route, "to", &req.to)?;
        check_name(&route, "label", &req.label)?;
        check_properties(&route, req.properties.iter())?;
        let mut client = route.plugin.graph()?;
        Ok(Response::new(call_plugin(&ctx, &route.plugin, client.put_edge(ctx.outbound(req))).await?))
    }

    async fn delete_edge(&self, request: Request<DeleteEdgeRequest>) -> Result<Response<DeleteEdgeResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Write, &req.from)?;
        check_name(&route, "from", &req.from)?;
        check_name(&route, "to", &req.to)?;
        check_name(&route, "label", &req.label)?;
        let mut client = route.plugin.graph()?;
        Ok(Response::new(call_plugin(&ctx, &route.plugin, client.delete_edge(ctx.outbound(req))).await?))
    }

    async fn neighbors(&self, request: Request<NeighborsRequest>) -> Result<Response<NeighborsResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let mut req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Read, &req.id)?;
        check_name(&route, "id", &req.id)?;
        let limits = &self.gateway.config.limits;
        req.limit = match req.limit {
            0 => limits.default_page_size,
            n => n.min(limits.max_page_size),
        };
        let mut client = route.plugin.graph()?;
        Ok(Response::new(call_plugin(&ctx, &route.plugin, client.neighbors(ctx.outbound(req))).await?))
    }

    async fn traverse(&self, request: Request<TraverseRequest>) -> Result<Response<TraverseResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let mut req = request.into_inner();
        let route = self.route(&ctx, &req.namespace, Right::Read, &req.start)?;
        check_name(&route, "start", &req.start)?;
        if req.max_depth < 1 {
            return Err(
                ProxyError::InvalidArgument(format!("max_depth is {}, must be at least 1", req.max_depth)).into()
            );
        }
        // The proxy's page limit caps a traversal too: a request above it is
        // refused rather than silently cut, so the caller knows the answer
        // would not be complete.
        let max = self.gateway.config.limits.max_page_size;
        match req.limit {
            0 => req.limit = self.gateway.config.limits.default_page_size,
            n if n > max => {
                return Err(ProxyError::InvalidArgument(format!(
                    "limit is {n}, over the traversal limit of {max} vertices"
                ))
                .into());
            }
            _ => {}
        }
        let mut client = route.plugin.graph()?;
        Ok(Response::new(call_plugin(&ctx, &route.plugin, client.traverse(ctx.outbound(req))).await?))
    }
}
