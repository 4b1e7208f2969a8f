//! What the SDK does around every call, on both transports: the call runs
//! in a span that carries the proxy's request id (so every log line of the
//! call, the store's included, can be matched to the proxy's), the proxy's
//! deadline is enforced, and a call abandoned before it finished is logged.
//!
//! A unary call carries these as metadata (`grpc-timeout`,
//! `x-request-id`), which [`CallLayer`] reads; a multiplexed call carries
//! them in its `CallOptions`, which the stream's dispatcher passes to
//! [`within_deadline`]. On a unary call tonic itself also drops the handler
//! when `grpc-timeout` passes; either way the store's future is dropped, so
//! a backend call nobody waits for stops.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use prism_proto::plugin::v1::CallOptions;
use prism_proto::wire::{self, metadata};
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::backend::Backend;
use crate::error::PluginError;

/// The span of one call, with the proxy's request id when it sent one.
/// A call the proxy traced (its trace context came with the call, sampled)
/// has an INFO span, exported, the child of the proxy's span for the call;
/// any other a DEBUG span, whose fields are only formatted when debug logs
/// are on.
fn span(method: &dyn std::fmt::Display, request_id: &[u8], parent: Parent<'_>) -> tracing::Span {
    let request_id = Lossy(request_id);
    let sampled = match parent {
        Parent::Headers(headers) => prism_telemetry::sample(headers),
        Parent::Fields(traceparent, tracestate) => prism_telemetry::sample_fields(traceparent, tracestate),
    };
    let Some(parent) = sampled else {
        return tracing::debug_span!("call", %method, %request_id);
    };
    let span = tracing::info_span!("call", otel.name = %method, otel.kind = "server", rpc.system = "grpc", %request_id);
    prism_telemetry::set_parent(&span, parent);
    span
}

/// Bytes shown as text, decoded only when a span field is formatted (a
/// disabled span formats nothing, so an untraced call pays nothing).
struct Lossy<'a>(&'a [u8]);

impl std::fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

/// Where the trace context of a call is.
enum Parent<'a> {
    Headers(&'a http::HeaderMap),
    Fields(&'a [u8], &'a [u8]),
}

/// A backend call of a traced call in its span (`db.system`,
/// `db.operation`; never a key or a value).
pub(crate) fn backend<B: Backend, F: Future>(operation: &'static str, call: F) -> Instrumented<F> {
    // `tracing_on` first: off, the current span is not even looked up.
    if !prism_telemetry::tracing_on() || !prism_telemetry::traced(&tracing::Span::current()) {
        return call.instrument(tracing::Span::none());
    }
    call.instrument(tracing::info_span!(
        "backend",
        otel.name = %format_args!("{} {operation}", B::DB_SYSTEM),
        otel.kind = "client",
        db.system = B::DB_SYSTEM,
        db.operation = operation,
    ))
}

/// Runs a multiplexed call in its span and under its deadline: past it the
/// call is dropped (cancelling its backend work) and answers
/// DEADLINE_EXCEEDED. One concrete future, built in place around the call:
/// the SDK moves it into a box per call, so its size is paid per call.
pub(crate) fn within_deadline<F>(
    service: &'static str,
    method: &'static str,
    options: Option<&CallOptions>,
    call: F,
) -> Within<F> {
    let request_id = options.map_or(&b""[..], |o| &o.request_id[..]);
    let parent = Parent::Fields(
        options.map_or(&b""[..], |o| &o.traceparent[..]),
        options.map_or(&b""[..], |o| &o.tracestate[..]),
    );
    Within {
        call,
        span: span(&format_args!("{service}{method}"), request_id, parent),
        timeout: options.map(|o| o.timeout_micros).filter(|t| *t > 0).map(Duration::from_micros),
        sleep: None,
        // The clock is read only when the call is logged.
        started: tracing::enabled!(tracing::Level::DEBUG).then(Instant::now),
    }
}

pin_project! {
    /// A call in its span and under a timeout whose timer is only set when
    /// the call waits: a store that answers at once never touches it.
    pub(crate) struct Within<F> {
        #[pin]
        call: F,
        span: tracing::Span,
        timeout: Option<Duration>,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        started: Option<Instant>,
    }
}

impl<F, T> Future for Within<F>
where
    F: Future<Output = Result<T, tonic::Status>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = match this.call.poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                let Some(timeout) = *this.timeout else { return Poll::Pending };
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                tracing::debug!(timeout_ms = timeout.as_millis() as u64, "deadline exceeded; call abandoned");
                Err(PluginError::DeadlineExceeded(format!(
                    "the call did not finish within its deadline of {} ms",
                    timeout.as_millis()
                ))
                .into())
            }
        };
        if let Some(started) = this.started {
            tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, ok = result.is_ok(), "call done");
        }
        Poll::Ready(result)
    }
}

/// Puts every unary call in its span, with the request id of its metadata,
/// and logs calls dropped before they finished.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallLayer;

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CallService<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for CallService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let headers = request.headers();
        let request_id = headers.get(&metadata::REQUEST_ID).map_or(&b""[..], |v| v.as_bytes());
        let deadline = headers
            .get(&metadata::GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(wire::parse_grpc_timeout)
            .map(|t| Instant::now() + t);
        let span = span(&request.uri().path(), request_id, Parent::Headers(headers));
        CallFuture { inner: self.inner.call(request).instrument(span), started: Instant::now(), deadline, done: false }
    }
}

pin_project! {
    /// A unary call in its span; says so when it is dropped unfinished.
    pub(crate) struct CallFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        started: Instant,
        deadline: Option<Instant>,
        done: bool,
    }

    impl<F> PinnedDrop for CallFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done {
                let _entered = this.inner.span().enter();
                let past_deadline = this.deadline.is_some_and(|d| Instant::now() >= d);
                tracing::debug!(
                    elapsed_us = this.started.elapsed().as_micros() as u64,
                    past_deadline,
                    "call abandoned before it finished (deadline exceeded or the caller went away)"
                );
            }
        }
    }
}

impl<F, R, E> Future for CallFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let output = std::task::ready!(this.inner.as_mut().poll(cx));
        *this.done = true;
        let _entered = this.inner.span().enter();
        tracing::debug!(elapsed_us = this.started.elapsed().as_micros() as u64, "call done");
        Poll::Ready(output)
    }
}
