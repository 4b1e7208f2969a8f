//! The transform plan of one message type: which fields are tagged, and the
//! message fields (singular, repeated or map values) that lead to tagged
//! fields further down. Computed once per type and namespace; applying it
//! visits only those fields, so an untagged part of a message costs nothing
//! beyond its decoding.

use std::collections::HashMap;

use prost_reflect::{ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value};

use crate::{PII_EXTENSION, PiiClass};

/// The class a field is tagged with: `(prism.pii)`, else `debug_redact =
/// true` as `other`. An unknown class is an error naming the field.
pub fn tag_of(field: &FieldDescriptor, ext: Option<&ExtensionDescriptor>) -> Result<Option<PiiClass>, String> {
    let options = field.options();
    if let Some(ext) = ext
        && options.has_extension(ext)
    {
        let value = options.get_extension(ext);
        let text = value.as_str().unwrap_or_default();
        return PiiClass::parse(text).map(Some).ok_or_else(|| {
            format!(
                "field {} has (prism.pii) = {text:?}, which is not a PII class (classes: {})",
                field.full_name(),
                PiiClass::names()
            )
        });
    }
    let redact = options.get_field_by_name("debug_redact").and_then(|v| v.as_bool()).unwrap_or(false);
    Ok(redact.then_some(PiiClass::Other))
}

/// The `(prism.pii)` extension in the pool of `message`, if its files use it.
pub fn extension_of(message: &MessageDescriptor) -> Option<ExtensionDescriptor> {
    message.parent_pool().get_extension_by_name(PII_EXTENSION)
}

#[derive(Debug, Clone)]
enum Step {
    /// A tagged field.
    Tagged { field: FieldDescriptor, class: PiiClass },
    /// A message field whose type (plan `plan`) holds tagged fields.
    Nested { field: FieldDescriptor, plan: usize },
}

#[derive(Debug, Clone, Default)]
struct MessagePlan {
    steps: Vec<Step>,
}

/// What a tagged field's values are on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    String,
    Bytes,
    /// Numbers, enums, messages: no text to transform.
    Other,
}

/// One step of a message's plan by field number, for transforms that walk
/// the encoded bytes instead of decoding the message.
#[derive(Debug, Clone, Copy)]
pub enum WireStep {
    Tagged { class: PiiClass, text: Text, map: bool },
    Nested { plan: usize, map: bool },
}

fn text_of(field: &FieldDescriptor) -> Text {
    let kind = if field.is_map() {
        match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field().kind(),
            other => other,
        }
    } else {
        field.kind()
    };
    match kind {
        Kind::String => Text::String,
        Kind::Bytes => Text::Bytes,
        _ => Text::Other,
    }
}

/// A tagged field as a reader sees it: its path from the root message
/// (`home.street`, `aliases[]`, `tags{}`) and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedField {
    pub path: String,
    pub class: PiiClass,
    /// The field's full name and number, for errors.
    pub field: String,
    pub number: u32,
    /// Whether its values are strings or bytes (so encryption can hold them).
    pub textual: bool,
}

#[derive(Debug, Clone)]
pub struct TypePlan {
    root: MessageDescriptor,
    /// Index 0 is the root message.
    messages: Vec<MessagePlan>,
    /// Every class a value of this type can carry, sorted.
    classes: Vec<PiiClass>,
    fields: Vec<TaggedField>,
    /// The steps of each message by field number (index as `messages`).
    wire: Vec<std::collections::HashMap<u32, WireStep>>,
}

/// Whether a field's values (list items, map values) are messages, and of
/// which type.
fn message_kind(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    let kind = if field.is_map() {
        match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field().kind(),
            other => other,
        }
    } else {
        field.kind()
    };
    match kind {
        Kind::Message(m) => Some(m),
        _ => None,
    }
}

fn is_textual(field: &FieldDescriptor) -> bool {
    let kind = if field.is_map() {
        match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field().kind(),
            other => other,
        }
    } else {
        field.kind()
    };
    matches!(kind, Kind::String | Kind::Bytes)
}

impl TypePlan {
    /// The plan of `root`. Fails if a field carries an unknown class.
    pub fn new(root: &MessageDescriptor) -> Result<Self, String> {
        let ext = extension_of(root);
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut messages: Vec<MessagePlan> = Vec::new();
        let mut descs: Vec<MessageDescriptor> = Vec::new();
        index.insert(root.full_name().to_owned(), 0);
        messages.push(MessagePlan::default());
        descs.push(root.clone());
        // Breadth first over every message type reachable from the root; a
        // recursive type is visited once.
        let mut next = 0;
        while next < descs.len() {
            let desc = descs[next].clone();
            let mut steps = Vec::new();
            for field in desc.fields() {
                if let Some(class) = tag_of(&field, ext.as_ref())? {
                    steps.push(Step::Tagged { field, class });
                } else if let Some(inner) = message_kind(&field) {
                    let plan = *index.entry(inner.full_name().to_owned()).or_insert_with(|| {
                        messages.push(MessagePlan::default());
                        descs.push(inner.clone());
                        messages.len() - 1
                    });
                    steps.push(Step::Nested { field, plan });
                }
            }
            messages[next].steps = steps;
            next += 1;
        }
        // Keep only the nested steps that reach a tagged field.
        let mut live: Vec<bool> =
            messages.iter().map(|m| m.steps.iter().any(|s| matches!(s, Step::Tagged { .. }))).collect();
        loop {
            let mut changed = false;
            for (i, m) in messages.iter().enumerate() {
                if !live[i] && m.steps.iter().any(|s| matches!(s, Step::Nested { plan, .. } if live[*plan])) {
                    live[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for m in &mut messages {
            m.steps.retain(|s| match s {
                Step::Tagged { .. } => true,
                Step::Nested { plan, .. } => live[*plan],
            });
        }
        let wire = messages
            .iter()
            .map(|m| {
                m.steps
                    .iter()
                    .map(|step| match step {
                        Step::Tagged { field, class } => (
                            field.number(),
                            WireStep::Tagged { class: *class, text: text_of(field), map: field.is_map() },
                        ),
                        Step::Nested { field, plan } => {
                            (field.number(), WireStep::Nested { plan: *plan, map: field.is_map() })
                        }
                    })
                    .collect()
            })
            .collect();
        let mut plan = Self { root: root.clone(), messages, classes: Vec::new(), fields: Vec::new(), wire };
        let mut fields = Vec::new();
        plan.collect(0, "", &mut Vec::new(), &mut fields);
        let mut classes: Vec<PiiClass> = fields.iter().map(|f| f.class).collect();
        classes.sort();
        classes.dedup();
        plan.classes = classes;
        plan.fields = fields;
        Ok(plan)
    }

    fn collect(&self, at: usize, prefix: &str, visiting: &mut Vec<usize>, out: &mut Vec<TaggedField>) {
        if visiting.contains(&at) {
            return;
        }
        visiting.push(at);
        for step in &self.messages[at].steps {
            let (field, suffix) = match step {
                Step::Tagged { field, .. } | Step::Nested { field, .. } => {
                    let suffix = if field.is_map() {
                        "{}"
                    } else if field.is_list() {
                        "[]"
                    } else {
                        ""
                    };
                    (field, suffix)
                }
            };
            let path = if prefix.is_empty() {
                format!("{}{suffix}", field.name())
            } else {
                format!("{prefix}.{}{suffix}", field.name())
            };
            match step {
                Step::Tagged { field, class } => out.push(TaggedField {
                    path,
                    class: *class,
                    field: field.full_name().to_owned(),
                    number: field.number(),
                    textual: is_textual(field),
                }),
                Step::Nested { plan, .. } => self.collect(*plan, &path, visiting, out),
            }
        }
        visiting.pop();
    }

    pub fn message(&self) -> &MessageDescriptor {
        &self.root
    }

    /// Every class a value of this type can carry.
    pub fn classes(&self) -> &[PiiClass] {
        &self.classes
    }

    /// Every tagged field, by path (a recursive type lists each once).
    pub fn fields(&self) -> &[TaggedField] {
        &self.fields
    }

    /// The step of field `number` of plan `at` (0 is the root message).
    pub fn wire_step(&self, at: usize, number: u32) -> Option<WireStep> {
        self.wire.get(at).and_then(|steps| steps.get(&number)).copied()
    }

    /// Whether the type has no tagged field at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Calls `f` on every tagged field present in `msg` (the whole field
    /// value: a scalar, a list or a map) with its class and number; when `f`
    /// answers `false` the field is cleared.
    pub fn visit<E>(
        &self,
        msg: &mut prost_reflect::DynamicMessage,
        f: &mut impl FnMut(PiiClass, &FieldDescriptor, &mut Value) -> Result<bool, E>,
    ) -> Result<(), E> {
        self.visit_at(0, msg, f)
    }

    fn visit_at<E>(
        &self,
        at: usize,
        msg: &mut prost_reflect::DynamicMessage,
        f: &mut impl FnMut(PiiClass, &FieldDescriptor, &mut Value) -> Result<bool, E>,
    ) -> Result<(), E> {
        for step in &self.messages[at].steps {
            match step {
                Step::Tagged { field, class } => {
                    // Reading an unset field would set it, and change the
                    // encoding of the message.
                    if msg.has_field(field) && !f(*class, field, msg.get_field_mut(field))? {
                        msg.clear_field(field);
                    }
                }
                Step::Nested { field, plan } => {
                    if !msg.has_field(field) {
                        continue;
                    }
                    match msg.get_field_mut(field) {
                        Value::Message(inner) => self.visit_at(*plan, inner, f)?,
                        Value::List(items) => {
                            for item in items {
                                if let Value::Message(inner) = item {
                                    self.visit_at(*plan, inner, f)?;
                                }
                            }
                        }
                        Value::Map(entries) => {
                            for value in entries.values_mut() {
                                if let Value::Message(inner) = value {
                                    self.visit_at(*plan, inner, f)?;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Calls `f` on each string or bytes scalar of a field value (the value
/// itself, each list item, each map value). Returns false if the value
/// holds something else (a number, a message), which `f` cannot transform.
pub fn each_text(value: &mut Value, f: &mut impl FnMut(&mut Value)) -> bool {
    match value {
        Value::String(_) | Value::Bytes(_) => {
            f(value);
            true
        }
        Value::List(items) => items.iter_mut().all(|item| each_text(item, f)),
        Value::Map(entries) => entries.values_mut().all(|item| each_text(item, f)),
        _ => false,
    }
}
