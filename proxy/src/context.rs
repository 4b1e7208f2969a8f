//! The per-request context: what every stage of the request path knows
//! about a call. The context layer (`crate::layer::context`) creates it, the
//! authentication layer fills in the principal, the audit layer attaches
//! the facts it will record, and the data plane's `forward` step reads it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ProxyError;
use crate::plugin::CallOptions;
use crate::security::Principal;
use crate::security::audit::{Facts, SharedFacts};

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    pub started: Instant,
    /// When the client stops waiting: its `grpc-timeout`, capped by
    /// `limits.request_timeout`.
    pub deadline: Instant,
    /// Who is calling; no rights until the authentication layer sets it.
    pub principal: Arc<Principal>,
    /// What the stages learned, for the audit record; `None` when the audit
    /// log is off (or the call is not audited), so no stage does audit work.
    pub facts: Option<SharedFacts>,
    /// Whether the call is traced (its spans exported), decided when it
    /// arrived; the plugin hop has a span only then.
    pub traced: bool,
}

/// A fresh request id (a random UUID), for a call that did not bring one.
///
/// Hyphenated into a stack buffer and copied once into the `Arc`, instead of
/// through an intermediate `String`.
pub fn new_request_id() -> Arc<str> {
    let mut buf = uuid::Uuid::encode_buffer();
    Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
}

impl RequestContext {
    /// The context of a request that did not pass through the layers (only
    /// in unit tests of services).
    pub fn detached(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            request_id: new_request_id(),
            started: now,
            deadline: now + timeout,
            principal: Arc::new(Principal::dev()),
            facts: None,
            traced: false,
        }
    }

    /// Takes the context out of a tonic request (the layers put it there).
    pub fn take<T>(request: &mut tonic::Request<T>) -> Result<Self, ProxyError> {
        request
            .extensions_mut()
            .remove::<Self>()
            .ok_or_else(|| ProxyError::Internal("request context missing".to_owned()))
    }

    /// Reads the context of a tonic request.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, ProxyError> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| ProxyError::Internal("request context missing".to_owned()))
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// What a plugin call made for this request carries.
    pub fn call_options(&self) -> CallOptions {
        CallOptions::new(self.deadline, self.request_id.clone())
    }

    /// Notes facts for the audit record, when the call is audited.
    pub fn note(&self, note: impl FnOnce(&mut Facts)) {
        if let Some(facts) = &self.facts
            && let Ok(mut facts) = facts.lock()
        {
            note(&mut facts);
        }
    }
}
