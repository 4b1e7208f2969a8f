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

use crate::keyring::{DecryptError, EncryptError, Keyring};
use crate::plan::{TypePlan, each_text};
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
    pub fn read(&self, value: &Bytes, raw: bool) -> Result<Option<Bytes>, CodecError> {
        if (raw && self.encryption.is_none()) || self.plan.is_empty() || value.is_empty() {
            return Ok(None);
        }
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
                    // Values written before encryption was turned on are
                    // stored in clear, and read as they are.
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

/// prost's decode error without the value: its description and where.
fn decode_reason(e: &prost::DecodeError) -> String {
    e.to_string().replace("failed to decode Protobuf message: ", "")
}
