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

use crate::error::PluginError;

/// The span of one call, with the proxy's request id when it sent one.
fn span(method: &str, request_id: &str) -> tracing::Span {
    tracing::debug_span!("call", method, request_id)
}

/// Runs a multiplexed call in its span and under its deadline: past it the
/// call is dropped (cancelling its backend work) and answers
/// DEADLINE_EXCEEDED.
pub(crate) async fn within_deadline<T>(
    method: &'static str,
    options: Option<&CallOptions>,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let request_id = options.map_or("", |o| o.request_id.as_str());
    let timeout = options.map(|o| o.timeout_micros).filter(|t| *t > 0).map(Duration::from_micros);
    let started = Instant::now();
    let call = async move {
        let result = match timeout {
            None => call.await,
            Some(timeout) => match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(timeout_ms = timeout.as_millis() as u64, "deadline exceeded; call abandoned");
                    Err(PluginError::DeadlineExceeded(format!(
                        "the call did not finish within its deadline of {} ms",
                        timeout.as_millis()
                    ))
                    .into())
                }
            },
        };
        tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, ok = result.is_ok(), "call done");
        result
    };
    call.instrument(span(method, request_id)).await
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
        let request_id = headers.get(metadata::REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let deadline = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(wire::parse_grpc_timeout)
            .map(|t| Instant::now() + t);
        let span = span(request.uri().path(), request_id);
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
