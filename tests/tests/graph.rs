//! The Graph pattern through the real proxy, on every backend that serves
//! it: vertices and labelled edges, Neighbors in every direction with label
//! filters and paging, bounded breadth-first traversals, cascading vertex
//! deletes, and the refusal of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::Path;
use std::time::Duration;

use prism_proto::graph::v1::graph_service_client::GraphServiceClient;
use prism_proto::graph::v1::{
    DeleteEdgeRequest, DeleteVertexRequest, Direction, GetVertexRequest, NeighborsRequest, PutEdgeRequest,
    PutVertexRequest, TraverseRequest,
};
use prism_tests::services::{self, POSTGRES};
use prism_tests::{Proxy, ProxyConfig};
use tonic::Code;
use tonic::transport::Channel;

type Graph = GraphServiceClient<Channel>;

async fn vertex(g: &mut Graph, ns: &str, id: &str, label: &str) -> bool {
    let req = PutVertexRequest {
        namespace: ns.into(),
        id: id.into(),
        label: label.into(),
        properties: [("name".to_owned(), id.to_uppercase())].into(),
    };
    g.put_vertex(req).await.unwrap().into_inner().created
}

fn edge(ns: &str, from: &str, label: &str, to: &str) -> PutEdgeRequest {
    PutEdgeRequest {
        namespace: ns.into(),
        from: from.into(),
        to: to.into(),
        label: label.into(),
        properties: [("since".to_owned(), "2024".to_owned())].into(),
    }
}

fn neighbors(ns: &str, id: &str, direction: Direction, label: &str, limit: u32) -> NeighborsRequest {
    NeighborsRequest {
        namespace: ns.into(),
        id: id.into(),
        direction: direction as i32,
        label: label.into(),
        limit,
        page_token: String::new(),
    }
}

/// Every page of a listing as `(direction, from, label, to)`, and the page
/// sizes.
async fn all_neighbors(g: &mut Graph, mut req: NeighborsRequest) -> (Vec<String>, Vec<usize>) {
    let (mut out, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = g.neighbors(req.clone()).await.unwrap().into_inner();
        sizes.push(page.neighbors.len());
        for n in page.neighbors {
            let e = n.edge.unwrap();
            let dir = if n.direction == Direction::In as i32 { "in" } else { "out" };
            out.push(format!("{dir} {}-{}->{}", e.from, e.label, e.to));
        }
        if page.next_page_token.is_empty() {
            return (out, sizes);
        }
        req.page_token = page.next_page_token;
    }
}

fn traverse(
    ns: &str,
    start: &str,
    direction: Direction,
    labels: &[&str],
    max_depth: i32,
    limit: u32,
) -> TraverseRequest {
    TraverseRequest {
        namespace: ns.into(),
        start: start.into(),
        direction: direction as i32,
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        max_depth,
        limit,
    }
}

async fn walk(g: &mut Graph, req: TraverseRequest) -> (Vec<String>, bool) {
    let r = g.traverse(req).await.unwrap().into_inner();
    let mut seen: Vec<String> = r.vertices.iter().map(|v| format!("{}@{}", v.id, v.depth)).collect();
    // Order within one depth is up to the backend.
    seen.sort_by_key(|s| (s.rsplit('@').next().unwrap().parse::<u32>().unwrap(), s.clone()));
    (seen, r.truncated)
}

/// The scenario every backend must pass on namespace `ns`: a small social
/// graph.
async fn scenario(proxy: &Proxy, ns: &str) {
    let mut g = proxy.graph().await;
    for p in ["alice", "bob", "carol", "dave", "erin"] {
        assert!(vertex(&mut g, ns, p, "person").await);
    }
    assert!(vertex(&mut g, ns, "acme", "company").await);
    assert!(!vertex(&mut g, ns, "acme", "company").await, "a second put replaces");
    for (from, label, to) in [
        ("alice", "follows", "bob"),
        ("alice", "follows", "carol"),
        ("bob", "follows", "carol"),
        ("carol", "follows", "dave"),
        ("dave", "follows", "erin"),
        ("alice", "works_at", "acme"),
        ("bob", "works_at", "acme"),
    ] {
        assert!(g.put_edge(edge(ns, from, label, to)).await.unwrap().into_inner().created);
    }
    assert!(!g.put_edge(edge(ns, "alice", "follows", "bob")).await.unwrap().into_inner().created);

    let got = g.get_vertex(GetVertexRequest { namespace: ns.into(), id: "alice".into() }).await.unwrap().into_inner();
    let v = got.vertex.unwrap();
    assert!(got.found);
    assert_eq!((v.label.as_str(), v.properties["name"].as_str()), ("person", "ALICE"));

    // Neighbors in every direction, with and without a label, page by page.
    let (all, sizes) = all_neighbors(&mut g, neighbors(ns, "alice", Direction::Out, "", 1)).await;
    assert_eq!(all, ["out alice-follows->bob", "out alice-follows->carol", "out alice-works_at->acme"]);
    assert_eq!(sizes, [1, 1, 1]);
    let (follows, _) = all_neighbors(&mut g, neighbors(ns, "alice", Direction::Out, "follows", 0)).await;
    assert_eq!(follows, ["out alice-follows->bob", "out alice-follows->carol"]);
    let (inn, _) = all_neighbors(&mut g, neighbors(ns, "carol", Direction::In, "", 0)).await;
    assert_eq!(inn, ["in alice-follows->carol", "in bob-follows->carol"]);
    let (both, sizes) = all_neighbors(&mut g, neighbors(ns, "bob", Direction::Both, "", 2)).await;
    assert_eq!(both, ["out bob-follows->carol", "out bob-works_at->acme", "in alice-follows->bob"]);
    assert_eq!(sizes, [2, 1]);
    let (both, sizes) = all_neighbors(&mut g, neighbors(ns, "bob", Direction::Both, "works_at", 1)).await;
    assert_eq!((both, sizes), (vec!["out bob-works_at->acme".to_owned()], vec![1]));
    let page = g.neighbors(neighbors(ns, "alice", Direction::Out, "", 1)).await.unwrap().into_inner();
    assert_eq!(page.neighbors[0].edge.as_ref().unwrap().properties["since"], "2024");

    // Breadth first, bounded by depth and by the result limit.
    let follows = &["follows"];
    assert_eq!(
        walk(&mut g, traverse(ns, "alice", Direction::Out, follows, 2, 0)).await,
        (vec!["bob@1".into(), "carol@1".into(), "dave@2".into()], false)
    );
    assert_eq!(
        walk(&mut g, traverse(ns, "alice", Direction::Out, follows, 10, 0)).await,
        (vec!["bob@1".into(), "carol@1".into(), "dave@2".into(), "erin@3".into()], false)
    );
    let (seen, truncated) = walk(&mut g, traverse(ns, "alice", Direction::Out, follows, 10, 2)).await;
    assert_eq!((seen.len(), truncated), (2, true));
    let (seen, truncated) = walk(&mut g, traverse(ns, "alice", Direction::Out, follows, 10, 4)).await;
    assert_eq!((seen.len(), truncated), (4, false), "exactly the limit, nothing left");
    assert_eq!(
        walk(&mut g, traverse(ns, "erin", Direction::In, &[], 2, 0)).await,
        (vec!["dave@1".into(), "carol@2".into()], false)
    );
    assert_eq!(
        walk(&mut g, traverse(ns, "acme", Direction::Both, &[], 1, 0)).await,
        (vec!["alice@1".into(), "bob@1".into()], false)
    );

    // Bad input.
    let err = g.put_edge(edge(ns, "alice", "follows", "nobody")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nobody"), "{}", err.message());
    let err = g.put_edge(edge(ns, "alice", "", "bob")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = g.neighbors(neighbors(ns, "nobody", Direction::Out, "", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = g.traverse(traverse(ns, "nobody", Direction::Out, &[], 1, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = g.traverse(traverse(ns, "alice", Direction::Out, &[], -1, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("max_depth"), "{}", err.message());
    let err = g.traverse(traverse(ns, "alice", Direction::Out, &[], 0, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = g.traverse(traverse(ns, "alice", Direction::Out, &[], 1000, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("over the limit of 16"), "{}", err.message());
    let err = g.traverse(traverse(ns, "alice", Direction::Out, &[], 2, 1001)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("traversal limit of 1000"), "{}", err.message());
    let mut wrong = neighbors(ns, "bob", Direction::Out, "", 1);
    wrong.page_token =
        g.neighbors(neighbors(ns, "alice", Direction::Out, "", 1)).await.unwrap().into_inner().next_page_token;
    assert_eq!(g.neighbors(wrong).await.unwrap_err().code(), Code::InvalidArgument);

    // Deleting a vertex deletes its edges, in both directions.
    let deleted =
        g.delete_vertex(DeleteVertexRequest { namespace: ns.into(), id: "carol".into() }).await.unwrap().into_inner();
    assert_eq!((deleted.deleted, deleted.edges_deleted), (true, 3));
    let again = g.delete_vertex(DeleteVertexRequest { namespace: ns.into(), id: "carol".into() }).await.unwrap();
    assert!(!again.into_inner().deleted);
    let (follows, _) = all_neighbors(&mut g, neighbors(ns, "alice", Direction::Out, "follows", 0)).await;
    assert_eq!(follows, ["out alice-follows->bob"]);
    let (inn, _) = all_neighbors(&mut g, neighbors(ns, "dave", Direction::In, "", 0)).await;
    assert!(inn.is_empty(), "{inn:?}");
    let got = g.get_vertex(GetVertexRequest { namespace: ns.into(), id: "carol".into() }).await.unwrap().into_inner();
    assert!(!got.found);
    let del = |from: &str, to: &str| DeleteEdgeRequest {
        namespace: ns.into(),
        from: from.into(),
        to: to.into(),
        label: "works_at".into(),
    };
    assert!(g.delete_edge(del("bob", "acme")).await.unwrap().into_inner().deleted);
    assert!(!g.delete_edge(del("bob", "acme")).await.unwrap().into_inner().deleted);

    // A hub with many followers pages through all of them once, and a
    // traversal from it stops at its limit.
    assert!(vertex(&mut g, ns, "hub", "person").await);
    for i in 0..250 {
        let f = format!("fan{i:03}");
        vertex(&mut g, ns, &f, "person").await;
        g.put_edge(edge(ns, &f, "follows", "hub")).await.unwrap();
    }
    let (fans, sizes) = all_neighbors(&mut g, neighbors(ns, "hub", Direction::In, "follows", 100)).await;
    assert_eq!(sizes, [100, 100, 50]);
    let expected: Vec<String> = (0..250).map(|i| format!("in fan{i:03}-follows->hub")).collect();
    assert_eq!(fans, expected);
    let (seen, truncated) = walk(&mut g, traverse(ns, "hub", Direction::In, &[], 3, 100)).await;
    assert_eq!((seen.len(), truncated), (100, true));
}

#[tokio::test]
async fn memstore() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .pattern_namespace("social", "graph", "memstore", "")
        .start();
    scenario(&proxy, "social").await;
}

fn sqlite_config(db: &Path) -> ProxyConfig {
    ProxyConfig::new()
        .plugin("sqlite", &format!("command: [prism-plugin-sqlite]\nconfig: {{path: \"{}\"}}", db.display()))
        .pattern_namespace("social", "graph", "sqlite", "")
        .pattern_namespace("other", "graph", "sqlite", "")
}

#[tokio::test]
async fn sqlite_with_isolation_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("graph.sqlite3");
    let mut proxy = sqlite_config(&db).start();
    scenario(&proxy, "social").await;
    // Namespaces on one plugin do not see each other's vertices.
    let mut g = proxy.graph().await;
    let got = g.get_vertex(GetVertexRequest { namespace: "other".into(), id: "alice".into() }).await.unwrap();
    assert!(!got.into_inner().found);
    assert!(proxy.terminate(Duration::from_secs(30)).success());

    let proxy = sqlite_config(&db).start();
    let mut g = proxy.graph().await;
    let (follows, _) = all_neighbors(&mut g, neighbors("social", "alice", Direction::Out, "follows", 0)).await;
    assert_eq!(follows, ["out alice-follows->bob"]);
}

#[tokio::test]
async fn postgres() {
    if !services::require(POSTGRES) {
        return;
    }
    let schema = format!("prism_graph_{}", std::process::id());
    let plugin = format!(
        "command: [prism-plugin-postgres]\nconfig: {{url: \"{}\", schema: {schema}}}",
        services::postgres_url()
    );
    let proxy =
        ProxyConfig::new().plugin("postgres", &plugin).pattern_namespace("social", "graph", "postgres", "").start();
    scenario(&proxy, "social").await;
    drop(proxy);
    services::drop_postgres_schema(&schema).await;
}

/// Through the proxy on FalkorDB (openCypher), started on a spare port;
/// a namespace without `spec.backend` goes to it by the selection table.
#[tokio::test]
async fn falkordb() {
    let Some(bin) = services::require_falkordb() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut server = services::PrivateServer::falkordb(&bin, services::free_port(), dir.path());
    server.start();
    let plugin = format!("command: [prism-plugin-falkordb]\nconfig: {{url: \"redis://127.0.0.1:{}\"}}", server.port);
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .plugin("falkordb", &plugin)
        .namespace_file(
            "social.yaml",
            "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: social}\nspec:\n  pattern: graph\n",
        )
        .start();
    let mut admin = proxy.admin().await;
    let got = admin
        .get_namespace(prism_proto::admin::v1::GetNamespaceRequest { name: "social".into() })
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap();
    assert_eq!(got.backend, "falkordb", "{got:?}");
    scenario(&proxy, "social").await;
}
