//! PostgreSQL KeyValue, TimeSeries and Graph store for Prism.
//!
//! One table holds every namespace, keyed by `(ns, key)` with keys in the
//! `"C"` collation so that index order is bytewise UTF-8 order, the order
//! scans promise. Versions come from one sequence (unique and growing across
//! namespaces, never reused). Compare-and-set is a conditional `UPDATE` or
//! `INSERT ... ON CONFLICT ... WHERE`, which PostgreSQL re-checks against the
//! latest row version under concurrent writers, so no update is lost.
//! Expired rows are filtered on every read and deleted in the background.
//!
//! The pool connects lazily and the schema is created on first use, so the
//! plugin starts (and reports unhealthy) while the database is down, and
//! recovers by itself when it returns.
//!
//! TimeSeries and Graph have their own tables (`timeseries.rs`,
//! `graph.rs`); a second background task deletes events past each
//! namespace's retention.

mod graph;
mod timeseries;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use prism_plugin_sdk::keys::prefix_upper_bound;
use prism_plugin_sdk::retention::Retentions;
use prism_plugin_sdk::{
    Backend, Capabilities, Consistency, Durability, KeyValueStore, Namespace, NamespaceSettings, Pattern, PluginError,
    PluginResult, PutOp, Record, ScanPage,
};
use serde::Deserialize;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Configuration (`config:` of the plugin entry in the proxy config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Connection string, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: String,
    /// Name of an environment variable holding the password, so it need not
    /// be written in the config file.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Schema holding Prism's tables, created if missing.
    #[serde(default = "defaults::schema")]
    pub schema: String,
    /// Most connections open at once.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// How long to wait for a connection (opening one, or a free one from
    /// the pool), in milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How often expired rows are deleted, in milliseconds.
    #[serde(default = "defaults::cleanup_interval_ms")]
    pub cleanup_interval_ms: u64,
    /// Largest value accepted, in bytes.
    #[serde(default = "defaults::max_value_bytes")]
    pub max_value_bytes: u64,
}

mod defaults {
    pub(super) fn schema() -> String {
        "prism".to_owned()
    }
    pub(super) fn pool_size() -> usize {
        16
    }
    pub(super) fn connect_timeout_ms() -> u64 {
        3000
    }
    pub(super) fn cleanup_interval_ms() -> u64 {
        1000
    }
    pub(super) fn max_value_bytes() -> u64 {
        16 * 1024 * 1024
    }
}

/// Rows deleted per cleanup statement.
const CLEANUP_BATCH: i64 = 1000;

/// The SQL of every statement, with the schema name filled in once.
struct Sql {
    schema: Vec<String>,
    get: String,
    get_many: String,
    live_version: String,
    /// `live_version` locking the row, for a conditional delete.
    live_version_for_update: String,
    upsert: String,
    create_only: String,
    update_if: String,
    delete: String,
    scan_from: String,
    scan_after: String,
    drop_ns: String,
    holds_data: String,
    cleanup: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let live = "(expires_at IS NULL OR expires_at > now())";
        let expires = "CASE WHEN $4::bigint > 0 THEN now() + $4::bigint * interval '1 millisecond' END";
        let scan = |op: &str| {
            format!(
                "SELECT key, value, version FROM {s}.kv
                 WHERE ns = $1 AND key {op} $2 COLLATE \"C\" AND ($3::text IS NULL OR key < $3::text COLLATE \"C\")
                   AND {live}
                 ORDER BY key LIMIT $4"
            )
        };
        Self {
            schema: [
                format!("CREATE SCHEMA IF NOT EXISTS {s}"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {s}.kv (
                        ns         text COLLATE \"C\" NOT NULL,
                        key        text COLLATE \"C\" NOT NULL,
                        value      bytea NOT NULL,
                        version    bigint NOT NULL,
                        expires_at timestamptz,
                        PRIMARY KEY (ns, key))"
                ),
                format!("CREATE INDEX IF NOT EXISTS kv_expires_at ON {s}.kv (expires_at) WHERE expires_at IS NOT NULL"),
                format!("CREATE SEQUENCE IF NOT EXISTS {s}.kv_version"),
            ]
            .into_iter()
            .chain(timeseries::schema(&s))
            .chain(graph::schema(&s))
            .collect(),
            get: format!("SELECT value, version FROM {s}.kv WHERE ns = $1 AND key = $2 AND {live}"),
            get_many: format!("SELECT key, value, version FROM {s}.kv WHERE ns = $1 AND key = ANY($2) AND {live}"),
            live_version: format!("SELECT version FROM {s}.kv WHERE ns = $1 AND key = $2 AND {live}"),
            live_version_for_update: format!(
                "SELECT version FROM {s}.kv WHERE ns = $1 AND key = $2 AND {live} FOR UPDATE"
            ),
            upsert: format!(
                "INSERT INTO {s}.kv (ns, key, value, version, expires_at)
                 VALUES ($1, $2, $3, nextval('{s}.kv_version'), {expires})
                 ON CONFLICT (ns, key) DO UPDATE
                   SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
                 RETURNING version"
            ),
            // Create-only: an existing row is replaced only if it expired.
            create_only: format!(
                "INSERT INTO {s}.kv AS t (ns, key, value, version, expires_at)
                 VALUES ($1, $2, $3, nextval('{s}.kv_version'), {expires})
                 ON CONFLICT (ns, key) DO UPDATE
                   SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
                   WHERE t.expires_at IS NOT NULL AND t.expires_at <= now()
                 RETURNING version"
            ),
            update_if: format!(
                "UPDATE {s}.kv SET value = $3, version = nextval('{s}.kv_version'), expires_at = {expires}
                 WHERE ns = $1 AND key = $2 AND version = $5 AND {live}
                 RETURNING version"
            ),
            delete: format!("DELETE FROM {s}.kv WHERE ns = $1 AND key = $2 RETURNING {live}"),
            scan_from: scan(">="),
            scan_after: scan(">"),
            drop_ns: format!(
                "DELETE FROM {s}.kv WHERE ns = $1;
                 DELETE FROM {s}.ts_events WHERE ns = $1;
                 DELETE FROM {s}.graph_edges WHERE ns = $1;
                 DELETE FROM {s}.graph_vertices WHERE ns = $1"
            ),
            holds_data: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.kv WHERE ns = $1 AND {live})
                     OR EXISTS (SELECT 1 FROM {s}.ts_events WHERE ns = $1)
                     OR EXISTS (SELECT 1 FROM {s}.graph_vertices WHERE ns = $1)"
            ),
            cleanup: format!(
                "DELETE FROM {s}.kv WHERE ctid IN
                   (SELECT ctid FROM {s}.kv WHERE expires_at <= now() LIMIT {CLEANUP_BATCH})"
            ),
        }
    }
}

/// The plugin.
pub struct Postgres {
    config: Config,
    pool: Pool,
    sql: Sql,
    schema_ready: OnceCell<()>,
    cleanup: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Retention of each prepared namespace that has one, in milliseconds,
    /// for the retention task. Rebuilt by the proxy's PrepareNamespace calls
    /// after a restart.
    retention: Arc<Retentions>,
}

/// The server this plugin connects to (`host:port`), for the messages
/// saying it cannot be reached. A plugin process opens one backend, once.
static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn unreachable(err: &dyn std::error::Error) -> PluginError {
    let server = SERVER.get().map_or("", String::as_str);
    PluginError::Unavailable(format!("postgres at {server} unreachable: {}", prism_plugin_sdk::proto::error_chain(err)))
}

/// `host:port` of every host of a connection string (a Unix socket by its
/// directory).
fn server_of(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let servers: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    if servers.is_empty() { "localhost:5432".to_owned() } else { servers.join(",") }
}

fn pool_error(err: PoolError) -> PluginError {
    match err {
        PoolError::Backend(e) => db_error(e),
        other => unreachable(&other),
    }
}

fn db_error(err: tokio_postgres::Error) -> PluginError {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY || *code == SqlState::TOO_MANY_CONNECTIONS {
            return PluginError::ResourceExhausted(format!("postgres: {}", db.message()));
        }
        if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CANNOT_CONNECT_NOW {
            return PluginError::Unavailable("postgres is shutting down or starting".to_owned());
        }
        return PluginError::internal(err);
    }
    // No database error: the connection itself failed.
    unreachable(&err)
}

/// The statement of `sql`, prepared once per pooled connection and kept in
/// its cache: a call is then one round trip (bind and execute) instead of
/// two (a parse and describe of the text first, which a string query costs
/// every time).
async fn prepared(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
) -> PluginResult<tokio_postgres::Statement> {
    client.prepare_cached(sql).await.map_err(db_error)
}

fn ttl_ms(op: &PutOp) -> i64 {
    op.ttl.map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
}

fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Postgres {
    /// The schema name quoted for SQL (checked at open to need no escaping).
    fn quoted_schema(&self) -> String {
        format!("\"{}\"", self.config.schema)
    }

    /// A pooled connection with the schema in place.
    async fn client(&self) -> PluginResult<deadpool_postgres::Object> {
        let client = self.pool.get().await.map_err(pool_error)?;
        self.schema_ready
            .get_or_try_init(|| async {
                // Several plugins may start at once against one database;
                // the advisory lock keeps their CREATE ... IF NOT EXISTS
                // from racing on the catalog.
                let mut client = self.pool.get().await.map_err(pool_error)?;
                let tx = client.transaction().await.map_err(db_error)?;
                tx.execute("SELECT pg_advisory_xact_lock(hashtext('prism-schema:' || $1))", &[&self.config.schema])
                    .await
                    .map_err(db_error)?;
                for statement in &self.sql.schema {
                    tx.batch_execute(statement).await.map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
                tracing::info!(schema = %self.config.schema, "postgres schema ready");
                Ok::<_, PluginError>(())
            })
            .await?;
        Ok(client)
    }

    async fn live_version(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        ns: &str,
        key: &str,
    ) -> PluginResult<u64> {
        let row =
            client.query_opt(&prepared(client, &self.sql.live_version).await?, &[&ns, &key]).await.map_err(db_error)?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    async fn put_one(&self, client: &impl deadpool_postgres::GenericClient, ns: &str, op: &PutOp) -> PluginResult<u64> {
        let value: &[u8] = &op.value;
        let ttl = ttl_ms(op);
        let row = match op.if_version {
            None => Some(
                client
                    .query_one(&prepared(client, &self.sql.upsert).await?, &[&ns, &op.key, &value, &ttl])
                    .await
                    .map_err(db_error)?,
            ),
            Some(0) => client
                .query_opt(&prepared(client, &self.sql.create_only).await?, &[&ns, &op.key, &value, &ttl])
                .await
                .map_err(db_error)?,
            Some(expected) => {
                let expected = expected as i64;
                client
                    .query_opt(&prepared(client, &self.sql.update_if).await?, &[&ns, &op.key, &value, &ttl, &expected])
                    .await
                    .map_err(db_error)?
            }
        };
        match row {
            Some(row) => Ok(row.get::<_, i64>(0) as u64),
            None => {
                let current = self.live_version(client, ns, &op.key).await?;
                Err(PluginError::version_conflict(&op.key, current, op.if_version.unwrap_or(0)))
            }
        }
    }
}

async fn cleanup_loop(pool: Pool, sql: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(client) = pool.get().await else { continue };
        loop {
            match client.execute(&sql, &[]).await {
                Ok(n) if n as i64 >= CLEANUP_BATCH => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(deleted = n, "expired rows deleted");
                    }
                    break;
                }
                // Before the schema exists, or while the database is down.
                Err(e) => {
                    tracing::debug!(error = %e, "expired row cleanup skipped");
                    break;
                }
            }
        }
    }
}

/// Deletes, every `every`, the events of each namespace older than its
/// retention, in batches.
async fn retention_loop(pool: Pool, sql: String, retention: Arc<Retentions>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let cutoffs = retention.cutoffs(now);
        if cutoffs.is_empty() {
            continue;
        }
        let Ok(client) = pool.get().await else { continue };
        for (ns, cutoff) in cutoffs {
            loop {
                match client.execute(&sql, &[&ns, &cutoff]).await {
                    Ok(n) if n as i64 >= timeseries::EXPIRE_BATCH => continue,
                    Ok(n) => {
                        if n > 0 {
                            tracing::debug!(namespace = %ns, deleted = n, "events past retention deleted");
                        }
                        break;
                    }
                    // Before the schema exists, or while the database is down.
                    Err(e) => {
                        tracing::debug!(error = %e, "retention cleanup skipped");
                        break;
                    }
                }
            }
        }
    }
}

impl Backend for Postgres {
    type Config = Config;
    type NamespaceState = ();
    const KIND: &'static str = "postgres";
    const DB_SYSTEM: &'static str = "postgresql";

    async fn open(instance: &str, config: Config) -> PluginResult<Self> {
        if !valid_schema_name(&config.schema) {
            return Err(PluginError::InvalidArgument(format!(
                "schema {:?} must be lowercase letters, digits and '_', starting with a letter or '_'",
                config.schema
            )));
        }
        if config.pool_size == 0 || config.cleanup_interval_ms == 0 {
            return Err(PluginError::InvalidArgument(
                "pool_size and cleanup_interval_ms must be at least 1".to_owned(),
            ));
        }
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| PluginError::InvalidArgument(format!("invalid postgres url: {e}")))?;
        let _ = SERVER.set(server_of(&pg));
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        pg.connect_timeout(timeout).application_name(format!("prism-plugin-postgres/{instance}"));
        if let Some(var) = &config.password_env {
            let password = std::env::var(var)
                .map_err(|_| PluginError::InvalidArgument(format!("password_env: variable {var} is not set")))?;
            pg.password(password);
        }
        let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| PluginError::InvalidArgument(format!("postgres pool: {e}")))?;
        let sql = Sql::new(&config.schema);
        let every = Duration::from_millis(config.cleanup_interval_ms);
        let retention = Arc::new(Retentions::default());
        let tasks = vec![
            tokio::spawn(cleanup_loop(pool.clone(), sql.cleanup.clone(), every)),
            tokio::spawn(retention_loop(
                pool.clone(),
                timeseries::expire_sql(&format!("\"{}\"", config.schema)),
                retention.clone(),
                every,
            )),
        ];
        Ok(Self {
            config,
            pool,
            sql,
            schema_ready: OnceCell::new(),
            cleanup: tokio::sync::Mutex::new(tasks),
            retention,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: vec![Pattern::KeyValue, Pattern::TimeSeries, Pattern::Graph],
            retention: true,
            ttl: true,
            cas: true,
            scan: true,
            // Leaves room under PostgreSQL's 8 KiB btree entry limit.
            max_key_bytes: 2048,
            max_value_bytes: self.config.max_value_bytes,
            consistency: Consistency::Strong,
            durability: Durability::Durable,
            ..Default::default()
        }
    }

    async fn health(&self) -> PluginResult<()> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await.map_err(db_error)?;
        Ok(())
    }

    async fn prepare_namespace(&self, settings: &NamespaceSettings) -> PluginResult<()> {
        // Namespaces share tables, created on first use: preparing must not
        // need the database, or a database that is down at start would
        // leave namespaces unprepared instead of merely unavailable. Only
        // the retention is remembered, for the retention task.
        self.retention.prepare(settings);
        Ok(())
    }

    async fn drop_namespace(&self, name: &str) -> PluginResult<()> {
        self.retention.remove(name);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        for statement in self.sql.drop_ns.split(';') {
            tx.execute(statement, &[&name]).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    async fn holds_data(&self, ns: &Namespace<()>) -> PluginResult<bool> {
        let client = self.client().await?;
        let row = client.query_one(&self.sql.holds_data, &[&ns.name()]).await.map_err(db_error)?;
        Ok(row.get(0))
    }

    async fn drain(&self) {
        for task in self.cleanup.lock().await.drain(..) {
            task.abort();
        }
        self.pool.close();
    }
}

impl KeyValueStore for Postgres {
    async fn put(&self, ns: &Namespace<()>, op: PutOp) -> PluginResult<u64> {
        let client = self.client().await?;
        self.put_one(&client, ns.name(), &op).await
    }

    async fn get(&self, ns: &Namespace<()>, key: &str) -> PluginResult<Option<Record>> {
        let client = self.client().await?;
        let row =
            client.query_opt(&prepared(&client, &self.sql.get).await?, &[&ns.name(), &key]).await.map_err(db_error)?;
        Ok(row.map(|r| Record { value: Bytes::from(r.get::<_, Vec<u8>>(0)), version: r.get::<_, i64>(1) as u64 }))
    }

    async fn delete(&self, ns: &Namespace<()>, key: &str, if_version: Option<u64>) -> PluginResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        if let Some(expected) = if_version {
            // Lock the row so the check and the delete see the same version.
            let current = tx
                .query_opt(&prepared(&tx, &self.sql.live_version_for_update).await?, &[&ns.name(), &key])
                .await
                .map_err(db_error)?
                .map_or(0, |r| r.get::<_, i64>(0) as u64);
            if current != expected {
                return Err(PluginError::version_conflict(key, current, expected));
            }
        }
        let row = tx.query_opt(&prepared(&tx, &self.sql.delete).await?, &[&ns.name(), &key]).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        // An expired row is removed too, but did not "exist".
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn batch_get(&self, ns: &Namespace<()>, keys: &[String]) -> PluginResult<Vec<Option<Record>>> {
        let client = self.client().await?;
        let rows = client
            .query(&prepared(&client, &self.sql.get_many).await?, &[&ns.name(), &keys])
            .await
            .map_err(db_error)?;
        let found: HashMap<String, Record> = rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    Record { value: Bytes::from(r.get::<_, Vec<u8>>(1)), version: r.get::<_, i64>(2) as u64 },
                )
            })
            .collect();
        // A key asked twice gets the record twice.
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn batch_put(&self, ns: &Namespace<()>, ops: Vec<PutOp>) -> PluginResult<Vec<u64>> {
        let mut client = self.client().await?;
        // One transaction: all items or none.
        let tx = client.transaction().await.map_err(db_error)?;
        let mut versions = Vec::with_capacity(ops.len());
        for op in &ops {
            versions.push(self.put_one(&tx, ns.name(), op).await?);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(versions)
    }

    async fn scan(
        &self,
        ns: &Namespace<()>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> PluginResult<ScanPage> {
        let client = self.client().await?;
        let (sql, start) = match after {
            Some(after) => (&self.sql.scan_after, after),
            None => (&self.sql.scan_from, prefix),
        };
        let upper = prefix_upper_bound(prefix);
        let fetch = (limit + 1) as i64;
        let rows = client
            .query(&prepared(&client, sql).await?, &[&ns.name(), &start, &upper, &fetch])
            .await
            .map_err(db_error)?;
        let mut entries: Vec<_> = rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    Record { value: Bytes::from(r.get::<_, Vec<u8>>(1)), version: r.get::<_, i64>(2) as u64 },
                )
            })
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok(ScanPage { entries, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["prism", "_p", "prism_test_42"] {
            assert!(valid_schema_name(ok), "{ok}");
        }
        for bad in ["", "Prism", "1abc", "a-b", "a\"b", &"a".repeat(64)] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }
}
