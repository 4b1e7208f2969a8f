//! Every openCypher statement of the plugin, and how its parameters are
//! sent. Kept in one place so another openCypher endpoint (Neptune, say)
//! could reuse the statements with its own transport.
//!
//! Model: one graph per namespace. A vertex is a node `:V {id, label,
//! props}`; an edge is a relationship `:E {label, props}`; `props` is the
//! JSON text of the properties. The user's vertex and edge labels are
//! property values, never node labels or relationship types, because those
//! cannot be parameters in openCypher: no statement is ever built from user
//! input. The only numbers spliced into a statement are the traversal
//! depth, which the SDK has checked.

use std::fmt::Write;

/// A parameter value.
pub enum Param<'a> {
    Str(&'a str),
    Strs(&'a [String]),
    Int(i64),
    Null,
}

/// A statement with its parameters, sent as `CYPHER k=v ... <statement>`
/// (FalkorDB's parameter header).
pub struct Query {
    text: String,
}

impl Query {
    pub fn new(statement: &str, params: &[(&str, Param<'_>)]) -> Self {
        let mut text = String::from("CYPHER");
        for (name, value) in params {
            let _ = write!(text, " {name}=");
            match value {
                Param::Str(s) => quote(&mut text, s),
                Param::Strs(list) => {
                    text.push('[');
                    for (i, s) in list.iter().enumerate() {
                        if i > 0 {
                            text.push(',');
                        }
                        quote(&mut text, s);
                    }
                    text.push(']');
                }
                Param::Int(n) => {
                    let _ = write!(text, "{n}");
                }
                Param::Null => text.push_str("null"),
            }
        }
        text.push(' ');
        text.push_str(statement);
        Self { text }
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A string literal: `"` and `\` escaped with `\`, everything else as is.
fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

pub const CREATE_INDEX: &str = "CREATE INDEX FOR (v:V) ON (v.id)";

/// Returns whether the vertex existed before.
pub const PUT_VERTEX: &str = "OPTIONAL MATCH (old:V {id: $id}) WITH count(old) AS existed \
     MERGE (v:V {id: $id}) SET v.label = $label, v.props = $props RETURN existed";

pub const GET_VERTEX: &str = "MATCH (v:V {id: $id}) RETURN v.label, v.props";

/// One row (the number of edges removed) when the vertex existed, none
/// otherwise. One statement, so the vertex and its edges go together.
pub const DELETE_VERTEX: &str = "MATCH (v:V {id: $id}) OPTIONAL MATCH (v)-[e:E]-() \
     WITH v, count(DISTINCT e) AS edges DELETE v RETURN edges";

/// One row (whether the edge existed) when both ends exist, none otherwise.
pub const PUT_EDGE: &str = "MATCH (a:V {id: $from}), (b:V {id: $to}) \
     OPTIONAL MATCH (a)-[old:E {label: $label}]->(b) WITH a, b, count(old) AS existed \
     MERGE (a)-[e:E {label: $label}]->(b) SET e.props = $props RETURN existed";

pub const VERTICES_EXIST: &str = "UNWIND $ids AS x MATCH (v:V {id: x}) RETURN v.id";

pub const DELETE_EDGE: &str = "MATCH (:V {id: $from})-[e:E {label: $label}]->(:V {id: $to}) DELETE e RETURN 1";

/// A page of outgoing or incoming edges ordered by (label, other end),
/// strictly after ($after_label, $after_other) when those are set.
pub fn edges(incoming: bool) -> &'static str {
    if incoming {
        "MATCH (a:V)-[e:E]->(b:V {id: $id}) \
         WHERE ($label IS NULL OR e.label = $label) \
           AND ($after_label IS NULL OR e.label > $after_label OR (e.label = $after_label AND a.id > $after_other)) \
         RETURN a.id, e.label, b.id, e.props ORDER BY e.label, a.id LIMIT $limit"
    } else {
        "MATCH (a:V {id: $id})-[e:E]->(b:V) \
         WHERE ($label IS NULL OR e.label = $label) \
           AND ($after_label IS NULL OR e.label > $after_label OR (e.label = $after_label AND b.id > $after_other)) \
         RETURN a.id, e.label, b.id, e.props ORDER BY e.label, b.id LIMIT $limit"
    }
}

/// The edge pattern of a direction, from `a` to `b`.
fn arrow(direction: prism_plugin_sdk::Direction) -> (&'static str, &'static str) {
    match direction {
        prism_plugin_sdk::Direction::Out => ("-", "->"),
        prism_plugin_sdk::Direction::In => ("<-", "-"),
        prism_plugin_sdk::Direction::Both => ("-", "-"),
    }
}

/// Distinct vertices one edge away from any of `$ids`.
pub fn expand(direction: prism_plugin_sdk::Direction) -> String {
    let (left, right) = arrow(direction);
    format!(
        "UNWIND $ids AS x MATCH (a:V {{id: x}}){left}[e:E]{right}(b:V) \
         WHERE size($labels) = 0 OR e.label IN $labels RETURN DISTINCT b.id LIMIT $limit"
    )
}

/// Every vertex within `max_depth` edges of `$start` with its depth,
/// nearest first: a breadth-first walk written out level by level in one
/// statement, so the whole walk runs in the database in one round trip.
/// Each level expands only the previous level's new vertices (linear in
/// what it reaches, unlike a variable-length match, which enumerates every
/// path and grows exponentially with the depth), and the walk stops
/// expanding once more than `$limit` vertices were found. `max_depth` is a
/// number the SDK checked (1 to its limit): the one value spliced into the
/// text, as the number of levels.
pub fn traverse(direction: prism_plugin_sdk::Direction, max_depth: u32) -> String {
    let (left, right) = arrow(direction);
    let mut q = String::from("MATCH (s:V {id: $start}) WITH [s] AS seen, [s] AS frontier, [] AS out ");
    for depth in 1..=max_depth {
        let _ = write!(
            q,
            "UNWIND CASE WHEN size(frontier) = 0 THEN [null] ELSE frontier END AS f \
             OPTIONAL MATCH (f){left}[e:E]{right}(n:V) \
             WHERE (size($labels) = 0 OR e.label IN $labels) AND NOT n IN seen \
             WITH seen, out, collect(DISTINCT n) AS next \
             WITH seen + next AS seen, \
                  CASE WHEN size(out) + size(next) > $limit THEN [] ELSE next END AS frontier, \
                  out + [x IN next | [x.id, {depth}]] AS out "
        );
    }
    q.push_str("UNWIND out AS o RETURN o[0], o[1] LIMIT $limit");
    q
}

pub const COUNT: &str = "MATCH (v:V) RETURN count(v)";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parameters_are_quoted_literals() {
        let ids = vec!["a\"b".to_owned(), "c\\d".to_owned()];
        let q = Query::new(
            "RETURN 1",
            &[("id", Param::Str("x`{y}'\"z")), ("ids", Param::Strs(&ids)), ("n", Param::Int(-3)), ("l", Param::Null)],
        );
        assert_eq!(q.text(), r#"CYPHER id="x`{y}'\"z" ids=["a\"b","c\\d"] n=-3 l=null RETURN 1"#);
    }
}
