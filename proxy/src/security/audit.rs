//! The audit log: one JSON line per data access, admin action, refused
//! call or failed TLS handshake. Records name keys only by hash and never
//! carry values.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::config::AuditSink;

/// Records waiting to be written; callers wait when it is full, so records
/// are slowed down, never dropped.
const QUEUE: usize = 8192;

/// What a handler learned about a call, filled in as it goes and written by
/// the layer when the call ends.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    pub namespace: Option<String>,
    pub right: Option<&'static str>,
    /// SHA-256 of the (first) key, hex, first 16 bytes.
    pub key_hash: Option<String>,
    /// Number of keys of a batch call.
    pub keys: Option<usize>,
    pub denied: Option<String>,
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
        }
    }
}

/// What the context layer knows about a finished (or refused) call.
pub struct CallSummary<'a> {
    pub request_id: &'a str,
    pub principal: Option<&'a super::Principal>,
    pub peer: Option<SocketAddr>,
    pub path: &'a str,
    pub status: tonic::Code,
    pub latency: std::time::Duration,
}

impl Record {
    /// The record of one call: the summary, and what the handler noted.
    pub fn call(call: &CallSummary<'_>, facts: Facts, reason_if_refused: Option<String>) -> Self {
        let (decision, reason) = match (facts.denied, reason_if_refused) {
            (Some(why), _) | (None, Some(why)) => ("deny", Some(why)),
            (None, None) if call.status == tonic::Code::Unauthenticated => ("deny", None),
            (None, None) => ("allow", None),
        };
        Self {
            ts: now(),
            event: "call",
            request_id: Some(call.request_id.to_owned()),
            principal: call.principal.map(ToString::to_string),
            auth: call.principal.map_or("none", |p| p.method().as_str()),
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
        }
    }
}

/// A handle to the audit writer; cheap to clone. Off: records are dropped
/// at once.
#[derive(Clone, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<String>>,
}

impl Audit {
    /// Starts the writer for `sink`.
    pub async fn start(sink: &AuditSink) -> Result<Self, String> {
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match sink {
            AuditSink::Off => return Ok(Self::default()),
            AuditSink::Stdout => Box::new(tokio::io::stdout()),
            AuditSink::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| format!("audit.sink: {}: {e}", path.display()))?,
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
        Ok(Self { tx: Some(tx) })
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
        }
    }

    /// Queues a record, waiting while the queue is full.
    pub async fn write_async(&self, record: Record) {
        if let Some(tx) = &self.tx
            && let Some(line) = line(&record)
        {
            let _ = tx.send(line).await;
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
