//! Graph in memory: vertices by id, edges indexed in both directions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use prism_plugin_sdk::{Direction, Edge, EdgePage, GraphStore, Namespace, PluginError, PluginResult, Vertex};

use crate::{MemStore, NsData, read_lock, write_lock};

type Triple = (String, String, String);

/// A namespace's graph.
#[derive(Default)]
pub(crate) struct Graph {
    vertices: HashMap<String, (String, BTreeMap<String, String>)>,
    /// `(from, label, to)` to the edge's properties.
    out: BTreeMap<Triple, BTreeMap<String, String>>,
    /// `(to, label, from)`, the same edges seen from their target.
    inn: BTreeSet<Triple>,
}

impl Graph {
    pub(crate) fn is_empty(&self) -> bool {
        self.vertices.is_empty()
    }

    /// Keys of `id`'s half-index entries with `label` (any when `None`),
    /// strictly after `after`, in order.
    fn keys<'a>(
        index: impl Fn(Bound<Triple>) -> Box<dyn Iterator<Item = &'a Triple> + 'a>,
        id: &str,
        label: Option<&str>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = &'a Triple> + 'a {
        let start = match after {
            Some((l, o)) => Bound::Excluded((id.to_owned(), l.to_owned(), o.to_owned())),
            None => Bound::Included((id.to_owned(), label.unwrap_or_default().to_owned(), String::new())),
        };
        let (id, label) = (id.to_owned(), label.map(str::to_owned));
        index(start).take_while(move |k| k.0 == id && label.as_ref().is_none_or(|l| &k.1 == l))
    }

    fn half<'a>(
        &'a self,
        id: &str,
        incoming: bool,
        label: Option<&str>,
        after: Option<(&str, &str)>,
    ) -> Box<dyn Iterator<Item = &'a Triple> + 'a> {
        if incoming {
            Box::new(Self::keys(|b| Box::new(self.inn.range((b, Bound::Unbounded))), id, label, after))
        } else {
            Box::new(Self::keys(|b| Box::new(self.out.range((b, Bound::Unbounded)).map(|(k, _)| k)), id, label, after))
        }
    }

    fn edge(&self, from: &str, label: &str, to: &str) -> Edge {
        let key = (from.to_owned(), label.to_owned(), to.to_owned());
        Edge {
            from: key.0.clone(),
            to: key.2.clone(),
            label: key.1.clone(),
            properties: self.out.get(&key).cloned().unwrap_or_default(),
        }
    }
}

impl GraphStore for MemStore {
    async fn put_vertex(&self, ns: &Namespace<Arc<NsData>>, v: Vertex) -> PluginResult<bool> {
        Ok(write_lock(&ns.state.graph).vertices.insert(v.id, (v.label, v.properties)).is_none())
    }

    async fn get_vertex(&self, ns: &Namespace<Arc<NsData>>, id: &str) -> PluginResult<Option<Vertex>> {
        Ok(read_lock(&ns.state.graph).vertices.get(id).map(|(label, properties)| Vertex {
            id: id.to_owned(),
            label: label.clone(),
            properties: properties.clone(),
        }))
    }

    async fn delete_vertex(&self, ns: &Namespace<Arc<NsData>>, id: &str) -> PluginResult<Option<u64>> {
        let mut g = write_lock(&ns.state.graph);
        if g.vertices.remove(id).is_none() {
            return Ok(None);
        }
        let out: Vec<Triple> = g.half(id, false, None, None).cloned().collect();
        let inn: Vec<Triple> = g.half(id, true, None, None).cloned().collect();
        let mut deleted = 0;
        for (from, label, to) in out {
            g.inn.remove(&(to.clone(), label.clone(), from.clone()));
            g.out.remove(&(from, label, to));
            deleted += 1;
        }
        for (to, label, from) in inn {
            // A self-loop was removed with the outgoing edges.
            if g.out.remove(&(from.clone(), label.clone(), to.clone())).is_some() {
                deleted += 1;
            }
            g.inn.remove(&(to, label, from));
        }
        Ok(Some(deleted))
    }

    async fn put_edge(&self, ns: &Namespace<Arc<NsData>>, e: Edge) -> PluginResult<bool> {
        let mut g = write_lock(&ns.state.graph);
        for id in [&e.from, &e.to] {
            if !g.vertices.contains_key(id) {
                return Err(PluginError::NotFound(format!("vertex {id:?} does not exist")));
            }
        }
        g.inn.insert((e.to.clone(), e.label.clone(), e.from.clone()));
        Ok(g.out.insert((e.from, e.label, e.to), e.properties).is_none())
    }

    async fn delete_edge(&self, ns: &Namespace<Arc<NsData>>, from: &str, to: &str, label: &str) -> PluginResult<bool> {
        let mut g = write_lock(&ns.state.graph);
        g.inn.remove(&(to.to_owned(), label.to_owned(), from.to_owned()));
        Ok(g.out.remove(&(from.to_owned(), label.to_owned(), to.to_owned())).is_some())
    }

    async fn edges(
        &self,
        ns: &Namespace<Arc<NsData>>,
        id: &str,
        incoming: bool,
        label: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> PluginResult<EdgePage> {
        let g = read_lock(&ns.state.graph);
        let mut keys = g.half(id, incoming, label, after);
        let edges: Vec<Edge> = keys
            .by_ref()
            .take(limit)
            .map(|(me, l, other)| if incoming { g.edge(other, l, me) } else { g.edge(me, l, other) })
            .collect();
        let more = keys.next().is_some();
        Ok(EdgePage { edges, more })
    }

    async fn expand(
        &self,
        ns: &Namespace<Arc<NsData>>,
        ids: &[String],
        direction: Direction,
        labels: &[String],
        limit: usize,
    ) -> PluginResult<Vec<String>> {
        let g = read_lock(&ns.state.graph);
        let halves: &[bool] = match direction {
            Direction::Out => &[false],
            Direction::In => &[true],
            Direction::Both => &[false, true],
        };
        let filters: Vec<Option<&str>> =
            if labels.is_empty() { vec![None] } else { labels.iter().map(|l| Some(l.as_str())).collect() };
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for id in ids {
            for &incoming in halves {
                for label in &filters {
                    for (_, _, other) in g.half(id, incoming, *label, None) {
                        if found.len() == limit {
                            return Ok(found);
                        }
                        if seen.insert(other.as_str()) {
                            found.push(other.clone());
                        }
                    }
                }
            }
        }
        Ok(found)
    }
}
