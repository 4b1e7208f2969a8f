//! Property tests of what the proxy reads from outside: its config file,
//! bearer tokens and plugins' multiplexed replies.
//! `PROPTEST_CASES=100000 cargo test -p prism-proxy proptests` runs them
//! longer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, LazyLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prism_proto::plugin::v1::{KeyValueReply, key_value_reply};
use proptest::prelude::*;
use prost::Message;
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::ProxyError;
use crate::security::jwt::JwtVerifier;

// ---- Config ----------------------------------------------------------------

/// Words of a config file, so generated files reach the typed fields.
const CONFIG_WORDS: &[&str] = &[
    "listen",
    "tls",
    "auth",
    "audit",
    "namespaces_dir",
    "registry",
    "default_backend",
    "plugins",
    "limits",
    "shutdown_grace",
    "shutdown_delay",
    "log",
    "tracing",
    "admin_http",
    "pii",
    "memstore",
    "command",
    "address",
    "pool_size",
    "transport",
    "start_timeout",
    "health_interval",
    "restart_backoff_min",
    "restart_backoff_max",
    "drain_timeout",
    "env",
    "config",
    "max_key_bytes",
    "max_value_bytes",
    "max_batch_items",
    "default_page_size",
    "max_page_size",
    "max_message_bytes",
    "request_timeout",
    "max_concurrent_requests",
    "postgres",
    "schema",
    "level",
    "format",
    "jwt",
    "issuer",
    "audiences",
    "require",
    "127.0.0.1:0",
    "10s",
    "0s",
    "ns",
    "info",
    "json",
    "",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(CONFIG_WORDS).prop_map(str::to_owned), 1 => any::<String>()]
}

/// Any JSON value a few levels deep (YAML's data model, less tags).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..100_000).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(word(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A config file: a mapping of config words to anything.
fn config_like() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(word(), json_value(), 1..8).prop_map(|m| Value::Object(m.into_iter().collect()))
}

// ---- Tokens ----------------------------------------------------------------

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "prism";

struct Issuer {
    runtime: tokio::runtime::Runtime,
    verifier: Arc<JwtVerifier>,
    key: jsonwebtoken::EncodingKey,
    _dir: tempfile::TempDir,
}

/// A verifier trusting one P-256 key (`kid` "k"), read from a JWKS file.
static ISSUER_KEYS: LazyLock<Issuer> = LazyLock::new(|| {
    // The proxy installs it at start; the verifier's HTTP client needs it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pair = rcgen::KeyPair::generate().unwrap();
    let point = pair.public_key_raw();
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks.to_string()).unwrap();
    let text = format!(
        "namespaces_dir: ns\nplugins: {{m: {{command: [m]}}}}\nauth:\n  jwt: {{issuer: '{ISSUER}', audiences: [{AUDIENCE}], jwks_file: '{}'}}\n",
        file.display()
    );
    let config = Config::parse(&text).unwrap().auth.unwrap().jwt.unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let verifier = runtime.block_on(JwtVerifier::new(config)).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der());
    Issuer { runtime, verifier, key, _dir: dir }
});

/// The reasons a token may be refused for (the metrics' closed set).
const REASONS: &[&str] = &[
    "token_too_large",
    "token_malformed",
    "token_critical_extension",
    "token_algorithm",
    "token_unknown_key",
    "keys_unavailable",
    "token_key_mismatch",
    "token_expired",
    "token_not_yet_valid",
    "token_wrong_issuer",
    "token_wrong_audience",
    "token_bad_signature",
    "token_missing_claim",
    "token_malformed_claim",
    "token_invalid",
];

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// One part of a token: any text, base64 of any bytes or of any JSON, or
/// a header that names the trusted key.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        json_value().prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
        Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT","kid":"k"}"#)),
        Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)),
    ]
}

/// A value for a time claim: valid, wrong in time, or of any JSON type.
fn time_claim(valid: i64) -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(json!(valid)),
        1 => Just(json!(valid as f64 + 0.25)),
        1 => Just(json!(valid - 2 * (valid - now_i64()))),
        1 => Just(json!(-1)),
        1 => Just(json!(1e30)),
        2 => json_value(),
    ]
}

fn now_i64() -> i64 {
    i64::try_from(now()).unwrap()
}

/// A NumericDate as jsonwebtoken reads it: seconds as a u64, or a float
/// rounded.
fn seconds(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f.round() as u64))
}

fn names(v: &Value, wanted: &str) -> bool {
    match v {
        Value::String(s) => s == wanted,
        Value::Array(items) => items.iter().all(Value::is_string) && items.iter().any(|i| i == wanted),
        _ => false,
    }
}

/// Whether claims are valid, by RFC 7519 and the proxy's config (one
/// minute of leeway); the margins of the generated times are an hour.
fn valid_claims(claims: &serde_json::Map<String, Value>) -> bool {
    let now = now();
    let exp = claims.get("exp").and_then(seconds).is_some_and(|e| e + 60 >= now);
    let nbf = claims.get("nbf").is_none_or(|n| seconds(n).is_some_and(|n| n <= now + 60));
    let iss = claims.get("iss").is_some_and(|i| names(i, ISSUER));
    let aud = claims.get("aud").is_some_and(|a| names(a, AUDIENCE));
    // A subject that is not a string is ignored, unless no string can be
    // read from it at all.
    let sub = claims.get("sub").is_none_or(|s| !(s.is_array() || s.is_object()));
    exp && nbf && iss && aud && sub
}

fn claims() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let now = now_i64();
    let text =
        |good: &'static str| prop_oneof![3 => Just(json!(good)), 1 => Just(json!([good, "other"])), 2 => json_value()];
    (
        prop::option::weighted(0.9, time_claim(now + 3600)),
        prop::option::weighted(0.5, time_claim(now - 3600)),
        prop::option::weighted(0.9, text(ISSUER)),
        prop::option::weighted(0.9, text(AUDIENCE)),
        prop::option::of(json_value()),
    )
        .prop_map(|(exp, nbf, iss, aud, sub)| {
            [("exp", exp), ("nbf", nbf), ("iss", iss), ("aud", aud), ("sub", sub)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect()
        })
}

proptest! {
    #[test]
    fn config_text_is_parsed_or_refused_with_reasons(text in any::<String>()) {
        match Config::parse_all(&text) {
            Ok(config) => {
                let _ = config.validate();
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    prop_assert!(!e.message.trim().is_empty(), "{text:?}: {e:?}");
                }
            }
        }
    }

    #[test]
    fn config_mappings_are_refused_at_a_line(doc in config_like()) {
        let text = serde_saphyr::to_string(&doc).unwrap();
        match Config::parse_all(&text) {
            Ok(config) => {
                if let Err(errors) = config.validate() {
                    for e in &errors {
                        prop_assert!(!e.trim().is_empty(), "{text:?}");
                    }
                }
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    prop_assert!(!e.message.trim().is_empty(), "{text:?}: {e:?}");
                    // The file is a YAML mapping: each mistake is somewhere in it.
                    prop_assert!(e.line > 0, "unlocated error for {text:?}: {e:?}");
                }
            }
        }
    }

    #[test]
    fn any_token_is_refused_with_a_reason(parts in prop::collection::vec(segment(), 1..5)) {
        let issuer = &*ISSUER_KEYS;
        let token = parts.join(".");
        let result = issuer.runtime.block_on(issuer.verifier.verify(&token));
        let err = result.expect_err("a token nobody signed was accepted");
        prop_assert!(REASONS.contains(&err.reason()), "{}", err.reason());
        prop_assert!(!err.to_string().trim().is_empty());
    }

    #[test]
    fn claims_of_any_type_are_accepted_only_when_valid(claims in claims()) {
        let issuer = &*ISSUER_KEYS;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k".to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &issuer.key).unwrap();
        let result = issuer.runtime.block_on(issuer.verifier.verify(&token));
        let valid = valid_claims(&claims);
        match result {
            Ok(_) => prop_assert!(valid, "accepted {claims:?}"),
            Err(e) => {
                prop_assert!(!valid, "refused valid claims {claims:?}: {e}");
                // Signed and well-formed: the refusal names the claim at fault.
                prop_assert!(e.reason() != "token_invalid", "{claims:?}: {e}");
            }
        }
    }

    #[test]
    fn plugin_replies_of_any_bytes_map_to_an_error_code(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(KeyValueReply { reply: Some(key_value_reply::Reply::Error(e)), .. }) = KeyValueReply::decode(bytes.as_slice()) {
            let status = tonic::Status::from(ProxyError::from_plugin_reply("p", e.code, &e.message));
            prop_assert_ne!(status.code(), tonic::Code::Ok);
        }
    }

    #[test]
    fn plugin_error_codes_of_any_value_map_to_an_error(code in any::<i32>(), message in any::<String>()) {
        let status = tonic::Status::from(ProxyError::from_plugin_reply("p", code, &message));
        prop_assert_ne!(status.code(), tonic::Code::Ok);
    }
}
