//! `prism.graph.v1.GraphService`: each call validated against the proxy's
//! limits, then forwarded to the namespace's plugin (see
//! [`DataPlane::forward`]), which runs traversals in bounded batches (see
//! the plugin SDK).

use prism_proto::graph::v1::graph_service_server::GraphService;
use prism_proto::graph::v1::{
    DeleteEdgeRequest, DeleteEdgeResponse, DeleteVertexRequest, DeleteVertexResponse, GetVertexRequest,
    GetVertexResponse, NeighborsRequest, NeighborsResponse, PutEdgeRequest, PutEdgeResponse, PutVertexRequest,
    PutVertexResponse, TraverseRequest, TraverseResponse,
};
use tonic::{Request, Response, Status};

use super::{DataPlane, check_name, page_size};
use crate::error::ProxyError;
use crate::plugin::unary;
use crate::routes::Route;

pub struct GraphApi {
    plane: DataPlane,
}

impl GraphApi {
    pub fn new(plane: DataPlane) -> Self {
        Self { plane }
    }
}

fn check_properties<'a>(
    route: &Route,
    properties: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<(), ProxyError> {
    let size: usize = properties.map(|(k, v)| k.len() + v.len()).sum();
    if size > route.max_value_bytes {
        return Err(ProxyError::OverLimit {
            limit: "max_value_bytes",
            message: format!(
                "properties are {size} bytes, over the limit of {} bytes for namespace {:?}",
                route.max_value_bytes,
                route.name()
            ),
        });
    }
    Ok(())
}

data_call!(PutVertexRequest => PutVertexResponse, Graph, PutVertex, Write,
    keys(r) (Some(r.id.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.graph()?.put_vertex(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "id", &r.id)?;
        check_properties(route, r.properties.iter())?;
        Ok(None)
    }
);

data_call!(GetVertexRequest => GetVertexResponse, Graph, GetVertex, Read,
    keys(r) (Some(r.id.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.graph()?.get_vertex(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "id", &r.id)?;
        Ok(None)
    },
    compare(r, primary, theirs) when true => {
        if primary.found != theirs.found {
            return Some(format!("found: primary {}, shadow {}", primary.found, theirs.found));
        }
        match (&primary.vertex, &theirs.vertex) {
            (Some(p), Some(t)) if p.label != t.label => Some("label differs".to_owned()),
            (Some(p), Some(t)) if p.properties != t.properties => Some("properties differ".to_owned()),
            _ => None,
        }
    }
);

data_call!(DeleteVertexRequest => DeleteVertexResponse, Graph, DeleteVertex, Write,
    keys(r) (Some(r.id.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.graph()?.delete_vertex(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "id", &r.id)?;
        Ok(None)
    }
);

data_call!(PutEdgeRequest => PutEdgeResponse, Graph, PutEdge, Write,
    keys(r) (Some(r.from.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.graph()?.put_edge(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "from", &r.from)?;
        check_name(route, "to", &r.to)?;
        check_name(route, "label", &r.label)?;
        check_properties(route, r.properties.iter())?;
        Ok(None)
    }
);

data_call!(DeleteEdgeRequest => DeleteEdgeResponse, Graph, DeleteEdge, Write,
    keys(r) (Some(r.from.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.graph()?.delete_edge(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "from", &r.from)?;
        check_name(route, "to", &r.to)?;
        check_name(route, "label", &r.label)?;
        Ok(None)
    }
);

data_call!(NeighborsRequest => NeighborsResponse, Graph, Neighbors, Read,
    keys(r) (Some(r.id.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.graph()?.neighbors(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "id", &r.id)?;
        r.limit = page_size(r.limit, limits);
        Ok(None)
    }
);

data_call!(TraverseRequest => TraverseResponse, Graph, Traverse, Read,
    keys(r) (Some(r.start.as_str()), 1),
    send(r, plugin, options) unary(plugin.name(), plugin.graph()?.traverse(options.request(r))).await,
    validate(r, route, limits) {
        check_name(route, "start", &r.start)?;
        if r.max_depth < 1 {
            return Err(ProxyError::InvalidArgument(format!("max_depth is {}, must be at least 1", r.max_depth)));
        }
        // The proxy's page limit caps a traversal too: a request above it is
        // refused rather than silently cut, so the caller knows the answer
        // would not be complete.
        let max = limits.max_page_size;
        match r.limit {
            0 => r.limit = limits.default_page_size,
            n if n > max => {
                return Err(ProxyError::OverLimit {
                    limit: "max_page_size",
                    message: format!("limit is {n}, over the traversal limit of {max} vertices"),
                });
            }
            _ => {}
        }
        Ok(None)
    }
);

#[tonic::async_trait]
impl GraphService for GraphApi {
    async fn put_vertex(&self, request: Request<PutVertexRequest>) -> Result<Response<PutVertexResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn get_vertex(&self, request: Request<GetVertexRequest>) -> Result<Response<GetVertexResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn delete_vertex(
        &self,
        request: Request<DeleteVertexRequest>,
    ) -> Result<Response<DeleteVertexResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn put_edge(&self, request: Request<PutEdgeRequest>) -> Result<Response<PutEdgeResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn delete_edge(&self, request: Request<DeleteEdgeRequest>) -> Result<Response<DeleteEdgeResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn neighbors(&self, request: Request<NeighborsRequest>) -> Result<Response<NeighborsResponse>, Status> {
        self.plane.forward(request).await
    }

    async fn traverse(&self, request: Request<TraverseRequest>) -> Result<Response<TraverseResponse>, Status> {
        self.plane.forward(request).await
    }
}
