//! Authentication: the call's client certificate and bearer token become a
//! `Principal` in the request context, or the call is refused with
//! UNAUTHENTICATED (UNAVAILABLE when the token cannot be checked because
//! the issuer's keys cannot be fetched). It is the last layer before the
//! services, so nothing of a refused call reaches them, and inside the
//! audit layer, which records the refusal with its reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::security::Principal;
use crate::security::authn::{AuthError, Authenticating, Authenticator, Credentials};

#[derive(Clone)]
pub struct AuthnLayer {
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

impl AuthnLayer {
    pub fn new(authenticator: Arc<Authenticator>, metrics: Arc<Metrics>) -> Self {
        Self { authenticator, metrics }
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = AuthnService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthnService { inner, authenticator: self.authenticator.clone(), metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct AuthnService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

/// Puts the principal into the request's context (and its audit facts).
fn admit<B>(request: &mut Request<B>, principal: Arc<Principal>) {
    if let Some(ctx) = request.extensions_mut().get_mut::<RequestContext>() {
        ctx.note(|facts| facts.principal = Some(principal.clone()));
        ctx.principal = principal;
    }
}

/// The refusal: noted for the audit record and the metrics, answered
/// without a service.
fn refuse<B>(request: &Request<B>, why: AuthError, metrics: &Metrics) -> Response<Body> {
    tracing::debug!(reason = %why, "unauthenticated call refused");
    metrics.authentication_failure(why.reason());
    if let Some(ctx) = request.extensions().get::<RequestContext>() {
        ctx.note(|facts| facts.unauthenticated = Some(why.to_string()));
    }
    ProxyError::from(why).into_http()
}

impl<S, B> Service<Request<B>> for AuthnService<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuthnFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let credentials = Credentials::of(&request);
        match self.authenticator.authenticate(request.uri().path(), credentials) {
            Authenticating::Done(Ok(principal)) => {
                admit(&mut request, principal);
                AuthnFuture::Calling { inner: self.inner.call(request) }
            }
            Authenticating::Done(Err(why)) => {
                AuthnFuture::Refused { response: Some(refuse(&request, why, &self.metrics)) }
            }
            Authenticating::Verifying(verifying) => {
                // The call waits for the token check: take the service that
                // was polled ready, and leave a clone for the next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                AuthnFuture::Verifying { verifying, waiting: Some((inner, request)), metrics: self.metrics.clone() }
            }
        }
    }
}

pin_project! {
    /// A bearer token being checked, then the call; or the refusal.
    #[project = AuthnProj]
    pub enum AuthnFuture<S, B> where S: Service<Request<B>> {
        Verifying {
            verifying: Pin<Box<dyn Future<Output = Result<Arc<Principal>, AuthError>> + Send>>,
            waiting: Option<(S, Request<B>)>,
            metrics: Arc<Metrics>,
        },
        Calling { #[pin] inner: S::Future },
        Refused { response: Option<Response<Body>> },
    }
}

impl<S, B> Future for AuthnFuture<S, B>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Output = Result<Response<Body>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                AuthnProj::Calling { inner } => return inner.poll(cx),
                AuthnProj::Refused { response } => {
                    return Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                        ProxyError::Internal("authentication future polled after it answered".to_owned()).into_http()
                    })));
                }
                AuthnProj::Verifying { verifying, waiting, metrics } => {
                    let verified = std::task::ready!(verifying.as_mut().poll(cx));
                    let Some((mut inner, mut request)) = waiting.take() else {
                        return Poll::Ready(Ok(ProxyError::Internal(
                            "authentication future polled after it answered".to_owned(),
                        )
                        .into_http()));
                    };
                    match verified {
                        Ok(principal) => {
                            admit(&mut request, principal);
                            AuthnFuture::Calling { inner: inner.call(request) }
                        }
                        Err(why) => AuthnFuture::Refused { response: Some(refuse(&request, why, metrics)) },
                    }
                }
            };
            self.set(next);
        }
    }
}
