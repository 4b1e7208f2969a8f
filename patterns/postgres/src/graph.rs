//! Graph on PostgreSQL: adjacency tables. Edges are keyed by
//! `(ns, src, label, dst)` with a second index on `(ns, dst, label, src)`,
//! so both directions of a listing are index range walks. Traversals are
//! run by the SDK one level at a time; each level is one bounded query.

use prism_plugin_sdk::retention::{map_from_json, map_to_json};
use prism_plugin_sdk::{Direction, Edge, EdgePage, GraphStore, Namespace, PluginError, PluginResult, Vertex};

use crate::{Postgres, db_error};

/// The statements that create the Graph tables in schema `s` (quoted).
pub(crate) fn schema(s: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.graph_vertices (
                ns         text COLLATE \"C\" NOT NULL,
                id         text COLLATE \"C\" NOT NULL,
                label      text NOT NULL,
                properties text NOT NULL,
                PRIMARY KEY (ns, id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.graph_edges (
                ns         text COLLATE \"C\" NOT NULL,
                src        text COLLATE \"C\" NOT NULL,
                label      text COLLATE \"C\" NOT NULL,
                dst        text COLLATE \"C\" NOT NULL,
                properties text NOT NULL,
                PRIMARY KEY (ns, src, label, dst))"
        ),
        format!("CREATE INDEX IF NOT EXISTS graph_edges_in ON {s}.graph_edges (ns, dst, label, src)"),
    ]
}

impl GraphStore for Postgres {
    async fn put_vertex(&self, ns: &Namespace<()>, v: Vertex) -> PluginResult<bool> {
        let client = self.client().await?;
        let s = self.quoted_schema();
        // `xmax = 0` only for a freshly inserted row: tells created from
        // replaced in the same statement.
        let sql = format!(
            "INSERT INTO {s}.graph_vertices (ns, id, label, properties) VALUES ($1, $2, $3, $4)
             ON CONFLICT (ns, id) DO UPDATE SET label = EXCLUDED.label, properties = EXCLUDED.properties
             RETURNING (xmax = 0)"
        );
        let row = client
            .query_one(&sql, &[&ns.name(), &v.id, &v.label, &map_to_json(&v.properties)])
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    async fn get_vertex(&self, ns: &Namespace<()>, id: &str) -> PluginResult<Option<Vertex>> {
        let client = self.client().await?;
        let s = self.quoted_schema();
        let sql = format!("SELECT label, properties FROM {s}.graph_vertices WHERE ns = $1 AND id = $2");
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let row = client.query_opt(&stmt, &[&ns.name(), &id]).await.map_err(db_error)?;
        Ok(row.map(|r| Vertex { id: id.to_owned(), label: r.get(0), properties: map_from_json(r.get::<_, &str>(1)) }))
    }

    async fn delete_vertex(&self, ns: &Namespace<()>, id: &str) -> PluginResult<Option<u64>> {
        let mut client = self.client().await?;
        let s = self.quoted_schema();
        let tx = client.transaction().await.map_err(db_error)?;
        let gone = tx
            .execute(&format!("DELETE FROM {s}.graph_vertices WHERE ns = $1 AND id = $2"), &[&ns.name(), &id])
            .await
            .map_err(db_error)?;
        if gone == 0 {
            return Ok(None);
        }
        let out = tx
            .execute(&format!("DELETE FROM {s}.graph_edges WHERE ns = $1 AND src = $2"), &[&ns.name(), &id])
            .await
            .map_err(db_error)?;
        let inn = tx
            .execute(&format!("DELETE FROM {s}.graph_edges WHERE ns = $1 AND dst = $2"), &[&ns.name(), &id])
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(out + inn))
    }

    async fn put_edge(&self, ns: &Namespace<()>, e: Edge) -> PluginResult<bool> {
        let mut client = self.client().await?;
        let s = self.quoted_schema();
        let tx = client.transaction().await.map_err(db_error)?;
        // FOR SHARE keeps a concurrent DeleteVertex from removing an end
        // between this check and the insert, which would leave a dangling
        // edge.
        let ends = vec![e.from.clone(), e.to.clone()];
        let rows = tx
            .query(
                &format!("SELECT id FROM {s}.graph_vertices WHERE ns = $1 AND id = ANY($2) FOR SHARE"),
                &[&ns.name(), &ends],
            )
            .await
            .map_err(db_error)?;
        let found: Vec<String> = rows.into_iter().map(|r| r.get(0)).collect();
        for id in &ends {
            if !found.contains(id) {
                return Err(PluginError::NotFound(format!("vertex {id:?} does not exist")));
            }
        }
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO {s}.graph_edges (ns, src, label, dst, properties) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (ns, src, label, dst) DO UPDATE SET properties = EXCLUDED.properties
                     RETURNING (xmax = 0)"
                ),
                &[&ns.name(), &e.from, &e.label, &e.to, &map_to_json(&e.properties)],
            )
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(row.get(0))
    }

    async fn delete_edge(&self, ns: &Namespace<()>, from: &str, to: &str, label: &str) -> PluginResult<bool> {
        let client = self.client().await?;
        let s = self.quoted_schema();
        let n = client
            .execute(
                &format!("DELETE FROM {s}.graph_edges WHERE ns = $1 AND src = $2 AND label = $3 AND dst = $4"),
                &[&ns.name(), &from, &label, &to],
            )
            .await
            .map_err(db_error)?;
        Ok(n > 0)
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
        let client = self.client().await?;
        let s = self.quoted_schema();
        let (me, other) = if incoming { ("dst", "src") } else { ("src", "dst") };
        let fetch = (limit + 1) as i64;
        let (after_label, after_other) = after.unwrap_or_default();
        // Only the conditions that apply, so each query is one range of the
        // matching index; the others still bind their parameter (in a
        // condition that is always true) because every variant takes the
        // same six.
        let mut sql = format!("SELECT src, label, dst, properties FROM {s}.graph_edges WHERE ns = $1 AND {me} = $2");
        sql.push_str(if label.is_some() { " AND label = $4" } else { " AND $4::text IS NULL" });
        if after.is_some() {
            sql.push_str(&format!(" AND (label, {other}) > ($5, $6)"));
        } else {
            sql.push_str(" AND $5::text = $6::text");
        }
        sql.push_str(&format!(" ORDER BY label, {other} LIMIT $3"));
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let rows = client
            .query(&stmt, &[&ns.name(), &id, &fetch, &label, &after_label, &after_other])
            .await
            .map_err(db_error)?;
        let mut edges: Vec<Edge> = rows
            .into_iter()
            .map(|r| Edge {
                from: r.get(0),
                label: r.get(1),
                to: r.get(2),
                properties: map_from_json(r.get::<_, &str>(3)),
            })
            .collect();
        let more = edges.len() > limit;
        edges.truncate(limit);
        Ok(EdgePage { edges, more })
    }

    async fn expand(
        &self,
        ns: &Namespace<()>,
        ids: &[String],
        direction: Direction,
        labels: &[String],
        limit: usize,
    ) -> PluginResult<Vec<String>> {
        let client = self.client().await?;
        let s = self.quoted_schema();
        let filter = if labels.is_empty() { "cardinality($3::text[]) = 0" } else { "label = ANY($3)" };
        let half = |me: &str, other: &str| {
            format!("SELECT {other} AS v FROM {s}.graph_edges WHERE ns = $1 AND {me} = ANY($2) AND {filter}")
        };
        let body = match direction {
            Direction::Out => half("src", "dst"),
            Direction::In => half("dst", "src"),
            Direction::Both => format!("{} UNION {}", half("src", "dst"), half("dst", "src")),
        };
        let sql = format!("SELECT DISTINCT v FROM ({body}) AS next LIMIT $4");
        let fetch = limit as i64;
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let rows = client.query(&stmt, &[&ns.name(), &ids, &labels, &fetch]).await.map_err(db_error)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }
}
