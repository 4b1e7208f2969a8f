//! The audit log: one JSON line per data access, admin action, refused
//! call or failed TLS handshake. Records name keys only by hash and never
//! carry values.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Principal;
use crate::config::AuditSink;
use crate::metrics::Metrics;

/// Records waiting to be written; callers wait when it is full, so records
/// are slowed down, never dropped.
const QUEUE: usize = 8192;

/// What the stages of the request path learned about a call, filled in as
/// it goes (who is calling, which namespace, what was refused) and written
/// by the audit layer when the call ends.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// Who is calling, once authenticated.
    pub principal: Option<Arc<Principal>>,
    /// Why authentication refused the call.
    pub unauthenticated: Option<String>,
    pub namespace: Option<String>,
    pub right: Option<&'static str>,
    /// SHA-256 of the (first) key, hex, first 16 bytes.
    pub key_hash: Option<String>,
    /// Number of keys of a batch call.
    pub keys: Option<usize>,
    pub denied: Option<String>,
    /// The PII classes a read of a typed namespace returned, and how.
    pub pii: Option<PiiReturned>,
}

/// What a read of a typed namespace returned of its tagged fields: the
/// classes, and whether raw (the caller holds `pii`) or masked. Never the
/// values.
#[derive(Debug, Clone, Serialize)]
pub struct PiiReturned {
    pub returned: &'static str,
    pub classes: Vec<&'static str>,
}

pub type SharedFacts = Arc<Mutex<Facts>>;

/// Hash of a key for audit records: enough to correlate, not to read.
pub fn key_hash(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// One audit record.
#[derive(Debug, Serialize)]
pub struct Record {
    pub ts: String,
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub auth: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<usize>,
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pii: Option<PiiReturned>,
    /// Events a subscription delivered (its end record only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Record {
    /// A TLS handshake that failed: no call was made.
    pub fn handshake(peer: SocketAddr, reason: &str) -> Self {
        Self {
            ts: now(),
            event: "tls_handshake",
            request_id: None,
            principal: None,
            auth: "none",
            peer: Some(peer.to_string()),
            operation: None,
            namespace: None,
            right: None,
            key_hash: None,
            keys: None,
            decision: "deny",
            reason: Some(reason.to_owned()),
            status: None,
            latency_ms: None,
            pii: None,
            events: None,
        }
    }
}

/// What the audit layer knows about a finished (or refused) call.
pub struct CallSummary<'a> {
    pub request_id: &'a str,
    pub peer: Option<SocketAddr>,
    pub path: &'a str,
    pub status: tonic::Code,
    pub latency: std::time::Duration,
}

impl Record {
    /// The record of one call: the summary, and what the stages noted.
    pub fn call(call: &CallSummary<'_>, facts: Facts) -> Self {
        let (decision, reason) = match (facts.denied, facts.unauthenticated) {
            (Some(why), _) | (None, Some(why)) => ("deny", Some(why)),
            (None, None) if call.status == tonic::Code::Unauthenticated => ("deny", None),
            (None, None) => ("allow", None),
        };
        let principal = facts.principal.as_deref();
        Self {
            ts: now(),
            event: "call",
            request_id: Some(call.request_id.to_owned()),
            principal: principal.map(ToString::to_string),
            auth: principal.map_or("none", |p| p.method().as_str()),
            peer: call.peer.map(|p| p.to_string()),
            operation: Some(call.path.trim_start_matches('/').to_owned()),
            namespace: facts.namespace,
            right: facts.right,
            key_hash: facts.key_hash,
            keys: facts.keys,
            decision,
            reason,
            status: Some(format!("{:?}", call.status)),
            latency_ms: Some(call.latency.as_secs_f64() * 1000.0),
            pii: facts.pii,
            events: None,
        }
    }

    /// The end of a subscription. Its start is the `call` record of its
    /// Subscribe (same request id); this one says how long it lasted
    /// (`latency_ms`), how many events it delivered and why it ended.
    pub fn subscription_end(end: &SubscriptionEnd<'_>) -> Self {
        Self {
            ts: now(),
            event: "subscription_end",
            request_id: Some(end.request_id.to_owned()),
            principal: Some(end.principal.to_string()),
            auth: end.principal.method().as_str(),
            peer: end.peer.map(|p| p.to_string()),
            operation: Some(SUBSCRIBE.to_owned()),
            namespace: Some(end.namespace.to_owned()),
            right: Some("read"),
            key_hash: Some(key_hash(end.series)),
            keys: None,
            decision: "allow",
            reason: Some(end.reason.to_owned()),
            status: Some(format!("{:?}", end.status)),
            latency_ms: Some(end.lasted.as_secs_f64() * 1000.0),
            pii: None,
            events: Some(end.events),
        }
    }
}

/// The operation of a subscription's records.
const SUBSCRIBE: &str = "prism.timeseries.v1.TimeSeriesService/Subscribe";

/// What a subscription's end record says.
pub struct SubscriptionEnd<'a> {
    pub request_id: &'a str,
    pub principal: &'a Principal,
    pub peer: Option<SocketAddr>,
    pub namespace: &'a str,
    pub series: &'a str,
    pub status: tonic::Code,
    /// Why it ended: `client`, `slow`, `idle`, `shutdown` or `plugin`.
    pub reason: &'a str,
    pub lasted: std::time::Duration,
    pub events: u64,
}

/// A handle to the audit writer; cheap to clone. Off: records are dropped
/// at once.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<String>>,
    metrics: Option<Arc<Metrics>>,
}

/// Why the audit log cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("audit.sink: {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Checks that the audit file can be opened for appending, without
/// creating it (for `--check`): an existing file must open for writing, a
/// new one needs a writable directory.
pub fn check(sink: &AuditSink) -> Result<(), AuditError> {
    let AuditSink::File(path) = sink else { return Ok(()) };
    let error = |source| AuditError { path: path.clone(), source };
    if path.exists() {
        std::fs::OpenOptions::new().append(true).open(path).map(drop).map_err(error)
    } else {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        tempfile::tempfile_in(dir).map(drop).map_err(error)
    }
}

/// A record handed to the writer: at once, or once the queue has room.
pub enum Queued {
    Done,
    Waiting(Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Audit {
    /// Starts the writer for `sink`; `metrics` counts the records it drops.
    pub async fn start(sink: &AuditSink, metrics: Arc<Metrics>) -> Result<Self, AuditError> {
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match sink {
            AuditSink::Off => return Ok(Self::default()),
            AuditSink::Stdout => Box::new(tokio::io::stdout()),
            AuditSink::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|source| AuditError { path: path.clone(), source })?,
            ),
        };
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let mut batch = line;
                // Write what has queued up in one go, then flush.
                while let Ok(more) = rx.try_recv() {
                    batch.push_str(&more);
                }
                if let Err(e) = out.write_all(batch.as_bytes()).await {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
                let _ = out.flush().await;
            }
        });
        Ok(Self { tx: Some(tx), metrics: Some(metrics) })
    }

    /// Records waiting to be written, and how many may wait.
    pub fn depth(&self) -> Option<(usize, usize)> {
        self.tx.as_ref().map(|tx| (tx.max_capacity() - tx.capacity(), tx.max_capacity()))
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a record without waiting (for callers that cannot await);
    /// only a full queue drops it, and says so.
    pub fn write(&self, record: Record) {
        if let Some(tx) = &self.tx
            && let Some(line) = line(&record)
            && tx.try_send(line).is_err()
        {
            tracing::error!("audit queue full; a record was dropped");
            if let Some(metrics) = &self.metrics {
                metrics.audit_record_dropped();
            }
        }
    }

    /// Queues a record; when the queue is full the caller gets a future
    /// that waits for room, so records are slowed down, never dropped.
    pub fn queue(&self, record: &Record) -> Queued {
        let (Some(tx), Some(line)) = (&self.tx, line(record)) else { return Queued::Done };
        match tx.try_send(line) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Queued::Done,
            Err(mpsc::error::TrySendError::Full(line)) => {
                let tx = tx.clone();
                Queued::Waiting(Box::pin(async move {
                    let _ = tx.send(line).await;
                }))
            }
        }
    }
}

fn line(record: &Record) -> Option<String> {
    match serde_json::to_string(record) {
        Ok(mut line) => {
            line.push('\n');
            Some(line)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an audit record");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_are_stable_and_short() {
        assert_eq!(key_hash("user/1"), key_hash("user/1"));
        assert_ne!(key_hash("user/1"), key_hash("user/2"));
        assert_eq!(key_hash("x").len(), 32);
        assert!(!key_hash("secret-key").contains("secret"));
    }
}
