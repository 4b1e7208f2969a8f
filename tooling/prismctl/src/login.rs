//! `prismctl login` / `logout`: get an OAuth2 access token from an OIDC
//! issuer and keep it for later commands.
//!
//! Machines use the client-credentials grant; people use the device
//! authorization grant (RFC 8628): prismctl shows a code and a URL, the
//! person approves in a browser, prismctl polls for the token. The token is
//! cached in `<config dir>/prism/token.json`, readable by the user only
//! (mode 0600), and sent by every later command until it expires.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Longest wait for one HTTP exchange with the issuer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The OIDC issuer URL (its /.well-known/openid-configuration is read).
    #[arg(long)]
    issuer: String,
    /// OAuth2 client id.
    #[arg(long)]
    client_id: String,
    /// Client secret for the client-credentials grant (machines). Without
    /// it, the device grant is used (people).
    #[arg(long, env = "PRISM_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Scopes to ask for, space separated.
    #[arg(long)]
    scope: Option<String>,
    /// Audience to ask for (issuers that support the `audience` parameter).
    #[arg(long)]
    audience: Option<String>,
}

/// The cached token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cached {
    pub access_token: String,
    /// Seconds since the epoch; 0 when the issuer did not say.
    pub expires_at: u64,
    pub issuer: String,
}

pub fn cache_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("prism").join("token.json"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The cached token, if there is one that has not expired.
pub fn cached() -> Option<Cached> {
    let text = std::fs::read_to_string(cache_path()?).ok()?;
    let token: Cached = serde_json::from_str(&text).ok()?;
    // A token about to expire would fail mid-command; treat it as gone.
    (token.expires_at == 0 || token.expires_at > now() + 10).then_some(token)
}

fn save(path: &Path, token: &Cached) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    // The mode only applies on creation; an older file may be wider.
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(serde_json::to_string_pretty(token)?.as_bytes())?;
    Ok(())
}

pub fn logout() -> anyhow::Result<()> {
    let path = cache_path().context("no config directory")?;
    match std::fs::remove_file(&path) {
        Ok(()) => eprintln!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("not logged in"),
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Discovery {
    token_endpoint: String,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeviceResponse {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default = "default_interval")]
    interval: u64,
    expires_in: u64,
}

fn default_interval() -> u64 {
    5
}

enum Answer {
    Token(TokenResponse),
    Error(OAuthError),
}

/// Posts a form to the token endpoint: a token, or the OAuth2 error.
async fn post(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> anyhow::Result<Answer> {
    let response = http.post(url).form(form).send().await.with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
    if status.is_success() {
        let token = serde_json::from_slice(&body).with_context(|| format!("{url}: not a token response"))?;
        return Ok(Answer::Token(token));
    }
    match serde_json::from_slice::<OAuthError>(&body) {
        Ok(error) => Ok(Answer::Error(error)),
        Err(_) => anyhow::bail!("{url}: HTTP {status}"),
    }
}

fn describe(error: &OAuthError) -> String {
    match &error.error_description {
        Some(d) => format!("{}: {d}", error.error),
        None => error.error.clone(),
    }
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    // reqwest uses the process-wide rustls provider; one backend (ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build()?;
    let issuer = args.issuer.trim_end_matches('/').to_owned();
    let url = format!("{issuer}/.well-known/openid-configuration");
    let discovery: Discovery = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()?
        .json()
        .await
        .with_context(|| format!("{url}: not an OIDC discovery document"))?;

    let mut common: Vec<(&str, &str)> = vec![("client_id", args.client_id.as_str())];
    if let Some(scope) = &args.scope {
        common.push(("scope", scope));
    }
    if let Some(audience) = &args.audience {
        common.push(("audience", audience));
    }
    let token = match &args.client_secret {
        Some(secret) => {
            let mut form = common.clone();
            form.extend([("grant_type", "client_credentials"), ("client_secret", secret.as_str())]);
            match post(&http, &discovery.token_endpoint, &form).await? {
                Answer::Token(t) => t,
                Answer::Error(e) => anyhow::bail!("the issuer refused: {}", describe(&e)),
            }
        }
        None => {
            let endpoint = discovery
                .device_authorization_endpoint
                .context("the issuer offers no device authorization; use --client-secret")?;
            device(&http, &endpoint, &discovery.token_endpoint, &common).await?
        }
    };
    let cached =
        Cached { access_token: token.access_token, expires_at: token.expires_in.map_or(0, |s| now() + s), issuer };
    let path = cache_path().context("no config directory to keep the token in")?;
    save(&path, &cached)?;
    eprintln!("logged in; token saved to {}", path.display());
    Ok(())
}

/// The device grant: show the code, poll until approved, denied or expired.
async fn device(
    http: &reqwest::Client,
    endpoint: &str,
    token_endpoint: &str,
    common: &[(&str, &str)],
) -> anyhow::Result<TokenResponse> {
    let response = http.post(endpoint).form(common).send().await.with_context(|| format!("POST {endpoint}"))?;
    let grant: DeviceResponse = response.error_for_status()?.json().await.context("not a device authorization")?;
    match &grant.verification_uri_complete {
        Some(uri) => eprintln!("Open {uri} and confirm the code {}", grant.user_code),
        None => eprintln!("Open {} and enter the code {}", grant.verification_uri, grant.user_code),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grant.expires_in);
    let mut interval = Duration::from_secs(grant.interval.max(1));
    let mut form = common.to_vec();
    form.extend([("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", &grant.device_code)]);
    loop {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the code expired before it was approved");
        tokio::time::sleep(interval).await;
        match post(http, token_endpoint, &form).await? {
            Answer::Token(t) => return Ok(t),
            Answer::Error(e) if e.error == "authorization_pending" => {}
            // RFC 8628 §3.5: back off by five seconds.
            Answer::Error(e) if e.error == "slow_down" => interval += Duration::from_secs(5),
            Answer::Error(e) => anyhow::bail!("login failed: {}", describe(&e)),
        }
    }
}
