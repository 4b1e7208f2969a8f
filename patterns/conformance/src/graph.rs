//! The Graph checks.

use prism_proto::graph::v1::{
    DeleteVertexRequest, Direction, GetVertexRequest, NeighborsRequest, PutEdgeRequest, PutVertexRequest,
    TraverseRequest,
};
use prism_proto::plugin::v1::Pattern;
use tonic::Code;

use crate::Declared;
use crate::runner::{Check, Recorder, Suite, expect_code, show};

/// Runs the Graph checks, each as declared or refused.
pub(crate) async fn checks(suite: &Suite<'_>, r: &mut Recorder, declared: &Declared) {
    if declared.graph {
        r.claimed("graph.vertices_edges", "graph", suite.graph_vertices_edges()).await;
        r.claimed("graph.neighbors_paging", "graph", suite.graph_neighbors_paging()).await;
        r.claimed("graph.traverse_bounded", "graph", suite.graph_traverse_bounded()).await;
        r.claimed("graph.awkward_names", "graph", suite.graph_awkward_names()).await;
        r.claimed("graph.isolation", "graph", suite.graph_isolation()).await;
    } else {
        r.refused("graph.refused", "graph", suite.graph_refused()).await;
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

fn traverse(ns: &str, start: &str, max_depth: i32, limit: u32) -> TraverseRequest {
    TraverseRequest {
        namespace: ns.into(),
        start: start.into(),
        direction: Direction::Out as i32,
        labels: Vec::new(),
        max_depth,
        limit,
    }
}

impl Suite<'_> {
    async fn graph_namespace(&self) -> Result<String, String> {
        self.namespace_of(Pattern::Graph, 0).await
    }

    async fn vertex(&self, ns: &str, id: &str) -> Result<bool, String> {
        let req = PutVertexRequest { namespace: ns.into(), id: id.into(), label: "v".into(), ..Default::default() };
        let r = self.plugin.graph().put_vertex(req).await.map_err(|s| format!("PutVertex {id}: {}", show(&s)))?;
        Ok(r.into_inner().created)
    }

    async fn edge(&self, ns: &str, from: &str, label: &str, to: &str) -> Result<bool, String> {
        let req = PutEdgeRequest {
            namespace: ns.into(),
            from: from.into(),
            to: to.into(),
            label: label.into(),
            ..Default::default()
        };
        let r = self.plugin.graph().put_edge(req).await.map_err(|s| format!("PutEdge {from}->{to}: {}", show(&s)))?;
        Ok(r.into_inner().created)
    }

    /// Every edge of a listing as `from-label->to`, following page tokens.
    async fn edges_of(&self, mut req: NeighborsRequest) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let page = self
                .plugin
                .graph()
                .neighbors(req.clone())
                .await
                .map_err(|s| format!("Neighbors: {}", show(&s)))?
                .into_inner();
            ensure!(
                page.neighbors.len() <= req.limit as usize,
                "a page of {} for limit {}",
                page.neighbors.len(),
                req.limit
            );
            for n in page.neighbors {
                let e = n.edge.unwrap_or_default();
                out.push(format!("{}-{}->{}", e.from, e.label, e.to));
            }
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            req.page_token = page.next_page_token;
        }
        Err("neighbors did not end after 10000 pages".to_owned())
    }

    async fn reached(&self, req: TraverseRequest) -> Result<(Vec<String>, bool), String> {
        let r = self.plugin.graph().traverse(req).await.map_err(|s| format!("Traverse: {}", show(&s)))?.into_inner();
        let mut ids: Vec<String> = r.vertices.iter().map(|v| format!("{}@{}", v.id, v.depth)).collect();
        ids.sort();
        Ok((ids, r.truncated))
    }

    pub(super) async fn graph_vertices_edges(&self) -> Check {
        let ns = self.graph_namespace().await?;
        ensure!(self.vertex(&ns, "a").await?, "a new vertex was not created");
        ensure!(!self.vertex(&ns, "a").await?, "a second PutVertex did not replace");
        self.vertex(&ns, "b").await?;
        ensure!(self.edge(&ns, "a", "knows", "b").await?, "a new edge was not created");
        ensure!(!self.edge(&ns, "a", "knows", "b").await?, "a second PutEdge did not replace");
        self.edge(&ns, "b", "knows", "a").await?;
        self.edge(&ns, "a", "likes", "a").await?;
        let r = self
            .plugin
            .graph()
            .put_edge(PutEdgeRequest {
                namespace: ns.clone(),
                from: "a".into(),
                to: "nobody".into(),
                label: "x".into(),
                ..Default::default()
            })
            .await;
        expect_code(r, Code::NotFound, "PutEdge to a missing vertex")?;
        let deleted = self
            .plugin
            .graph()
            .delete_vertex(DeleteVertexRequest { namespace: ns.clone(), id: "a".into() })
            .await
            .map_err(|s| format!("DeleteVertex: {}", show(&s)))?
            .into_inner();
        ensure!(deleted.deleted && deleted.edges_deleted == 3, "DeleteVertex answered {deleted:?}, expected 3 edges");
        let got = self
            .plugin
            .graph()
            .get_vertex(GetVertexRequest { namespace: ns.clone(), id: "a".into() })
            .await
            .map_err(|s| format!("GetVertex: {}", show(&s)))?
            .into_inner();
        ensure!(!got.found, "a deleted vertex is still found");
        let left = self.edges_of(neighbors(&ns, "b", Direction::Both, "", 10)).await?;
        ensure!(left.is_empty(), "edges of a deleted vertex remain: {left:?}");
        Ok(())
    }

    /// Ids and labels made of the characters a query language quotes or
    /// escapes with (quotes, backticks, braces, backslashes, `$`, a
    /// comment opener) are stored and matched as plain text: a backend that
    /// built statements from them would fail here or match the wrong thing.
    pub(super) async fn graph_awkward_names(&self) -> Check {
        let ns = self.graph_namespace().await?;
        let ids = ["q\"uote", "it's", "back`tick", "{brace}", "back\\slash\\", "$id", "a // b /* c", "ü-ñ"];
        for id in ids {
            ensure!(self.vertex(&ns, id).await?, "vertex {id:?} was not created");
        }
        let label = "l`a\"b'e{l}\\";
        for pair in ids.windows(2) {
            self.edge(&ns, pair[0], label, pair[1]).await?;
        }
        for id in ids {
            let got = self
                .plugin
                .graph()
                .get_vertex(GetVertexRequest { namespace: ns.clone(), id: id.into() })
                .await
                .map_err(|s| format!("GetVertex {id:?}: {}", show(&s)))?
                .into_inner();
            ensure!(got.found && got.vertex.is_some_and(|v| v.id == id), "vertex {id:?} not found as written");
        }
        let mut listed = self.edges_of(neighbors(&ns, ids[0], Direction::Out, label, 10)).await?;
        ensure!(
            listed == [format!("{}-{label}->{}", ids[0], ids[1])],
            "edges of {:?} with label {label:?}: {listed:?}",
            ids[0]
        );
        listed = self.edges_of(neighbors(&ns, ids[0], Direction::Out, "l", 10)).await?;
        ensure!(listed.is_empty(), "a label prefix matched: {listed:?}");
        let mut walk = traverse(&ns, ids[0], 16, 100);
        walk.labels = vec![label.to_owned()];
        let (reached, _) = self.reached(walk).await?;
        let expected: Vec<String> = {
            let mut e: Vec<String> = ids[1..].iter().enumerate().map(|(i, id)| format!("{id}@{}", i + 1)).collect();
            e.sort();
            e
        };
        ensure!(reached == expected, "traversal over awkward names reached {reached:?}, expected {expected:?}");
        Ok(())
    }

    pub(super) async fn graph_neighbors_paging(&self) -> Check {
        let ns = self.graph_namespace().await?;
        self.vertex(&ns, "hub").await?;
        let mut expected_out = Vec::new();
        for i in 0..23 {
            let v = format!("v{i:02}");
            self.vertex(&ns, &v).await?;
            let label = if i % 2 == 0 { "even" } else { "odd" };
            self.edge(&ns, "hub", label, &v).await?;
            self.edge(&ns, &v, "back", "hub").await?;
            expected_out.push(format!("hub-{label}->{v}"));
        }
        expected_out.sort_by_key(|e| (e.split("->").next().map(str::to_owned), e.clone()));
        let out = self.edges_of(neighbors(&ns, "hub", Direction::Out, "", 5)).await?;
        ensure!(out == expected_out, "outgoing pages read {out:?}");
        let odd = self.edges_of(neighbors(&ns, "hub", Direction::Out, "odd", 4)).await?;
        ensure!(odd.len() == 11 && odd.iter().all(|e| e.contains("-odd->")), "label filter read {odd:?}");
        let both = self.edges_of(neighbors(&ns, "hub", Direction::Both, "", 6)).await?;
        ensure!(both.len() == 46, "both directions read {} edges, expected 46", both.len());
        ensure!(both[..23] == expected_out[..], "BOTH does not list the outgoing edges first");
        let r = self.plugin.graph().neighbors(neighbors(&ns, "nobody", Direction::Out, "", 1)).await;
        expect_code(r, Code::NotFound, "Neighbors of a missing vertex")
    }

    pub(super) async fn graph_traverse_bounded(&self) -> Check {
        let ns = self.graph_namespace().await?;
        // A chain a -> b -> c -> d, and a fan from a.
        for v in ["a", "b", "c", "d", "f1", "f2", "f3"] {
            self.vertex(&ns, v).await?;
        }
        for (from, to) in [("a", "b"), ("b", "c"), ("c", "d"), ("a", "f1"), ("a", "f2"), ("a", "f3"), ("d", "a")] {
            self.edge(&ns, from, "next", to).await?;
        }
        let (ids, truncated) = self.reached(traverse(&ns, "a", 2, 0)).await?;
        ensure!(ids == ["b@1", "c@2", "f1@1", "f2@1", "f3@1"] && !truncated, "depth 2 reached {ids:?} ({truncated})");
        let (ids, truncated) = self.reached(traverse(&ns, "a", 10, 0)).await?;
        ensure!(ids.len() == 6 && !truncated, "a cycle is walked once: {ids:?}");
        let (ids, truncated) = self.reached(traverse(&ns, "a", 10, 3)).await?;
        ensure!(ids.len() == 3 && truncated, "limit 3 returned {ids:?}, truncated={truncated}");
        let (ids, truncated) = self.reached(traverse(&ns, "a", 10, 6)).await?;
        ensure!(ids.len() == 6 && !truncated, "limit equal to the reachable count: {ids:?}, truncated={truncated}");
        let r = self.plugin.graph().traverse(traverse(&ns, "a", -1, 0)).await;
        expect_code(r, Code::InvalidArgument, "Traverse with a negative depth")?;
        let depth = if self.caps.max_traverse_depth == 0 { 16 } else { self.caps.max_traverse_depth };
        let r = self.plugin.graph().traverse(traverse(&ns, "a", depth as i32 + 1, 0)).await;
        expect_code(r, Code::InvalidArgument, "Traverse deeper than the declared limit")?;
        let max = if self.caps.max_traverse_results == 0 { 10_000 } else { self.caps.max_traverse_results };
        let r = self.plugin.graph().traverse(traverse(&ns, "a", 1, u32::try_from(max + 1).unwrap_or(u32::MAX))).await;
        expect_code(r, Code::InvalidArgument, "Traverse with a limit over the declared maximum")?;
        let r = self.plugin.graph().traverse(traverse(&ns, "nobody", 1, 0)).await;
        expect_code(r, Code::NotFound, "Traverse from a missing vertex")
    }

    pub(super) async fn graph_isolation(&self) -> Check {
        let a = self.graph_namespace().await?;
        let b = format!("{a}0");
        self.prepare_with(&b, Pattern::Graph, 0).await?;
        self.vertex(&a, "x").await?;
        self.vertex(&b, "x").await?;
        self.vertex(&b, "y").await?;
        self.edge(&b, "x", "l", "y").await?;
        let out = self.edges_of(neighbors(&a, "x", Direction::Both, "", 10)).await?;
        ensure!(out.is_empty(), "namespace a sees b's edges: {out:?}");
        let r = self
            .plugin
            .graph()
            .put_edge(PutEdgeRequest {
                namespace: a,
                from: "x".into(),
                to: "y".into(),
                label: "l".into(),
                ..Default::default()
            })
            .await;
        expect_code(r, Code::NotFound, "PutEdge to a vertex of another namespace")
    }

    pub(super) async fn graph_refused(&self) -> Check {
        let ns = self.namespace().await?;
        let req = PutVertexRequest { namespace: ns.clone(), id: "v".into(), ..Default::default() };
        expect_code(self.plugin.graph().put_vertex(req).await, Code::Unimplemented, "PutVertex")?;
        let r = self.plugin.graph().traverse(traverse(&ns, "v", 1, 0)).await;
        expect_code(r, Code::Unimplemented, "Traverse")
    }

    /// Writes a small graph to check after a restart; `None` when the
    /// pattern is not declared.
    pub(super) async fn graph_before_restart(&self) -> Result<Option<String>, String> {
        if !self.caps.patterns.contains(&(Pattern::Graph as i32)) {
            return Ok(None);
        }
        let ns = self.graph_namespace().await?;
        self.vertex(&ns, "a").await?;
        self.vertex(&ns, "b").await?;
        self.edge(&ns, "a", "l", "b").await?;
        Ok(Some(ns))
    }

    pub(super) async fn graph_after_restart(&self, ns: Option<String>) -> Check {
        let Some(ns) = ns else { return Ok(()) };
        self.prepare_with(&ns, Pattern::Graph, 0).await?;
        let out = self.edges_of(neighbors(&ns, "a", Direction::Out, "", 10)).await?;
        ensure!(out == ["a-l->b"], "after a restart the edges of a are {out:?}");
        Ok(())
    }

    /// TimeSeries and Graph data written before a restart.
    pub(crate) async fn patterns_before_restart(&self) -> Result<(Option<String>, Option<String>), String> {
        Ok((self.ts_before_restart().await?, self.graph_before_restart().await?))
    }

    pub(crate) async fn patterns_after_restart(&self, (ts, graph): (Option<String>, Option<String>)) -> Check {
        self.ts_after_restart(ts).await?;
        self.graph_after_restart(graph).await
    }
}
