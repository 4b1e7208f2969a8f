//! OAuth2 bearer tokens: JWTs checked against the issuer's JWKS.
//!
//! Keys come from a JWKS URL (given, or found by OIDC discovery) or a file.
//! They are cached; a token whose `kid` is not in the cache triggers a
//! refetch, at most once per `refetch_interval`, so a stream of garbage
//! tokens cannot hammer the issuer.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use crate::config::JwtConfig;

/// Longest wait for the issuer's discovery document or JWKS.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest token accepted, so a huge header is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest header list a gRPC call may carry (HTTP/2
/// `SETTINGS_MAX_HEADER_LIST_SIZE`: names, values and 32 bytes a header).
/// hyper's default, 16 KiB, is less than a token at [`MAX_TOKEN_BYTES`] and
/// the call's other headers, so such a call was answered HTTP 431 (UNKNOWN to
/// a gRPC client, and never audited) and the token limit never fired. With
/// room for a whole token and as much again, a long token reaches the token
/// check, which refuses it naming its limit, and the audit layer records it.
pub const MAX_HEADER_LIST_BYTES: u32 = 32 * 1024;
const _: () = assert!(MAX_HEADER_LIST_BYTES as usize >= 2 * MAX_TOKEN_BYTES);

/// What a valid token says about its bearer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is {0} bytes, over the limit of {MAX_TOKEN_BYTES} bytes")]
    TooLarge(usize),
    #[error("malformed token: {0}")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    /// The header's `crit` lists extensions the issuer requires a
    /// recipient to understand; Prism understands none.
    #[error("token header marks extensions as critical (crit: {0:?}); Prism supports no JWS extensions")]
    CriticalExtensions(Vec<String>),
    #[error("algorithm {alg} is not accepted (accepted: {accepted})")]
    Algorithm { alg: String, accepted: String },
    #[error("token has no kid (key id)")]
    NoKeyId,
    /// The keys were fetched, and none has the token's `kid`.
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// The keys could not be fetched, so the token cannot be checked: the
    /// token may be valid, and a retry may succeed.
    #[error("the issuer's signing keys could not be fetched: {0}")]
    KeysUnavailable(#[source] Arc<KeySourceError>),
    #[error("key {kid:?} is for {key_alg}, the token says {alg}")]
    KeyAlgorithm { kid: String, key_alg: String, alg: String },
    #[error("key {kid:?} is unusable: {source}")]
    UnusableKey { kid: String, source: jsonwebtoken::errors::Error },
    /// The signature, a time, the issuer or the audience is wrong; `reason`
    /// is the metrics' label of what.
    #[error("{message}")]
    Invalid { reason: &'static str, message: String },
}

impl JwtError {
    /// The metrics' label of why a token was refused: a closed set.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "token_too_large",
            Self::Malformed(_) => "token_malformed",
            Self::CriticalExtensions(_) => "token_critical_extension",
            Self::Algorithm { .. } => "token_algorithm",
            Self::NoKeyId | Self::UnknownKeyId(_) => "token_unknown_key",
            Self::KeysUnavailable(_) => "keys_unavailable",
            Self::KeyAlgorithm { .. } | Self::UnusableKey { .. } => "token_key_mismatch",
            Self::Invalid { reason, .. } => reason,
        }
    }
}

/// Why the signing keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    #[error("auth.jwt: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a JWKS: {source}")]
    NotJwks { path: String, source: serde_json::Error },
    #[error("{url}: {}", prism_proto::error_chain(source))]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("{url}: the discovery document has no jwks_uri")]
    NoJwksUri { url: String },
}

struct Keys {
    set: JwkSet,
    fetched: Option<Instant>,
}

pub struct JwtVerifier {
    config: JwtConfig,
    keys: ArcSwap<Keys>,
    /// Why the last fetch failed; cleared by a successful one. A token whose
    /// key is missing while this is set cannot be judged.
    last_error: ArcSwapOption<KeySourceError>,
    /// When keys were last fetched because of an unknown `kid` or age;
    /// also serializes fetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

/// Reads a JWKS file: the same loader at start, in `--check`, and on every
/// refetch.
pub fn read_jwks_file(path: &Path) -> Result<JwkSet, KeySourceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeySourceError::Read { path: shown.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| KeySourceError::NotJwks { path: shown, source })
}

impl JwtVerifier {
    /// A verifier; fetches the keys once. An issuer that cannot be reached
    /// now is not fatal: keys are fetched again on the first token. A
    /// `jwks_file` that does not hold a JWKS is: it is part of the config.
    pub async fn new(config: JwtConfig) -> Result<Arc<Self>, KeySourceError> {
        if let Some(file) = &config.jwks_file {
            read_jwks_file(file)?;
        }
        let http = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build().map_err(KeySourceError::Client)?;
        let verifier = Arc::new(Self {
            config,
            keys: ArcSwap::from_pointee(Keys { set: JwkSet { keys: Vec::new() }, fetched: None }),
            last_error: ArcSwapOption::empty(),
            last_fetch: tokio::sync::Mutex::new(None),
            http,
        });
        if let Err(e) = verifier.refresh().await {
            tracing::warn!(error = %e, "cannot fetch the token signing keys yet; retrying on the first token");
        }
        Ok(verifier)
    }

    async fn fetch(&self) -> Result<JwkSet, KeySourceError> {
        if let Some(file) = &self.config.jwks_file {
            // A small local file, read only on a missing or stale key.
            return read_jwks_file(file);
        }
        let url = match &self.config.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery =
                    format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
                let doc: serde_json::Value = self.get_json(&discovery).await?;
                doc["jwks_uri"].as_str().ok_or(KeySourceError::NoJwksUri { url: discovery.clone() })?.to_owned()
            }
        };
        self.get_json(&url).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, KeySourceError> {
        let http = |source| KeySourceError::Http { url: url.to_owned(), source };
        let response = self.http.get(url).send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(KeySourceError::Status { url: url.to_owned(), status: response.status() });
        }
        response.json().await.map_err(http)
    }

    async fn refresh(&self) -> Result<(), Arc<KeySourceError>> {
        match self.fetch().await {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), "token signing keys fetched");
                self.keys.store(Arc::new(Keys { set, fetched: Some(Instant::now()) }));
                self.last_error.store(None);
                Ok(())
            }
            Err(e) => {
                let e = Arc::new(e);
                self.last_error.store(Some(e.clone()));
                Err(e)
            }
        }
    }

    /// Refetches unless that happened less than `refetch_interval` ago.
    async fn refresh_limited(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.config.refetch_interval) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "cannot fetch the token signing keys");
        }
    }

    /// Checks a token and returns its claims, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge(token.len()));
        }
        let header = jsonwebtoken::decode_header(token).map_err(JwtError::Malformed)?;
        // RFC 7515 4.1.11: an extension listed in `crit` changes what the
        // token means (RFC 7797's unencoded payload, say), so a recipient
        // that does not implement it must refuse the token rather than read
        // it as if the extension were absent. An empty list is invalid too.
        if let Some(crit) = header.crit {
            return Err(JwtError::CriticalExtensions(crit));
        }
        let alg = format!("{:?}", header.alg);
        if !self.config.algorithms.contains(&alg) {
            return Err(JwtError::Algorithm { alg, accepted: self.config.algorithms.join(", ") });
        }
        let kid = header.kid.ok_or(JwtError::NoKeyId)?;
        let stale = self.keys.load().fetched.is_none_or(|t| t.elapsed() > self.config.max_key_age);
        if stale || self.keys.load().set.find(&kid).is_none() {
            self.refresh_limited().await;
        }
        let keys = self.keys.load();
        let Some(jwk) = keys.set.find(&kid) else {
            // Missing because the keys could not be read is not the token's
            // fault; missing from a set that was read is.
            return Err(match self.last_error.load_full() {
                Some(cause) => JwtError::KeysUnavailable(cause),
                None => JwtError::UnknownKeyId(kid),
            });
        };
        if let Some(key_alg) = &jwk.common.key_algorithm
            && format!("{key_alg:?}") != alg
        {
            return Err(JwtError::KeyAlgorithm { kid, key_alg: format!("{key_alg:?}"), alg });
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|source| JwtError::UnusableKey { kid: kid.clone(), source })?;
        let algorithm = Algorithm::from_str(&alg)
            .map_err(|e| JwtError::Invalid { reason: "token_algorithm", message: format!("algorithm {alg}: {e}") })?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| {
            let (reason, message) = match e.kind() {
                ErrorKind::ExpiredSignature => ("token_expired", "token expired".to_owned()),
                ErrorKind::ImmatureSignature => ("token_not_yet_valid", "token not yet valid (nbf)".to_owned()),
                ErrorKind::InvalidIssuer => {
                    ("token_wrong_issuer", format!("wrong issuer (expected {})", self.config.issuer))
                }
                ErrorKind::InvalidAudience => (
                    "token_wrong_audience",
                    format!("wrong audience (expected one of {})", self.config.audiences.join(", ")),
                ),
                ErrorKind::InvalidSignature => ("token_bad_signature", "bad signature".to_owned()),
                ErrorKind::InvalidAlgorithm => ("token_algorithm", format!("algorithm {alg} does not fit key {kid:?}")),
                ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => claim_problem(token, c),
                ErrorKind::Json(_) => {
                    unreadable_claim(token).unwrap_or_else(|| ("token_invalid", format!("invalid token: {e}")))
                }
                _ => ("token_invalid", format!("invalid token: {e}")),
            };
            JwtError::Invalid { reason, message }
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

/// The claim of `token` that made jsonwebtoken fail with a JSON syntax
/// error. It reads `exp`, `nbf` and `sub` without consuming a list or a
/// mapping where it expects a number or a string, and then trips over the
/// rest of the claims ("expected `,` or `}` at line 1 column 9"), which
/// names neither the claim nor the problem. As in [`claim_problem`], the
/// signature has been verified by then.
fn unreadable_claim(token: &str) -> Option<(&'static str, String)> {
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    ["exp", "nbf", "sub"]
        .into_iter()
        .find(|name| claims[*name].is_array() || claims[*name].is_object())
        .map(|name| claim_problem(token, name))
}

/// The reason label and message for claim `name` of `token`, which
/// jsonwebtoken reports missing (or malformed) also when it is there but not
/// of its type: a string, negative or huge `exp` would read "token has no exp
/// claim". jsonwebtoken checks claims only once the signature verified, so
/// these are the claims the issuer signed; and the token is refused either
/// way, only the message depends on what is read here.
fn claim_problem(token: &str, name: &str) -> (&'static str, String) {
    use serde_json::Value;
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token).unwrap_or_default();
    let time = matches!(name, "exp" | "nbf");
    let problem = match &claims[name] {
        // nbf is optional: jsonwebtoken names it only when it is there, so
        // a null nbf is one of the wrong type, not a missing one.
        Value::Null if name != "nbf" => return ("token_missing_claim", format!("token has no {name} claim")),
        // A NumericDate (RFC 7519) that jsonwebtoken could not read as
        // seconds since the epoch: below zero, or above what a u64 holds.
        Value::Number(n) if time && n.as_f64().is_some_and(|f| f < 0.0) => "is negative",
        Value::Number(_) if time => "is out of range",
        _ if time => "is not a number of seconds",
        _ if name == "aud" => "is not a string or a list of strings",
        _ => "is not a string",
    };
    ("token_malformed_claim", format!("{name} {problem}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A token with `claims`; the signature does not matter here.
    fn token(claims: &serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(b"test");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
    }

    /// Found by the property tests: jsonwebtoken failed on these with a
    /// JSON syntax error, reported as "invalid token: JSON error: expected
    /// `,` or `}` at line 1 column 9".
    #[test]
    fn a_list_or_mapping_where_a_number_or_string_belongs_is_named() {
        let cases = [
            ("exp", json!({ "exp": [null] }), "exp is not a number of seconds"),
            ("nbf", json!({ "exp": 1, "nbf": { "a": 1 } }), "nbf is not a number of seconds"),
            ("sub", json!({ "sub": ["a"] }), "sub is not a string"),
        ];
        for (name, claims, message) in cases {
            assert_eq!(
                unreadable_claim(&token(&claims)),
                Some(("token_malformed_claim", message.to_owned())),
                "{name}"
            );
        }
        assert_eq!(unreadable_claim(&token(&json!({ "exp": 1, "sub": "a" }))), None);
    }

    #[test]
    fn a_claim_of_the_wrong_type_is_named_not_called_missing() {
        let cases = [
            ("exp", json!({}), "token_missing_claim", "token has no exp claim"),
            ("exp", json!({ "exp": null }), "token_missing_claim", "token has no exp claim"),
            ("exp", json!({ "exp": "1999999999" }), "token_malformed_claim", "exp is not a number of seconds"),
            ("exp", json!({ "exp": [1] }), "token_malformed_claim", "exp is not a number of seconds"),
            ("exp", json!({ "exp": -1 }), "token_malformed_claim", "exp is negative"),
            ("exp", json!({ "exp": -0.5 }), "token_malformed_claim", "exp is negative"),
            // One past u64::MAX, which JSON parsers read as a float.
            ("exp", json!({ "exp": 18_446_744_073_709_551_616.0 }), "token_malformed_claim", "exp is out of range"),
            ("nbf", json!({ "nbf": true }), "token_malformed_claim", "nbf is not a number of seconds"),
            // Found by the property tests: was "token has no nbf claim".
            ("nbf", json!({ "nbf": null }), "token_malformed_claim", "nbf is not a number of seconds"),
            ("iss", json!({ "iss": 7 }), "token_malformed_claim", "iss is not a string"),
            ("aud", json!({ "aud": [1, 2] }), "token_malformed_claim", "aud is not a string or a list of strings"),
        ];
        for (name, claims, reason, message) in cases {
            assert_eq!(claim_problem(&token(&claims), name), (reason, message.to_owned()), "{claims}");
        }
    }
}
