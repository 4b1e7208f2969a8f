//! Authentication of one call: the credentials it carries (client
//! certificate, bearer token) checked and turned into a [`Principal`]. The
//! authentication layer (`crate::layer::authn`) calls it once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Request;
use tonic::transport::server::TcpConnectInfo;

use super::Principal;
use super::jwt::{JwtError, JwtVerifier};
use super::tls::{ClientIdentity, PeerInfo};
use crate::config::Require;

/// What a request carries to prove who sent it.
pub struct Credentials {
    /// The verified client certificate's identities, parsed when the
    /// connection was established.
    pub client: Option<Arc<ClientIdentity>>,
    pub authorization: Authorization,
}

/// The `authorization` headers of a request.
pub enum Authorization {
    None,
    One(http::HeaderValue),
    /// More than one (how many). Refused whatever they hold: which one
    /// counts would depend on who reads the headers first (the proxy, a
    /// sidecar, a log), so a valid token could carry a bad one past a check.
    Several(usize),
}

impl Credentials {
    pub fn of<B>(request: &Request<B>) -> Self {
        let mut values = request.headers().get_all(http::header::AUTHORIZATION).iter();
        let authorization = match (values.next(), values.next()) {
            (None, _) => Authorization::None,
            (Some(value), None) => Authorization::One(value.clone()),
            (Some(_), Some(_)) => Authorization::Several(2 + values.count()),
        };
        Self { client: request.extensions().get::<PeerInfo>().and_then(|i| i.client.clone()), authorization }
    }
}

/// Why a call's credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the authorization header is not ASCII")]
    HeaderNotAscii,
    #[error("the authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("{0} authorization headers: a call may carry one bearer token only")]
    SeveralAuthorizations(usize),
    #[error("this proxy does not accept bearer tokens (auth.jwt is not configured)")]
    TokensNotAccepted,
    #[error(transparent)]
    Token(#[from] JwtError),
    #[error("no credentials: a client certificate or a bearer token is required")]
    NoCredentials,
    #[error("a client certificate is required")]
    CertificateRequired,
    #[error("a bearer token is required")]
    TokenRequired,
}

impl AuthError {
    /// The metrics' label of why a call was refused: a closed set.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::HeaderNotAscii | Self::NotBearer => "malformed_header",
            Self::SeveralAuthorizations(_) => "several_authorization_headers",
            Self::TokensNotAccepted => "tokens_not_accepted",
            Self::Token(e) => e.reason(),
            Self::NoCredentials => "no_credentials",
            Self::CertificateRequired => "certificate_required",
            Self::TokenRequired => "token_required",
        }
    }
}

/// The answer of [`Authenticator::authenticate`]: at once for dev mode,
/// open calls and client certificates; a future for a bearer token, whose
/// signing keys may have to be fetched first.
pub enum Authenticating {
    Done(Result<Arc<Principal>, AuthError>),
    Verifying(Pin<Box<dyn Future<Output = Result<Arc<Principal>, AuthError>> + Send>>),
}

/// How calls are authenticated.
pub struct Authenticator {
    /// False in dev mode: every caller is [`Principal::dev`].
    pub enabled: bool,
    pub require: Require,
    pub jwt: Option<Arc<JwtVerifier>>,
    /// Shared answers, so dev mode and open calls allocate nothing.
    dev: Arc<Principal>,
    anonymous: Arc<Principal>,
}

/// Calls that need no credentials: health checks, which load balancers
/// make without any.
pub fn open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

impl Authenticator {
    pub fn new(enabled: bool, require: Require, jwt: Option<Arc<JwtVerifier>>) -> Self {
        Self { enabled, require, jwt, dev: Arc::new(Principal::dev()), anonymous: Arc::new(Principal::default()) }
    }

    pub fn dev() -> Self {
        Self::new(false, Require::Any, None)
    }

    /// Who sent a call to `path` with `credentials`, or why it is refused.
    pub fn authenticate(self: &Arc<Self>, path: &str, credentials: Credentials) -> Authenticating {
        if !self.enabled {
            return Authenticating::Done(Ok(self.dev.clone()));
        }
        if open(path) {
            return Authenticating::Done(Ok(self.anonymous.clone()));
        }
        let mut principal = Principal::default();
        if let Some(client) = &credentials.client {
            principal.spiffe_ids.clone_from(&client.spiffe_ids);
            principal.dns_names.clone_from(&client.dns_names);
            principal.mtls = true;
        }
        let value = match credentials.authorization {
            Authorization::None => return Authenticating::Done(self.require(principal)),
            Authorization::One(value) => value,
            Authorization::Several(n) => return Authenticating::Done(Err(AuthError::SeveralAuthorizations(n))),
        };
        let token = match bearer(&value) {
            Ok(token) => token.to_owned(),
            Err(e) => return Authenticating::Done(Err(e)),
        };
        let Some(jwt) = self.jwt.clone() else {
            return Authenticating::Done(Err(AuthError::TokensNotAccepted));
        };
        let this = self.clone();
        Authenticating::Verifying(Box::pin(async move {
            // A bad token is refused even next to a good certificate: a
            // credential that fails is never silently ignored.
            let claims = jwt.verify(&token).await?;
            principal.subject = claims.subject;
            principal.groups = claims.groups;
            principal.scopes = claims.scopes;
            principal.jwt = true;
            this.require(principal)
        }))
    }

    /// Whether the credentials that passed are the ones required.
    fn require(&self, principal: Principal) -> Result<Arc<Principal>, AuthError> {
        match (self.require, principal.mtls, principal.jwt) {
            (Require::Any, false, false) => Err(AuthError::NoCredentials),
            (Require::Mtls | Require::Both, false, _) => Err(AuthError::CertificateRequired),
            (Require::Jwt | Require::Both, _, false) => Err(AuthError::TokenRequired),
            _ => Ok(Arc::new(principal)),
        }
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(value: &http::HeaderValue) -> Result<&str, AuthError> {
    let text = value.to_str().map_err(|_| AuthError::HeaderNotAscii)?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(AuthError::NotBearer),
    }
}

/// The peer address of a request, over TLS or plain TCP.
pub fn peer<B>(request: &Request<B>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<PeerInfo>()
        .map(|i| i.remote)
        .or_else(|| request.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr))
}
