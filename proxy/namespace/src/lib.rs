//! The namespace document teams write (`apiVersion: prism/v1`,
//! `kind: Namespace`): the typed spec, a positioned YAML tree for error
//! locations, and the structural validation that reports every problem with
//! its field path, line and column.
//!
//! Both the proxy and `prismctl` use this crate, so `prismctl namespace
//! validate` and the proxy never disagree about a document. What needs the
//! proxy's plugins (does the backend exist, can it meet the needs) is checked
//! by the proxy's control plane when a change is planned.

pub mod duration;
pub mod pii;
#[cfg(test)]
mod proptests;
mod spec;
pub mod validate;
pub mod yaml;

pub use pii::{PiiAction, PiiClass};
pub use spec::{
    Access, Consistency, DEFAULT_SHADOW_QUEUE, Durability, Metadata, Mirror, NamespaceDoc, NamespaceSpec, Needs,
    PatternKind, PiiSpec, Schema, ShadowSpec,
};
pub use yaml::SpecError;

/// DNS-label names (namespaces, plugins): lowercase letters, digits and `-`,
/// starting with a letter, not ending with `-`, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::is_dns_label;

    #[test]
    fn dns_labels() {
        for ok in ["a", "memstore", "redis-2", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "A", "1abc", "a_b", "a-", &"a".repeat(64), "café"] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
