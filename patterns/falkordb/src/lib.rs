//! Graph on FalkorDB, a graph database module for Redis that speaks
//! openCypher (`GRAPH.QUERY`). One graph per namespace (`<graph_prefix>_<ns>`),
//! every statement in `cypher.rs`, every user value a parameter. Traversals
//! run in the database as one statement ([`GraphStore::traverse`]), not one
//! round trip per level.

mod cypher;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prism_plugin_sdk::retention::{map_from_json, map_to_json};
use prism_plugin_sdk::{
    Backend, Capabilities, Consistency, Direction, Durability, Edge, EdgePage, GraphStore, Namespace,
    NamespaceSettings, Pattern, PluginError, PluginResult, TraversePage, Vertex,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, RedisError, Value};
use serde::Deserialize;

use crate::cypher::{Param, Query};

/// Configuration (`config:` of the plugin entry in the proxy config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server address, e.g. `redis://127.0.0.1:6379` (a Redis server with
    /// the FalkorDB module loaded).
    pub url: String,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Prefix of every graph's key: namespace `ns` is graph
    /// `<graph_prefix>_<ns>`. Letters, digits, `_` and `-`.
    #[serde(default = "defaults::graph_prefix")]
    pub graph_prefix: String,
    /// Timeout for opening a connection, in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout for one statement, in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub response_timeout_ms: u64,
    /// Whether the server persists its data (AOF with fsync): only then
    /// does the plugin declare itself durable.
    #[serde(default)]
    pub durable: bool,
}

mod defaults {
    pub(super) fn graph_prefix() -> String {
        "prism".to_owned()
    }
    pub(super) fn timeout_ms() -> u64 {
        2000
    }
}

/// A namespace's graph.
#[derive(Debug)]
pub struct Graph {
    name: String,
    /// Whether the index on vertex ids is known to exist; made by the first
    /// write, so preparing a namespace needs no database.
    indexed: AtomicBool,
}

/// The plugin.
pub struct FalkorDb {
    config: Config,
    conn: ConnectionManager,
}

/// The server this plugin connects to, for the messages saying it cannot
/// be reached. A plugin process opens one backend, once.
static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn db_error(err: RedisError) -> PluginError {
    if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() || err.is_timeout() {
        let server = SERVER.get().map_or("", String::as_str);
        return PluginError::Unavailable(format!(
            "falkordb at {server} unreachable: {}",
            prism_plugin_sdk::proto::error_chain(&err)
        ));
    }
    match err.kind() {
        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) => {
            PluginError::Unavailable(format!("falkordb not ready: {err}"))
        }
        _ if err.to_string().contains("unknown command") => PluginError::FailedPrecondition(format!(
            "the server at {} has no FalkorDB module (GRAPH.QUERY unknown): {err}",
            SERVER.get().map_or("", String::as_str)
        )),
        _ => PluginError::internal(err),
    }
}

/// The result rows of a `GRAPH.QUERY` reply (`[header, rows, statistics]`).
fn rows(reply: Value) -> PluginResult<Vec<Vec<Value>>> {
    let unexpected = |what: &str| PluginError::Internal(format!("unexpected GRAPH.QUERY reply: {what}"));
    let Value::Array(mut parts) = reply else { return Err(unexpected("not an array")) };
    if parts.len() < 3 {
        // A statement without RETURN answers its statistics only.
        return Ok(Vec::new());
    }
    let Value::Array(rows) = parts.swap_remove(1) else { return Err(unexpected("rows are not an array")) };
    rows.into_iter()
        .map(|row| match row {
            Value::Array(cells) => Ok(cells),
            _ => Err(unexpected("a row is not an array")),
        })
        .collect()
}

fn text(value: &Value) -> PluginResult<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(PluginError::internal),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(PluginError::Internal(format!("expected a string, got {other:?}"))),
    }
}

fn number(value: &Value) -> PluginResult<i64> {
    match value {
        Value::Int(n) => Ok(*n),
        other => Err(PluginError::Internal(format!("expected an integer, got {other:?}"))),
    }
}

/// A cell holding the JSON text of properties (absent on old data: none).
fn properties(value: &Value) -> PluginResult<BTreeMap<String, String>> {
    match value {
        Value::Nil => Ok(BTreeMap::new()),
        v => Ok(map_from_json(&text(v)?)),
    }
}

impl FalkorDb {
    async fn run(&self, graph: &str, query: &Query, read_only: bool) -> PluginResult<Vec<Vec<Value>>> {
        let mut conn = self.conn.clone();
        let command = if read_only { "GRAPH.RO_QUERY" } else { "GRAPH.QUERY" };
        let reply: Value = redis::cmd(command)
            .arg(graph)
            .arg(query.text())
            .arg("TIMEOUT")
            .arg(self.config.response_timeout_ms)
            .query_async(&mut conn)
            .await
            .map_err(db_error)?;
        rows(reply)
    }

    async fn exists(&self, graph: &str) -> PluginResult<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::cmd("EXISTS").arg(graph).query_async(&mut conn).await.map_err(db_error)?;
        Ok(n > 0)
    }

    /// Reads of a graph that was never written answer like an empty graph
    /// (FalkorDB refuses a read-only query on a missing key).
    async fn read(&self, graph: &Graph, query: &Query) -> PluginResult<Vec<Vec<Value>>> {
        match self.run(&graph.name, query, true).await {
            Err(PluginError::Internal(e)) if e.contains("empty key") => Ok(Vec::new()),
            other => other,
        }
    }

    async fn write(&self, graph: &Graph, query: &Query) -> PluginResult<Vec<Vec<Value>>> {
        if !graph.indexed.load(Ordering::Acquire) {
            match self.run(&graph.name, &Query::new(cypher::CREATE_INDEX, &[]), false).await {
                Ok(_) => {}
                Err(PluginError::Internal(e)) if e.contains("already indexed") => {}
                Err(e) => return Err(e),
            }
            graph.indexed.store(true, Ordering::Release);
        }
        self.run(&graph.name, query, false).await
    }
}

impl Backend for FalkorDb {
    type Config = Config;
    type NamespaceState = Arc<Graph>;
    const KIND: &'static str = "falkordb";

    async fn open(_instance: &str, config: Config) -> PluginResult<Self> {
        if config.graph_prefix.is_empty()
            || !config.graph_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(PluginError::InvalidArgument(
                "graph_prefix must be non-empty: letters, digits, '_' and '-'".to_owned(),
            ));
        }
        let mut info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| PluginError::InvalidArgument(format!("invalid falkordb url: {e}")))?;
        if let Some(var) = &config.password_env {
            let password = std::env::var(var)
                .map_err(|_| PluginError::InvalidArgument(format!("password_env: variable {var} is not set")))?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let _ = SERVER.set(info.addr().to_string());
        let client = redis::Client::open(info).map_err(|e| PluginError::InvalidArgument(format!("falkordb: {e}")))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            // The statement's own TIMEOUT is response_timeout_ms; the
            // connection waits a little longer for its answer.
            .set_response_timeout(Some(Duration::from_millis(config.response_timeout_ms.saturating_add(500))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        // Lazy: the plugin starts while the server is down, reports
        // unhealthy, and connects when it comes back.
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| PluginError::InvalidArgument(format!("falkordb: {e}")))?;
        Ok(Self { config, conn })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: vec![Pattern::Graph],
            max_key_bytes: 4096,
            // Every statement runs alone on the server's one writer.
            consistency: Consistency::Strong,
            durability: if self.config.durable { Durability::Durable } else { Durability::Ephemeral },
            ..Default::default()
        }
    }

    async fn health(&self) -> PluginResult<()> {
        let mut conn = self.conn.clone();
        // GRAPH.LIST fails on a Redis without the module: that server
        // cannot serve a single call.
        redis::cmd("GRAPH.LIST").query_async::<Value>(&mut conn).await.map_err(db_error)?;
        Ok(())
    }

    async fn prepare_namespace(&self, settings: &NamespaceSettings) -> PluginResult<Arc<Graph>> {
        let name = format!("{}_{}", self.config.graph_prefix, settings.name);
        Ok(Arc::new(Graph { name, indexed: AtomicBool::new(false) }))
    }

    async fn drop_namespace(&self, name: &str) -> PluginResult<()> {
        let graph = format!("{}_{name}", self.config.graph_prefix);
        if !self.exists(&graph).await? {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("GRAPH.DELETE").arg(&graph).query_async::<Value>(&mut conn).await.map_err(db_error)?;
        Ok(())
    }

    async fn holds_data(&self, ns: &Namespace<Arc<Graph>>) -> PluginResult<bool> {
        if !self.exists(&ns.state.name).await? {
            return Ok(false);
        }
        let rows = self.read(&ns.state, &Query::new(cypher::COUNT, &[])).await?;
        Ok(rows.first().and_then(|r| r.first()).map(number).transpose()?.unwrap_or(0) > 0)
    }
}

impl GraphStore for FalkorDb {
    async fn put_vertex(&self, ns: &Namespace<Arc<Graph>>, v: Vertex) -> PluginResult<bool> {
        let props = map_to_json(&v.properties);
        let query = Query::new(
            cypher::PUT_VERTEX,
            &[("id", Param::Str(&v.id)), ("label", Param::Str(&v.label)), ("props", Param::Str(&props))],
        );
        let rows = self.write(&ns.state, &query).await?;
        let existed = rows.first().and_then(|r| r.first()).map(number).transpose()?.unwrap_or(0);
        Ok(existed == 0)
    }

    async fn get_vertex(&self, ns: &Namespace<Arc<Graph>>, id: &str) -> PluginResult<Option<Vertex>> {
        let rows = self.read(&ns.state, &Query::new(cypher::GET_VERTEX, &[("id", Param::Str(id))])).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let [label, props] = row.as_slice() else {
            return Err(PluginError::Internal(format!("GET_VERTEX answered {} columns", row.len())));
        };
        Ok(Some(Vertex { id: id.to_owned(), label: text(label)?, properties: properties(props)? }))
    }

    async fn delete_vertex(&self, ns: &Namespace<Arc<Graph>>, id: &str) -> PluginResult<Option<u64>> {
        let rows = self.write(&ns.state, &Query::new(cypher::DELETE_VERTEX, &[("id", Param::Str(id))])).await?;
        rows.first().and_then(|r| r.first()).map(|n| number(n).map(|n| n as u64)).transpose()
    }

    async fn put_edge(&self, ns: &Namespace<Arc<Graph>>, e: Edge) -> PluginResult<bool> {
        let props = map_to_json(&e.properties);
        let query = Query::new(
            cypher::PUT_EDGE,
            &[
                ("from", Param::Str(&e.from)),
                ("to", Param::Str(&e.to)),
                ("label", Param::Str(&e.label)),
                ("props", Param::Str(&props)),
            ],
        );
        let rows = self.write(&ns.state, &query).await?;
        if let Some(existed) = rows.first().and_then(|r| r.first()) {
            return Ok(number(existed)? == 0);
        }
        // No row: an end is missing. Say which.
        let ends = vec![e.from.clone(), e.to.clone()];
        let found = self.read(&ns.state, &Query::new(cypher::VERTICES_EXIST, &[("ids", Param::Strs(&ends))])).await?;
        let found: Vec<String> = found.iter().filter_map(|r| r.first()).map(text).collect::<PluginResult<_>>()?;
        let missing = ends.iter().find(|id| !found.contains(id)).unwrap_or(&e.from);
        Err(PluginError::NotFound(format!("vertex {missing:?} does not exist")))
    }

    async fn delete_edge(&self, ns: &Namespace<Arc<Graph>>, from: &str, to: &str, label: &str) -> PluginResult<bool> {
        let query = Query::new(
            cypher::DELETE_EDGE,
            &[("from", Param::Str(from)), ("to", Param::Str(to)), ("label", Param::Str(label))],
        );
        Ok(!self.write(&ns.state, &query).await?.is_empty())
    }

    async fn edges(
        &self,
        ns: &Namespace<Arc<Graph>>,
        id: &str,
        incoming: bool,
        label: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> PluginResult<EdgePage> {
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        fn opt(v: Option<&str>) -> Param<'_> {
            v.map_or(Param::Null, Param::Str)
        }
        let query = Query::new(
            cypher::edges(incoming),
            &[
                ("id", Param::Str(id)),
                ("label", opt(label)),
                ("after_label", opt(after.map(|a| a.0))),
                ("after_other", opt(after.map(|a| a.1))),
                ("limit", Param::Int(fetch)),
            ],
        );
        let rows = self.read(&ns.state, &query).await?;
        let mut edges = rows
            .iter()
            .map(|row| match row.as_slice() {
                [from, label, to, props] => {
                    Ok(Edge { from: text(from)?, label: text(label)?, to: text(to)?, properties: properties(props)? })
                }
                _ => Err(PluginError::Internal(format!("EDGES answered {} columns", row.len()))),
            })
            .collect::<PluginResult<Vec<_>>>()?;
        let more = edges.len() > limit;
        edges.truncate(limit);
        Ok(EdgePage { edges, more })
    }

    async fn expand(
        &self,
        ns: &Namespace<Arc<Graph>>,
        ids: &[String],
        direction: Direction,
        labels: &[String],
        limit: usize,
    ) -> PluginResult<Vec<String>> {
        let query = Query::new(
            &cypher::expand(direction),
            &[
                ("ids", Param::Strs(ids)),
                ("labels", Param::Strs(labels)),
                ("limit", Param::Int(i64::try_from(limit).unwrap_or(i64::MAX))),
            ],
        );
        let rows = self.read(&ns.state, &query).await?;
        rows.iter().filter_map(|r| r.first()).map(text).collect()
    }

    async fn traverse(
        &self,
        ns: &Namespace<Arc<Graph>>,
        start: &str,
        direction: Direction,
        labels: &[String],
        max_depth: u32,
        limit: usize,
    ) -> PluginResult<Option<TraversePage>> {
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let query = Query::new(
            &cypher::traverse(direction, max_depth),
            &[("start", Param::Str(start)), ("labels", Param::Strs(labels)), ("limit", Param::Int(fetch))],
        );
        let rows = self.read(&ns.state, &query).await?;
        let mut vertices = rows
            .iter()
            .map(|row| match row.as_slice() {
                [id, depth] => Ok((text(id)?, u32::try_from(number(depth)?).unwrap_or(u32::MAX))),
                _ => Err(PluginError::Internal(format!("TRAVERSE answered {} columns", row.len()))),
            })
            .collect::<PluginResult<Vec<_>>>()?;
        let truncated = vertices.len() > limit;
        vertices.truncate(limit);
        Ok(Some(TraversePage { vertices, truncated }))
    }
}
