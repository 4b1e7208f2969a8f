//! The audit record: one JSON line per call to Prism's own services (not
//! health or reflection), and one per refused call to any service, written
//! when the call ends, with what the later stages noted (who, which
//! namespace and right, the key's hash, what was refused). It sits outside
//! authentication so that refused calls are recorded too: they are
//! attempts, whatever they aimed at.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::grpc_status;
use crate::context::RequestContext;
use crate::security::audit::{Audit, CallSummary, Queued, Record, SharedFacts};
use crate::security::authn;

#[derive(Clone)]
pub struct AuditLayer {
    audit: Audit,
}

impl AuditLayer {
    pub fn new(audit: Audit) -> Self {
        Self { audit }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService { inner, audit: self.audit.clone() }
    }
}

#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    audit: Audit,
}

/// What the record needs from the request, taken before it moves on.
struct Pending {
    audit: Audit,
    facts: SharedFacts,
    request_id: std::sync::Arc<str>,
    started: tokio::time::Instant,
    peer: Option<SocketAddr>,
    path: String,
}

impl<S, B, R> Service<Request<B>> for AuditService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuditFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let pending = self
            .audit
            .enabled()
            .then(|| {
                let peer = authn::peer(&request);
                let path = request.uri().path().to_owned();
                let ctx = request.extensions_mut().get_mut::<RequestContext>()?;
                let facts = SharedFacts::default();
                ctx.facts = Some(facts.clone());
                Some(Pending {
                    audit: self.audit.clone(),
                    facts,
                    request_id: ctx.request_id.clone(),
                    started: ctx.started,
                    peer,
                    path,
                })
            })
            .flatten();
        AuditFuture { inner: self.inner.call(request), pending, writing: None }
    }
}

pin_project! {
    /// The call; when it answers, its record is queued (waiting only while
    /// the writer's queue is full) before the answer goes back.
    pub struct AuditFuture<F, R> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
        writing: Option<(Pin<Box<dyn Future<Output = ()> + Send>>, Response<R>)>,
    }
}

impl<F, R, E> Future for AuditFuture<F, R>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some((write, _)) = this.writing {
            std::task::ready!(write.as_mut().poll(cx));
            if let Some((_, response)) = this.writing.take() {
                return Poll::Ready(Ok(response));
            }
        }
        let response = std::task::ready!(this.inner.poll(cx))?;
        let Some(pending) = this.pending.take() else { return Poll::Ready(Ok(response)) };
        let facts = pending.facts.lock().map(|f| f.clone()).unwrap_or_default();
        if !pending.path.starts_with("/prism.") && facts.unauthenticated.is_none() {
            return Poll::Ready(Ok(response));
        }
        let summary = CallSummary {
            request_id: &pending.request_id,
            peer: pending.peer,
            path: &pending.path,
            status: grpc_status(&response),
            latency: pending.started.elapsed(),
        };
        match pending.audit.queue(&Record::call(&summary, facts)) {
            Queued::Done => Poll::Ready(Ok(response)),
            Queued::Waiting(mut write) => {
                if write.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(response));
                }
                *this.writing = Some((write, response));
                Poll::Pending
            }
        }
    }
}
