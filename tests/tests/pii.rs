#![allow(clippy::unwrap_used, clippy::expect_used)]
//! PII end to end: a team's .proto pushed with `prismctl schema push`, a
//! typed namespace, masked and raw reads by right, refused writes, field
//! encryption checked with the backends' own clients, key rotation, the
//! audit record, and no raw value in any log or audit line.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use bytes::Bytes;
use prism_proto::admin::v1::ApplyNamespaceRequest;
use prism_proto::keyvalue::v1::{BatchGetRequest, GetRequest, PutRequest, ScanRequest};
use prism_tests::pki::{self, OidcIssuer};
use prism_tests::{Proxy, ProxyConfig, eventually, services};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use serde_json::{Value as Json, json};
use tonic::Code;

const KID: &str = "key-1";
const PROFILE: &str = "acme.profile.v1.UserProfile";
/// Every raw value of the profile that is tagged; none may appear in a log,
/// an audit record or (encrypted namespaces) the backend.
const RAW: &[&str] = &["jane.doe@example.com", "Jane Doe", "555-010-0199", "Main Street", "123-45-6789", "Janie"];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pii")
}

/// The team's messages, compiled here as the Python client compiles them
/// with its own tools.
fn pool() -> DescriptorPool {
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("proto");
    let mut compiler = protox::Compiler::new([data_dir(), proto]).unwrap();
    compiler.include_imports(true).open_file("acme/profile/v1/profile.proto").unwrap();
    compiler.descriptor_pool()
}

fn jane(pool: &DescriptorPool) -> Bytes {
    let mut home = DynamicMessage::new(pool.get_message_by_name("acme.profile.v1.Address").unwrap());
    home.set_field_by_name("street", Value::String("1 Main Street".into()));
    home.set_field_by_name("city", Value::String("Springfield".into()));
    let mut p = DynamicMessage::new(pool.get_message_by_name(PROFILE).unwrap());
    p.set_field_by_name("user_id", Value::String("u-1".into()));
    p.set_field_by_name("email", Value::String("jane.doe@example.com".into()));
    p.set_field_by_name("name", Value::String("Jane Doe".into()));
    p.set_field_by_name("phone", Value::String("+1 555-010-0199".into()));
    p.set_field_by_name("home", Value::Message(home));
    p.set_field_by_name("aliases", Value::List(vec![Value::String("Janie Q".into())]));
    p.set_field_by_name("notes", Value::String("prefers email".into()));
    p.set_field_by_name("ssn", Value::String("123-45-6789".into()));
    Bytes::from(p.encode_to_vec())
}

fn text(m: &DynamicMessage, path: &str) -> String {
    let (first, rest) = path.split_once('.').map_or((path, None), |(a, b)| (a, Some(b)));
    let value = m.get_field_by_name(first).unwrap().into_owned();
    match rest {
        Some(rest) => text(value.as_message().unwrap(), rest),
        None => value.as_str().map(str::to_owned).unwrap_or_default(),
    }
}

struct Setup {
    proxy: Proxy,
    issuer: OidcIssuer,
    audit: PathBuf,
    keys: tempfile::TempDir,
}

fn security(issuer: &OidcIssuer, audit: &Path, keys: &Path) -> String {
    format!(
        "auth:\n  require: jwt\n  admins: [\"group:admins\"]\n  jwt:\n    issuer: {}\n    audiences: [prism]\n    leeway: 5s\n    refetch_interval: 1h\naudit:\n  sink: {}\npii:\n  keyring: {}\n",
        issuer.url,
        audit.display(),
        keys.display()
    )
}

fn write_key(dir: &Path, id: u32) {
    use base64::Engine;
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).unwrap();
    std::fs::write(dir.join(format!("{id}.key")), base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
}

async fn setup(config: ProxyConfig) -> Setup {
    let issuer = OidcIssuer::start(KID).await;
    let keys = tempfile::tempdir().unwrap();
    write_key(keys.path(), 1);
    let audit = config.dir().join("audit.jsonl");
    // Debug logs of the proxy and plugins: no raw value at any level.
    let proxy = config.extra(&security(&issuer, &audit, keys.path())).env("PRISM_LOG", "debug").start();
    Setup { proxy, issuer, audit, keys }
}

impl Setup {
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        pki::token(
            KID,
            &json!({"iss": self.issuer.url, "aud": "prism", "sub": sub, "groups": groups, "exp": pki::now() + 600}),
        )
    }

    fn admin_token(&self) -> String {
        self.token("ops", &["admins"])
    }

    fn prismctl(&self, args: &[&str]) -> Output {
        std::process::Command::new(prism_tests::bin_path("prismctl"))
            .args(["--endpoint", &self.proxy.endpoint(), "--token", &self.admin_token()])
            .args(args)
            .env("PRISMCTL_CONFIG", "/dev/null")
            .output()
            .unwrap()
    }

    fn push(&self, dir: &Path, file: &str, extra: &[&str]) -> Output {
        let dir = dir.to_str().unwrap();
        let mut args = vec!["-o", "json", "schema", "push", file, "-I", dir];
        args.extend_from_slice(extra);
        self.prismctl(&args)
    }

    fn request<T>(&self, message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    async fn apply(&self, yaml: &str) -> Result<(), tonic::Status> {
        let mut admin = self.proxy.admin().await;
        let request =
            self.request(ApplyNamespaceRequest { spec_yaml: yaml.into(), ..Default::default() }, &self.admin_token());
        admin.apply_namespace(request).await.map(|_| ())
    }

    async fn put(&self, ns: &str, key: &str, value: Bytes, token: &str) -> Result<(), tonic::Status> {
        let mut kv = self.proxy.kv().await;
        let put = PutRequest { namespace: ns.into(), key: key.into(), value, ..Default::default() };
        kv.put(self.request(put, token)).await.map(|_| ())
    }

    async fn get(&self, ns: &str, key: &str, token: &str) -> Bytes {
        let mut kv = self.proxy.kv().await;
        let get = GetRequest { namespace: ns.into(), key: key.into() };
        let reply = kv.get(self.request(get, token)).await.unwrap().into_inner();
        assert!(reply.found, "{ns}/{key} not found");
        reply.value
    }

    fn audit_lines(&self) -> Vec<Json> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Fails if a raw tagged value is in any log line of the proxy or its
    /// plugins, or in any audit record.
    fn assert_no_raw_pii_logged(&self) {
        let logs = self.proxy.logs.text();
        let audit = std::fs::read_to_string(&self.audit).unwrap_or_default();
        for raw in RAW {
            assert!(!logs.contains(raw), "{raw:?} is in the logs:\n{}", self.proxy.logs.lines_with(&[raw]).join("\n"));
            assert!(!audit.contains(raw), "{raw:?} is in the audit log");
        }
    }
}

fn namespace(name: &str, backend: &str, encrypt: bool) -> String {
    format!(
        "apiVersion: prism/v1\nkind: Namespace\nmetadata: {{name: {name}}}\nspec:\n  pattern: keyvalue\n  backend: {backend}\n  schema: {{message: {PROFILE}}}\n  pii:\n    policy: {{email: mask, phone: last4, name: initial, ssn: redact, address: mask, default: redact}}\n    encrypt: {encrypt}\n  access: {{read: [group:web, group:support], write: [group:writers], pii: [group:support], admin: [group:admins]}}\n"
    )
}

fn decode(pool: &DescriptorPool, value: Bytes) -> DynamicMessage {
    DynamicMessage::decode(pool.get_message_by_name(PROFILE).unwrap(), value).unwrap()
}

fn assert_masked(m: &DynamicMessage) {
    assert_eq!(text(m, "user_id"), "u-1");
    assert_eq!(text(m, "email"), "j***@example.com");
    assert_eq!(text(m, "name"), "J. D.");
    assert_eq!(text(m, "phone"), "+* ***-***-0199");
    assert_eq!(text(m, "home.street"), "1 M*** S*****");
    assert_eq!(text(m, "home.city"), "Springfield");
    assert!(!m.has_field_by_name("ssn"), "ssn is redacted");
    assert!(!m.has_field_by_name("notes"), "debug_redact is class other: default redact");
    assert_eq!(m.get_field_by_name("aliases").unwrap().as_list().unwrap(), &[Value::String("J. Q.".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_namespace_masks_for_readers_and_not_for_pii() {
    let s = setup(ProxyConfig::memstore()).await;
    let out = s.push(&data_dir(), "acme/profile/v1/profile.proto", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pushed: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["schema"]["name"], "acme/profile/v1/profile.proto");
    assert_eq!(pushed["schema"]["version"], 1);
    let profile = pushed["schema"]["messages"].as_array().unwrap().iter().find(|m| m["name"] == PROFILE).unwrap();
    let paths: Vec<&str> =
        profile["pii_fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for path in ["email", "name", "phone", "home.street", "home.postcode", "aliases[]", "notes", "ssn"] {
        assert!(paths.contains(&path), "{path} not in {paths:?}");
    }
    s.apply(&namespace("profiles", "memstore", false)).await.unwrap();

    let pool = pool();
    let value = jane(&pool);
    let (writer, web, support) = (s.token("w", &["writers"]), s.token("alice", &["web"]), s.token("bob", &["support"]));
    s.put("profiles", "jane", value.clone(), &writer).await.unwrap();
    s.put("profiles", "jane2", value.clone(), &writer).await.unwrap();

    // A write that is not the declared message: refused, naming the
    // namespace and type, never echoing the value.
    let err = s.put("profiles", "bad", Bytes::from_static(b"\xff\xfe not a profile"), &writer).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("\"profiles\"") && err.message().contains(PROFILE), "{}", err.message());
    assert!(!err.message().contains("not a profile"));

    // Without `pii`: every tagged field by the policy; still a valid
    // UserProfile.
    assert_masked(&decode(&pool, s.get("profiles", "jane", &web).await));
    // With `pii`: the bytes as written.
    assert_eq!(s.get("profiles", "jane", &support).await, value);

    let mut kv = s.proxy.kv().await;
    let batch = BatchGetRequest { namespace: "profiles".into(), keys: vec!["jane".into(), "nobody".into()] };
    let items = kv.batch_get(s.request(batch, &web)).await.unwrap().into_inner().items;
    assert_masked(&decode(&pool, items[0].value.clone()));
    assert!(!items[1].found);
    let scan = ScanRequest { namespace: "profiles".into(), ..Default::default() };
    let items = kv.scan(s.request(scan, &web)).await.unwrap().into_inner().items;
    assert_eq!(items.len(), 2);
    for item in items {
        assert_masked(&decode(&pool, item.value));
    }
    let scan = ScanRequest { namespace: "profiles".into(), ..Default::default() };
    let items = kv.scan(s.request(scan, &support)).await.unwrap().into_inner().items;
    assert!(items.iter().all(|i| i.value == value));

    // The audit record says which classes went out, and how.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let lines = s.audit_lines();
            let seen = |who: &str, how: &str| {
                lines.iter().any(|r| {
                    r["principal"].as_str().is_some_and(|p| p.contains(who))
                        && r["operation"].as_str().is_some_and(|o| o.ends_with("/Get"))
                        && r["pii"]["returned"] == how
                        && r["pii"]["classes"].as_array().is_some_and(|c| c.contains(&json!("email")))
                })
            };
            seen("alice", "masked") && seen("bob", "raw")
        })
        .await,
        "audit: {:#?}",
        s.audit_lines()
    );
    s.assert_no_raw_pii_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_decodes_masked_values_with_its_own_classes() {
    let Some(uv) = services::require_program("uv") else { return };
    let s = setup(ProxyConfig::memstore()).await;
    let out = s.push(&data_dir(), "acme/profile/v1/profile.proto", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.apply(&namespace("profiles", "memstore", true)).await.unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let addr = s.proxy.addr.to_string();
    let (writer, web, support) = (s.token("w", &["writers"]), s.token("alice", &["web"]), s.token("bob", &["support"]));
    let out = tokio::process::Command::new(uv)
        .current_dir(root)
        .args(["run", "--locked", "--group", "interop", "tooling/interop/pii_client.py", "--addr", &addr])
        .args(["--namespace", "profiles", "--writer", &writer, "--reader", &web, "--support", &support])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Json = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let masked = &seen["masked"];
    assert_eq!(masked["user_id"], "u-42");
    assert_eq!(masked["email"], "j***@example.com");
    assert_eq!(masked["name"], "J. D.");
    assert_eq!(masked["phone"], "+* ***-***-0199");
    assert_eq!(masked["home_street"], "1 M*** S*****");
    assert_eq!(masked["home_city"], "Springfield");
    assert_eq!(masked["aliases"], json!(["J.", "J. Q."]));
    assert_eq!(masked["notes"], "");
    assert_eq!(masked["has_ssn"], false);
    assert_eq!(seen["raw"]["email"], "jane.doe@example.com");
    assert_eq!(seen["raw_equal"], true, "{seen}");
    assert_eq!(seen["plain_bytes"], "INVALID_ARGUMENT");
    assert!(seen["plain_bytes_message"].as_str().unwrap().contains(PROFILE));
    s.assert_no_raw_pii_logged();
}

/// Everything the backend holds for a namespace, read with its own client.
fn psql_dump(schema: &str) -> String {
    let psql = services::require_program("psql").unwrap();
    let out = std::process::Command::new(psql)
        .args([&services::postgres_url(), "-At", "-c"])
        .arg(format!("SELECT key, encode(value, 'escape') FROM \"{schema}\".kv"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn redis_dump(prefix: &str, ns: &str, key: &str) -> String {
    let cli = services::require_program("redis-cli").unwrap();
    let out = std::process::Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", "6379", "--no-raw", "HGETALL"])
        .arg(format!("{{{prefix}:{ns}}}:d:{key}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_fields_reach_postgres_and_redis_only_encrypted_and_survive_rotation() {
    if !services::require(("PostgreSQL", "127.0.0.1:5432")) || !services::require(("Redis", "127.0.0.1:6379")) {
        return;
    }
    let run = format!("pii{}", std::process::id());
    let config = ProxyConfig::new()
        .plugin(
            "postgres",
            &format!(
                "command: [prism-plugin-postgres]\nconfig:\n  url: \"{}\"\n  schema: {run}",
                services::postgres_url()
            ),
        )
        .plugin(
            "redis",
            &format!("command: [prism-plugin-redis]\nconfig:\n  url: redis://127.0.0.1:6379\n  key_prefix: {run}"),
        );
    let s = setup(config).await;
    let out = s.push(&data_dir(), "acme/profile/v1/profile.proto", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.apply(&namespace("profiles-pg", "postgres", true)).await.unwrap();
    s.apply(&namespace("profiles-redis", "redis", true)).await.unwrap();
    let pool = pool();
    let value = jane(&pool);
    let writer = s.token("w", &["writers"]);
    for ns in ["profiles-pg", "profiles-redis"] {
        s.put(ns, "jane", value.clone(), &writer).await.unwrap();
    }
    let stored = [psql_dump(&run), redis_dump(&run, "profiles-redis", "jane")];
    for dump in &stored {
        assert!(dump.contains("prism:enc:v1:1:"), "no ciphertext in {dump}");
        assert!(dump.contains("u-1") && dump.contains("Springfield"), "untagged fields stay readable: {dump}");
        for raw in RAW {
            assert!(!dump.contains(raw), "{raw:?} stored in clear: {dump}");
        }
    }

    // Rotation: key 2 joins the keyring and becomes the active key.
    write_key(s.keys.path(), 2);
    let Setup { proxy, issuer, audit, keys } = s;
    let config = proxy.stop().unwrap();
    let s = Setup { proxy: config.start(), issuer, audit, keys };
    let (web, support) = (s.token("alice", &["web"]), s.token("bob", &["support"]));
    for ns in ["profiles-pg", "profiles-redis"] {
        assert_eq!(s.get(ns, "jane", &support).await, value, "{ns}: a value of key 1 reads back after rotation");
        assert_masked(&decode(&pool, s.get(ns, "jane", &web).await));
        s.put(ns, "after", value.clone(), &s.token("w", &["writers"])).await.unwrap();
        assert_eq!(s.get(ns, "after", &support).await, value);
    }
    assert!(psql_dump(&run).contains("prism:enc:v1:2:"), "new writes use key 2");
    assert!(redis_dump(&run, "profiles-redis", "after").contains("prism:enc:v1:2:"));
    s.assert_no_raw_pii_logged();
    services::drop_postgres_schema(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_registration_checks_compatibility_and_names_the_field() {
    let s = setup(ProxyConfig::memstore()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme/u.proto");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let v1 = "syntax = \"proto3\";\npackage acme;\nimport \"prism/options/v1/pii.proto\";\nmessage U {\n  string id = 1;\n  string email = 2 [(prism.pii) = \"email\"];\n}\n";
    std::fs::write(&file, v1).unwrap();
    let push = |extra: &[&str]| s.push(dir.path(), "acme/u.proto", extra);
    let out = push(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A namespace of an unregistered message is refused at its field.
    let typed = |message: &str| {
        format!(
            "apiVersion: prism/v1\nkind: Namespace\nmetadata: {{name: users}}\nspec:\n  pattern: keyvalue\n  backend: memstore\n  schema: {{message: {message}}}\n"
        )
    };
    let err = s.apply(&typed("acme.Nope")).await.unwrap_err();
    assert!(
        err.message().contains("spec.schema.message") && err.message().contains("acme.Nope is not registered"),
        "{}",
        err.message()
    );
    s.apply(&typed("acme.U")).await.unwrap();

    // Breaking: the PII tag is dropped. Refused with the field named.
    std::fs::write(&file, v1.replace(" [(prism.pii) = \"email\"]", "")).unwrap();
    let out = push(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FailedPrecondition") && stderr.contains("acme.U.email (2) loses its PII tag"), "{stderr}");
    // Breaking: a number reused with another type.
    std::fs::write(&file, v1.replace("string id = 1", "int64 id = 1")).unwrap();
    let stderr = String::from_utf8_lossy(&push(&["--dry-run"]).stderr).into_owned();
    assert!(stderr.contains("acme.U.id (1) changes type from string to int64"), "{stderr}");
    // An unknown class is refused even with force.
    std::fs::write(&file, v1.replace("\"email\"", "\"e-mail\"")).unwrap();
    let stderr = String::from_utf8_lossy(&push(&["--force"]).stderr).into_owned();
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("acme.U.email") && stderr.contains("e-mail"),
        "{stderr}"
    );
    // Not breaking: a new field, tagged.
    let v2 = v1.replace("}\n", "  string phone = 3 [(prism.pii) = \"phone\"];\n}\n");
    std::fs::write(&file, &v2).unwrap();
    let out = push(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // With force, a breaking change registers and says so.
    std::fs::write(&file, v2.replace(" [(prism.pii) = \"phone\"]", "")).unwrap();
    let out = push(&["--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pushed: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["schema"]["version"], 3);
    assert!(pushed["breaking"][0].as_str().unwrap().contains("phone"), "{pushed}");

    let out = s.prismctl(&["-o", "json", "schema", "list"]);
    let list: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "acme/u.proto");
    assert_eq!(list[0]["version"], 3);
    assert_eq!(list[0]["messages"][0]["namespaces"], json!(["users"]));
    let out = s.prismctl(&["-o", "yaml", "schema", "get", "acme/u.proto", "--version", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("version: 1") && text.contains("path: email"), "{text}");
    let out = s.prismctl(&["schema", "get", "acme/u.proto", "--version", "9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no version 9"));
    // Namespaces that need the keyring are refused by a proxy without one:
    // checked in the unit tests of the codec; here the typed namespace
    // follows the new version at once.
    let out = s.prismctl(&["-o", "json", "schema", "get", "acme/u.proto"]);
    let got: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["versions"], json!([1, 2, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_timeseries_payloads_are_checked_and_masked() {
    use prism_proto::timeseries::v1::{AppendRequest, Event, QueryRequest};
    let s = setup(ProxyConfig::memstore()).await;
    assert!(s.push(&data_dir(), "acme/profile/v1/profile.proto", &[]).status.success());
    let yaml = namespace("logins", "memstore", true).replace("pattern: keyvalue", "pattern: timeseries");
    s.apply(&yaml).await.unwrap();
    let pool = pool();
    let event =
        |id: &str, payload: Bytes| Event { timestamp: 1_000, event_id: id.into(), payload, ..Default::default() };
    let mut ts = s.proxy.ts().await;
    let writer = s.token("w", &["writers"]);
    let append =
        AppendRequest { namespace: "logins".into(), series: "jane".into(), events: vec![event("a", jane(&pool))] };
    ts.append(s.request(append, &writer)).await.unwrap();
    // A payload that is not the message is refused with its position.
    let bad = AppendRequest {
        namespace: "logins".into(),
        series: "jane".into(),
        events: vec![event("b", jane(&pool)), event("c", Bytes::from_static(b"\xff\xff"))],
    };
    let err = ts.append(s.request(bad, &writer)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("events[1]") && err.message().contains(PROFILE), "{}", err.message());
    let query = || QueryRequest {
        namespace: "logins".into(),
        series: "jane".into(),
        start: 0,
        end: 2_000,
        ..Default::default()
    };
    let events = ts.query(s.request(query(), &s.token("alice", &["web"]))).await.unwrap().into_inner().events;
    assert_eq!(events.len(), 1, "the refused append wrote nothing");
    assert_masked(&decode(&pool, events[0].payload.clone()));
    let events = ts.query(s.request(query(), &s.token("bob", &["support"]))).await.unwrap().into_inner().events;
    assert_eq!(events[0].payload, jane(&pool));
    s.assert_no_raw_pii_logged();
}

/// Two proxies on one PostgreSQL registry share schemas: what one registers,
/// the other serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_of_a_postgres_registry_share_schemas() {
    if !services::require(("PostgreSQL", "127.0.0.1:5432")) {
        return;
    }
    let registry = format!("piireg{}", std::process::id());
    let issuer = OidcIssuer::start(KID).await;
    let keys = tempfile::tempdir().unwrap();
    write_key(keys.path(), 1);
    let start = |audit: &str| {
        let config = ProxyConfig::new().plugin("memstore", "command: [prism-plugin-memstore]").postgres_registry(
            &services::postgres_url(),
            &registry,
            "1s",
        );
        let audit = config.dir().join(audit);
        let security = security(&issuer, &audit, keys.path());
        (config.extra(&security).start(), audit)
    };
    let (a, audit_a) = start("a.jsonl");
    let (b, _audit_b) = start("b.jsonl");
    let a = Setup { proxy: a, issuer, audit: audit_a, keys };
    assert!(a.push(&data_dir(), "acme/profile/v1/profile.proto", &[]).status.success());
    a.apply(&namespace("profiles", "memstore", false)).await.unwrap();
    let pool = pool();
    // memstore is per proxy: write through B once it serves the namespace.
    let writer = a.token("w", &["writers"]);
    let mut kv = b.kv().await;
    let served = eventually(Duration::from_secs(10), || {
        let mut kv = kv.clone();
        let put =
            PutRequest { namespace: "profiles".into(), key: "jane".into(), value: jane(&pool), ..Default::default() };
        let request = a.request(put, &writer);
        async move { kv.put(request).await.is_ok() }
    })
    .await;
    assert!(served, "proxy B never served the typed namespace:\n{}", b.logs.text());
    let get = GetRequest { namespace: "profiles".into(), key: "jane".into() };
    let value = kv.get(a.request(get, &a.token("alice", &["web"]))).await.unwrap().into_inner().value;
    assert_masked(&decode(&pool, value));
    assert!(b.logs.contains("schemas reloaded"), "{}", b.logs.text());
    services::drop_postgres_schema(&registry).await;
}
