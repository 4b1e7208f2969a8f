//! The `prism.plugin.v1.GraphBackend` service: checks each call against
//! the declared capabilities and limits, calls the [`GraphStore`], and runs
//! traversals breadth first in bounded batches.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use prism_proto::graph::v1::{
    DeleteEdgeRequest, DeleteEdgeResponse, DeleteVertexRequest, DeleteVertexResponse, Direction as WireDirection,
    Edge as WireEdge, GetVertexRequest, GetVertexResponse, Neighbor, NeighborsRequest, NeighborsResponse,
    PutEdgeRequest, PutEdgeResponse, PutVertexRequest, PutVertexResponse, TraverseRequest, TraverseResponse,
    Vertex as WireVertex, Visited,
};
use prism_proto::plugin::v1::graph_backend_server::GraphBackend;
use prism_proto::plugin::v1::{Capabilities, NeighborsCursor, Pattern};
use tonic::{Request, Response, Status};

use crate::backend::{Direction, Edge, GraphStore, Namespace, Vertex};
use crate::call::backend as traced;
use crate::cursor;
use crate::error::PluginError;
use crate::state::{Call, PluginState};
use crate::timeseries::{DEFAULT_PAGE_ITEMS, MAX_PAGE_ITEMS, check_name, declared};

/// Vertices a Traverse returns when it asks for 0.
pub const DEFAULT_TRAVERSE_RESULTS: usize = 100;
/// Most vertices one Traverse may return when the plugin declares none.
pub const MAX_TRAVERSE_RESULTS: usize = 10_000;
/// Deepest Traverse when the plugin declares none.
pub const MAX_TRAVERSE_DEPTH: u32 = 16;
/// Most labels one Traverse may filter on.
const MAX_LABELS: usize = 64;
/// Largest property map of a vertex or edge when neither the plugin nor the
/// namespace sets a value limit.
const MAX_PROPERTIES_BYTES: u64 = 1024 * 1024;

fn check_properties<S>(
    properties: &BTreeMap<String, String>,
    caps: &Capabilities,
    ns: &Namespace<S>,
) -> Result<(), PluginError> {
    let limit = [caps.max_value_bytes, ns.settings().max_value_bytes]
        .into_iter()
        .filter(|l| *l > 0)
        .min()
        .unwrap_or(MAX_PROPERTIES_BYTES);
    let size: usize = properties.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size as u64 > limit {
        return Err(PluginError::InvalidArgument(format!(
            "properties are {size} bytes, over the limit of {limit} bytes"
        )));
    }
    Ok(())
}

fn direction(d: WireDirection) -> Direction {
    match d {
        WireDirection::In => Direction::In,
        WireDirection::Both => Direction::Both,
        WireDirection::Out | WireDirection::Unspecified => Direction::Out,
    }
}

fn wire_edge(e: Edge) -> WireEdge {
    WireEdge { from: e.from, to: e.to, label: e.label, properties: e.properties.into_iter().collect() }
}

fn unknown_vertex(id: &str) -> PluginError {
    PluginError::NotFound(format!("vertex {id:?} does not exist"))
}

pub(crate) struct GraphService<B: GraphStore> {
    pub(crate) state: Arc<PluginState<B>>,
}

#[tonic::async_trait]
impl<B: GraphStore> GraphBackend for GraphService<B> {
    async fn put_vertex(&self, request: Request<PutVertexRequest>) -> Result<Response<PutVertexResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Graph, "Graph", &req.namespace)?;
        check_name("id", &req.id, caps)?;
        let properties: BTreeMap<_, _> = req.properties.into_iter().collect();
        check_properties(&properties, caps, &ns)?;
        let created =
            traced::<B, _>("put_vertex", backend.put_vertex(&ns, Vertex { id: req.id, label: req.label, properties }))
                .await?;
        Ok(Response::new(PutVertexResponse { created }))
    }

    async fn get_vertex(&self, request: Request<GetVertexRequest>) -> Result<Response<GetVertexResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Graph, "Graph", &req.namespace)?;
        check_name("id", &req.id, caps)?;
        let response = match traced::<B, _>("get_vertex", backend.get_vertex(&ns, &req.id)).await? {
            Some(v) => GetVertexResponse {
                found: true,
                vertex: Some(WireVertex { id: v.id, label: v.label, properties: v.properties.into_iter().collect() }),
            },
            None => GetVertexResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn delete_vertex(
        &self,
        request: Request<DeleteVertexRequest>,
    ) -> Result<Response<DeleteVertexResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Graph, "Graph", &req.namespace)?;
        check_name("id", &req.id, caps)?;
        let response = match traced::<B, _>("delete_vertex", backend.delete_vertex(&ns, &req.id)).await? {
            Some(edges_deleted) => DeleteVertexResponse { deleted: true, edges_deleted },
            None => DeleteVertexResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn put_edge(&self, request: Request<PutEdgeRequest>) -> Result<Response<PutEdgeResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Graph, "Graph", &req.namespace)?;
        check_name("from", &req.from, caps)?;
        check_name("to", &req.to, caps)?;
        check_name("label", &req.label, caps)?;
        let properties: BTreeMap<_, _> = req.properties.into_iter().collect();
        check_properties(&properties, caps, &ns)?;
        let created = traced::<B, _>(
            "put_edge",
            backend.put_edge(&ns, Edge { from: req.from, to: req.to, label: req.label, properties }),
        )
        .await?;
        Ok(Response::new(PutEdgeResponse { created }))
    }

    async fn delete_edge(&self, request: Request<DeleteEdgeRequest>) -> Result<Response<DeleteEdgeResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Graph, "Graph", &req.namespace)?;
        check_name("from", &req.from, caps)?;
        check_name("to", &req.to, caps)?;
        check_name("label", &req.label, caps)?;
        let deleted = traced::<B, _>("delete_edge", backend.delete_edge(&ns, &req.from, &req.to, &req.label)).await?;
        Ok(Response::new(DeleteEdgeResponse { deleted }))
    }

    async fn neighbors(&self, request: Request<NeighborsRequest>) -> Result<Response<NeighborsResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Graph, "Graph", &req.namespace)?;
        check_name("id", &req.id, caps)?;
        let dir = direction(req.direction());
        let base = NeighborsCursor {
            namespace: req.namespace.clone(),
            id: req.id.clone(),
            direction: req.direction,
            label: req.label.clone(),
            ..Default::default()
        };
        let after = cursor::decode_neighbors(&base, &req.page_token)?;
        let limit = match req.limit as usize {
            0 => DEFAULT_PAGE_ITEMS,
            n => n.min(declared(caps.max_page_items, MAX_PAGE_ITEMS)),
        };
        if traced::<B, _>("get_vertex", backend.get_vertex(&ns, &req.id)).await?.is_none() {
            return Err(unknown_vertex(&req.id).into());
        }
        let label = (!req.label.is_empty()).then_some(req.label.as_str());
        // A BOTH listing is the outgoing half, then the incoming half; the
        // token says which half it stopped in.
        let halves: &[bool] = match dir {
            Direction::Out => &[false],
            Direction::In => &[true],
            Direction::Both => &[false, true],
        };
        let mut neighbors = Vec::new();
        let mut next: Option<(bool, String, String)> = None;
        for &incoming in halves {
            let resume = match &after {
                Some((half, _, _)) if *half && !incoming => continue,
                Some((half, l, o)) if *half == incoming => Some((l.as_str(), o.as_str())),
                _ => None,
            };
            let want = limit - neighbors.len();
            let page = traced::<B, _>("edges", backend.edges(&ns, &req.id, incoming, label, resume, want)).await?;
            let mut edges = page.edges;
            edges.truncate(want);
            let more_here = page.more;
            let last = edges.last().map(|e| {
                let other = if incoming { e.from.clone() } else { e.to.clone() };
                (incoming, e.label.clone(), other)
            });
            let wire_dir = if incoming { WireDirection::In } else { WireDirection::Out };
            neighbors
                .extend(edges.into_iter().map(|e| Neighbor { edge: Some(wire_edge(e)), direction: wire_dir as i32 }));
            if neighbors.len() >= limit {
                // Full page: a token only when something follows, in this
                // half or in the incoming half still to come.
                let more = more_here
                    || (!incoming
                        && dir == Direction::Both
                        && !backend.edges(&ns, &req.id, true, label, None, 1).await?.edges.is_empty());
                if more {
                    next = last;
                }
                break;
            }
        }
        let next_page_token = next.map_or_else(String::new, |(incoming, after_label, after_other)| {
            cursor::encode_neighbors(&NeighborsCursor { incoming, after_label, after_other, ..base })
        });
        Ok(Response::new(NeighborsResponse { neighbors, next_page_token }))
    }

    async fn traverse(&self, request: Request<TraverseRequest>) -> Result<Response<TraverseResponse>, Status> {
        let req = request.into_inner();
        let Call { backend, caps, ns } = self.state.call(Pattern::Graph, "Graph", &req.namespace)?;
        check_name("start", &req.start, caps)?;
        let max_depth = if caps.max_traverse_depth == 0 { MAX_TRAVERSE_DEPTH } else { caps.max_traverse_depth };
        if req.max_depth < 1 {
            return Err(
                PluginError::InvalidArgument(format!("max_depth is {}, must be at least 1", req.max_depth)).into()
            );
        }
        if req.max_depth as u32 > max_depth {
            return Err(PluginError::InvalidArgument(format!(
                "max_depth is {}, over the limit of {max_depth}",
                req.max_depth
            ))
            .into());
        }
        let max_results = declared(caps.max_traverse_results, MAX_TRAVERSE_RESULTS);
        let limit = match req.limit as usize {
            0 => DEFAULT_TRAVERSE_RESULTS.min(max_results),
            n if n > max_results => {
                return Err(PluginError::InvalidArgument(format!(
                    "limit is {n}, over the traversal limit of {max_results} vertices"
                ))
                .into());
            }
            n => n,
        };
        if req.labels.len() > MAX_LABELS {
            return Err(PluginError::InvalidArgument(format!(
                "{} labels, over the limit of {MAX_LABELS}",
                req.labels.len()
            ))
            .into());
        }
        for label in &req.labels {
            check_name("label", label, caps)?;
        }
        if traced::<B, _>("get_vertex", backend.get_vertex(&ns, &req.start)).await?.is_none() {
            return Err(unknown_vertex(&req.start).into());
        }
        let dir = direction(req.direction());
        let pushed = backend.traverse(&ns, &req.start, dir, &req.labels, req.max_depth as u32, limit);
        if let Some(page) = traced::<B, _>("traverse", pushed).await? {
            let vertices = page.vertices.into_iter().map(|(id, depth)| Visited { id, depth }).collect();
            return Ok(Response::new(TraverseResponse { vertices, truncated: page.truncated }));
        }
        // Everything held here is bounded by `limit`: the visited set, the
        // frontier, and each batch asked of the backend.
        let mut visited: HashSet<String> = HashSet::from([req.start.clone()]);
        let mut frontier = vec![req.start];
        let mut vertices = Vec::new();
        let mut truncated = false;
        let mut depth = 0u32;
        while depth < req.max_depth as u32 && !frontier.is_empty() {
            depth += 1;
            let remaining = limit - vertices.len();
            // Up to `visited.len()` of the answer may be vertices seen
            // already; one more tells whether anything is left beyond the
            // limit.
            let batch = remaining + visited.len() + 1;
            let found = traced::<B, _>("expand", backend.expand(&ns, &frontier, dir, &req.labels, batch)).await?;
            let mut next = Vec::new();
            for id in found {
                if visited.contains(&id) {
                    continue;
                }
                if next.len() == remaining {
                    truncated = true;
                    break;
                }
                visited.insert(id.clone());
                next.push(id);
            }
            vertices.extend(next.iter().map(|id| Visited { id: id.clone(), depth }));
            if truncated {
                break;
            }
            frontier = next;
        }
        Ok(Response::new(TraverseResponse { vertices, truncated }))
    }
}
