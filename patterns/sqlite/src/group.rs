//! Group commit for KeyValue writes.
//!
//! SQLite has one writer, and a commit costs far more than the statements
//! it commits (the transaction's locks, and a WAL write of every page it
//! touched, the version counter's page included). Puts and deletes that
//! arrive while a commit runs therefore queue up, and the next commit runs
//! all of them in one IMMEDIATE transaction. Each write runs under a
//! savepoint of its own, so one that fails (a compare-and-set conflict) is
//! rolled back alone and answers its own error; the others commit. No
//! write is answered before the transaction holding it has committed, so
//! an acknowledged write is as durable as before (`synchronous` decides
//! how durable a commit is).

use prism_plugin_sdk::{PluginError, PluginResult};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::{Conn, db_error, lock};

/// Writes one commit takes at most, so a long queue does not hold the
/// writer (and the TimeSeries and Graph writes waiting for it) for long.
pub(crate) const MAX_GROUP: usize = 256;

/// Writes waiting for a commit; beyond this, callers wait to enqueue.
const QUEUE: usize = 4096;

/// One write: statements run inside the group's transaction, answering a
/// number (a version, or 1/0 for a delete).
type Run = Box<dyn FnOnce(&Connection) -> PluginResult<u64> + Send>;

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
        run: impl FnOnce(&Connection) -> PluginResult<u64> + Send + 'static,
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
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for run in runs {
            let savepoint = tx.savepoint()?;
            let result = run(&savepoint);
            if result.is_ok() {
                savepoint.commit()?;
            }
            // An Err's savepoint rolls back when dropped.
            results.push(result);
        }
        tx.commit()
    })();
    match outcome {
        Ok(()) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have gone (deadline); the write stands.
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            // Nothing of the group was committed: every write fails with the
            // transaction's error, the ones that ran without one included.
            let error = db_error(e);
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
            "CREATE TABLE t (k TEXT PRIMARY KEY); CREATE TABLE c (v INTEGER); INSERT INTO c VALUES (0);",
        )
        .unwrap();
        Arc::new(Mutex::new(conn))
    }

    fn rows(conn: &Conn) -> Vec<String> {
        let conn = lock(conn);
        let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn insert(key: &'static str) -> impl FnOnce(&Connection) -> PluginResult<u64> + Send + 'static {
        move |tx| tx.execute("INSERT INTO t (k) VALUES (?1)", [key]).map(|n| n as u64).map_err(db_error)
    }

    /// Writes queued together commit together, and one that fails is rolled
    /// back alone: its statements before the error are undone, the others
    /// stand, and each caller gets its own answer.
    #[tokio::test]
    async fn a_failing_write_is_rolled_back_alone() {
        let db = database();
        let group = GroupCommit::start(db.clone());
        let failing = |tx: &Connection| -> PluginResult<u64> {
            tx.execute("INSERT INTO t (k) VALUES ('b')", []).map_err(db_error)?;
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
                        .write(|tx| {
                            tx.query_row("UPDATE c SET v = v + 1 RETURNING v", [], |r| r.get::<_, i64>(0))
                                .map(|v| v as u64)
                                .map_err(db_error)
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
    }
}
