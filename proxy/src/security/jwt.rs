//! OAuth2 bearer tokens: JWTs checked against the issuer's JWKS.
//!
//! Keys come from a JWKS URL (given, or found by OIDC discovery) or a file.
//! They are cached; a token whose `kid` is not in the cache triggers a
//! refetch, at most once per `refetch_interval`, so a stream of garbage
//! tokens cannot hammer the issuer.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use crate::config::JwtConfig;

/// Longest wait for the issuer's discovery document or JWKS.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest token accepted, so a huge header is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a valid token says about its bearer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

struct Keys {
    set: JwkSet,
    fetched: Option<Instant>,
}

pub struct JwtVerifier {
    config: JwtConfig,
    keys: ArcSwap<Keys>,
    /// When keys were last fetched because of an unknown `kid` or age;
    /// also serializes fetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

impl JwtVerifier {
    /// A verifier; fetches the keys once. An issuer that cannot be reached
    /// now is not fatal: keys are fetched again on the first token.
    pub async fn new(config: JwtConfig) -> Result<Arc<Self>, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("auth.jwt: HTTP client: {e}"))?;
        let verifier = Arc::new(Self {
            config,
            keys: ArcSwap::from_pointee(Keys { set: JwkSet { keys: Vec::new() }, fetched: None }),
            last_fetch: tokio::sync::Mutex::new(None),
            http,
        });
        if let Err(e) = verifier.refresh().await {
            tracing::warn!(error = %e, "cannot fetch the token signing keys yet; retrying on the first token");
        }
        Ok(verifier)
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        if let Some(file) = &self.config.jwks_file {
            let text = tokio::fs::read_to_string(file).await.map_err(|e| format!("{}: {e}", file.display()))?;
            return serde_json::from_str(&text).map_err(|e| format!("{}: not a JWKS: {e}", file.display()));
        }
        let url = match &self.config.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery =
                    format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
                let doc: serde_json::Value = self.get_json(&discovery).await?;
                doc["jwks_uri"].as_str().ok_or_else(|| format!("{discovery}: no jwks_uri"))?.to_owned()
            }
        };
        self.get_json(&url).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self.http.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        response.json().await.map_err(|e| format!("{url}: {e}"))
    }

    async fn refresh(&self) -> Result<(), String> {
        let set = self.fetch().await?;
        tracing::info!(keys = set.keys.len(), "token signing keys fetched");
        self.keys.store(Arc::new(Keys { set, fetched: Some(Instant::now()) }));
        Ok(())
    }

    /// Refetches unless that happened less than `refetch_interval` ago.
    /// Returns whether it fetched.
    async fn refresh_limited(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.config.refetch_interval) {
            return false;
        }
        *last = Some(Instant::now());
        match self.refresh().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the token signing keys");
                false
            }
        }
    }

    /// Checks a token and returns its claims, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("token is {} bytes, over the limit of {MAX_TOKEN_BYTES}", token.len()));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let alg = format!("{:?}", header.alg);
        if !self.config.algorithms.contains(&alg) {
            return Err(format!("algorithm {alg} is not accepted (accepted: {})", self.config.algorithms.join(", ")));
        }
        let kid = header.kid.ok_or("token has no kid (key id)")?;
        let stale = self.keys.load().fetched.is_none_or(|t| t.elapsed() > self.config.max_key_age);
        if stale || self.keys.load().set.find(&kid).is_none() {
            self.refresh_limited().await;
        }
        let keys = self.keys.load();
        let jwk = keys.set.find(&kid).ok_or_else(|| format!("unknown key id {kid:?}"))?;
        if let Some(key_alg) = &jwk.common.key_algorithm
            && format!("{key_alg:?}") != alg
        {
            return Err(format!("key {kid:?} is for {key_alg:?}, the token says {alg}"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?} is unusable: {e}"))?;
        let algorithm = Algorithm::from_str(&alg).map_err(|e| format!("algorithm {alg}: {e}"))?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => "token expired".to_owned(),
            ErrorKind::ImmatureSignature => "token not yet valid (nbf)".to_owned(),
            ErrorKind::InvalidIssuer => format!("wrong issuer (expected {})", self.config.issuer),
            ErrorKind::InvalidAudience => {
                format!("wrong audience (expected one of {})", self.config.audiences.join(", "))
            }
            ErrorKind::InvalidSignature => "bad signature".to_owned(),
            ErrorKind::InvalidAlgorithm => format!("algorithm {alg} does not fit key {kid:?}"),
            ErrorKind::MissingRequiredClaim(c) => format!("token has no {c} claim"),
            _ => format!("invalid token: {e}"),
        })?;
        Ok(self.claims(&data.claims))
    }

    fn claims(&self, claims: &serde_json::Value) -> Claims {
        let names = &self.config.claims;
        let strings = |v: &serde_json::Value| -> Vec<String> {
            match v {
                serde_json::Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
                serde_json::Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
                _ => Vec::new(),
            }
        };
        Claims {
            subject: claims[&names.subject].as_str().map(str::to_owned),
            groups: strings(&claims[&names.groups]),
            scopes: strings(&claims[&names.scopes]),
        }
    }
}
