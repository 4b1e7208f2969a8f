//! The namespace spec (`apiVersion: prism/v1`, `kind: Namespace`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::is_dns_label;
use crate::duration;

/// One namespace file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceDoc {
    /// Always `prism/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Always `Namespace`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: NamespaceSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The namespace name clients send: a DNS label (lowercase letters,
    /// digits, `-`; at most 63 characters).
    pub name: String,
    /// The owning team, for people and audit records.
    #[serde(default)]
    pub team: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// The data pattern clients use.
    pub pattern: PatternKind,
    /// The plugin that stores the data; when absent the proxy chooses.
    #[serde(default)]
    pub backend: Option<String>,
    /// What the namespace needs from its backend.
    #[serde(default)]
    pub needs: Needs,
    /// The protobuf message values follow (enables PII masking).
    #[serde(default)]
    pub schema: Option<SchemaRef>,
    /// Who may do what.
    #[serde(default)]
    pub access: Option<Access>,
    /// Mirroring to a second backend for migrations.
    #[serde(default)]
    pub shadow: Option<Shadow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternKind {
    Keyvalue,
    Timeseries,
    Graph,
}

impl PatternKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keyvalue => "keyvalue",
            Self::Timeseries => "timeseries",
            Self::Graph => "graph",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Needs {
    #[serde(default)]
    pub consistency: Option<Consistency>,
    #[serde(default)]
    pub durability: Option<Durability>,
    /// Expected reads per second (used to choose a backend).
    #[serde(default)]
    pub read_rps: Option<u64>,
    /// Expected writes per second.
    #[serde(default)]
    pub write_rps: Option<u64>,
    /// Largest value, in bytes; lowers the proxy limit for this namespace.
    #[serde(default)]
    pub max_value_bytes: Option<u64>,
    /// Time to live of values written without `ttl_seconds`.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub ttl: Option<Duration>,
    /// How long data is kept (TimeSeries).
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub retention: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Strong,
    Eventual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Durable,
    Ephemeral,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRef {
    /// Fully qualified protobuf message name, e.g. `acme.profile.v1.UserProfile`.
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub admin: Vec<String>,
    #[serde(default)]
    pub pii: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// The plugin that receives mirrored traffic.
    pub backend: String,
    #[serde(default)]
    pub mirror: MirrorMode,
    /// Share of reads also sent to the shadow and compared, 0.0 to 1.0.
    #[serde(default)]
    pub compare_reads: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorMode {
    #[default]
    Writes,
    None,
}

impl NamespaceDoc {
    /// Parses and checks one namespace document; every problem is returned.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        if text.trim().is_empty() {
            return Err(vec!["the file is empty".to_owned()]);
        }
        let doc: Self = serde_saphyr::from_str(text).map_err(|e| vec![e.to_string()])?;
        doc.check().map(|()| doc)
    }

    /// The structural rules serde cannot express.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.api_version != "prism/v1" {
            errors.push(format!("apiVersion: expected \"prism/v1\", got {:?}", self.api_version));
        }
        if self.kind != "Namespace" {
            errors.push(format!("kind: expected \"Namespace\", got {:?}", self.kind));
        }
        if !is_dns_label(&self.metadata.name) {
            errors.push(format!(
                "metadata.name: {:?} is not a valid name (lowercase letters, digits and '-', 1 to 63 characters, starting with a letter)",
                self.metadata.name
            ));
        }
        if self.spec.needs.max_value_bytes == Some(0) {
            errors.push("spec.needs.max_value_bytes: must be above zero".to_owned());
        }
        if let Some(ttl) = self.spec.needs.ttl
            && ttl < Duration::from_secs(1)
        {
            errors.push("spec.needs.ttl: must be at least 1s".to_owned());
        }
        if let Some(shadow) = &self.spec.shadow
            && !(0.0..=1.0).contains(&shadow.compare_reads)
        {
            errors
                .push(format!("spec.shadow.compare_reads: must be between 0.0 and 1.0, got {}", shadow.compare_reads));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: demo, team: platform}\nspec:\n  pattern: keyvalue\n  backend: memstore\n";

    #[test]
    fn parses_the_design_example() {
        let text = r"
apiVersion: prism/v1
kind: Namespace
metadata: {name: user-profiles, team: identity}
spec:
  pattern: keyvalue
  backend: redis
  needs: {consistency: strong, durability: durable, read_rps: 5000, write_rps: 500, max_value_bytes: 65536, ttl: 24h, retention: 30d}
  schema: {message: acme.profile.v1.UserProfile}
  access: {read: [group:web], write: [spiffe://acme/profile-writer], pii: [group:support]}
  shadow: {backend: postgres, mirror: writes, compare_reads: 0.1}
";
        let doc = NamespaceDoc::parse(text).unwrap();
        assert_eq!(doc.metadata.name, "user-profiles");
        assert_eq!(doc.spec.needs.ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(doc.spec.shadow.unwrap().compare_reads, 0.1);
    }

    #[test]
    fn minimal() {
        let doc = NamespaceDoc::parse(DEMO).unwrap();
        assert_eq!(doc.spec.pattern, PatternKind::Keyvalue);
        assert_eq!(doc.spec.backend.as_deref(), Some("memstore"));
    }

    #[test]
    fn malformed_documents() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("apiVersion: prism/v2\nkind: Namespace\nmetadata: {name: a}\nspec: {pattern: keyvalue}\n", "apiVersion"),
            ("apiVersion: prism/v1\nkind: Table\nmetadata: {name: a}\nspec: {pattern: keyvalue}\n", "kind"),
            (
                "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: Bad_Name}\nspec: {pattern: keyvalue}\n",
                "metadata.name",
            ),
            ("apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: a}\nspec: {pattern: document}\n", "line 4"),
            (
                "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: a}\nspec: {pattern: keyvalue, colour: red}\n",
                "unknown field `colour`",
            ),
            (
                "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: a}\nspec: {pattern: keyvalue, needs: {ttl: forever}}\n",
                "write it like",
            ),
            ("apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: a}\n", "missing field `spec`"),
        ];
        for (text, needle) in cases {
            let errs = NamespaceDoc::parse(text).unwrap_err().join("\n");
            assert!(errs.contains(needle), "{needle:?} not in {errs:?} for {text:?}");
        }
    }
}
