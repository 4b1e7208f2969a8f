//! Test credentials: a CA with server and client certificates (rcgen), and
//! signed tokens with the JWKS that verifies them, served over HTTP on
//! loopback like an OIDC issuer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType, date_time_ymd,
};

/// A certificate authority that signs test certificates.
pub struct Ca {
    pub name: String,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, as PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    /// A CA named `name` (each CA gets its own distinguished name).
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self { name: name.to_owned(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn sign(&self, name: &str, sans: Vec<SanType>, client: bool, expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = sans;
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        let sans = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
        ];
        self.sign("prism-proxy", sans, false, false)
    }

    /// A client certificate with a SPIFFE id.
    pub fn client(&self, spiffe: &str) -> Leaf {
        self.sign(spiffe, vec![SanType::URI(spiffe.try_into().unwrap())], true, false)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, spiffe: &str) -> Leaf {
        self.sign(spiffe, vec![SanType::URI(spiffe.try_into().unwrap())], true, true)
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The RSA key pair the test issuer signs with (a fixture: rcgen cannot
/// make RSA keys with ring).
pub fn rsa_private_pem() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/jwt-rsa.key")).unwrap()
}

pub fn rsa_public_pem() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/jwt-rsa.pub")).unwrap()
}

/// The JWKS with the fixture key under `kid`.
pub fn jwks(kid: &str) -> serde_json::Value {
    let n = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/jwt-rsa.n")).unwrap();
    serde_json::json!({ "keys": [{ "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": n.trim(), "e": "AQAB" }] })
}

/// A token signed with the fixture key.
pub fn token(kid: &str, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    token_with_header(&header, claims)
}

/// A token signed with the fixture key under a header of the caller's
/// making (RS256, and its own `kid`), for header fields an issuer may add.
pub fn token_with_header(header: &jsonwebtoken::Header, claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&rsa_private_pem()).unwrap();
    jsonwebtoken::encode(header, claims, &key).unwrap()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An OIDC issuer on loopback: discovery document and JWKS (counting
/// fetches), and a token endpoint for `prismctl login`: the
/// client-credentials grant for client `ci` with secret `s3cret` (a token
/// for `user:ci` in group `readers`), and the device grant for client `cli`
/// (pending on the first poll, then a token for `user:person`).
pub struct OidcIssuer {
    pub url: String,
    pub jwks_fetches: Arc<AtomicUsize>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl OidcIssuer {
    /// Serves on its own thread and runtime, so it answers while the test's
    /// runtime is blocked (e.g. in `ProxyConfig::start`, while the proxy
    /// fetches the keys at start).
    pub async fn start(kid: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let fetches = Arc::new(AtomicUsize::new(0));
        let discovery = serde_json::json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks.json"),
            "token_endpoint": format!("{url}/token"),
            "device_authorization_endpoint": format!("{url}/device"),
        });
        let keys = jwks(kid);
        let counter = fetches.clone();
        let polls = Arc::new(AtomicUsize::new(0));
        let (issuer, kid_owned) = (url.clone(), kid.to_owned());
        let activate = format!("{url}/activate");
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks.json",
                axum::routing::get(move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::Json(keys)
                }),
            )
            .route(
                "/device",
                axum::routing::post(move || async move {
                    axum::Json(serde_json::json!({
                        "device_code": "device-1", "user_code": "WDJB-MJHT", "verification_uri": activate,
                        "interval": 1, "expires_in": 60,
                    }))
                }),
            )
            .route(
                "/token",
                axum::routing::post(
                    move |axum::Form(form): axum::Form<std::collections::HashMap<String, String>>| async move {
                        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
                        let mint = |sub: &str| {
                            let claims = serde_json::json!({
                                "iss": issuer, "aud": "prism", "sub": sub, "groups": ["readers"],
                                "iat": now(), "exp": now() + 300,
                            });
                            (axum::http::StatusCode::OK, axum::Json(serde_json::json!({
                                "access_token": token(&kid_owned, &claims), "token_type": "Bearer", "expires_in": 300,
                            })))
                        };
                        let error = |status, error: &str| {
                            (status, axum::Json(serde_json::json!({ "error": error, "error_description": "test issuer" })))
                        };
                        match field("grant_type") {
                            "client_credentials" if field("client_id") == "ci" && field("client_secret") == "s3cret" => {
                                mint("ci")
                            }
                            "client_credentials" => error(axum::http::StatusCode::UNAUTHORIZED, "invalid_client"),
                            "urn:ietf:params:oauth:grant-type:device_code" if field("device_code") == "device-1" => {
                                if polls.fetch_add(1, Ordering::SeqCst) == 0 {
                                    error(axum::http::StatusCode::BAD_REQUEST, "authorization_pending")
                                } else {
                                    mint("person")
                                }
                            }
                            _ => error(axum::http::StatusCode::BAD_REQUEST, "unsupported_grant_type"),
                        }
                    },
                ),
            );
        let (shutdown, mut stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let stopped = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                let _ = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
            });
        });
        Self { url, jwks_fetches: fetches, thread: std::sync::Mutex::new(Some(thread)), shutdown }
    }

    /// Stops serving, open connections included: the discovery document
    /// and the JWKS can no longer be fetched (connections are refused).
    pub async fn stop(&self) {
        self.shutdown.send_replace(true);
        let thread = self.thread.lock().unwrap().take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join()).await.unwrap().unwrap();
        }
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }
}
