//! Client security end to end against the real proxy: TLS and client
//! certificates, bearer tokens checked against a JWKS served on loopback,
//! per-namespace authorization, the admin API's rights, and the audit log.
//! Every refused credential is a test, and each leaves an audit record.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::{Path, PathBuf};
use std::time::Duration;

use prism_proto::admin::v1::admin_service_client::AdminServiceClient;
use prism_proto::admin::v1::{ApplyNamespaceRequest, ListNamespacesRequest, ListPluginsRequest};
use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::keyvalue::v1::{GetRequest, PutRequest};
use prism_tests::pki::{self, Ca, Leaf, OidcIssuer};
use prism_tests::{Proxy, ProxyConfig, eventually};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const SHOP: &str = "spiffe://test.prism/ns/shop/sa/api";
const KID: &str = "key-1";

/// The `orders` namespace: shop services (by SPIFFE id) and readers may
/// read, writers may write, its owner administers it.
const ORDERS: &str = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: orders}\nspec:\n  pattern: keyvalue\n  backend: memstore\n  access:\n    read: [\"group:readers\", \"spiffe://test.prism/ns/shop/*\"]\n    write: [\"group:writers\"]\n    admin: [\"user:owner\"]\n";

struct Setup {
    proxy: Proxy,
    ca: Ca,
    issuer: OidcIssuer,
    audit: PathBuf,
    _files: tempfile::TempDir,
}

/// A proxy with TLS, client certificates (`client_auth`), tokens from a
/// loopback issuer (found by OIDC discovery), and an audit file.
async fn setup(client_auth: &str, require: &str) -> Setup {
    let issuer = OidcIssuer::start(KID).await;
    let ca = Ca::new("Prism Test CA");
    let files = tempfile::tempdir().unwrap();
    let server = ca.server();
    let cert = pki::write(files.path(), "server.pem", &server.cert);
    let key = pki::write(files.path(), "server.key", &server.key);
    let client_ca = pki::write(files.path(), "ca.pem", &ca.pem);
    let audit = files.path().join("audit.jsonl");
    let security = format!(
        "tls:\n  cert: {}\n  key: {}\n  client_ca: {}\n  client_auth: {client_auth}\n  reload_interval: 1s\nauth:\n  require: {require}\n  admins: [\"group:platform-admins\"]\n  jwt:\n    issuer: {}\n    audiences: [prism]\n    leeway: 5s\n    refetch_interval: 1h\naudit:\n  sink: {}\n",
        cert.display(),
        key.display(),
        client_ca.display(),
        issuer.url,
        audit.display()
    );
    let proxy = ProxyConfig::memstore().namespace_file("orders.yaml", ORDERS).extra(&security).start();
    Setup { proxy, ca, issuer, audit, _files: files }
}

impl Setup {
    async fn channel(&self, identity: Option<&Leaf>) -> Result<Channel, tonic::transport::Error> {
        channel(self.proxy.addr, &self.ca.pem, identity).await
    }

    fn token(&self, claims: Value) -> String {
        pki::token(KID, &self.claims(claims))
    }

    /// `claims` with a valid issuer, audience and expiry where they lack one.
    fn claims(&self, claims: Value) -> Value {
        let mut claims = claims;
        let base = json!({ "iss": self.issuer.url, "aud": "prism", "exp": pki::now() + 300, "iat": pki::now() });
        for (k, v) in base.as_object().unwrap() {
            if claims.get(k).is_none() {
                claims[k] = v.clone();
            }
        }
        claims
    }

    /// Audit records so far, waiting until at least `n` are written.
    async fn audit(&self, n: usize) -> Vec<Value> {
        let read = || {
            std::fs::read_to_string(&self.audit)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        };
        assert!(eventually(Duration::from_secs(5), || async { read().len() >= n }).await, "audit: {:?}", read());
        read()
    }
}

async fn channel(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls)?.connect().await
}

fn get(key: &str, token: Option<&str>) -> tonic::Request<GetRequest> {
    let mut request = tonic::Request::new(GetRequest { namespace: "orders".into(), key: key.into() });
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    request
}

fn put(key: &str, token: &str) -> tonic::Request<PutRequest> {
    let mut request = tonic::Request::new(PutRequest {
        namespace: "orders".into(),
        key: key.into(),
        value: b"secret-value".to_vec().into(),
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// base64url without padding, for hand-made tokens.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_audited() {
    let s = setup("optional", "any").await;
    let mut kv = KeyValueServiceClient::new(s.channel(None).await.unwrap());
    let now = pki::now();

    // alg none, and HS256 keyed with the issuer's public key (the classic
    // algorithm-confusion attack), built by hand.
    let claims =
        json!({ "iss": s.issuer.url, "aud": "prism", "exp": now + 300, "sub": "mallory", "groups": ["readers"] });
    let body = b64(claims.to_string().as_bytes());
    let none = format!("{}.{body}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    let hs_header = b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{KID}"}}"#).as_bytes());
    let hs_sig = {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &pki::rsa_public_pem());
        b64(ring::hmac::sign(&key, format!("{hs_header}.{body}").as_bytes()).as_ref())
    };
    let hs256 = format!("{hs_header}.{body}.{hs_sig}");
    // Signed by the issuer, but naming an extension the issuer says must
    // be understood (RFC 7515 4.1.11), which Prism does not know.
    let critical = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(KID.to_owned());
        header.crit = Some(vec!["exp-ext".to_owned()]);
        pki::token_with_header(&header, &s.claims(json!({ "sub": "a", "groups": ["readers"] })))
    };

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "no credentials"),
        ("garbage", Some("not-a-jwt".into()), "malformed token"),
        ("alg none", Some(none), "malformed token"),
        ("HS256 with the public key", Some(hs256), "algorithm HS256 is not accepted"),
        ("a critical extension", Some(critical), "crit"),
        ("expired", Some(s.token(json!({ "sub": "a", "groups": ["readers"], "exp": now - 600 }))), "token expired"),
        (
            "not yet valid",
            Some(s.token(json!({ "sub": "a", "groups": ["readers"], "nbf": now + 600 }))),
            "not yet valid",
        ),
        (
            "no exp",
            Some(pki::token(KID, &json!({ "iss": s.issuer.url, "aud": "prism", "sub": "a", "groups": ["readers"] }))),
            "token has no exp claim",
        ),
        (
            "exp a string",
            Some(s.token(json!({ "sub": "a", "groups": ["readers"], "exp": "tomorrow" }))),
            "exp is not a number of seconds",
        ),
        ("exp negative", Some(s.token(json!({ "sub": "a", "groups": ["readers"], "exp": -5 }))), "exp is negative"),
        ("exp huge", Some(s.token(json!({ "sub": "a", "groups": ["readers"], "exp": 1e30 }))), "exp is out of range"),
        (
            "nbf a string",
            Some(s.token(json!({ "sub": "a", "groups": ["readers"], "nbf": "yesterday" }))),
            "nbf is not a number of seconds",
        ),
        ("wrong issuer", Some(s.token(json!({ "sub": "a", "iss": "https://evil.example" }))), "wrong issuer"),
        ("issuer not a string", Some(s.token(json!({ "sub": "a", "iss": 42 }))), "iss is not a string"),
        ("wrong audience", Some(s.token(json!({ "sub": "a", "aud": "someone-else" }))), "wrong audience"),
        (
            "unknown kid",
            Some(pki::token("key-2", &json!({ "iss": s.issuer.url, "aud": "prism", "exp": now + 300, "sub": "a" }))),
            "unknown key id",
        ),
    ];
    for (name, token, expected) in &cases {
        let err = kv.get(get("k", token.as_deref())).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
        assert!(err.message().contains(expected), "{name}: {:?} lacks {expected:?}", err.message());
    }
    // The unknown kid made the proxy fetch the keys again (once at start,
    // once for the kid); further unknown kids within refetch_interval do
    // not reach the issuer.
    let fetches = s.issuer.fetches();
    assert_eq!(fetches, 2, "JWKS fetches");
    for _ in 0..5 {
        let t = pki::token("key-3", &json!({ "iss": s.issuer.url, "aud": "prism", "exp": now + 300 }));
        assert_eq!(kv.get(get("k", Some(&t))).await.unwrap_err().code(), Code::Unauthenticated);
    }
    assert_eq!(s.issuer.fetches(), fetches, "unknown kids hammered the issuer");

    // A valid token without rights on the namespace.
    let stranger = s.token(json!({ "sub": "stranger", "groups": ["others"] }));
    let err = kv.get(get("k", Some(&stranger))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("user:stranger lacks read on namespace \"orders\""), "{}", err.message());
    // An unknown namespace is NOT_FOUND for any authenticated caller.
    let mut request = get("k", Some(&stranger));
    request.get_mut().namespace = "nope".into();
    assert_eq!(kv.get(request).await.unwrap_err().code(), Code::NotFound);

    // Readers read, writers write, and neither does the other.
    let reader = s.token(json!({ "sub": "rita", "groups": ["readers"] }));
    let writer = s.token(json!({ "sub": "walt", "groups": ["writers"], "scope": "orders.write other" }));
    kv.put(put("o-1", &writer)).await.unwrap();
    let got = kv.get(get("o-1", Some(&reader))).await.unwrap().into_inner();
    assert!(got.found);
    assert_eq!(kv.put(put("o-2", &reader)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(kv.get(get("o-1", Some(&writer))).await.unwrap_err().code(), Code::PermissionDenied);

    // Every call above has its audit record, with the decision; none
    // carries a value.
    let expected = cases.len() + 5 + 2 + 4;
    let records = s.audit(expected).await;
    let text = std::fs::read_to_string(&s.audit).unwrap();
    assert!(!text.contains("secret-value"), "a value reached the audit log");
    for (name, _, reason) in &cases {
        let hit =
            records.iter().any(|r| r["decision"] == "deny" && r["reason"].as_str().is_some_and(|x| x.contains(reason)));
        assert!(hit, "{name}: no deny record with {reason:?}");
    }
    let denied = records.iter().find(|r| r["principal"] == "user:stranger" && r["decision"] == "deny").unwrap();
    assert_eq!(denied["namespace"], "orders");
    assert_eq!(denied["right"], "read");
    assert_eq!(denied["status"], "PermissionDenied");
    assert_eq!(denied["auth"], "jwt");
    assert_eq!(denied["key_hash"].as_str().unwrap().len(), 32);
    let allowed = records.iter().find(|r| r["principal"] == "user:rita" && r["decision"] == "allow").unwrap();
    assert_eq!(allowed["operation"], "prism.keyvalue.v1.KeyValueService/Get");
    assert!(allowed["latency_ms"].as_f64().is_some() && allowed["request_id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate_and_bad_ones_are_refused() {
    let s = setup("required", "mtls").await;
    let shop = s.ca.client(SHOP);

    // A certificate from the trusted CA with a SPIFFE id that may read.
    let mut kv = KeyValueServiceClient::new(s.channel(Some(&shop)).await.unwrap());
    assert!(!kv.get(get("k", None)).await.unwrap().into_inner().found);
    // ... but not write.
    let request =
        PutRequest { namespace: "orders".into(), key: "k".into(), value: b"v".to_vec().into(), ..Default::default() };
    assert_eq!(kv.put(request).await.unwrap_err().code(), Code::PermissionDenied);
    // Another SPIFFE id from the same CA may do nothing.
    let other = s.ca.client("spiffe://test.prism/ns/billing/sa/api");
    let mut kv_other = KeyValueServiceClient::new(s.channel(Some(&other)).await.unwrap());
    assert_eq!(kv_other.get(get("k", None)).await.unwrap_err().code(), Code::PermissionDenied);

    // Refused at the handshake: an untrusted CA, an expired certificate,
    // no certificate. With TLS 1.3 the client may only learn on its first
    // call.
    let evil = Ca::new("Evil CA").client(SHOP);
    let expired = s.ca.expired_client(SHOP);
    for (name, identity) in [("untrusted CA", Some(&evil)), ("expired", Some(&expired)), ("no certificate", None)] {
        let refused = match s.channel(identity).await {
            Err(_) => true,
            Ok(channel) => KeyValueServiceClient::new(channel).get(get("k", None)).await.is_err_and(|e| {
                matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled)
            }),
        };
        assert!(refused, "{name}: the connection was accepted");
    }
    // A plaintext client against the TLS listener gets nowhere.
    let plain = Endpoint::from_shared(format!("http://{}", s.proxy.addr)).unwrap().connect().await;
    if let Ok(channel) = plain {
        let answer = KeyValueServiceClient::new(channel).get(get("k", None)).await;
        assert!(answer.is_err(), "a plaintext call was answered: {answer:?}");
    }

    // Each refused handshake left an audit record (written when the server
    // side of the handshake gives up, which may be after the client did).
    let handshake_count = || {
        std::fs::read_to_string(&s.audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"tls_handshake\""))
            .count()
    };
    let all_there = eventually(Duration::from_secs(15), || async { handshake_count() >= 4 }).await;
    let records = s.audit(6).await;
    let handshakes: Vec<&Value> = records.iter().filter(|r| r["event"] == "tls_handshake").collect();
    assert!(all_there, "handshake records: {handshakes:?}");
    assert!(handshakes.iter().all(|r| r["decision"] == "deny" && r["reason"].is_string()));
    let allowed = records.iter().find(|r| r["decision"] == "allow").unwrap();
    assert_eq!(allowed["principal"], SHOP);
    assert_eq!(allowed["auth"], "mtls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_admin_rights() {
    let s = setup("optional", "any").await;
    let channel = s.channel(None).await.unwrap();
    let mut admin = AdminServiceClient::new(channel);
    let platform = s.token(json!({ "sub": "pat", "groups": ["platform-admins"] }));
    let owner = s.token(json!({ "sub": "owner" }));
    let reader = s.token(json!({ "sub": "rita", "groups": ["readers"] }));

    // Plugins and new namespaces are for proxy admins only.
    assert_eq!(
        admin.list_plugins(with_token(ListPluginsRequest {}, &owner)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(admin.list_plugins(with_token(ListPluginsRequest {}, &platform)).await.is_ok());
    let new = ORDERS.replace("name: orders", "name: invoices");
    let apply = |yaml: &str| ApplyNamespaceRequest { spec_yaml: yaml.to_owned(), dry_run: true, force: false };
    assert_eq!(
        admin.apply_namespace(with_token(apply(&new), &owner)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(admin.apply_namespace(with_token(apply(&new), &platform)).await.is_ok());
    // The namespace's own admin may change it; a reader may not.
    assert!(admin.apply_namespace(with_token(apply(ORDERS), &owner)).await.is_ok());
    assert_eq!(
        admin.apply_namespace(with_token(apply(ORDERS), &reader)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Listing shows only what the caller may see.
    let names = |r: prism_proto::admin::v1::ListNamespacesResponse| -> Vec<String> {
        r.namespaces.into_iter().map(|n| n.name).collect()
    };
    let listed = admin.list_namespaces(with_token(ListNamespacesRequest {}, &reader)).await.unwrap().into_inner();
    assert_eq!(names(listed), ["orders"]);
    let listed = admin.list_namespaces(with_token(ListNamespacesRequest {}, &platform)).await.unwrap().into_inner();
    assert_eq!(names(listed), ["demo", "orders"]);
    // The demo namespace has no access block: deny by default.
    let mut kv = KeyValueServiceClient::new(s.channel(None).await.unwrap());
    let mut request = get("k", Some(&platform));
    request.get_mut().namespace = "demo".into();
    assert_eq!(kv.get(request).await.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_connections() {
    let s = setup("optional", "any").await;
    let reader = s.token(json!({ "sub": "rita", "groups": ["readers"] }));
    let old = s.channel(None).await.unwrap();
    let mut kv_old = KeyValueServiceClient::new(old);
    assert!(kv_old.get(get("k", Some(&reader))).await.is_ok());

    // Rotate the server certificate to one from a new CA.
    let next = Ca::new("Prism Test CA 2");
    let leaf = next.server();
    let dir: &Path = s.audit.parent().unwrap();
    // Key first, then certificate: in between the pair does not match and
    // the proxy keeps the old one.
    pki::write(dir, "server.key", &leaf.key);
    pki::write(dir, "server.pem", &leaf.cert);
    let reloaded = eventually(Duration::from_secs(10), || async {
        match channel(s.proxy.addr, &next.pem, None).await {
            Ok(c) => KeyValueServiceClient::new(c).get(get("k", Some(&reader))).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(reloaded, "new connections never saw the new certificate");
    // The connection opened before the rotation still works.
    assert!(kv_old.get(get("k", Some(&reader))).await.is_ok());
    // New connections trusting only the old CA now fail.
    let stale = match channel(s.proxy.addr, &s.ca.pem, None).await {
        Err(_) => true,
        Ok(c) => KeyValueServiceClient::new(c).get(get("k", Some(&reader))).await.is_err(),
    };
    assert!(stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prismctl_speaks_tls_with_tokens_and_certificates() {
    let s = setup("optional", "any").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::write(dir.path(), "ca.pem", &s.ca.pem);
    let shop = s.ca.client(SHOP);
    let cert = pki::write(dir.path(), "client.pem", &shop.cert);
    let key = pki::write(dir.path(), "client.key", &shop.key);
    let endpoint = format!("https://localhost:{}", s.proxy.addr.port());
    let prismctl = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(prism_tests::bin_path("prismctl"));
        cmd.env("PRISMCTL_CONFIG", "/dev/null").env_remove("PRISM_TOKEN").args(["--endpoint", &endpoint]);
        if let Some(t) = token {
            cmd.env("PRISM_TOKEN", t);
        }
        cmd.args(args).output().unwrap()
    };
    let reader = s.token(json!({ "sub": "rita", "groups": ["readers"] }));
    let ca_arg = ca.to_str().unwrap();

    let out = prismctl(&["--ca", ca_arg, "-o", "json", "namespace", "list"], Some(&reader));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"orders\""));
    // Without credentials: refused with the reason.
    let out = prismctl(&["--ca", ca_arg, "kv", "get", "orders", "k"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With a client certificate instead of a token.
    let args =
        ["--ca", ca_arg, "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), "kv", "get", "orders", "k"];
    let out = prismctl(&args, None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"), "{}", String::from_utf8_lossy(&out.stderr));
    // --cert without --key is a usage error; --ca on http:// is refused.
    let out = prismctl(&["--ca", ca_arg, "--cert", cert.to_str().unwrap(), "health"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(prism_tests::bin_path("prismctl"))
        .args(["--endpoint", "http://127.0.0.1:1", "--ca", ca_arg, "health"])
        .env("PRISMCTL_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("need an https:// endpoint"));
}

/// A non-Rust client: Python grpcio with mTLS and a PyJWT-minted token
/// (tooling/interop/client.py, run through uv).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_with_mtls_and_jwt() {
    let Some(uv) = prism_tests::services::require_program("uv") else { return };
    let s = setup("required", "both").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = s.ca.client(SHOP);
    let ca = pki::write(dir.path(), "ca.pem", &s.ca.pem);
    let cert = pki::write(dir.path(), "client.pem", &shop.cert);
    let key = pki::write(dir.path(), "client.key", &shop.key);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let signing = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/jwt-rsa.key");
    let addr = s.proxy.addr.to_string();
    let args: Vec<&std::ffi::OsStr> = vec![
        "--addr".as_ref(),
        addr.as_ref(),
        "--ca".as_ref(),
        ca.as_os_str(),
        "--cert".as_ref(),
        cert.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--jwt-key".as_ref(),
        signing.as_os_str(),
        "--kid".as_ref(),
        KID.as_ref(),
        "--issuer".as_ref(),
        s.issuer.url.as_ref(),
        "--audience".as_ref(),
        "prism".as_ref(),
    ];
    let out = tokio::process::Command::new(uv)
        .current_dir(root)
        .args(["run", "--locked", "--group", "interop", "tooling/interop/client.py"])
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["found"], true);
    assert_eq!(seen["value"], "from python");
    assert_eq!(seen["without_token"], "UNAUTHENTICATED");
    let records = s.audit(3).await;
    assert!(
        records.iter().any(|r| r["principal"] == "user:python" && r["auth"] == "mtls+jwt" && r["decision"] == "allow")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prismctl_login_keeps_a_token() {
    let s = setup("optional", "any").await;
    let home = tempfile::tempdir().unwrap();
    let ca = pki::write(home.path(), "ca.pem", &s.ca.pem);
    let endpoint = format!("https://localhost:{}", s.proxy.addr.port());
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(prism_tests::bin_path("prismctl"));
        cmd.env("XDG_CONFIG_HOME", home.path()).env("HOME", home.path()).env("PRISMCTL_CONFIG", "/dev/null");
        cmd.env_remove("PRISM_TOKEN").env_remove("PRISM_CLIENT_SECRET").args(args).output()
    };
    let list = ["--endpoint", &endpoint, "--ca", ca.to_str().unwrap(), "-o", "json", "namespace", "list"];

    // Machines: the client-credentials grant; a wrong secret is refused.
    let out =
        run(&["login", "--issuer", &s.issuer.url, "--client-id", "ci", "--client-secret", "wrong"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_client"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out =
        run(&["login", "--issuer", &s.issuer.url, "--client-id", "ci", "--client-secret", "s3cret"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cache = home.path().join("prism/token.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the token file is readable by others");
    // Later commands send the kept token.
    let out = run(&list).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"orders\""));

    // People: the device grant shows a code and polls until approved.
    let out = run(&["login", "--issuer", &s.issuer.url, "--client-id", "cli"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WDJB-MJHT"));
    let records_before = s.audit(1).await.len();
    assert!(run(&list).await.unwrap().status.success());
    let records = s.audit(records_before + 1).await;
    assert!(records.iter().any(|r| r["principal"] == "user:person"), "the device token was not used");

    // Logged out, the proxy refuses.
    assert!(run(&["logout"]).await.unwrap().status.success());
    assert!(!cache.exists());
    let out = run(&list).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
}

/// An issuer whose keys cannot be fetched is the proxy's problem, not the
/// caller's: once the proxy tries to fetch a key it lacks and cannot, the
/// token answers UNAVAILABLE (retry later), not "unknown key id", and the
/// log and the audit record say why. Keys fetched before the issuer went
/// down keep working.
#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_a_bad_token() {
    let issuer = OidcIssuer::start(KID).await;
    let audit = tempfile::tempdir().unwrap();
    let audit_file = audit.path().join("audit.jsonl");
    let proxy = ProxyConfig::memstore()
        .namespace_file("orders.yaml", ORDERS)
        .extra(&format!(
            "auth:\n  jwt: {{issuer: \"{}\", audiences: [prism], refetch_interval: 1s}}\naudit: {{sink: {}}}\n",
            issuer.url,
            audit_file.display()
        ))
        .start();
    let mut kv = proxy.kv().await;
    let claims = |kid: &str| {
        let claims =
            json!({ "iss": issuer.url, "aud": "prism", "exp": pki::now() + 300, "sub": "rita", "groups": ["readers"] });
        pki::token(kid, &claims)
    };
    kv.get(get("k", Some(&claims(KID)))).await.unwrap();

    issuer.stop().await;
    // The cached key still verifies.
    kv.get(get("k", Some(&claims(KID)))).await.unwrap();
    // A rotated key cannot be fetched. Within refetch_interval of the last
    // fetch the proxy does not ask again (and the key set it has is recent);
    // once it asks and fails, the answer is UNAVAILABLE.
    let rotated = claims("key-9");
    let unavailable = eventually(Duration::from_secs(10), || {
        let (mut kv, rotated) = (kv.clone(), rotated.clone());
        async move { kv.get(get("k", Some(&rotated))).await.is_err_and(|e| e.code() == Code::Unavailable) }
    })
    .await;
    assert!(unavailable, "a key that cannot be fetched never answered UNAVAILABLE");
    let err = kv.get(get("k", Some(&rotated))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("signing keys could not be fetched"), "{}", err.message());
    assert!(
        !proxy.logs.lines_with(&["signing keys", "/.well-known/openid-configuration"]).is_empty(),
        "the log does not say which fetch failed:\n{}",
        proxy.logs.text()
    );
    let records: Vec<Value> =
        std::fs::read_to_string(&audit_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = records.last().unwrap();
    assert_eq!(last["decision"], "deny", "{last}");
    assert_eq!(last["status"], "Unavailable", "{last}");
    assert!(last["reason"].as_str().unwrap().contains("signing keys could not be fetched"), "{last}");
}

/// An issuer that is down when the proxy starts: nothing to verify with,
/// so tokens get UNAVAILABLE until it is back.
#[tokio::test]
async fn an_issuer_down_at_start_is_unavailable() {
    let port = prism_tests::services::free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let proxy = ProxyConfig::memstore()
        .namespace_file("orders.yaml", ORDERS)
        .extra(&format!("auth:\n  jwt: {{issuer: \"{issuer}\", audiences: [prism], refetch_interval: 1s}}\n"))
        .start();
    let mut kv = proxy.kv().await;
    let token = pki::token(
        KID,
        &json!({ "iss": issuer, "aud": "prism", "exp": pki::now() + 300, "sub": "rita", "groups": ["readers"] }),
    );
    let err = kv.get(get("k", Some(&token))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("signing keys could not be fetched"), "{}", err.message());
}

/// A refused call is an attempt whatever it aimed at: one to a service the
/// audit log does not record when allowed (reflection) is recorded when
/// refused; an allowed one is not.
#[tokio::test]
async fn refused_calls_to_any_service_are_audited() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let s = setup("optional", "any").await;
    let request = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut anonymous = ServerReflectionClient::new(s.channel(None).await.unwrap());
    let err = anonymous.server_reflection_info(tokio_stream::iter([request()])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let records = s.audit(1).await;
    let refused = records
        .iter()
        .find(|r| r["operation"] == "grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        .unwrap_or_else(|| panic!("the refused reflection call was not audited: {records:?}"));
    assert_eq!(refused["decision"], "deny", "{refused}");
    assert!(refused["reason"].as_str().unwrap().contains("no credentials"), "{refused}");

    // Allowed, it is not a data access: no record.
    let shop = s.ca.client(SHOP);
    let mut client = ServerReflectionClient::new(s.channel(Some(&shop)).await.unwrap());
    client.server_reflection_info(tokio_stream::iter([request()])).await.unwrap();
    let mut kv = KeyValueServiceClient::new(s.channel(Some(&shop)).await.unwrap());
    kv.get(get("k", None)).await.unwrap();
    let records = s.audit(2).await;
    let reflection =
        records.iter().filter(|r| r["operation"].as_str().unwrap_or("").starts_with("grpc.reflection")).count();
    assert_eq!(reflection, 1, "an allowed reflection call was audited: {records:?}");
}

/// Two `authorization` headers are refused, whatever they hold: which one
/// counts would depend on who reads the headers (the proxy, an intermediary,
/// a log), so a valid token must not carry a garbage or expired one past the
/// check, nor the other way round. Even next to a valid client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_authorization_headers_are_refused() {
    let s = setup("optional", "any").await;
    let mut kv = KeyValueServiceClient::new(s.channel(None).await.unwrap());
    let valid = s.token(json!({ "sub": "rita", "groups": ["readers"] }));
    let expired = s.token(json!({ "sub": "rita", "groups": ["readers"], "exp": pki::now() - 600 }));
    // The valid token alone is served.
    kv.get(get("k", Some(&valid))).await.unwrap();

    let shop = s.ca.client(SHOP);
    let mut kv_shop = KeyValueServiceClient::new(s.channel(Some(&shop)).await.unwrap());
    let cases: [(&str, &[&str], bool); 5] = [
        ("valid then garbage", &[&valid, "not-a-jwt"], false),
        ("valid then expired", &[&valid, &expired], false),
        ("expired then valid", &[&expired, &valid], false),
        ("the same valid token twice", &[&valid, &valid], false),
        ("next to a valid certificate", &[&valid, "not-a-jwt"], true),
    ];
    for (name, tokens, certificate) in cases {
        let mut request = get("k", None);
        for token in tokens {
            request.metadata_mut().append("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let client = if certificate { &mut kv_shop } else { &mut kv };
        let err = client.get(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
        assert!(err.message().contains("2 authorization headers"), "{name}: {}", err.message());
    }

    let records = s.audit(1 + cases.len()).await;
    let refused: Vec<&Value> = records.iter().filter(|r| r["decision"] == "deny").collect();
    assert_eq!(refused.len(), cases.len(), "{records:?}");
    for record in refused {
        assert_eq!(record["status"], "Unauthenticated", "{record}");
        assert!(record["reason"].as_str().unwrap().contains("2 authorization headers"), "{record}");
    }
}

/// The documented token limit is the one a caller meets: a valid token of
/// up to 16 KiB is served, and a longer one is refused by the proxy's own
/// check (UNAUTHENTICATED naming the limit, and audited) rather than by the
/// HTTP/2 header limit below it (HTTP 431, which a gRPC client sees as
/// UNKNOWN, and no audit record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_limit_is_the_proxy_s_own() {
    const LIMIT: usize = prism_proxy::security::jwt::MAX_TOKEN_BYTES;
    let s = setup("optional", "any").await;
    let mut kv = KeyValueServiceClient::new(s.channel(None).await.unwrap());

    // A valid token padded to the limit: the claims' base64 gets the room
    // the header and signature leave.
    let padded = |pad: usize| {
        let exp = pki::now() + 300;
        s.token(json!({ "sub": "rita", "groups": ["readers"], "exp": exp, "iat": exp - 300, "pad": "x".repeat(pad) }))
    };
    let bare = padded(0);
    let payload = bare.split('.').nth(1).unwrap().len();
    let room = LIMIT - (bare.len() - payload);
    let largest = padded(room * 3 / 4 - payload * 3 / 4);
    assert!(largest.len() <= LIMIT && largest.len() > LIMIT - 4, "{} bytes", largest.len());
    kv.get(get("k", Some(&largest))).await.unwrap();

    for size in [LIMIT + 1, LIMIT + 8 * 1024] {
        let err = kv.get(get("k", Some(&"x".repeat(size)))).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{size} bytes: {err:?}");
        let expected = format!("token is {size} bytes, over the limit of {LIMIT} bytes");
        assert!(err.message().contains(&expected), "{size} bytes: {}", err.message());
    }

    let records = s.audit(3).await;
    let refused: Vec<&Value> = records.iter().filter(|r| r["decision"] == "deny").collect();
    assert_eq!(refused.len(), 2, "{records:?}");
    assert!(refused.iter().all(|r| r["reason"].as_str().unwrap().contains("over the limit")), "{refused:?}");

    // Past the header list limit, HTTP/2 still refuses the call unread.
    let max_list = prism_proxy::security::jwt::MAX_HEADER_LIST_BYTES as usize;
    assert!(kv.get(get("k", Some(&"x".repeat(max_list)))).await.is_err());
}
