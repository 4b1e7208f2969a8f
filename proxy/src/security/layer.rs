//! The tower layer that authenticates every call and writes its audit
//! record when it ends.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::audit::{Audit, Facts, Record, now};
use super::jwt::JwtVerifier;
use super::{Principal, tls};
use crate::config::Require;
use crate::context::RequestContext;
use crate::error::ProxyError;

/// How calls are authenticated.
pub struct Authenticator {
    /// False in dev mode: every caller is [`Principal::dev`].
    pub enabled: bool,
    pub require: Require,
    pub jwt: Option<Arc<JwtVerifier>>,
}

impl Authenticator {
    pub fn dev() -> Self {
        Self { enabled: false, require: Require::Any, jwt: None }
    }

    /// Who presented `credentials`, or why they are refused.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Principal, String> {
        if !self.enabled {
            return Ok(Principal::dev());
        }
        let mut principal = Principal::default();
        // rustls has verified the chain against tls.client_ca already.
        if let Some(leaf) = credentials.certs.as_ref().and_then(|c| c.first()) {
            let (spiffe, dns) = tls::identities(leaf);
            principal.spiffe_ids = spiffe;
            principal.dns_names = dns;
            principal.mtls = true;
        }
        if let Some(value) = &credentials.authorization {
            let text = value.to_str().map_err(|_| "the authorization header is not ASCII".to_owned())?;
            let token = match text.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                _ => return Err("the authorization header is not `Bearer <token>`".to_owned()),
            };
            let Some(jwt) = &self.jwt else {
                return Err("this proxy does not accept bearer tokens (auth.jwt is not configured)".to_owned());
            };
            // A bad token is refused even next to a good certificate: a
            // credential that fails is never silently ignored.
            let claims = jwt.verify(token).await?;
            principal.subject = claims.subject;
            principal.groups = claims.groups;
            principal.scopes = claims.scopes;
            principal.jwt = true;
        }
        match (self.require, principal.mtls, principal.jwt) {
            (Require::Any, false, false) => {
                Err("no credentials: a client certificate or a bearer token is required".into())
            }
            (Require::Mtls | Require::Both, false, _) => Err("a client certificate is required".into()),
            (Require::Jwt | Require::Both, _, false) => Err("a bearer token is required".into()),
            _ => Ok(principal),
        }
    }
}

/// What a request carries to prove who sent it.
pub struct Credentials {
    pub certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    pub authorization: Option<http::HeaderValue>,
}

impl Credentials {
    pub fn of<B>(request: &Request<B>) -> Self {
        Self {
            certs: request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.peer_certs()),
            authorization: request.headers().get(http::header::AUTHORIZATION).cloned(),
        }
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    audit: Audit,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>, audit: Audit) -> Self {
        Self { auth, audit }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

/// Calls that need no credentials: health checks, which load balancers
/// make without any.
fn open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

impl<S, B> Service<Request<B>> for AuthService<S>
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let audited = path.starts_with("/prism.");
            let peer = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
                .or_else(|| request.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr));
            let (request_id, started) = request
                .extensions()
                .get::<RequestContext>()
                .map(|c| (Some(c.request_id.to_string()), c.started))
                .unwrap_or((None, tokio::time::Instant::now()));
            let credentials = Credentials::of(&request);
            let principal =
                if open(&path) { Ok(Principal::default()) } else { layer.auth.authenticate(credentials).await };
            let record = |principal: Option<&Principal>, facts: &Facts, status: String, decision, reason| Record {
                ts: now(),
                event: "call",
                request_id: request_id.clone(),
                principal: principal.map(ToString::to_string),
                auth: principal.map_or("none", |p| p.method().as_str()),
                peer: peer.map(|p| p.to_string()),
                operation: Some(path.trim_start_matches('/').to_owned()),
                namespace: facts.namespace.clone(),
                right: facts.right,
                key_hash: facts.key_hash.clone(),
                keys: facts.keys,
                decision,
                reason,
                status: Some(status),
                latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
            };
            let principal = match principal {
                Ok(p) => Arc::new(p),
                Err(why) => {
                    tracing::debug!(%path, reason = %why, "unauthenticated call refused");
                    let status = Status::from(ProxyError::Unauthenticated(why.clone()));
                    let r = record(None, &Facts::default(), format!("{:?}", status.code()), "deny", Some(why));
                    layer.audit.write_async(r).await;
                    return Ok(status.into_http());
                }
            };
            let facts = Arc::new(Mutex::new(Facts::default()));
            if let Some(ctx) = request.extensions_mut().get_mut::<RequestContext>() {
                ctx.principal = principal.clone();
                ctx.facts = facts.clone();
            }
            let response = inner.call(request).await?;
            if audited && layer.audit.enabled() {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                let facts = facts.lock().map(|f| f.clone()).unwrap_or_default();
                let (decision, reason) = match &facts.denied {
                    Some(why) => ("deny", Some(why.clone())),
                    None if code == tonic::Code::Unauthenticated => ("deny", None),
                    None => ("allow", None),
                };
                layer.audit.write_async(record(Some(&principal), &facts, format!("{code:?}"), decision, reason)).await;
            }
            Ok(response)
        })
    }
}
