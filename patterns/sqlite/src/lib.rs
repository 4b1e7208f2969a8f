//! SQLite KeyValue, TimeSeries and Graph store for Prism.
//!
//! One table holds every namespace (`PRIMARY KEY (ns, key)`, no rowid), so
//! a scan is a range walk of the primary key in bytewise key order (SQLite's
//! default BINARY collation compares UTF-8 bytes). WAL mode lets readers run
//! beside the single writer: reads use a small pool of connections, writes
//! go through one connection in IMMEDIATE transactions, which also makes
//! compare-and-set atomic. Versions come from one counter row, so they grow
//! across namespaces and restarts. Expired rows are filtered on every read
//! and deleted in the background.
//!
//! SQLite calls block, so each runs on tokio's blocking pool.
//!
//! TimeSeries and Graph live in their own tables (see `timeseries.rs` and
//! `graph.rs`); the same writer connection serializes their writes, and the
//! cleanup task also deletes events past each namespace's retention.

mod graph;
mod group;
mod timeseries;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prism_plugin_sdk::keys::prefix_upper_bound;
use prism_plugin_sdk::retention::Retentions;
use prism_plugin_sdk::{
    Backend, Capabilities, Consistency, Durability, KeyValueStore, Namespace, NamespaceSettings, Pattern, PluginError,
    PluginResult, PutOp, Record, ScanPage,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde::Deserialize;

/// Configuration (`config:` of the plugin entry in the proxy config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Database file, created if missing. A relative path is resolved
    /// against the plugin's working directory, which the proxy sets to the
    /// directory of its config file.
    pub path: PathBuf,
    /// Read connections (WAL lets them run beside the writer).
    #[serde(default = "defaults::readers")]
    pub readers: usize,
    /// Largest value accepted, in bytes.
    #[serde(default = "defaults::max_value_bytes")]
    pub max_value_bytes: u64,
    /// How often expired rows are deleted, in milliseconds.
    #[serde(default = "defaults::cleanup_interval_ms")]
    pub cleanup_interval_ms: u64,
    /// How long a call waits for a lock held by another process, in
    /// milliseconds.
    #[serde(default = "defaults::busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// `normal` survives a crash of the process; `full` also survives a
    /// power loss, at the cost of an fsync per commit.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// WAL pages after which a commit folds the WAL back into the database
    /// file (SQLite's `wal_autocheckpoint`, whose own default is 1000). A
    /// checkpoint holds the writer while it copies and fsyncs, so fewer of
    /// them take the stalls out of the write tail; the WAL file grows to
    /// this many pages (4 KiB each) between them (ADR-007).
    #[serde(default = "defaults::wal_autocheckpoint")]
    pub wal_autocheckpoint: u32,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Normal,
    Full,
}

mod defaults {
    pub(super) fn readers() -> usize {
        4
    }
    pub(super) fn max_value_bytes() -> u64 {
        16 * 1024 * 1024
    }
    pub(super) fn cleanup_interval_ms() -> u64 {
        1000
    }
    pub(super) fn busy_timeout_ms() -> u64 {
        5000
    }
    pub(super) fn wal_autocheckpoint() -> u32 {
        10_000
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    ns         TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    version    INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO counters (name, value) VALUES ('version', 0);
";

/// Rows deleted per cleanup statement, so the writer is never held long.
const CLEANUP_BATCH: i64 = 1000;

type Conn = Arc<Mutex<Connection>>;

/// The plugin.
pub struct Sqlite {
    config: Config,
    writer: Conn,
    /// KeyValue puts and deletes, committed in groups (see `group`).
    kv_writes: group::GroupCommit,
    readers: Vec<Conn>,
    next_reader: AtomicUsize,
    cleanup: tokio::task::JoinHandle<()>,
    /// Retention of each prepared namespace that has one, in milliseconds,
    /// for the cleanup task. Rebuilt by the proxy's PrepareNamespace calls
    /// after a restart.
    retention: Arc<Retentions>,
}

fn lock(conn: &Conn) -> MutexGuard<'_, Connection> {
    // A panic inside a call leaves the connection usable: SQLite rolls back
    // the open transaction when the statement objects drop.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn db_error(err: rusqlite::Error) -> PluginError {
    if let rusqlite::Error::SqliteFailure(e, _) = &err {
        match e.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return PluginError::Unavailable("sqlite database is busy".to_owned());
            }
            ErrorCode::DiskFull => return PluginError::ResourceExhausted("sqlite disk is full".to_owned()),
            ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::SystemIoFailure => {
                return PluginError::Unavailable(format!("sqlite database cannot be used: {err}"));
            }
            _ => {}
        }
    }
    PluginError::internal(err)
}

fn open_connection(config: &Config) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(&config.path)?;
    conn.busy_timeout(Duration::from_millis(config.busy_timeout_ms))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match config.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // Only the writer commits, so only its setting matters; readers get the
    // same for simplicity.
    conn.pragma_update(None, "wal_autocheckpoint", config.wal_autocheckpoint)?;
    Ok(conn)
}

fn live_version(tx: &Connection, ns: &str, key: &str, now: i64) -> Result<u64, rusqlite::Error> {
    tx.prepare_cached("SELECT version FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)")?
        .query_row(params![ns, key, now], |r| r.get::<_, i64>(0))
        .optional()
        .map(|v| v.map_or(0, |v| v as u64))
}

/// Moves the counter past `n` versions a group has handed out from memory.
/// No `RETURNING` (the group knows the value): SQLite runs such a statement
/// under a statement journal of its own, allocated and freed every time.
fn advance_versions(tx: &Connection, n: u64) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("UPDATE counters SET value = value + ?1 WHERE name = 'version'")?.execute([n as i64])?;
    Ok(())
}

/// Takes `n` versions from the counter in one update; answers the last.
fn reserve_versions(tx: &Connection, n: u64) -> Result<u64, rusqlite::Error> {
    tx.prepare_cached("UPDATE counters SET value = value + ?1 WHERE name = 'version' RETURNING value")?
        .query_row([n as i64], |r| r.get::<_, i64>(0))
        .map(|v| v as u64)
}

fn upsert(tx: &Connection, ns: &str, op: &PutOp, version: u64, now: i64) -> Result<(), rusqlite::Error> {
    let expires_at = op.ttl.map(|ttl| now + ttl.as_millis() as i64);
    tx.prepare_cached(
        "INSERT INTO kv (ns, key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = excluded.version,
                                             expires_at = excluded.expires_at",
    )?
    .execute(params![ns, op.key, &op.value[..], version as i64, expires_at])?;
    Ok(())
}

impl Sqlite {
    /// Runs `f` with the writer connection on the blocking pool.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> PluginResult<T> + Send + 'static,
    ) -> PluginResult<T> {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn))).await.map_err(PluginError::internal)?
    }

    /// Runs `f` with one of the read connections on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> PluginResult<T> + Send + 'static,
    ) -> PluginResult<T> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let conn = self.readers[i].clone();
        tokio::task::spawn_blocking(move || f(&lock(&conn))).await.map_err(PluginError::internal)?
    }
}

async fn cleanup_loop(writer: Conn, retention: Arc<Retentions>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let conn = writer.clone();
        let retention = retention.clone();
        let result = tokio::task::spawn_blocking(move || {
            let conn = lock(&conn);
            let mut total = 0;
            loop {
                let n = conn
                    .prepare_cached(
                        "DELETE FROM kv WHERE (ns, key) IN
                           (SELECT ns, key FROM kv WHERE expires_at <= ?1 LIMIT ?2)",
                    )?
                    .execute(params![now_ms(), CLEANUP_BATCH])?;
                total += n;
                if (n as i64) < CLEANUP_BATCH {
                    break;
                }
            }
            for (ns, cutoff) in retention.cutoffs(now_ms()) {
                total += timeseries::expire(&conn, &ns, cutoff)?;
            }
            Ok::<_, rusqlite::Error>(total)
        })
        .await;
        match result {
            Ok(Ok(n)) if n > 0 => tracing::debug!(deleted = n, "expired rows deleted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "expired row cleanup failed"),
            _ => {}
        }
    }
}

impl Backend for Sqlite {
    type Config = Config;
    type NamespaceState = ();
    const KIND: &'static str = "sqlite";

    async fn open(_instance: &str, config: Config) -> PluginResult<Self> {
        if config.readers == 0 || config.cleanup_interval_ms == 0 || config.wal_autocheckpoint == 0 {
            // A wal_autocheckpoint of 0 would turn checkpoints off: the WAL
            // would grow without bound.
            return Err(PluginError::InvalidArgument(
                "readers, cleanup_interval_ms and wal_autocheckpoint must be at least 1".to_owned(),
            ));
        }
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| PluginError::Unavailable(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let writer = open_connection(&config).map_err(db_error)?;
        writer.execute_batch(SCHEMA).map_err(db_error)?;
        writer.execute_batch(timeseries::SCHEMA).map_err(db_error)?;
        writer.execute_batch(graph::SCHEMA).map_err(db_error)?;
        let readers = (0..config.readers)
            .map(|_| open_connection(&config).map(|c| Arc::new(Mutex::new(c))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        let writer = Arc::new(Mutex::new(writer));
        let retention = Arc::new(Retentions::default());
        let cleanup = tokio::spawn(cleanup_loop(
            writer.clone(),
            retention.clone(),
            Duration::from_millis(config.cleanup_interval_ms),
        ));
        tracing::info!(path = %config.path.display(), "sqlite database open");
        let kv_writes = group::GroupCommit::start(writer.clone());
        Ok(Self { config, writer, kv_writes, readers, next_reader: AtomicUsize::new(0), cleanup, retention })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: vec![Pattern::KeyValue, Pattern::TimeSeries, Pattern::Graph],
            retention: true,
            ttl: true,
            cas: true,
            scan: true,
            max_key_bytes: 4096,
            max_value_bytes: self.config.max_value_bytes,
            consistency: Consistency::Strong,
            durability: Durability::Durable,
            ..Default::default()
        }
    }

    async fn health(&self) -> PluginResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error)).await
    }

    async fn prepare_namespace(&self, settings: &NamespaceSettings) -> PluginResult<()> {
        // Shared tables: nothing to create per namespace, only the retention
        // to remember for the cleanup task.
        self.retention.prepare(settings);
        Ok(())
    }

    async fn drop_namespace(&self, name: &str) -> PluginResult<()> {
        self.retention.remove(name);
        let ns = name.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
            for table in ["kv", "ts_events", "graph_edges", "graph_vertices"] {
                tx.execute(&format!("DELETE FROM {table} WHERE ns = ?1"), params![ns]).map_err(db_error)?;
            }
            tx.commit().map_err(db_error)
        })
        .await
    }

    async fn holds_data(&self, ns: &Namespace<()>) -> PluginResult<bool> {
        let ns = ns.name().to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM kv WHERE ns = ?1 AND (expires_at IS NULL OR expires_at > ?2))
                     OR EXISTS (SELECT 1 FROM ts_events WHERE ns = ?1)
                     OR EXISTS (SELECT 1 FROM graph_vertices WHERE ns = ?1)",
                params![ns, now_ms()],
                |r| r.get::<_, bool>(0),
            )
            .map_err(db_error)
        })
        .await
    }

    async fn drain(&self) {
        self.cleanup.abort();
        // Fold the WAL back into the database file so a copy of the file
        // alone is complete.
        let _ = self.write(|conn| conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(db_error)).await;
    }
}

impl KeyValueStore for Sqlite {
    async fn put(&self, ns: &Namespace<()>, op: PutOp) -> PluginResult<u64> {
        let ns = ns.name().to_owned();
        self.kv_writes
            .write(move |tx, versions| {
                let now = now_ms();
                if let Some(expected) = op.if_version {
                    let current = live_version(tx, &ns, &op.key, now).map_err(db_error)?;
                    if current != expected {
                        return Err(PluginError::version_conflict(&op.key, current, expected));
                    }
                }
                let version = versions.next(tx).map_err(db_error)?;
                upsert(tx, &ns, &op, version, now).map_err(db_error)?;
                Ok(version)
            })
            .await
    }

    async fn get(&self, ns: &Namespace<()>, key: &str) -> PluginResult<Option<Record>> {
        let (ns, key) = (ns.name().to_owned(), key.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT value, version FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![ns, key, now_ms()], |r| {
                    Ok(Record { value: Bytes::from(r.get::<_, Vec<u8>>(0)?), version: r.get::<_, i64>(1)? as u64 })
                })
                .optional()
            })
            .map_err(db_error)
        })
        .await
    }

    async fn delete(&self, ns: &Namespace<()>, key: &str, if_version: Option<u64>) -> PluginResult<bool> {
        let (ns, key) = (ns.name().to_owned(), key.to_owned());
        let existed = self
            .kv_writes
            .write(move |tx, _| {
                let now = now_ms();
                let current = live_version(tx, &ns, &key, now).map_err(db_error)?;
                if let Some(expected) = if_version
                    && current != expected
                {
                    return Err(PluginError::version_conflict(&key, current, expected));
                }
                // Removes an expired row too.
                tx.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")
                    .and_then(|mut stmt| stmt.execute(params![ns, key]))
                    .map_err(db_error)?;
                Ok(u64::from(current != 0))
            })
            .await?;
        Ok(existed == 1)
    }

    async fn batch_get(&self, ns: &Namespace<()>, keys: &[String]) -> PluginResult<Vec<Option<Record>>> {
        let (ns, keys) = (ns.name().to_owned(), keys.to_vec());
        self.read(move |conn| {
            let now = now_ms();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT value, version FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                )
                .map_err(db_error)?;
            keys.iter()
                .map(|key| {
                    stmt.query_row(params![ns, key, now], |r| {
                        Ok(Record { value: Bytes::from(r.get::<_, Vec<u8>>(0)?), version: r.get::<_, i64>(1)? as u64 })
                    })
                    .optional()
                    .map_err(db_error)
                })
                .collect()
        })
        .await
    }

    async fn batch_put(&self, ns: &Namespace<()>, ops: Vec<PutOp>) -> PluginResult<Vec<u64>> {
        let ns = ns.name().to_owned();
        self.write(move |conn| {
            let now = now_ms();
            // One transaction: the batch is atomic and costs one commit.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
            // One counter update for the whole batch: its versions are the
            // `n` numbers up to the one it answers.
            let n = ops.len() as u64;
            let first = reserve_versions(&tx, n).map_err(db_error)? + 1 - n;
            let mut versions = Vec::with_capacity(ops.len());
            for (op, version) in ops.iter().zip(first..) {
                upsert(&tx, &ns, op, version, now).map_err(db_error)?;
                versions.push(version);
            }
            tx.commit().map_err(db_error)?;
            Ok(versions)
        })
        .await
    }

    async fn scan(
        &self,
        ns: &Namespace<()>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> PluginResult<ScanPage> {
        let ns = ns.name().to_owned();
        let (start, inclusive) = match after {
            Some(after) => (after.to_owned(), false),
            None => (prefix.to_owned(), true),
        };
        let upper = prefix_upper_bound(prefix);
        self.read(move |conn| {
            let sql = format!(
                "SELECT key, value, version FROM kv
                 WHERE ns = ?1 AND key {} ?2 AND (?3 IS NULL OR key < ?3)
                   AND (expires_at IS NULL OR expires_at > ?4)
                 ORDER BY key LIMIT ?5",
                if inclusive { ">=" } else { ">" }
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
            let mut entries = stmt
                .query_map(params![ns, start, upper, now_ms(), (limit + 1) as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Record { value: Bytes::from(r.get::<_, Vec<u8>>(1)?), version: r.get::<_, i64>(2)? as u64 },
                    ))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db_error)?;
            let more = entries.len() > limit;
            entries.truncate(limit);
            Ok(ScanPage { entries, more })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, extra: serde_json::Value) -> Config {
        let mut config = serde_json::json!({"path": dir.join("t.sqlite3")});
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        serde_json::from_value(config).unwrap()
    }

    fn autocheckpoint(conn: &Conn) -> i64 {
        lock(conn).pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0)).unwrap()
    }

    /// The writer checkpoints after `wal_autocheckpoint` pages: 10,000 by
    /// default (not SQLite's 1000), or what the config says.
    #[tokio::test]
    async fn wal_autocheckpoint_is_set_on_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open("t", config(dir.path(), serde_json::json!({}))).await.unwrap();
        assert_eq!(autocheckpoint(&db.writer), 10_000);
        drop(db);
        let db = Sqlite::open("t", config(dir.path(), serde_json::json!({"wal_autocheckpoint": 500}))).await.unwrap();
        assert_eq!(autocheckpoint(&db.writer), 500);
    }

    /// 0 would turn checkpoints off and let the WAL grow without bound; a
    /// negative or fractional count is not a page count.
    #[tokio::test]
    async fn a_wal_autocheckpoint_that_is_not_a_positive_page_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Sqlite::open("t", config(dir.path(), serde_json::json!({"wal_autocheckpoint": 0}))).await.err();
        assert!(
            matches!(&err, Some(PluginError::InvalidArgument(m)) if m.contains("wal_autocheckpoint must be at least 1")),
            "{err:?}"
        );
        for bad in [serde_json::json!(-1), serde_json::json!(1.5), serde_json::json!("many")] {
            let config = serde_json::json!({"path": "t.sqlite3", "wal_autocheckpoint": bad});
            assert!(serde_json::from_value::<Config>(config).is_err(), "{bad} accepted");
        }
    }
}
