//! Registered schemas: each push of a team's `.proto` files (compiled by
//! `prismctl schema push`, options kept) is a new version of a named schema.
//! The pool every typed namespace reads is the latest version of every
//! schema, merged; a file shared by two schemas must be identical in both.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost_reflect::{DescriptorPool, MessageDescriptor};

use crate::plan::TypePlan;

/// Files every schema carries that are not the team's own.
const SHARED_PREFIXES: &[&str] = &["google/protobuf/", "prism/options/"];
/// Largest encoded descriptor set a push may carry.
pub const MAX_DESCRIPTOR_BYTES: usize = 3 << 20;
/// Longest schema name.
pub const MAX_NAME: usize = 200;

/// One pushed version of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The schema's name: by default the path of the first file pushed
    /// (`acme/profile.proto`).
    pub name: String,
    pub version: u32,
    /// The encoded `FileDescriptorSet`, with imports and options.
    pub descriptor: Bytes,
    /// RFC 3339.
    pub pushed_at: String,
    pub pushed_by: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    #[error("schema {name}: the descriptor set does not load: {why}")]
    Invalid { name: String, why: String },
    #[error(
        "schema {name}: file {file} differs from the one schema {other} registered; push both together or keep the file identical"
    )]
    Conflict { name: String, file: String, other: String },
    #[error("schema {name}: {why}")]
    Tags { name: String, why: String },
    #[error("{0:?} is not a schema name: use 1 to {MAX_NAME} letters, digits and . _ / -")]
    BadName(String),
    #[error("the descriptor set is {0} bytes, over the limit of {MAX_DESCRIPTOR_BYTES}")]
    TooLarge(usize),
}

/// Whether `name` may name a schema (it is stored as a file name too).
pub fn check_name(name: &str) -> Result<(), SchemaError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(['/', '.'])
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if ok { Ok(()) } else { Err(SchemaError::BadName(name.to_owned())) }
}

/// The merged pool of the latest version of every schema, with the plans
/// computed from it (once per message type).
#[derive(Default)]
pub struct SchemaPool {
    pool: DescriptorPool,
    /// Latest version of each schema, by name.
    latest: BTreeMap<String, SchemaVersion>,
    /// The messages each schema defines in its own files.
    owned: BTreeMap<String, Vec<String>>,
    plans: Mutex<HashMap<String, Arc<TypePlan>>>,
}

impl std::fmt::Debug for SchemaPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaPool").field("schemas", &self.latest.keys().collect::<Vec<_>>()).finish()
    }
}

fn is_shared(file: &str) -> bool {
    SHARED_PREFIXES.iter().any(|p| file.starts_with(p))
}

impl SchemaPool {
    /// The pool of these versions (the latest of each schema). Fails on the
    /// first schema that does not load or conflicts with another.
    pub fn build(versions: impl IntoIterator<Item = SchemaVersion>) -> Result<Self, SchemaError> {
        let mut latest: BTreeMap<String, SchemaVersion> = BTreeMap::new();
        for v in versions {
            if latest.get(&v.name).is_none_or(|cur| cur.version < v.version) {
                latest.insert(v.name.clone(), v);
            }
        }
        let mut pool = DescriptorPool::new();
        let mut file_owner: HashMap<String, String> = HashMap::new();
        let mut owned = BTreeMap::new();
        for v in latest.values() {
            let invalid = |why: String| SchemaError::Invalid { name: v.name.clone(), why };
            let alone = DescriptorPool::decode(v.descriptor.clone()).map_err(|e| invalid(e.to_string()))?;
            let mut messages = Vec::new();
            for file in alone.files() {
                let shared = is_shared(file.name());
                if let Some(existing) = pool.get_file_by_name(file.name()) {
                    if !shared && existing.encode_to_vec() != file.encode_to_vec() {
                        return Err(SchemaError::Conflict {
                            name: v.name.clone(),
                            file: file.name().to_owned(),
                            other: file_owner.get(file.name()).cloned().unwrap_or_default(),
                        });
                    }
                } else {
                    file_owner.insert(file.name().to_owned(), v.name.clone());
                }
                if !shared {
                    messages.extend(all_messages(file.messages()).map(|m| m.full_name().to_owned()));
                }
            }
            pool.decode_file_descriptor_set(v.descriptor.clone()).map_err(|e| invalid(e.to_string()))?;
            owned.insert(v.name.clone(), messages);
        }
        let built = Self { pool, latest, owned, plans: Mutex::default() };
        // Every tag of every message is checked here, so a plan never fails
        // later on a registered type.
        for (name, messages) in &built.owned {
            for message in messages {
                built.plan(message).map_err(|why| SchemaError::Tags { name: name.clone(), why })?;
            }
        }
        Ok(built)
    }

    /// This pool with `version` as the latest of its schema.
    pub fn with(&self, version: SchemaVersion) -> Result<Self, SchemaError> {
        check_name(&version.name)?;
        if version.descriptor.len() > MAX_DESCRIPTOR_BYTES {
            return Err(SchemaError::TooLarge(version.descriptor.len()));
        }
        let mut versions: Vec<SchemaVersion> =
            self.latest.values().filter(|v| v.name != version.name).cloned().collect();
        versions.push(version);
        Self::build(versions)
    }

    pub fn message(&self, name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(name)
    }

    /// The plan of message `name`, computed on first use.
    pub fn plan(&self, name: &str) -> Result<Arc<TypePlan>, String> {
        if let Ok(plans) = self.plans.lock()
            && let Some(plan) = plans.get(name)
        {
            return Ok(plan.clone());
        }
        let message = self.message(name).ok_or_else(|| format!("message {name} is not registered"))?;
        let plan = Arc::new(TypePlan::new(&message)?);
        if let Ok(mut plans) = self.plans.lock() {
            plans.insert(name.to_owned(), plan.clone());
        }
        Ok(plan)
    }

    /// The latest version of every schema, by name.
    pub fn schemas(&self) -> impl Iterator<Item = &SchemaVersion> {
        self.latest.values()
    }

    pub fn latest(&self, name: &str) -> Option<&SchemaVersion> {
        self.latest.get(name)
    }

    /// The messages schema `name` defines in its own files.
    pub fn messages_of(&self, name: &str) -> &[String] {
        self.owned.get(name).map_or(&[], Vec::as_slice)
    }

    /// Which schema defines message `message`.
    pub fn schema_of(&self, message: &str) -> Option<&str> {
        self.owned.iter().find(|(_, m)| m.iter().any(|m| m == message)).map(|(n, _)| n.as_str())
    }
}

/// Every message of a file, nested ones included (map entries excluded).
fn all_messages(top: impl Iterator<Item = MessageDescriptor>) -> impl Iterator<Item = MessageDescriptor> {
    let mut stack: Vec<MessageDescriptor> = top.collect();
    stack.reverse();
    std::iter::from_fn(move || {
        while let Some(m) = stack.pop() {
            stack.extend(m.child_messages());
            if !m.is_map_entry() {
                return Some(m);
            }
        }
        None
    })
}
