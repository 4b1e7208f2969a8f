//! `prismctl graph ...`

use clap::{Subcommand, ValueEnum};
use prism_proto::graph::v1::graph_service_client::GraphServiceClient;
use prism_proto::graph::v1::{
    DeleteEdgeRequest, DeleteVertexRequest, Direction, GetVertexRequest, NeighborsRequest, PutEdgeRequest,
    PutVertexRequest, TraverseRequest,
};
use serde_json::json;

use crate::Client;
use crate::complete::namespaces;
use crate::output::{columns, emit, pairs_cell, table, text_cell};
use crate::ts::parse_pair;

#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Create or replace a vertex.
    #[command(
        after_help = "Examples:\n  prismctl graph put-vertex social alice --label person\n  prismctl graph put-vertex social alice --label person --prop city=Lyon --prop age=31"
    )]
    PutVertex {
        /// The Graph namespace.
        #[arg(add = namespaces("graph"))]
        namespace: String,
        /// The vertex id.
        id: String,
        /// The vertex's label, e.g. its kind.
        #[arg(long, default_value = "")]
        label: String,
        /// A property as key=value (repeatable).
        #[arg(long = "prop", value_parser = parse_pair)]
        properties: Vec<(String, String)>,
    },
    /// Read a vertex.
    #[command(
        after_help = "Examples:\n  prismctl graph get-vertex social alice\n  prismctl -o json graph get-vertex social alice"
    )]
    GetVertex {
        /// The Graph namespace.
        #[arg(add = namespaces("graph"))]
        namespace: String,
        /// The vertex id.
        id: String,
    },
    /// Delete a vertex and all of its edges.
    #[command(after_help = "Examples:\n  prismctl graph delete-vertex social alice")]
    DeleteVertex {
        /// The Graph namespace.
        #[arg(add = namespaces("graph"))]
        namespace: String,
        /// The vertex id.
        id: String,
    },
    /// Create or replace the edge FROM -LABEL-> TO.
    #[command(
        after_help = "Examples:\n  prismctl graph put-edge social alice follows bob\n  prismctl graph put-edge social alice follows bob --prop since=2024"
    )]
    PutEdge {
        /// The Graph namespace.
        #[arg(add = namespaces("graph"))]
        namespace: String,
        /// The vertex the edge leaves.
        from: String,
        /// The edge's label, e.g. its relation.
        label: String,
        /// The vertex the edge reaches.
        to: String,
        /// A property as key=value (repeatable).
        #[arg(long = "prop", value_parser = parse_pair)]
        properties: Vec<(String, String)>,
    },
    /// Delete the edge FROM -LABEL-> TO.
    #[command(after_help = "Examples:\n  prismctl graph delete-edge social alice follows bob")]
    DeleteEdge {
        /// The Graph namespace.
        #[arg(add = namespaces("graph"))]
        namespace: String,
        /// The vertex the edge leaves.
        from: String,
        /// The edge's label.
        label: String,
        /// The vertex the edge reaches.
        to: String,
    },
    /// List a vertex's edges.
    #[command(
        after_help = "Examples:\n  prismctl graph neighbors social alice\n  prismctl graph neighbors social bob --direction in --label follows"
    )]
    Neighbors {
        /// The Graph namespace.
        #[arg(add = namespaces("graph"))]
        namespace: String,
        /// The vertex id.
        id: String,
        /// Which edges: leaving the vertex, reaching it, or both.
        #[arg(long, value_enum, default_value_t = Dir::Out)]
        direction: Dir,
        /// Only edges with this label.
        #[arg(long, default_value = "")]
        label: String,
        /// Edges fetched per call (the proxy may lower it to its own limit).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
    /// Walk breadth first from a vertex.
    #[command(
        after_help = "Examples:\n  prismctl graph traverse social alice\n  prismctl graph traverse social alice --label follows --depth 3"
    )]
    Traverse {
        /// The Graph namespace.
        #[arg(add = namespaces("graph"))]
        namespace: String,
        /// The vertex to start from.
        start: String,
        /// Which edges to follow: leaving each vertex, reaching it, or both.
        #[arg(long, value_enum, default_value_t = Dir::Out)]
        direction: Dir,
        /// Follow only edges with this label (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Longest path followed, in edges.
        #[arg(long, default_value_t = 2, allow_hyphen_values = true)]
        depth: i32,
        /// Most vertices returned (0: the proxy's default).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dir {
    /// Edges leaving the vertex.
    Out,
    /// Edges reaching the vertex.
    In,
    /// Both.
    Both,
}

impl From<Dir> for Direction {
    fn from(d: Dir) -> Self {
        match d {
            Dir::Out => Direction::Out,
            Dir::In => Direction::In,
            Dir::Both => Direction::Both,
        }
    }
}

pub async fn run(client: &Client, cmd: GraphCommand) -> anyhow::Result<()> {
    let mut g = GraphServiceClient::new(client.channel().await?);
    match cmd {
        GraphCommand::PutVertex { namespace, id, label, properties } => {
            let properties = properties.into_iter().collect();
            let r = g
                .put_vertex(client.request(PutVertexRequest { namespace, id: id.clone(), label, properties }))
                .await?
                .into_inner();
            let text = if r.created { "created" } else { "replaced" };
            emit(client.format, &json!({ "id": id, "created": r.created }), || text.to_owned())?;
        }
        GraphCommand::GetVertex { namespace, id } => {
            let r = g.get_vertex(client.request(GetVertexRequest { namespace, id: id.clone() })).await?.into_inner();
            let v = r.vertex.filter(|_| r.found).ok_or_else(|| anyhow::anyhow!("vertex {id:?} not found"))?;
            let doc = json!({ "id": v.id, "label": v.label, "properties": v.properties });
            emit(client.format, &doc, || {
                table(
                    &["ID", "LABEL", "PROPERTIES"],
                    vec![vec![text_cell(&v.id), text_cell(&v.label), pairs_cell(&v.properties)]],
                )
            })?;
        }
        GraphCommand::DeleteVertex { namespace, id } => {
            let r =
                g.delete_vertex(client.request(DeleteVertexRequest { namespace, id: id.clone() })).await?.into_inner();
            let doc = json!({ "id": id, "deleted": r.deleted, "edges_deleted": r.edges_deleted });
            let text =
                if r.deleted { format!("deleted with {} edge(s)", r.edges_deleted) } else { "not found".to_owned() };
            emit(client.format, &doc, || text)?;
        }
        GraphCommand::PutEdge { namespace, from, label, to, properties } => {
            let properties = properties.into_iter().collect();
            let req =
                PutEdgeRequest { namespace, from: from.clone(), to: to.clone(), label: label.clone(), properties };
            let r = g.put_edge(client.request(req)).await?.into_inner();
            let text = if r.created { "created" } else { "replaced" };
            let doc = json!({ "from": from, "label": label, "to": to, "created": r.created });
            emit(client.format, &doc, || text.to_owned())?;
        }
        GraphCommand::DeleteEdge { namespace, from, label, to } => {
            let req = DeleteEdgeRequest { namespace, from: from.clone(), to: to.clone(), label: label.clone() };
            let r = g.delete_edge(client.request(req)).await?.into_inner();
            let text = if r.deleted { "deleted" } else { "not found" };
            emit(client.format, &json!({ "from": from, "label": label, "to": to, "deleted": r.deleted }), || {
                text.to_owned()
            })?;
        }
        GraphCommand::Neighbors { namespace, id, direction, label, page_size } => {
            let mut token = String::new();
            let mut rows = Vec::new();
            loop {
                let r = g
                    .neighbors(client.request(NeighborsRequest {
                        namespace: namespace.clone(),
                        id: id.clone(),
                        direction: Direction::from(direction) as i32,
                        label: label.clone(),
                        limit: page_size,
                        page_token: token,
                    }))
                    .await?
                    .into_inner();
                for n in r.neighbors {
                    let Some(e) = n.edge else { continue };
                    let dir = if n.direction == Direction::In as i32 { "in" } else { "out" };
                    rows.push((dir, e));
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            let docs: Vec<_> = rows
                .iter()
                .map(|(dir, e)| json!({ "direction": dir, "from": e.from, "label": e.label, "to": e.to, "properties": e.properties }))
                .collect();
            emit(client.format, &docs, || {
                let cells = rows
                    .iter()
                    .map(|(dir, e)| {
                        let (from, label, to) = (text_cell(&e.from), text_cell(&e.label), text_cell(&e.to));
                        vec![(*dir).to_owned(), from, label, to, pairs_cell(&e.properties)]
                    })
                    .collect();
                table(columns(client.format, &["DIRECTION", "FROM", "LABEL", "TO", "PROPERTIES"], 4), cells)
            })?;
        }
        GraphCommand::Traverse { namespace, start, direction, labels, depth, limit } => {
            let r = g
                .traverse(client.request(TraverseRequest {
                    namespace,
                    start,
                    direction: Direction::from(direction) as i32,
                    labels,
                    max_depth: depth,
                    limit,
                }))
                .await?
                .into_inner();
            let vertices: Vec<_> = r.vertices.iter().map(|v| json!({ "id": v.id, "depth": v.depth })).collect();
            emit(client.format, &json!({ "vertices": vertices, "truncated": r.truncated }), || {
                let rows = r.vertices.iter().map(|v| vec![v.depth.to_string(), text_cell(&v.id)]).collect();
                let mut text = table(&["DEPTH", "ID"], rows);
                if r.truncated {
                    text.push_str("\n(truncated at the limit; more vertices are reachable)");
                }
                text
            })?;
        }
    }
    Ok(())
}
