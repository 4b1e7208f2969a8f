//! The request context: a request id (the client's `x-request-id` when it
//! is valid, else a new one, always returned in the response headers) and
//! the deadline (the client's `grpc-timeout`, capped by
//! `limits.request_timeout`). It sits right inside the concurrency limit,
//! so every later stage, and every log line of the call, has the id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use prism_proto::wire::{self, metadata};
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::context::RequestContext;
use crate::security::Principal;

const MAX_REQUEST_ID_LEN: usize = 128;

fn valid_request_id(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= MAX_REQUEST_ID_LEN && text.bytes().all(|b| b.is_ascii_graphic())).then_some(text)
}

#[derive(Clone)]
pub struct ContextLayer {
    max_timeout: Duration,
    /// Who a call is before authentication: nobody, with no rights. Shared,
    /// so creating a context allocates no principal.
    unauthenticated: Arc<Principal>,
}

impl ContextLayer {
    pub fn new(max_timeout: Duration) -> Self {
        Self { max_timeout, unauthenticated: Arc::new(Principal::default()) }
    }
}

/// The span of one call. A traced call (the client's `traceparent` asked
/// for it, or it is in `tracing.sampling_ratio`'s share) has an INFO span,
/// exported, the child of the client's span when there is one, and every
/// log line of the call carries the request and trace ids; any other call a
/// DEBUG span, which costs nothing unless debug logs are on.
fn request_span(path: &str, request_id: &str, headers: &http::HeaderMap) -> tracing::Span {
    let Some(parent) = prism_telemetry::sample(headers) else {
        return tracing::debug_span!("request", request_id, method = path);
    };
    let span = tracing::info_span!(
        "request",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        request_id,
        method = path,
        trace_id = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    prism_telemetry::set_parent(&span, parent);
    if let Some(trace_id) = prism_telemetry::trace_id(&span) {
        span.record("trace_id", trace_id);
    }
    span
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

impl<S, B, R> Service<Request<B>> for ContextService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let headers = request.headers();
        let request_id: Arc<str> = headers
            .get(&metadata::REQUEST_ID)
            .and_then(valid_request_id)
            .map_or_else(crate::context::new_request_id, Arc::from);
        let timeout = headers
            .get(&metadata::GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(wire::parse_grpc_timeout)
            .map_or(self.layer.max_timeout, |t| t.min(self.layer.max_timeout));
        let started = Instant::now();
        let span = request_span(request.uri().path(), &request_id, headers);
        request.extensions_mut().insert(RequestContext {
            request_id: request_id.clone(),
            started,
            deadline: started + timeout,
            principal: self.layer.unauthenticated.clone(),
            facts: None,
            traced: prism_telemetry::traced(&span),
        });
        ContextFuture { inner: self.inner.call(request).instrument(span), request_id, started }
    }
}

/// A code that says the proxy or its plugins failed the call, not the
/// client: the calls an operator looks for in the log.
fn server_fault(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss | tonic::Code::Unavailable)
}

pin_project! {
    /// The call, in its span; adds the request id to the response, logs a
    /// call the server failed.
    pub struct ContextFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        request_id: Arc<str>,
        started: Instant,
    }
}

impl<F, R, E> Future for ContextFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = std::task::ready!(this.inner.as_mut().poll(cx))?;
        if let Ok(value) = HeaderValue::from_str(this.request_id) {
            response.headers_mut().insert(metadata::REQUEST_ID.clone(), value);
        }
        let span = this.inner.span();
        let code = super::grpc_status(&response);
        if prism_telemetry::traced(span) {
            span.record("rpc.grpc.status_code", code as i32);
            if code != tonic::Code::Ok {
                span.record("otel.status_code", "ERROR");
            }
        }
        let elapsed_us = || this.started.elapsed().as_micros() as u64;
        if server_fault(code) {
            // With its request id (the span's fields are only logged when
            // the call is traced or debug logs are on): the id the client
            // got back finds this line.
            span.in_scope(|| {
                let status = tonic::Status::from_header_map(response.headers());
                tracing::warn!(
                    request_id = %this.request_id,
                    ?code,
                    error = status.as_ref().map_or("", tonic::Status::message),
                    elapsed_us = elapsed_us(),
                    "call failed"
                );
            });
        } else if tracing::enabled!(tracing::Level::DEBUG) {
            span.in_scope(|| tracing::debug!(elapsed_us = elapsed_us(), ?code, "done"));
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert_eq!(valid_request_id(&HeaderValue::from_static("abc-123")), Some("abc-123"));
        assert_eq!(valid_request_id(&HeaderValue::from_static("has space")), None);
        assert_eq!(valid_request_id(&HeaderValue::from_str(&"x".repeat(129)).unwrap()), None);
        assert_eq!(valid_request_id(&HeaderValue::from_static("")), None);
    }

    #[test]
    fn assigned_request_ids_are_distinct_v4_uuids_that_pass_our_own_check() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| crate::context::new_request_id().to_string()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version(), Some(uuid::Version::Random));
            assert_eq!(uuid.hyphenated().to_string(), *id, "lower-case, hyphenated");
            assert_eq!(valid_request_id(&HeaderValue::from_str(id).unwrap()), Some(id.as_str()));
        }
    }
}
