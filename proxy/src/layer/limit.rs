//! The concurrency limit: at most `limits.max_concurrent_requests` calls
//! are served at once, and a call beyond that is refused at once with
//! RESOURCE_EXHAUSTED. An overloaded proxy that queued calls instead would
//! answer every one of them late; refusing lets clients back off or try
//! another proxy. It is the outermost layer, so a refused call costs
//! nothing more.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::error::ProxyError;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
    metrics: Arc<Metrics>,
}

impl ConcurrencyLimitLayer {
    /// A limit of `max` calls at once, through `permits` (which the metrics
    /// read to report the calls in flight).
    pub fn new(permits: Arc<Semaphore>, max: usize, metrics: Arc<Metrics>) -> Self {
        Self { permits, max, metrics }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    layer: ConcurrencyLimitLayer,
}

impl<S, B> Service<Request<B>> for ConcurrencyLimit<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.layer.permits.clone().try_acquire_owned() {
            Ok(permit) => LimitFuture::Admitted { inner: self.inner.call(request), _permit: permit },
            Err(_) => {
                self.layer.metrics.limit_hit(None, "max_concurrent_requests");
                let refusal = ProxyError::ResourceExhausted(format!(
                    "the proxy is serving its limit of {} concurrent requests (limits.max_concurrent_requests); retry later",
                    self.layer.max
                ));
                LimitFuture::Refused { response: Some(refusal.into_http()) }
            }
        }
    }
}

pin_project! {
    /// The inner call holding its permit until it answers, or the refusal.
    #[project = LimitProj]
    pub enum LimitFuture<F> {
        Admitted { #[pin] inner: F, _permit: OwnedSemaphorePermit },
        Refused { response: Option<Response<Body>> },
    }
}

impl<F, E> Future for LimitFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitProj::Admitted { inner, .. } => inner.poll(cx),
            LimitProj::Refused { response } => Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                ProxyError::Internal("limit future polled after it answered".to_owned()).into_http()
            }))),
        }
    }
}
