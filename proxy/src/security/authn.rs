//! Authentication of one call: the credentials it carries (client
//! certificate, bearer token) checked and turned into a [`Principal`]. The
//! context layer (`crate::context`) calls it once per request.

use std::sync::Arc;

use http::Request;
use tonic::transport::server::TcpConnectInfo;

use super::Principal;
use super::jwt::JwtVerifier;
use super::tls::{ClientIdentity, PeerInfo};
use crate::config::Require;

/// What a request carries to prove who sent it.
pub struct Credentials {
    /// The verified client certificate's identities, parsed when the
    /// connection was established.
    pub client: Option<Arc<ClientIdentity>>,
    pub authorization: Option<http::HeaderValue>,
}

impl Credentials {
    pub fn of<B>(request: &Request<B>) -> Self {
        Self {
            client: request.extensions().get::<PeerInfo>().and_then(|i| i.client.clone()),
            authorization: request.headers().get(http::header::AUTHORIZATION).cloned(),
        }
    }
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
    pub async fn authenticate(&self, path: &str, credentials: Credentials) -> Result<Arc<Principal>, String> {
        if !self.enabled {
            return Ok(self.dev.clone());
        }
        if open(path) {
            return Ok(self.anonymous.clone());
        }
        let mut principal = Principal::default();
        if let Some(client) = &credentials.client {
            principal.spiffe_ids.clone_from(&client.spiffe_ids);
            principal.dns_names.clone_from(&client.dns_names);
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
            _ => Ok(Arc::new(principal)),
        }
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
