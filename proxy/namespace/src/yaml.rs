//! A YAML document as a tree of nodes that remember where they are.
//!
//! Typed deserialization stops at the first error; validating a spec wants
//! every error at once, each with its line. So a document is first read
//! into this tree (serde-saphyr fills in each node's position), checked as
//! a whole, and only then deserialized into the typed spec.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Limits applied while parsing untrusted documents: a namespace spec is
/// small, so anything far larger is refused before it costs memory.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// A YAML node without its position.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "nothing",
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
                i64::try_from(v).map(Node::Int).map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }

        de.deserialize_any(NodeVisitor)
    }
}

/// A problem in a document, located by field path and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Dotted path of the field, e.g. `spec.needs.ttl` (empty for the
    /// document as a whole).
    pub path: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, 0) => write!(f, "{}", self.message),
            (true, _) => write!(f, "line {} column {}: {}", self.line, self.column, self.message),
            (false, 0) => write!(f, "{}: {}", self.path, self.message),
            (false, _) => write!(f, "{} (line {}, column {}): {}", self.path, self.line, self.column, self.message),
        }
    }
}

/// Parses YAML text into a positioned tree. Syntax errors come back as one
/// located error.
pub fn parse(text: &str) -> Result<Spanned<Node>, SpecError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(SpecError {
            path: String::new(),
            line: 0,
            column: 0,
            message: format!("the document is {} bytes, over the limit of {MAX_DOCUMENT_BYTES}", text.len()),
        });
    }
    if text.trim().is_empty() {
        return Err(SpecError { path: String::new(), line: 0, column: 0, message: "the document is empty".into() });
    }
    serde_saphyr::from_str::<Spanned<Node>>(text).map_err(|e| describe(&e))
}

/// A serde-saphyr error as a located problem in Prism's words: the
/// library's user-facing wording (not its advice to the programs calling it,
/// such as "set DuplicateKeyPolicy in Options"), one line, no source snippet
/// (callers print positions their own way).
pub fn describe(e: &serde_saphyr::Error) -> SpecError {
    use serde_saphyr::MessageFormatter as _;
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = serde_saphyr::UserMessageFormatter.format_message(e);
    let message = message.lines().next().unwrap_or_default();
    let message = match message {
        m if m.starts_with("only single YAML document expected") => {
            "more than one YAML document (separated by `---`) where one is expected".to_owned()
        }
        // serde's names for Rust types, in the words of the document.
        "invalid u8" | "invalid u16" | "invalid u32" | "invalid u64" | "invalid usize" => {
            "expected a whole number, 0 or more".to_owned()
        }
        "invalid i8" | "invalid i16" | "invalid i32" | "invalid i64" | "invalid isize" => {
            "expected a whole number".to_owned()
        }
        "invalid f32" | "invalid f64" => "expected a number".to_owned(),
        "expected sequence start" => "expected a list, such as [a, b]".to_owned(),
        "expected mapping start" => "expected a mapping of fields".to_owned(),
        m => m.to_owned(),
    };
    SpecError { path: String::new(), line, column, message }
}

/// The position of the field at dotted `path` (e.g. `spec.needs.ttl`),
/// or of its nearest existing parent, so an error about a field can point
/// at the line that set it.
pub fn locate(root: &Spanned<Node>, path: &str) -> (u64, u64) {
    let mut at = (root.referenced.line(), root.referenced.column());
    let mut node = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let Node::Map(entries) = &node.value else { break };
        let Some((key, value)) = entries.iter().find(|(k, _)| k.value == part) else { break };
        at = (key.referenced.line(), key.referenced.column());
        node = value;
    }
    at
}

impl SpecError {
    /// An error about the field at `path` of `root`.
    pub fn at(root: &Spanned<Node>, path: &str, message: impl Into<String>) -> Self {
        let (line, column) = locate(root, path);
        Self { path: path.to_owned(), line, column, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_kept() {
        let doc = parse("a: 1\nb:\n  c: [x, 2]\n").unwrap();
        let Node::Map(entries) = &doc.value else { panic!() };
        assert_eq!(entries[1].0.value, "b");
        assert_eq!(entries[1].0.referenced.line(), 2);
        let Node::Map(inner) = &entries[1].1.value else { panic!() };
        assert_eq!(inner[0].1.referenced.line(), 3);
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line > 0, "{err}");
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("duplicate"), "{err}");
        assert!(!err.message.contains("DuplicateKeyPolicy"), "library advice leaked: {err}");
        let err = parse("a: 1\n---\na: 2\n").unwrap_err();
        assert!(err.message.contains("more than one YAML document"), "{err}");
        assert!(!err.message.contains("from_str_multiple"), "library advice leaked: {err}");
        assert!(parse("  \n").unwrap_err().message.contains("empty"));
        assert!(parse(&"a".repeat(MAX_DOCUMENT_BYTES + 1)).unwrap_err().message.contains("limit"));
    }

    #[test]
    fn locate_finds_fields_and_falls_back_to_parents() {
        let doc = parse("spec:\n  pattern: keyvalue\n  needs:\n    ttl: 1h\n").unwrap();
        assert_eq!(locate(&doc, "spec.needs.ttl"), (4, 5));
        assert_eq!(locate(&doc, "spec.needs.durability"), (3, 3));
        assert_eq!(locate(&doc, "spec.backend"), (1, 1));
    }
}
