//! Whether a new version of a schema may replace the registered one. A
//! change is breaking when values already stored (or the clients that read
//! them) would be misread, or when PII would stop being protected:
//!
//! - a field number reused with another type, or moved between singular,
//!   repeated and map, or into or out of a oneof;
//! - a field removed without reserving its number (a later field could
//!   reuse it);
//! - a PII tag removed or its class changed (stored values of the class
//!   would be shown by another policy, or raw);
//! - a message removed, or no longer a message, while a namespace uses it.
//!
//! Adding fields, messages or tags, and renaming fields, are not breaking.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::plan::{extension_of, tag_of};
use crate::registry::SchemaPool;

/// A field's type as a reader of stored bytes depends on it.
fn type_name(field: &FieldDescriptor) -> String {
    let base = match field.kind() {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_lowercase(),
    };
    if field.is_map() {
        format!("map<{base}>")
    } else if field.is_list() {
        format!("repeated {base}")
    } else {
        base
    }
}

fn oneof_name(field: &FieldDescriptor) -> Option<String> {
    field.containing_oneof().filter(|o| !o.is_synthetic()).map(|o| o.name().to_owned())
}

fn reserved(message: &MessageDescriptor, number: u32) -> bool {
    message.reserved_ranges().any(|r| r.contains(&number))
}

/// Every breaking change from `old` to `new` for schema `name`, and for the
/// messages namespaces use (`in_use`: namespace and message), each naming
/// the message and field.
pub fn breaking(old: &SchemaPool, new: &SchemaPool, name: &str, in_use: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for message in old.messages_of(name) {
        let Some(before) = old.message(message) else { continue };
        let Some(after) = new.message(message) else {
            if !in_use.iter().any(|(_, m)| m == message) {
                found.push(format!("message {message} is removed"));
            }
            continue;
        };
        compare(&before, &after, &mut found);
    }
    for (namespace, message) in in_use {
        if new.message(message).is_none() {
            found.push(format!("message {message} is removed, and namespace {namespace} stores values of it"));
        }
    }
    found
}

fn compare(before: &MessageDescriptor, after: &MessageDescriptor, found: &mut Vec<String>) {
    let (ext_before, ext_after) = (extension_of(before), extension_of(after));
    for old in before.fields() {
        let at = format!("{}.{} ({})", before.full_name(), old.name(), old.number());
        let Some(new) = after.get_field(old.number()) else {
            if !reserved(after, old.number()) {
                found.push(format!("field {at} is removed without reserving its number"));
            }
            continue;
        };
        let (t_old, t_new) = (type_name(&old), type_name(&new));
        if t_old != t_new {
            found.push(format!("field {at} changes type from {t_old} to {t_new}"));
        }
        if oneof_name(&old) != oneof_name(&new) {
            let where_ = |o: Option<String>| o.map_or_else(|| "no oneof".to_owned(), |o| format!("oneof {o}"));
            found.push(format!("field {at} moves from {} to {}", where_(oneof_name(&old)), where_(oneof_name(&new))));
        }
        let tag_old = tag_of(&old, ext_before.as_ref()).ok().flatten();
        let tag_new = tag_of(&new, ext_after.as_ref()).ok().flatten();
        match (tag_old, tag_new) {
            (Some(c), None) => found.push(format!("field {at} loses its PII tag ({c}): its values would be shown raw")),
            (Some(a), Some(b)) if a != b => {
                found.push(format!("field {at} changes PII class from {a} to {b}"));
            }
            _ => {}
        }
    }
}
