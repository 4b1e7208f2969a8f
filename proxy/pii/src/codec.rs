//! What a typed namespace does to its values: writes must decode as the
//! namespace's message (and get their tagged fields encrypted when
//! `spec.pii.encrypt`); reads get them decrypted and, for a caller without
//! the `pii` right, transformed by the namespace's policy.
//!
//! A value is re-encoded only when something in it changes: a write to a
//! namespace without encryption and a raw read of one are passed on byte
//! for byte, unknown fields and all.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DynamicMessage, Value};

use std::borrow::Cow;

use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

use crate::keyring::{DecryptError, EncryptError, Keyring};
use crate::plan::{Text, TypePlan, WireStep, each_text};
use crate::transform;
use crate::{PiiAction, PiiClass, PiiSpec};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// A write that is not a valid message of the namespace's type. Says
    /// which type, never the value.
    #[error("the value is not a valid {message}: {why}")]
    NotTheType { message: String, why: String },
    /// A stored value that does not decode as the type (written before the
    /// namespace was typed): it cannot be masked, so it is not returned.
    #[error("a stored value is not a valid {message}, so its PII cannot be masked; it is withheld")]
    Unreadable { message: String },
    #[error("field {field}: {error}")]
    Decrypt { field: String, error: DecryptError },
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
}

impl CodecError {
    /// The error of item `i` of a batch's `what` (`items`, `events`).
    #[must_use]
    pub fn at_item(self, what: &str, i: usize) -> Self {
        match self {
            Self::NotTheType { message, why } => Self::NotTheType { message, why: format!("{what}[{i}]: {why}") },
            other => other,
        }
    }
}

/// The PII handling of one namespace.
pub struct Codec {
    plan: Arc<TypePlan>,
    namespace: String,
    actions: [PiiAction; PiiClass::ALL.len()],
    /// Set when tagged fields are stored encrypted.
    encryption: Option<Arc<Keyring>>,
    /// The namespace's key of the `hash` action, when the policy uses it.
    hash: Option<ring::hmac::Key>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("message", &self.plan.message().full_name())
            .field("namespace", &self.namespace)
            .field("actions", &self.actions)
            .field("encrypt", &self.encryption.is_some())
            .finish_non_exhaustive()
    }
}

/// What a read returned, for the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disclosure {
    Raw,
    Masked,
}

impl Codec {
    /// The handling of namespace `namespace` whose values are `plan`'s type.
    /// Fails, saying why, if the policy needs a keyring the proxy lacks or
    /// encryption is asked of a tagged field that cannot hold ciphertext.
    pub fn new(
        plan: Arc<TypePlan>,
        namespace: &str,
        spec: Option<&PiiSpec>,
        keyring: Option<&Arc<Keyring>>,
    ) -> Result<Self, Vec<String>> {
        let default = PiiSpec::default();
        let spec = spec.unwrap_or(&default);
        let mut errors = Vec::new();
        let uses_hash = plan.classes().iter().any(|c| spec.action(*c) == PiiAction::Hash);
        if (spec.encrypt || uses_hash) && keyring.is_none() {
            errors.push(format!(
                "{} needs the proxy's keyring (pii.keyring in the proxy config), and this proxy has none",
                if spec.encrypt { "spec.pii.encrypt" } else { "the hash action" }
            ));
        }
        if spec.encrypt {
            for field in plan.fields().iter().filter(|f| !f.textual) {
                errors.push(format!(
                    "spec.pii.encrypt: field {} ({}) is not a string or bytes field, so it cannot hold a ciphertext; tag a string field or turn encryption off",
                    field.path, field.field
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            actions: PiiClass::ALL.map(|c| spec.action(c)),
            hash: uses_hash.then(|| keyring.map(|k| k.hash_key(namespace))).flatten(),
            encryption: if spec.encrypt { keyring.cloned() } else { None },
            namespace: namespace.to_owned(),
            plan,
        })
    }

    pub fn plan(&self) -> &TypePlan {
        &self.plan
    }

    pub fn message_name(&self) -> &str {
        self.plan.message().full_name()
    }

    pub fn encrypts(&self) -> bool {
        self.encryption.is_some()
    }

    fn action(&self, class: PiiClass) -> PiiAction {
        self.actions[class as usize]
    }

    fn decode(&self, value: &[u8]) -> Result<DynamicMessage, prost::DecodeError> {
        DynamicMessage::decode(self.plan.message().clone(), value)
    }

    /// Checks a written value; returns the value to store when it differs
    /// (encrypted fields), `None` to store it as sent.
    pub fn write(&self, value: &Bytes) -> Result<Option<Bytes>, CodecError> {
        let mut msg = self
            .decode(value)
            .map_err(|e| CodecError::NotTheType { message: self.message_name().to_owned(), why: decode_reason(&e) })?;
        let Some(keyring) = &self.encryption else { return Ok(None) };
        if self.plan.is_empty() {
            return Ok(None);
        }
        let mut failed = None;
        self.plan.visit(&mut msg, &mut |_, field, value| {
            let number = field.number();
            each_text(value, &mut |scalar| {
                let plain: &[u8] = match scalar {
                    Value::String(s) => s.as_bytes(),
                    Value::Bytes(b) => b,
                    _ => return,
                };
                match keyring.encrypt(&self.namespace, number, plain) {
                    Ok(sealed) => match scalar {
                        Value::String(s) => *s = sealed,
                        _ => *scalar = Value::Bytes(Bytes::from(sealed)),
                    },
                    Err(e) => failed = Some(e),
                }
            });
            Ok::<_, CodecError>(true)
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(Some(Bytes::from(msg.encode_to_vec())))
    }

    /// A stored value as the reader gets it: decrypted, and transformed by
    /// the policy unless `raw` (the caller holds the `pii` right). `None`
    /// when it goes back as stored.
    ///
    /// Walks the encoded bytes rather than decoding the message: fields the
    /// plan does not touch are copied as they are, so a masked read costs a
    /// scan of the value plus the tagged fields, whatever else the message
    /// holds. Values the walk cannot read (proto2 groups) take the decoding
    /// path instead.
    pub fn read(&self, value: &Bytes, raw: bool) -> Result<Option<Bytes>, CodecError> {
        if (raw && self.encryption.is_none()) || self.plan.is_empty() || value.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(value.len());
        match self.walk(0, value, &mut out, raw) {
            Ok(()) => Ok(Some(Bytes::from(out))),
            Err(Walk::Codec(e)) => Err(e),
            Err(Walk::Malformed) => self.read_decoded(value, raw),
        }
    }

    /// One message of the plan (`at`), copied from `input` to `out` with
    /// its tagged fields transformed and its planned message fields walked.
    fn walk(&self, at: usize, mut input: &[u8], out: &mut Vec<u8>, raw: bool) -> Result<(), Walk> {
        while let Some(field) = next_field(&mut input)? {
            let Some(step) = self.plan.wire_step(at, field.number) else {
                out.extend_from_slice(field.record);
                continue;
            };
            match step {
                WireStep::Nested { plan, map } => {
                    if field.wire_type != WireType::LengthDelimited {
                        return Err(Walk::Malformed);
                    }
                    let mut inner = Vec::with_capacity(field.payload.len());
                    if map {
                        // A map entry: the key (1) as it is, the value (2) walked.
                        let mut entry = field.payload;
                        while let Some(part) = next_field(&mut entry)? {
                            if part.number == 2 && part.wire_type == WireType::LengthDelimited {
                                let mut walked = Vec::with_capacity(part.payload.len());
                                self.walk(plan, part.payload, &mut walked, raw)?;
                                emit(2, &walked, &mut inner);
                            } else {
                                inner.extend_from_slice(part.record);
                            }
                        }
                    } else {
                        self.walk(plan, field.payload, &mut inner, raw)?;
                    }
                    emit(field.number, &inner, out);
                }
                WireStep::Tagged { class, text, map } => {
                    if field.wire_type != WireType::LengthDelimited || text == Text::Other {
                        // Numbers, enums and messages: kept for a raw reader,
                        // cleared by every action.
                        if raw {
                            out.extend_from_slice(field.record);
                        }
                        continue;
                    }
                    if !map {
                        if let Some(shown) = self.text(class, text, field.number, field.payload, raw)? {
                            emit(field.number, &shown, out);
                        }
                        continue;
                    }
                    // A tagged map: each entry's value; an entry whose value
                    // is cleared goes as a whole.
                    let mut entry = Vec::with_capacity(field.payload.len());
                    let mut kept = true;
                    let mut parts = field.payload;
                    while let Some(part) = next_field(&mut parts)? {
                        if part.number == 2 && part.wire_type == WireType::LengthDelimited {
                            match self.text(class, text, field.number, part.payload, raw)? {
                                Some(shown) => emit(2, &shown, &mut entry),
                                None => kept = false,
                            }
                        } else {
                            entry.extend_from_slice(part.record);
                        }
                    }
                    if kept {
                        emit(field.number, &entry, out);
                    }
                }
            }
        }
        Ok(())
    }

    /// One tagged string or bytes value as the reader gets it: decrypted,
    /// then transformed unless `raw`. `None` when the action clears it.
    fn text<'v>(
        &self,
        class: PiiClass,
        text: Text,
        number: u32,
        value: &'v [u8],
        raw: bool,
    ) -> Result<Option<Cow<'v, [u8]>>, Walk> {
        let plain: Cow<'v, [u8]> = match &self.encryption {
            // Values written before encryption was turned on are in clear.
            Some(keyring) if Keyring::is_encrypted(value) => Cow::Owned(
                keyring
                    .decrypt(&self.namespace, number, value)
                    .map_err(|error| Walk::Codec(CodecError::Decrypt { field: format!("#{number}"), error }))?,
            ),
            _ => Cow::Borrowed(value),
        };
        if raw {
            return Ok(Some(plain));
        }
        let string = || std::str::from_utf8(&plain).map_err(|_| Walk::Malformed);
        let shown = match (self.action(class), text) {
            (PiiAction::Mask, Text::String) => transform::mask(string()?).into_bytes(),
            (PiiAction::Last4, Text::String) => transform::last4(string()?).into_bytes(),
            (PiiAction::Initial, Text::String) => transform::initial(string()?).into_bytes(),
            (PiiAction::Hash, Text::String) => match &self.hash {
                Some(key) => transform::hash_text(key, &plain).into_bytes(),
                None => return Ok(None),
            },
            (PiiAction::Hash, Text::Bytes) => match &self.hash {
                Some(key) => ring::hmac::sign(key, &plain).as_ref().to_vec(),
                None => return Ok(None),
            },
            // Redact; and bytes have no shape to keep.
            _ => return Ok(None),
        };
        Ok(Some(Cow::Owned(shown)))
    }

    /// [`Codec::read`] through a decoded message: for values the walk
    /// cannot read.
    fn read_decoded(&self, value: &Bytes, raw: bool) -> Result<Option<Bytes>, CodecError> {
        let mut msg =
            self.decode(value).map_err(|_| CodecError::Unreadable { message: self.message_name().to_owned() })?;
        self.plan.visit(&mut msg, &mut |class, field, value| {
            if let Some(keyring) = &self.encryption {
                let mut failed = None;
                each_text(value, &mut |scalar| {
                    let sealed: &[u8] = match scalar {
                        Value::String(s) => s.as_bytes(),
                        Value::Bytes(b) => b,
                        _ => return,
                    };
                    if !Keyring::is_encrypted(sealed) {
                        return;
                    }
                    match keyring.decrypt(&self.namespace, field.number(), sealed) {
                        Ok(plain) => match scalar {
                            Value::String(s) => *s = String::from_utf8_lossy(&plain).into_owned(),
                            _ => *scalar = Value::Bytes(Bytes::from(plain)),
                        },
                        Err(error) => failed = Some(CodecError::Decrypt { field: field.full_name().to_owned(), error }),
                    }
                });
                if let Some(e) = failed {
                    return Err(e);
                }
            }
            if raw {
                return Ok(true);
            }
            Ok(self.apply(class, value))
        })?;
        Ok(Some(Bytes::from(msg.encode_to_vec())))
    }

    /// The policy's action on one field value; `false` clears the field.
    fn apply(&self, class: PiiClass, value: &mut Value) -> bool {
        let action = self.action(class);
        if action == PiiAction::Redact {
            return false;
        }
        let mut kept = true;
        let text = each_text(value, &mut |scalar| match (action, &mut *scalar) {
            (PiiAction::Mask, Value::String(s)) => *s = transform::mask(s),
            (PiiAction::Last4, Value::String(s)) => *s = transform::last4(s),
            (PiiAction::Initial, Value::String(s)) => *s = transform::initial(s),
            (PiiAction::Hash, Value::String(s)) => {
                if let Some(key) = &self.hash {
                    *s = transform::hash_text(key, s.as_bytes());
                } else {
                    kept = false;
                }
            }
            (PiiAction::Hash, Value::Bytes(b)) => match &self.hash {
                Some(key) => *b = Bytes::copy_from_slice(ring::hmac::sign(key, b).as_ref()),
                None => kept = false,
            },
            // Bytes have no shape to keep.
            _ => kept = false,
        });
        text && kept
    }

    /// Whether a reader with or without the `pii` right gets the raw values.
    pub fn disclosure(raw: bool) -> Disclosure {
        if raw { Disclosure::Raw } else { Disclosure::Masked }
    }
}

/// Why a walk stopped: bytes it cannot read, or a codec error to report.
enum Walk {
    Malformed,
    Codec(CodecError),
}

impl From<prost::DecodeError> for Walk {
    fn from(_: prost::DecodeError) -> Self {
        Self::Malformed
    }
}

/// One field record of an encoded message: its number and wire type, the
/// whole record (key included) and its payload (for length-delimited
/// fields, the bytes inside).
struct Field<'a> {
    number: u32,
    wire_type: WireType,
    record: &'a [u8],
    payload: &'a [u8],
}

fn take<'a>(input: &mut &'a [u8], n: u64) -> Result<&'a [u8], Walk> {
    let n = usize::try_from(n).map_err(|_| Walk::Malformed)?;
    if input.len() < n {
        return Err(Walk::Malformed);
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

/// The next field record of `input`, or `None` at its end. Groups (proto2)
/// are `Malformed`, so their messages take the decoding path.
fn next_field<'a>(input: &mut &'a [u8]) -> Result<Option<Field<'a>>, Walk> {
    if input.is_empty() {
        return Ok(None);
    }
    let start: &'a [u8] = input;
    let (number, wire_type) = decode_key(input)?;
    let payload = match wire_type {
        WireType::Varint => {
            let before: &'a [u8] = input;
            decode_varint(input)?;
            &before[..before.len() - input.len()]
        }
        WireType::SixtyFourBit => take(input, 8)?,
        WireType::ThirtyTwoBit => take(input, 4)?,
        WireType::LengthDelimited => {
            let len = decode_varint(input)?;
            take(input, len)?
        }
        WireType::StartGroup | WireType::EndGroup => return Err(Walk::Malformed),
    };
    let record = &start[..start.len() - input.len()];
    Ok(Some(Field { number, wire_type, record, payload }))
}

/// Appends a length-delimited field.
fn emit(number: u32, payload: &[u8], out: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// prost's decode error without the value: its description and where.
fn decode_reason(e: &prost::DecodeError) -> String {
    e.to_string().replace("failed to decode Protobuf message: ", "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SchemaPool, SchemaVersion};

    const SOURCE: &str = r#"syntax = "proto3"; package t; import "prism/options/v1/pii.proto";
message Inner { string s = 1 [(prism.pii) = "name"]; int32 n = 2; }
message M {
  string email = 1 [(prism.pii) = "email"];
  repeated string names = 2 [(prism.pii) = "name"];
  Inner inner = 3;
  repeated Inner inners = 4;
  map<string, Inner> by_key = 5;
  map<string, string> tagged_map = 6 [(prism.pii) = "other"];
  int64 born = 7 [(prism.pii) = "date_of_birth"];
  bytes scan = 8 [(prism.pii) = "other"];
  string plain = 9;
  oneof o { string ssn = 10 [(prism.pii) = "ssn"]; string card = 11 [(prism.pii) = "credit_card"]; }
}"#;

    fn pool() -> SchemaPool {
        let dir = tempfile::tempdir().unwrap();
        let opts = dir.path().join(prism_proto::PII_OPTIONS_PATH);
        std::fs::create_dir_all(opts.parent().unwrap()).unwrap();
        std::fs::write(&opts, prism_proto::PII_OPTIONS_PROTO).unwrap();
        std::fs::write(dir.path().join("t.proto"), SOURCE).unwrap();
        let mut c = protox::Compiler::new([dir.path()]).unwrap();
        c.include_imports(true).open_file("t.proto").unwrap();
        let descriptor = Bytes::from(c.encode_file_descriptor_set());
        SchemaPool::build([SchemaVersion {
            name: "t.proto".into(),
            version: 1,
            descriptor,
            pushed_at: String::new(),
            pushed_by: String::new(),
        }])
        .unwrap()
    }

    /// The walk over the encoded bytes and the decoding path give the same
    /// message for every kind of field, masked, raw and encrypted.
    #[test]
    fn the_walk_agrees_with_decoding() {
        let pool = pool();
        let desc = pool.message("t.M").unwrap();
        let inner_desc = pool.message("t.Inner").unwrap();
        let inner = |s: &str| {
            let mut m = DynamicMessage::new(inner_desc.clone());
            m.set_field_by_name("s", Value::String(s.into()));
            m.set_field_by_name("n", Value::I32(7));
            Value::Message(m)
        };
        let mut m = DynamicMessage::new(desc.clone());
        m.set_field_by_name("email", Value::String("ann@example.com".into()));
        m.set_field_by_name("names", Value::List(vec![Value::String("Ann Lee".into()), Value::String("A L".into())]));
        m.set_field_by_name("inner", inner("Bob Roe"));
        m.set_field_by_name("inners", Value::List(vec![inner("Cy Doe"), inner("Di Eve")]));
        let mut by_key = std::collections::HashMap::new();
        by_key.insert(prost_reflect::MapKey::String("k".into()), inner("Ed Fox"));
        m.set_field_by_name("by_key", Value::Map(by_key));
        let mut tagged = std::collections::HashMap::new();
        tagged.insert(prost_reflect::MapKey::String("k".into()), Value::String("secret".into()));
        m.set_field_by_name("tagged_map", Value::Map(tagged));
        m.set_field_by_name("born", Value::I64(1980));
        m.set_field_by_name("scan", Value::Bytes(Bytes::from_static(b"\x00\x01")));
        m.set_field_by_name("plain", Value::String("kept".into()));
        m.set_field_by_name("card", Value::String("4111 1111 1111 1234".into()));
        let value = Bytes::from(m.encode_to_vec());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.key"), "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
        let keyring = Arc::new(Keyring::load(dir.path(), None, None).unwrap());
        let plan = pool.plan("t.M").unwrap();
        let policy = |default: PiiAction| PiiSpec {
            policy: [
                ("email".to_owned(), PiiAction::Mask),
                ("name".to_owned(), PiiAction::Initial),
                ("default".to_owned(), default),
            ]
            .into_iter()
            .collect(),
            encrypt: false,
        };
        for default in PiiAction::ALL {
            let codec = Codec::new(plan.clone(), "ns", Some(&policy(default)), Some(&keyring)).unwrap();
            for raw in [false, true] {
                let walked = codec.read(&value, raw).unwrap().unwrap_or_else(|| value.clone());
                let decoded = codec.read_decoded(&value, raw).unwrap().unwrap();
                assert_eq!(
                    DynamicMessage::decode(desc.clone(), walked).unwrap(),
                    DynamicMessage::decode(desc.clone(), decoded).unwrap(),
                    "default {default:?}, raw {raw}"
                );
            }
        }
        // Encrypted, for a namespace whose tagged fields are all text.
        let text_only = pool.plan("t.Inner").unwrap();
        let codec =
            Codec::new(text_only, "ns", Some(&PiiSpec { policy: Default::default(), encrypt: true }), Some(&keyring))
                .unwrap();
        let mut i = DynamicMessage::new(inner_desc.clone());
        i.set_field_by_name("s", Value::String("Gil Hu".into()));
        let sealed = codec.write(&Bytes::from(i.encode_to_vec())).unwrap().unwrap();
        for raw in [false, true] {
            let walked = codec.read(&sealed, raw).unwrap().unwrap();
            let decoded = codec.read_decoded(&sealed, raw).unwrap().unwrap();
            assert_eq!(
                DynamicMessage::decode(inner_desc.clone(), walked).unwrap(),
                DynamicMessage::decode(inner_desc.clone(), decoded).unwrap()
            );
        }
        // Bytes the walk cannot read take the decoding path, which refuses them.
        assert!(matches!(codec.read(&Bytes::from_static(b"\x0b\x0c"), false), Err(CodecError::Unreadable { .. })));
    }
}
