//! Group commit for KeyValue writes.
//!
//! SQLite has one writer, and a commit costs far more than the statements
//! it commits (the transaction's locks, and a WAL write of every page it
//! touched, the version counter's page included). Puts and deletes that
//! arrive while a commit runs therefore queue up, and the next commit runs
//! all of them in one IMMEDIATE transaction. A write that fails (a
//! compare-and-set conflict, a statement error) answers its own error and
//! the others commit. No write is answered before the transaction holding
//! it has committed, so an acknowledged write is as durable as before
//! (`synchronous` decides how durable a commit is).
//!
//! A write makes its checks first and at most one change, one statement:
//! SQLite undoes a failed statement by itself, so a failing write leaves
//! nothing behind without a savepoint of its own (a savepoint per write
//! cost two more statements and a copy of every page it touched). A write
//! that breaks this rule, failing after it changed a row, fails its whole
//! group rather than commit half of itself.
//!
//! The group also hands out the version numbers of its writes from memory
//! (`Versions`): it reads the counter once and stores it once, instead of
//! one counter update per write, which made every write touch the
//! counter's page.

use prism_plugin_sdk::{PluginError, PluginResult};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::{Conn, advance_versions, db_error, lock};

/// Writes one commit takes at most, so a long queue does not hold the
/// writer (and the TimeSeries and Graph writes waiting for it) for long.
pub(crate) const MAX_GROUP: usize = 256;

/// Writes waiting for a commit; beyond this, callers wait to enqueue.
const QUEUE: usize = 4096;

/// One write: statements run inside the group's transaction, answering a
/// number (a version, or 1/0 for a delete).
type Run = Box<dyn FnOnce(&Connection, &mut Versions) -> PluginResult<u64> + Send>;

/// The versions a group hands out: read from the counter on first use,
/// stored back once before the group commits. One writer holds the
/// counter's transaction, so no one else can take a number in between. A
/// write that fails after taking one leaves a gap: versions only ever
/// grow, but need not be consecutive.
#[derive(Default)]
pub(crate) struct Versions {
    last: Option<u64>,
    taken: u64,
}

impl Versions {
    pub(crate) fn next(&mut self, tx: &Connection) -> Result<u64, rusqlite::Error> {
        let last = match self.last {
            Some(last) => last,
            None => tx
                .prepare_cached("SELECT value FROM counters WHERE name = 'version'")?
                .query_row([], |r| r.get::<_, i64>(0))? as u64,
        };
        self.last = Some(last + 1);
        self.taken += 1;
        Ok(last + 1)
    }

    /// Stores what was taken: the one counter update of the group.
    fn store(&self, tx: &Connection) -> Result<(), rusqlite::Error> {
        if self.taken > 0 {
            advance_versions(tx, self.taken)?;
        }
        Ok(())
    }
}

struct Job {
    run: Run,
    reply: oneshot::Sender<PluginResult<u64>>,
}

/// The queue of KeyValue writes and the task that commits them.
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    task: tokio::task::JoinHandle<()>,
}

impl GroupCommit {
    pub(crate) fn start(writer: Conn) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        Self { jobs, task: tokio::spawn(commit_loop(writer, rx)) }
    }

    /// Runs `run` in the next group and answers once that group committed.
    pub(crate) async fn write(
        &self,
        run: impl FnOnce(&Connection, &mut Versions) -> PluginResult<u64> + Send + 'static,
    ) -> PluginResult<u64> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { run: Box::new(run), reply })
            .await
            .map_err(|_| PluginError::Unavailable("sqlite writer stopped".to_owned()))?;
        // A dropped reply means the group's blocking task panicked: nothing
        // of it was committed.
        answer.await.map_err(|_| PluginError::internal("sqlite group commit failed"))?
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn commit_loop(writer: Conn, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut group = Vec::with_capacity(MAX_GROUP.min(rx.len() + 1));
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let conn = writer.clone();
        // Awaited, so the groups commit one after the other in queue order.
        if let Err(e) = tokio::task::spawn_blocking(move || commit(&mut lock(&conn), group)).await {
            tracing::error!(error = %e, "sqlite group commit panicked");
        }
    }
}

/// Runs the group's writes in one transaction and answers each.
fn commit(conn: &mut Connection, group: Vec<Job>) {
    let (runs, replies): (Vec<Run>, Vec<_>) = group.into_iter().map(|j| (j.run, j.reply)).unzip();
    let mut results = Vec::with_capacity(runs.len());
    let outcome = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
        let mut versions = Versions::default();
        for run in runs {
            let before = tx.total_changes();
            let result = run(&tx, &mut versions);
            if let Err(e) = &result {
                if tx.is_autocommit() {
                    // SQLite rolled the whole transaction back (a full disk,
                    // an I/O error): the writes before this one are gone too.
                    return Err(e.clone());
                }
                if tx.total_changes() != before {
                    return Err(PluginError::internal("a grouped sqlite write failed after changing a row"));
                }
            }
            results.push(result);
        }
        versions.store(&tx).map_err(db_error)?;
        tx.commit().map_err(db_error)
    })();
    match outcome {
        Ok(()) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have gone (deadline); the write stands.
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            // Nothing of the group was committed (the transaction rolls back
            // when dropped): every write fails with the group's error, the
            // ones that ran without one included.
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn database() -> Conn {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (k TEXT PRIMARY KEY); CREATE TABLE c (v INTEGER); INSERT INTO c VALUES (0);
             CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counters VALUES ('version', 0);",
        )
        .unwrap();
        Arc::new(Mutex::new(conn))
    }

    fn rows(conn: &Conn) -> Vec<String> {
        let conn = lock(conn);
        let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn insert(key: &'static str) -> impl FnOnce(&Connection, &mut Versions) -> PluginResult<u64> + Send + 'static {
        move |tx, _| tx.execute("INSERT INTO t (k) VALUES (?1)", [key]).map(|n| n as u64).map_err(db_error)
    }

    /// Writes queued together commit together, and one that fails answers
    /// its own error while the others stand.
    #[tokio::test]
    async fn a_failing_write_fails_alone() {
        let db = database();
        let group = GroupCommit::start(db.clone());
        let failing = |tx: &Connection, _: &mut Versions| -> PluginResult<u64> {
            tx.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).map_err(db_error)?;
            Err(PluginError::Conflict("no".to_owned()))
        };
        // On this current-thread runtime all three are queued before the
        // commit task runs: one group.
        let (a, b, c) = tokio::join!(group.write(insert("a")), group.write(failing), group.write(insert("c")));
        assert_eq!(a.unwrap(), 1);
        assert!(matches!(b, Err(PluginError::Conflict(_))), "{b:?}");
        assert_eq!(c.unwrap(), 1);
        assert_eq!(rows(&db), ["a", "c"]);
        // A statement error (a duplicate key) is that write's alone too.
        let (dup, d) = tokio::join!(group.write(insert("a")), group.write(insert("d")));
        assert!(dup.is_err());
        assert_eq!(d.unwrap(), 1);
        assert_eq!(rows(&db), ["a", "c", "d"]);
    }

    /// Concurrent writes in groups see each other in queue order: 500
    /// increments of one counter, from tasks on two threads, each see a
    /// distinct value and none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_lose_nothing() {
        let db = database();
        let group = Arc::new(GroupCommit::start(db.clone()));
        let tasks: Vec<_> = (0..500)
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move {
                    group
                        .write(|tx, versions| {
                            let v = tx
                                .query_row("UPDATE c SET v = v + 1 RETURNING v", [], |r| r.get::<_, i64>(0))
                                .map_err(db_error)?;
                            // The version handed out in memory follows the
                            // committed order just as the table's counter.
                            assert_eq!(versions.next(tx).map_err(db_error)?, v as u64);
                            Ok(v as u64)
                        })
                        .await
                })
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap().unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=500).collect::<Vec<u64>>());
        let total: i64 = lock(&db).query_row("SELECT v FROM c", [], |r| r.get(0)).unwrap();
        assert_eq!(total, 500);
        assert_eq!(counter(&db), 500);
    }

    /// A write that fails after it changed a row cannot be undone alone
    /// without a savepoint: its whole group fails, and nothing of it
    /// (neither the half write nor its neighbours) is committed.
    #[tokio::test]
    async fn a_write_failing_after_a_change_fails_its_group() {
        let db = database();
        let group = GroupCommit::start(db.clone());
        let half = |tx: &Connection, _: &mut Versions| -> PluginResult<u64> {
            tx.execute("INSERT INTO t (k) VALUES ('b')", []).map_err(db_error)?;
            Err(PluginError::Conflict("no".to_owned()))
        };
        let (a, b, c) = tokio::join!(group.write(insert("a")), group.write(half), group.write(insert("c")));
        for r in [&a, &b, &c] {
            assert!(matches!(r, Err(PluginError::Internal(_))), "{r:?}");
        }
        assert!(rows(&db).is_empty());
        // The writer is usable afterwards.
        group.write(insert("d")).await.unwrap();
        assert_eq!(rows(&db), ["d"]);
    }

    fn counter(db: &Conn) -> i64 {
        lock(db).query_row("SELECT value FROM counters WHERE name = 'version'", [], |r| r.get(0)).unwrap()
    }

    /// A write that takes a version and then fails leaves a gap; the
    /// versions after it still grow, and the counter stored with the group
    /// is the last one handed out, so the next group starts past it.
    #[tokio::test]
    async fn versions_grow_across_failures_and_groups() {
        let db = database();
        let group = GroupCommit::start(db.clone());
        let take = |tx: &Connection, v: &mut Versions| v.next(tx).map_err(db_error);
        let take_then_fail = |tx: &Connection, v: &mut Versions| -> PluginResult<u64> {
            v.next(tx).map_err(db_error)?;
            Err(PluginError::Conflict("no".to_owned()))
        };
        let (a, b, c) = tokio::join!(group.write(take), group.write(take_then_fail), group.write(take));
        assert_eq!((a.unwrap(), c.unwrap()), (1, 3));
        assert!(b.is_err());
        assert_eq!(counter(&db), 3);
        // A group that takes none leaves the counter alone.
        group.write(insert("x")).await.unwrap();
        assert_eq!(counter(&db), 3);
        assert_eq!(group.write(take).await.unwrap(), 4);
        assert_eq!(counter(&db), 4);
    }
}
