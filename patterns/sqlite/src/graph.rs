//! Graph on SQLite: adjacency tables. Edges are keyed by
//! `(ns, src, label, dst)` with a second index on `(ns, dst, label, src)`, so
//! both directions of a listing are index range walks.

use prism_plugin_sdk::retention::{map_from_json, map_to_json};
use prism_plugin_sdk::{Direction, Edge, EdgePage, GraphStore, Namespace, PluginError, PluginResult, Vertex};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{Sqlite, db_error};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS graph_vertices (
    ns         TEXT NOT NULL,
    id         TEXT NOT NULL,
    label      TEXT NOT NULL,
    properties TEXT NOT NULL,
    PRIMARY KEY (ns, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS graph_edges (
    ns         TEXT NOT NULL,
    src        TEXT NOT NULL,
    label      TEXT NOT NULL,
    dst        TEXT NOT NULL,
    properties TEXT NOT NULL,
    PRIMARY KEY (ns, src, label, dst)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS graph_edges_in ON graph_edges (ns, dst, label, src);
";

fn vertex_exists(conn: &Connection, ns: &str, id: &str) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM graph_vertices WHERE ns = ?1 AND id = ?2)")?
        .query_row(params![ns, id], |r| r.get(0))
}

impl GraphStore for Sqlite {
    async fn put_vertex(&self, ns: &Namespace<()>, v: Vertex) -> PluginResult<bool> {
        let ns = ns.name().to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
            let existed = vertex_exists(&tx, &ns, &v.id).map_err(db_error)?;
            tx.prepare_cached(
                "INSERT INTO graph_vertices (ns, id, label, properties) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ns, id) DO UPDATE SET label = excluded.label, properties = excluded.properties",
            )
            .and_then(|mut s| s.execute(params![ns, v.id, v.label, map_to_json(&v.properties)]))
            .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(!existed)
        })
        .await
    }

    async fn get_vertex(&self, ns: &Namespace<()>, id: &str) -> PluginResult<Option<Vertex>> {
        let (ns, id) = (ns.name().to_owned(), id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached("SELECT label, properties FROM graph_vertices WHERE ns = ?1 AND id = ?2")
                .and_then(|mut s| {
                    s.query_row(params![ns, id], |r| {
                        Ok(Vertex {
                            id: id.clone(),
                            label: r.get(0)?,
                            properties: map_from_json(&r.get::<_, String>(1)?),
                        })
                    })
                    .optional()
                })
                .map_err(db_error)
        })
        .await
    }

    async fn delete_vertex(&self, ns: &Namespace<()>, id: &str) -> PluginResult<Option<u64>> {
        let (ns, id) = (ns.name().to_owned(), id.to_owned());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
            let deleted = tx
                .execute("DELETE FROM graph_vertices WHERE ns = ?1 AND id = ?2", params![ns, id])
                .map_err(db_error)?;
            if deleted == 0 {
                return Ok(None);
            }
            // Two statements, each an index walk, rather than one OR that
            // SQLite might answer with a table scan.
            let out =
                tx.execute("DELETE FROM graph_edges WHERE ns = ?1 AND src = ?2", params![ns, id]).map_err(db_error)?;
            let inn =
                tx.execute("DELETE FROM graph_edges WHERE ns = ?1 AND dst = ?2", params![ns, id]).map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(Some((out + inn) as u64))
        })
        .await
    }

    async fn put_edge(&self, ns: &Namespace<()>, e: Edge) -> PluginResult<bool> {
        let ns = ns.name().to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
            for id in [&e.from, &e.to] {
                if !vertex_exists(&tx, &ns, id).map_err(db_error)? {
                    return Err(PluginError::NotFound(format!("vertex {id:?} does not exist")));
                }
            }
            let existed = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM graph_edges WHERE ns = ?1 AND src = ?2 AND label = ?3 AND dst = ?4)",
                )
                .and_then(|mut s| s.query_row(params![ns, e.from, e.label, e.to], |r| r.get::<_, bool>(0)))
                .map_err(db_error)?;
            tx.prepare_cached(
                "INSERT INTO graph_edges (ns, src, label, dst, properties) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (ns, src, label, dst) DO UPDATE SET properties = excluded.properties",
            )
            .and_then(|mut s| s.execute(params![ns, e.from, e.label, e.to, map_to_json(&e.properties)]))
            .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(!existed)
        })
        .await
    }

    async fn delete_edge(&self, ns: &Namespace<()>, from: &str, to: &str, label: &str) -> PluginResult<bool> {
        let (ns, from, to, label) = (ns.name().to_owned(), from.to_owned(), to.to_owned(), label.to_owned());
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM graph_edges WHERE ns = ?1 AND src = ?2 AND label = ?3 AND dst = ?4",
                params![ns, from, label, to],
            )
            .map(|n| n > 0)
            .map_err(db_error)
        })
        .await
    }

    async fn edges(
        &self,
        ns: &Namespace<()>,
        id: &str,
        incoming: bool,
        label: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> PluginResult<EdgePage> {
        let (ns, id) = (ns.name().to_owned(), id.to_owned());
        let label = label.map(str::to_owned);
        let after = after.map(|(l, o)| (l.to_owned(), o.to_owned()));
        self.read(move |conn| {
            let (me, other) = if incoming { ("dst", "src") } else { ("src", "dst") };
            // Only the conditions that apply, so each query is one range of
            // the matching index.
            let mut sql = format!("SELECT src, label, dst, properties FROM graph_edges WHERE ns = ?1 AND {me} = ?2");
            if label.is_some() {
                sql.push_str(" AND label = ?3");
            }
            if after.is_some() {
                sql.push_str(&format!(" AND (label, {other}) > (?4, ?5)"));
            }
            sql.push_str(&format!(" ORDER BY label, {other} LIMIT ?6"));
            let (after_label, after_other) = after.clone().unwrap_or_default();
            let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
            let mut edges = stmt
                .query_map(params![ns, id, label, after_label, after_other, (limit + 1) as i64], |r| {
                    Ok(Edge {
                        from: r.get(0)?,
                        label: r.get(1)?,
                        to: r.get(2)?,
                        properties: map_from_json(&r.get::<_, String>(3)?),
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db_error)?;
            let more = edges.len() > limit;
            edges.truncate(limit);
            Ok(EdgePage { edges, more })
        })
        .await
    }

    async fn expand(
        &self,
        ns: &Namespace<()>,
        ids: &[String],
        direction: Direction,
        labels: &[String],
        limit: usize,
    ) -> PluginResult<Vec<String>> {
        let ns = ns.name().to_owned();
        let ids = serde_json::to_string(ids).map_err(PluginError::internal)?;
        let labels_json = serde_json::to_string(labels).map_err(PluginError::internal)?;
        let any_label = labels.is_empty();
        self.read(move |conn| {
            // The frontier and the labels travel as JSON arrays: one bound
            // parameter whatever their length.
            let filter = if any_label { "" } else { " AND label IN (SELECT value FROM json_each(?3))" };
            let half = |me: &str, other: &str| {
                format!(
                    "SELECT {other} AS v FROM graph_edges
                     WHERE ns = ?1 AND {me} IN (SELECT value FROM json_each(?2)){filter}"
                )
            };
            let body = match direction {
                Direction::Out => half("src", "dst"),
                Direction::In => half("dst", "src"),
                Direction::Both => format!("{} UNION {}", half("src", "dst"), half("dst", "src")),
            };
            let sql = format!("SELECT DISTINCT v FROM ({body}) LIMIT ?4");
            let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
            stmt.query_map(params![ns, ids, labels_json, limit as i64], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db_error)
        })
        .await
    }
}
