//! The per-request context and the layer that creates it.
//!
//! Every call gets a [`RequestContext`] (request id, start time, deadline,
//! the authenticated principal) before it reaches a service, stored in the
//! request extensions. The layer enforces the concurrency limit, so an
//! overloaded proxy answers RESOURCE_EXHAUSTED at once instead of queueing
//! without bound; authenticates the caller, refusing UNAUTHENTICATED calls;
//! and writes the audit record when a call ends. One layer does all three
//! so that a request pays for one boxed future, not one per concern.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::error::ProxyError;
use crate::security::Principal;
use crate::security::audit::{Audit, CallSummary, Facts, Record, SharedFacts};
use crate::security::authn::{self, Authenticator, Credentials};

/// Header carrying the request id, read from the client when valid and
/// always returned.
pub const REQUEST_ID_HEADER: &str = prism_proto::wire::metadata::REQUEST_ID;
const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    pub started: Instant,
    pub deadline: Instant,
    /// Who is calling; set by the auth layer (no rights until then).
    pub principal: Arc<Principal>,
    /// What the handler learned, for the audit record; `None` when the
    /// audit log is off, so handlers do no audit work.
    pub facts: Option<SharedFacts>,
}

impl RequestContext {
    /// The context of a request that did not pass through the layer (only
    /// in unit tests of services).
    pub fn detached(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            request_id: Arc::from(uuid::Uuid::new_v4().to_string()),
            started: now,
            deadline: now + timeout,
            principal: Arc::new(Principal::dev()),
            facts: None,
        }
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

    /// Wraps a message for a plugin call: the remaining deadline travels as
    /// `grpc-timeout` and the request id as metadata.
    pub fn outbound<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.remaining());
        if let Ok(value) = self.request_id.parse() {
            request.metadata_mut().insert(REQUEST_ID_HEADER, value);
        }
        request
    }
}

/// Parses a `grpc-timeout` header value: digits followed by a unit
/// (H, M, S, m, u, n), as the gRPC HTTP/2 spec defines it.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn valid_request_id(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= MAX_REQUEST_ID_LEN && text.bytes().all(|b| b.is_ascii_graphic())).then_some(text)
}

#[derive(Clone)]
pub struct ContextLayer {
    permits: Arc<Semaphore>,
    max_timeout: Duration,
    max_concurrent: usize,
    auth: Arc<Authenticator>,
    audit: Audit,
}

impl ContextLayer {
    pub fn new(max_concurrent: usize, max_timeout: Duration, auth: Arc<Authenticator>, audit: Audit) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_concurrent)), max_timeout, max_concurrent, auth, audit }
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContextService { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct ContextService<S> {
    inner: S,
    layer: ContextLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for ContextService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Take the service that was polled ready, leave a clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            let status = Status::from(ProxyError::ResourceExhausted(format!(
                "the proxy is serving its limit of {} concurrent requests (limits.max_concurrent_requests); retry later",
                self.layer.max_concurrent
            )));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };

        let headers = request.headers();
        let request_id: Arc<str> = headers
            .get(REQUEST_ID_HEADER)
            .and_then(valid_request_id)
            .map_or_else(|| Arc::from(uuid::Uuid::new_v4().to_string()), Arc::from);
        let timeout = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(self.layer.max_timeout, |t| t.min(self.layer.max_timeout));
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let span = tracing::debug_span!("request", id = %request_id, method = %path);
        let credentials = Credentials::of(&request);
        let layer = self.layer.clone();
        // Audit only our own services (not health or reflection), and only
        // when the log is on.
        let facts = (layer.audit.enabled() && path.starts_with("/prism.")).then(SharedFacts::default);
        let peer = facts.as_ref().and_then(|_| authn::peer(&request));

        Box::pin(
            async move {
                let authenticated = layer.auth.authenticate(&path, credentials).await;
                let summary = |principal, status| CallSummary {
                    request_id: &request_id,
                    principal,
                    peer,
                    path: &path,
                    status,
                    latency: started.elapsed(),
                };
                let principal = match authenticated {
                    Ok(principal) => principal,
                    Err(why) => {
                        tracing::debug!(reason = %why, "unauthenticated call refused");
                        let status = Status::from(ProxyError::Unauthenticated(why.clone()));
                        // Refusals are audited for every path: they are
                        // attempts, whatever they aimed at.
                        let record = Record::call(&summary(None, status.code()), Facts::default(), Some(why));
                        layer.audit.write_async(record).await;
                        return Ok(with_request_id(status.into_http(), &request_id));
                    }
                };
                request.extensions_mut().insert(RequestContext {
                    request_id: request_id.clone(),
                    started,
                    deadline: started + timeout,
                    principal: principal.clone(),
                    facts: facts.clone(),
                });
                let response = inner.call(request).await?;
                drop(permit);
                if let Some(facts) = facts {
                    let facts = facts.lock().map(|f| f.clone()).unwrap_or_default();
                    let record = Record::call(&summary(Some(&principal), grpc_status(&response)), facts, None);
                    layer.audit.write_async(record).await;
                }
                tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "done");
                Ok(with_request_id(response, &request_id))
            }
            .instrument(span),
        )
    }
}

/// The gRPC status of a unary response: errors travel as trailers-only
/// responses, with `grpc-status` in the headers; success has none there.
fn grpc_status<B>(response: &Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

fn with_request_id<B>(mut response: Response<B>, request_id: &str) -> Response<B> {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        for bad in ["", "m", "10", "10x", "-5S", "1234567890S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_ids_are_checked() {
        assert_eq!(valid_request_id(&HeaderValue::from_static("abc-123")), Some("abc-123"));
        assert_eq!(valid_request_id(&HeaderValue::from_static("has space")), None);
        assert_eq!(valid_request_id(&HeaderValue::from_str(&"x".repeat(129)).unwrap()), None);
    }
}
