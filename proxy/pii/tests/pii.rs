#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The PII engine against real compiled `.proto` files (protox, options
//! kept), as `prismctl schema push` compiles them.

use std::sync::Arc;

use bytes::Bytes;
use prism_pii::{Codec, CodecError, Keyring, PiiClass, PiiSpec, SchemaError, SchemaPool, SchemaVersion, compat};
use prost::Message;
use prost_reflect::{DynamicMessage, Value};

const PROFILE: &str = r#"
syntax = "proto3";
package acme.profile.v1;
import "prism/options/v1/pii.proto";

message Address {
  string street = 1 [(prism.pii) = "address"];
  string city = 2;
}

message UserProfile {
  string user_id = 1;
  string email = 2 [(prism.pii) = "email"];
  string name = 3 [(prism.pii) = "name"];
  string phone = 4 [(prism.pii) = "phone"];
  Address home = 5;
  repeated string aliases = 6 [(prism.pii) = "name"];
  string notes = 7 [debug_redact = true];
  map<string, Address> others = 8;
  oneof contact {
    string ssn = 9 [(prism.pii) = "ssn"];
    string card = 10 [(prism.pii) = "credit_card"];
  }
  int64 born = 11 [(prism.pii) = "date_of_birth"];
  bytes photo = 12 [(prism.pii) = "other"];
  UserProfile manager = 13;
}
"#;

/// Compiles `files` (name, source) with the options file on the path.
fn compile(files: &[(&str, &str)]) -> Bytes {
    let dir = tempfile_dir();
    let opts = dir.join(prism_proto::PII_OPTIONS_PATH);
    std::fs::create_dir_all(opts.parent().unwrap()).unwrap();
    std::fs::write(&opts, prism_proto::PII_OPTIONS_PROTO).unwrap();
    for (name, source) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    let mut compiler = protox::Compiler::new([&dir]).unwrap();
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(files.iter().map(|(n, _)| *n)).unwrap();
    Bytes::from(compiler.encode_file_descriptor_set())
}

fn tempfile_dir() -> std::path::PathBuf {
    // Kept for the test's life: the keyring and compiler read from it.
    tempfile::tempdir().unwrap().keep()
}

fn version(name: &str, v: u32, descriptor: Bytes) -> SchemaVersion {
    SchemaVersion { name: name.into(), version: v, descriptor, pushed_at: String::new(), pushed_by: String::new() }
}

fn pool() -> SchemaPool {
    SchemaPool::build([version("acme/profile.proto", 1, compile(&[("acme/profile.proto", PROFILE)]))]).unwrap()
}

fn profile(pool: &SchemaPool) -> DynamicMessage {
    let desc = pool.message("acme.profile.v1.UserProfile").unwrap();
    let addr = pool.message("acme.profile.v1.Address").unwrap();
    let mut home = DynamicMessage::new(addr.clone());
    home.set_field_by_name("street", Value::String("1 Main Street".into()));
    home.set_field_by_name("city", Value::String("Springfield".into()));
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("user_id", Value::String("u-1".into()));
    m.set_field_by_name("email", Value::String("jane.doe@example.com".into()));
    m.set_field_by_name("name", Value::String("Jane Doe".into()));
    m.set_field_by_name("phone", Value::String("+1 555-010-0199".into()));
    m.set_field_by_name("home", Value::Message(home.clone()));
    m.set_field_by_name("aliases", Value::List(vec![Value::String("JD".into()), Value::String("Janie Q".into())]));
    m.set_field_by_name("notes", Value::String("likes cats".into()));
    let mut others = std::collections::HashMap::new();
    others.insert(prost_reflect::MapKey::String("work".into()), Value::Message(home));
    m.set_field_by_name("others", Value::Map(others));
    m.set_field_by_name("ssn", Value::String("123-45-6789".into()));
    m.set_field_by_name("born", Value::I64(19_800_101));
    m.set_field_by_name("photo", Value::Bytes(Bytes::from_static(b"\x89PNG")));
    m
}

fn spec(policy: &str, encrypt: bool) -> PiiSpec {
    let policy = policy
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), prism_pii::PiiAction::ALL.into_iter().find(|a| a.as_str() == v).unwrap())
        })
        .collect();
    PiiSpec { policy, encrypt }
}

fn keyring(ids: &[u32]) -> Arc<Keyring> {
    let dir = tempfile_dir();
    for id in ids {
        std::fs::write(dir.join(format!("{id}.key")), base64_key(u8::try_from(*id).unwrap())).unwrap();
    }
    Arc::new(Keyring::load(&dir, None, None).unwrap())
}

fn base64_key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn field(m: &DynamicMessage, name: &str) -> Value {
    m.get_field_by_name(name).unwrap().into_owned()
}

#[test]
fn the_plan_finds_every_tagged_field() {
    let pool = pool();
    let plan = pool.plan("acme.profile.v1.UserProfile").unwrap();
    let paths: Vec<(String, PiiClass)> = plan.fields().iter().map(|f| (f.path.clone(), f.class)).collect();
    for (path, class) in [
        ("email", PiiClass::Email),
        ("name", PiiClass::Name),
        ("phone", PiiClass::Phone),
        ("home.street", PiiClass::Address),
        ("aliases[]", PiiClass::Name),
        ("notes", PiiClass::Other),
        ("others{}.street", PiiClass::Address),
        ("ssn", PiiClass::Ssn),
        ("card", PiiClass::CreditCard),
        ("born", PiiClass::DateOfBirth),
        ("photo", PiiClass::Other),
    ] {
        assert!(paths.contains(&(path.to_owned(), class)), "{path} {class} not in {paths:?}");
    }
    assert!(!paths.iter().any(|(p, _)| p == "user_id" || p == "home.city"), "{paths:?}");
    // A plan is computed once per type.
    assert!(Arc::ptr_eq(&plan, &pool.plan("acme.profile.v1.UserProfile").unwrap()));
}

#[test]
fn masked_reads_follow_the_policy_and_stay_valid() {
    let pool = pool();
    let plan = pool.plan("acme.profile.v1.UserProfile").unwrap();
    let keys = keyring(&[1]);
    let codec = Codec::new(
        plan,
        "profiles",
        Some(&spec("email=mask,phone=last4,name=initial,ssn=redact,address=mask,other=hash,default=redact", false)),
        Some(&keys),
    )
    .unwrap();
    let stored = Bytes::from(profile(&pool).encode_to_vec());
    // A raw reader of an unencrypted namespace gets the bytes as stored.
    assert_eq!(codec.read(&stored, true).unwrap(), None);
    let masked = codec.read(&stored, false).unwrap().unwrap();
    let m = DynamicMessage::decode(pool.message("acme.profile.v1.UserProfile").unwrap(), masked.clone()).unwrap();
    assert_eq!(field(&m, "user_id").as_str(), Some("u-1"));
    assert_eq!(field(&m, "email").as_str(), Some("j***@example.com"));
    assert_eq!(field(&m, "name").as_str(), Some("J. D."));
    assert_eq!(field(&m, "phone").as_str(), Some("+* ***-***-0199"));
    assert_eq!(field(&m, "aliases"), Value::List(vec![Value::String("J.".into()), Value::String("J. Q.".into())]));
    let home = field(&m, "home");
    let home = home.as_message().unwrap();
    assert_eq!(field(home, "street").as_str(), Some("1 M*** S*****"));
    assert_eq!(field(home, "city").as_str(), Some("Springfield"));
    assert!(!m.has_field_by_name("ssn"), "redacted");
    assert!(!m.has_field_by_name("born"), "default redact");
    let notes = field(&m, "notes");
    assert!(notes.as_str().unwrap().starts_with("hmac:"));
    // Hashes are stable: the same value hashes alike.
    let again = codec.read(&stored, false).unwrap().unwrap();
    assert_eq!(masked, again);
    let photo = field(&m, "photo");
    assert_eq!(photo.as_bytes().unwrap().len(), 32);
    let others = field(&m, "others");
    let work = others.as_map().unwrap().values().next().unwrap().as_message().unwrap().clone();
    assert_eq!(field(&work, "street").as_str(), Some("1 M*** S*****"));
    // No raw value survives anywhere in the bytes.
    for raw in ["jane.doe", "Jane Doe", "555-010", "Main Street", "123-45", "likes cats", "Janie"] {
        assert!(!String::from_utf8_lossy(&masked).contains(raw), "{raw} leaked");
    }
}

#[test]
fn writes_must_be_the_type_and_unknown_fields_survive() {
    let pool = pool();
    let plan = pool.plan("acme.profile.v1.UserProfile").unwrap();
    let codec = Codec::new(plan.clone(), "profiles", None, None).unwrap();
    let err = codec.write(&Bytes::from_static(b"\xff\xff\xff plain text")).unwrap_err();
    assert!(matches!(&err, CodecError::NotTheType { message, .. } if message == "acme.profile.v1.UserProfile"));
    assert!(!err.to_string().contains("plain text"));
    // Invalid UTF-8 in a string field.
    let bad_utf8 = Bytes::from_static(&[0x12, 0x02, 0xc3, 0x28]);
    assert!(matches!(codec.write(&bad_utf8), Err(CodecError::NotTheType { .. })));
    // Unknown field 99 (a newer client's field) is kept byte for byte.
    let mut value = profile(&pool).encode_to_vec();
    value.extend_from_slice(&[0x9a, 0x06, 0x03, b'n', b'e', b'w']);
    let value = Bytes::from(value);
    assert_eq!(codec.write(&value).unwrap(), None, "stored as sent");
}

#[test]
fn encryption_hides_tagged_fields_and_survives_rotation() {
    let pool = SchemaPool::build([version(
        "acme/p.proto",
        1,
        compile(&[(
            "acme/p.proto",
            "syntax = \"proto3\"; package acme; import \"prism/options/v1/pii.proto\";\nmessage P { string id = 1; string email = 2 [(prism.pii) = \"email\"]; repeated string names = 3 [(prism.pii) = \"name\"]; bytes scan = 4 [(prism.pii) = \"other\"]; }",
        )]),
    )])
    .unwrap();
    let plan = pool.plan("acme.P").unwrap();
    let desc = pool.message("acme.P").unwrap();
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name("id", Value::String("p1".into()));
    m.set_field_by_name("email", Value::String("ann@example.com".into()));
    m.set_field_by_name("names", Value::List(vec![Value::String("Ann Lee".into())]));
    m.set_field_by_name("scan", Value::Bytes(Bytes::from_static(b"fingerprint")));
    // With an unknown field (99), which re-encoding must keep.
    let mut value = m.encode_to_vec();
    value.extend_from_slice(&[0x9a, 0x06, 0x03, b'n', b'e', b'w']);
    let value = Bytes::from(value);
    let dir = tempfile_dir();
    std::fs::write(dir.join("1.key"), base64_key(1)).unwrap();
    let v1 = Arc::new(Keyring::load(&dir, None, None).unwrap());
    let codec = Codec::new(plan.clone(), "ns", Some(&spec("default=mask", true)), Some(&v1)).unwrap();
    let stored = codec.write(&value).unwrap().unwrap();
    let text = String::from_utf8_lossy(&stored);
    for raw in ["ann@example.com", "Ann Lee", "fingerprint"] {
        assert!(!text.contains(raw), "{raw} stored in clear: {text}");
    }
    assert!(text.contains("p1") && text.contains("prism:enc:v1:1:"));
    // Rotation: key 2 is added and becomes active; old values still read.
    std::fs::write(dir.join("2.key"), base64_key(2)).unwrap();
    let v2 = Arc::new(Keyring::load(&dir, None, None).unwrap());
    let rotated = Codec::new(plan.clone(), "ns", Some(&spec("default=mask", true)), Some(&v2)).unwrap();
    let raw = rotated.read(&stored, true).unwrap().unwrap();
    let raw = DynamicMessage::decode(desc.clone(), raw).unwrap();
    assert_eq!(field(&raw, "email").as_str(), Some("ann@example.com"));
    assert_eq!(raw.unknown_fields().count(), 1, "the unknown field is kept");
    assert_eq!(field(&raw, "scan").as_bytes().map(|b| b.to_vec()), Some(b"fingerprint".to_vec()));
    let masked = DynamicMessage::decode(desc.clone(), rotated.read(&stored, false).unwrap().unwrap()).unwrap();
    assert_eq!(field(&masked, "email").as_str(), Some("a***@example.com"));
    assert!(!masked.has_field_by_name("scan"), "bytes cannot be masked, so they are cleared");
    assert!(String::from_utf8_lossy(&rotated.write(&value).unwrap().unwrap()).contains("prism:enc:v1:2:"));
    // Without the old key the value is refused, not returned encrypted.
    std::fs::remove_file(dir.join("1.key")).unwrap();
    let lost = Arc::new(Keyring::load(&dir, None, None).unwrap());
    let lost = Codec::new(plan, "ns", Some(&spec("", true)), Some(&lost)).unwrap();
    let err = lost.read(&stored, true).unwrap_err();
    assert!(err.to_string().contains("key 1"), "{err}");
}

#[test]
fn codec_refuses_what_it_cannot_do() {
    let pool = pool();
    let plan = pool.plan("acme.profile.v1.UserProfile").unwrap();
    let errs = Codec::new(plan.clone(), "ns", Some(&spec("", true)), None).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("keyring")), "{errs:?}");
    let errs = Codec::new(plan.clone(), "ns", Some(&spec("default=hash", false)), None).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("hash action")), "{errs:?}");
    let keys = keyring(&[1]);
    let errs = Codec::new(plan, "ns", Some(&spec("", true)), Some(&keys)).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("born") && e.contains("not a string or bytes")), "{errs:?}");
    // A stored value that is not the type is withheld from a masked read.
    let pool2 = SchemaPool::build([version(
        "a.proto",
        1,
        compile(&[(
            "a.proto",
            "syntax = \"proto3\"; package a; import \"prism/options/v1/pii.proto\"; message M { string e = 1 [(prism.pii) = \"email\"]; }",
        )]),
    )])
    .unwrap();
    let codec = Codec::new(pool2.plan("a.M").unwrap(), "ns", None, None).unwrap();
    assert!(matches!(codec.read(&Bytes::from_static(b"\xff\xff"), false), Err(CodecError::Unreadable { .. })));
}

#[test]
fn unknown_classes_are_refused_naming_the_field() {
    let set = compile(&[(
        "bad.proto",
        "syntax = \"proto3\"; package bad; import \"prism/options/v1/pii.proto\"; message M { string e = 1 [(prism.pii) = \"e-mail\"]; }",
    )]);
    let err = SchemaPool::build([version("bad.proto", 1, set)]).unwrap_err();
    assert!(matches!(&err, SchemaError::Tags { .. }), "{err}");
    assert!(err.to_string().contains("bad.M.e") && err.to_string().contains("\"e-mail\""), "{err}");
    let garbage = SchemaPool::build([version("x.proto", 1, Bytes::from_static(b"\x0a\x05nope"))]).unwrap_err();
    assert!(matches!(garbage, SchemaError::Invalid { .. }), "{garbage}");
}

#[test]
fn shared_files_must_agree() {
    let common = "syntax = \"proto3\"; package c; message Common { string id = 1; }";
    let a = compile(&[
        ("c/common.proto", common),
        ("a.proto", "syntax = \"proto3\"; package a; import \"c/common.proto\"; message A { c.Common c = 1; }"),
    ]);
    let b_same = compile(&[
        ("c/common.proto", common),
        ("b.proto", "syntax = \"proto3\"; package b; import \"c/common.proto\"; message B { c.Common c = 1; }"),
    ]);
    let b_other = compile(&[
        ("c/common.proto", "syntax = \"proto3\"; package c; message Common { string id = 1; string more = 2; }"),
        ("b.proto", "syntax = \"proto3\"; package b; import \"c/common.proto\"; message B { c.Common c = 1; }"),
    ]);
    let base = SchemaPool::build([version("a.proto", 1, a)]).unwrap();
    base.with(version("b.proto", 1, b_same)).unwrap();
    let err = base.with(version("b.proto", 1, b_other)).unwrap_err();
    assert!(err.to_string().contains("c/common.proto"), "{err}");
    assert!(matches!(base.with(version("../x", 1, Bytes::new())), Err(SchemaError::BadName(_))));
}

/// One schema version with message `acme.M` whose body is `fields`.
fn m_schema(fields: &str) -> SchemaPool {
    let source = format!(
        "syntax = \"proto3\"; package acme; import \"prism/options/v1/pii.proto\";\nmessage Sub {{ string s = 1; }}\nmessage M {{ {fields} }}\n"
    );
    SchemaPool::build([version("m.proto", 1, compile(&[("m.proto", &source)]))]).unwrap()
}

#[test]
fn compatibility_of_a_new_version() {
    let base = "string id = 1; string email = 2 [(prism.pii) = \"email\"]; repeated string tags = 3; Sub sub = 4; oneof o { string a = 5; } string b = 6;";
    let old = m_schema(base);
    let in_use = vec![("profiles".to_owned(), "acme.M".to_owned())];
    let cases: &[(&str, &str, Option<&str>)] = &[
        // Not breaking.
        ("adds a field", &format!("{base} string extra = 7;"), None),
        ("renames a field", &base.replace("string id = 1", "string ident = 1"), None),
        ("adds a PII tag", &base.replace("string b = 6;", "string b = 6 [(prism.pii) = \"name\"];"), None),
        ("removes a reserved field", &format!("{} reserved 6;", base.replace("string b = 6;", "")), None),
        // Breaking.
        (
            "reuses a number with another type",
            &base.replace("string id = 1", "int64 id = 1"),
            Some("changes type from string to int64"),
        ),
        ("drops a PII tag", &base.replace(" [(prism.pii) = \"email\"]", ""), Some("loses its PII tag (email)")),
        ("changes a PII class", &base.replace("\"email\"", "\"name\""), Some("changes PII class from email to name")),
        ("removes a field without reserving it", &base.replace("string b = 6;", ""), Some("removed without reserving")),
        (
            "makes a field repeated",
            &base.replace("string id = 1", "repeated string id = 1"),
            Some("to repeated string"),
        ),
        (
            "makes a repeated field singular",
            &base.replace("repeated string tags = 3", "string tags = 3"),
            Some("from repeated string to string"),
        ),
        (
            "changes a message field's type",
            &base.replace("Sub sub = 4", "string sub = 4"),
            Some("from acme.Sub to string"),
        ),
        (
            "moves a field out of a oneof",
            &base.replace("oneof o { string a = 5; }", "string a = 5;"),
            Some("from oneof o to no oneof"),
        ),
        (
            "moves a field into a oneof",
            &base.replace("string b = 6;", "oneof p { string b = 6; }"),
            Some("from no oneof to oneof p"),
        ),
    ];
    for (what, fields, expect) in cases {
        let new = m_schema(fields);
        let found = compat::breaking(&old, &new, "m.proto", &in_use);
        match expect {
            None => assert!(found.is_empty(), "{what}: {found:?}"),
            Some(needle) => {
                assert!(found.iter().any(|f| f.contains(needle) && f.contains("acme.M.")), "{what}: {found:?}");
            }
        }
    }
    // A message a namespace uses disappears.
    let gone = SchemaPool::build([version(
        "m.proto",
        2,
        compile(&[("m.proto", "syntax = \"proto3\"; package acme; message Other { string x = 1; }")]),
    )])
    .unwrap();
    let found = compat::breaking(&old, &gone, "m.proto", &in_use);
    assert!(found.iter().any(|f| f.contains("acme.M is removed") && f.contains("namespace profiles")), "{found:?}");
}
