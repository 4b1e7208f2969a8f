//! Structural validation of a namespace document: every field is checked
//! and every problem is reported, each with its path and position.
//!
//! What needs the proxy's plugins (does the backend exist, can it meet the
//! needs) is checked later, when a change is planned (`control::plan`).

use std::time::Duration;

use serde_saphyr::Spanned;

use crate::duration;
use crate::is_dns_label;
use crate::pii::{PiiAction, PiiClass};
use crate::yaml::{Node, SpecError};

/// Top-level fields of a namespace document.
pub const DOCUMENT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
pub const METADATA_FIELDS: &[&str] = &["name", "team", "labels"];
pub const SPEC_FIELDS: &[&str] = &["pattern", "backend", "needs", "access", "schema", "pii", "shadow", "quota"];
pub const NEEDS_FIELDS: &[&str] =
    &["consistency", "durability", "read_rps", "write_rps", "max_value_bytes", "ttl", "retention", "subscribe"];
pub const ACCESS_FIELDS: &[&str] = &["read", "write", "admin", "pii"];
pub const SCHEMA_FIELDS: &[&str] = &["message"];
pub const PII_FIELDS: &[&str] = &["policy", "encrypt"];
pub const SHADOW_FIELDS: &[&str] = &["backend", "mirror", "compare_reads", "queue"];
pub const QUOTA_FIELDS: &[&str] = &["enforce", "burst"];
/// Longest quota burst: a bucket that saves up more than a minute of the
/// rate is no limit on the minute that spends it.
pub const MAX_QUOTA_BURST: Duration = Duration::from_secs(60);
/// Most copies a shadow queue may hold.
pub const MAX_SHADOW_QUEUE: i64 = 1_000_000;
/// Longest message name in `spec.schema.message`.
pub const MAX_MESSAGE_NAME: usize = 256;

/// Most expected requests per second a spec may state.
pub const MAX_RPS: i64 = 10_000_000;
/// Most entries in one access list.
pub const MAX_ACCESS_ENTRIES: usize = 256;
/// Longest principal selector.
pub const MAX_SELECTOR_LEN: usize = 256;
/// Longest TTL or retention.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

struct Checker {
    errors: Vec<SpecError>,
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

impl Checker {
    fn error(&mut self, path: &str, at: &Spanned<impl Sized>, message: impl Into<String>) {
        self.errors.push(SpecError {
            path: path.to_owned(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            message: message.into(),
        });
    }

    /// The entries of a mapping; reports unknown and missing fields.
    fn map<'a>(
        &mut self,
        node: &'a Spanned<Node>,
        path: &str,
        known: &[&str],
        required: &[&str],
    ) -> Option<Vec<(&'a str, &'a Spanned<Node>, String)>> {
        let Node::Map(entries) = &node.value else {
            self.error(path, node, format!("expected a mapping, found {}", node.value.kind()));
            return None;
        };
        let mut fields = Vec::new();
        for (key, value) in entries {
            let field_path = join(path, &key.value);
            if known.contains(&key.value.as_str()) {
                fields.push((key.value.as_str(), value, field_path));
            } else {
                let hint = known
                    .iter()
                    .filter(|k| strsim::damerau_levenshtein(k, &key.value) <= 2)
                    .map(|k| format!("; did you mean `{k}`?"))
                    .next()
                    .unwrap_or_default();
                self.error(
                    &field_path,
                    key,
                    format!("unknown field `{}`{hint} (known: {})", key.value, known.join(", ")),
                );
            }
        }
        for field in required {
            if !entries.iter().any(|(k, _)| k.value == *field) {
                self.error(&join(path, field), node, format!("the required field `{field}` is missing"));
            }
        }
        Some(fields)
    }

    fn string<'a>(&mut self, node: &'a Spanned<Node>, path: &str) -> Option<&'a str> {
        match &node.value {
            Node::Str(s) => Some(s),
            other => {
                self.error(path, node, format!("expected a string, found {}", other.kind()));
                None
            }
        }
    }

    fn one_of(&mut self, node: &Spanned<Node>, path: &str, allowed: &[&str]) {
        if let Some(s) = self.string(node, path)
            && !allowed.contains(&s)
        {
            self.error(path, node, format!("{s:?} is not one of {}", allowed.join(", ")));
        }
    }

    fn integer(&mut self, node: &Spanned<Node>, path: &str, min: i64, max: i64) {
        match node.value {
            Node::Int(n) if (min..=max).contains(&n) => {}
            Node::Int(n) => self.error(path, node, format!("{n} is out of range; expected {min} to {max}")),
            ref other => self.error(path, node, format!("expected an integer, found {}", other.kind())),
        }
    }

    fn duration(&mut self, node: &Spanned<Node>, path: &str, min: Duration) {
        let text = match &node.value {
            Node::Str(s) => s,
            Node::Int(n) => {
                self.error(path, node, format!("expected a duration with a unit, such as {n}s or {n}m"));
                return;
            }
            other => {
                self.error(path, node, format!("expected a duration such as 30s or 24h, found {}", other.kind()));
                return;
            }
        };
        match duration::parse(text) {
            Err(e) => self.error(path, node, e),
            Ok(d) if d < min => self.error(
                path,
                node,
                format!("{text} is too short; the minimum is {}", humantime::format_duration(min)),
            ),
            Ok(d) if d > MAX_DURATION => self.error(path, node, format!("{text} is too long; the maximum is 3650d")),
            Ok(_) => {}
        }
    }

    fn document(&mut self, root: &Spanned<Node>) {
        let Some(fields) = self.map(root, "", DOCUMENT_FIELDS, DOCUMENT_FIELDS) else { return };
        for (field, node, path) in fields {
            match field {
                "apiVersion" => {
                    if let Some(v) = self.string(node, &path)
                        && v != "prism/v1"
                    {
                        self.error(&path, node, format!("expected \"prism/v1\", got {v:?}"));
                    }
                }
                "kind" => {
                    if let Some(v) = self.string(node, &path)
                        && v != "Namespace"
                    {
                        self.error(&path, node, format!("expected \"Namespace\", got {v:?}"));
                    }
                }
                "metadata" => self.metadata(node, &path),
                _ => self.spec(node, &path),
            }
        }
    }

    fn metadata(&mut self, node: &Spanned<Node>, path: &str) {
        let Some(fields) = self.map(node, path, METADATA_FIELDS, &["name"]) else { return };
        for (field, node, path) in fields {
            match field {
                "name" => {
                    if let Some(name) = self.string(node, &path)
                        && !is_dns_label(name)
                    {
                        self.error(
                            &path,
                            node,
                            format!(
                                "{name:?} is not a valid name: use lowercase letters, digits and '-', 1 to 63 characters, starting with a letter"
                            ),
                        );
                    }
                }
                "team" => {
                    if let Some(team) = self.string(node, &path)
                        && (team.is_empty() || team.len() > 63)
                    {
                        self.error(&path, node, "must be 1 to 63 characters");
                    }
                }
                _ => self.labels(node, &path),
            }
        }
    }

    fn labels(&mut self, node: &Spanned<Node>, path: &str) {
        let Node::Map(entries) = &node.value else {
            self.error(path, node, format!("expected a mapping of label names to values, found {}", node.value.kind()));
            return;
        };
        for (key, value) in entries {
            let label_path = join(path, &key.value);
            let valid_key = !key.value.is_empty()
                && key.value.len() <= 63
                && key.value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
            if !valid_key {
                self.error(&label_path, key, "label names are 1 to 63 letters, digits, '-', '_', '.' or '/'");
            }
            if let Some(v) = self.string(value, &label_path)
                && v.len() > 253
            {
                self.error(&label_path, value, "label values are at most 253 characters");
            }
        }
    }

    fn spec(&mut self, node: &Spanned<Node>, path: &str) {
        let Some(fields) = self.map(node, path, SPEC_FIELDS, &["pattern"]) else { return };
        for (field, node, path) in fields {
            match field {
                "pattern" => self.one_of(node, &path, &["keyvalue", "timeseries", "graph"]),
                "backend" => {
                    if let Some(name) = self.string(node, &path)
                        && !is_dns_label(name)
                    {
                        self.error(&path, node, format!("{name:?} is not a plugin name"));
                    }
                }
                "needs" => self.needs(node, &path),
                "access" => self.access(node, &path),
                "schema" => self.schema(node, &path),
                "pii" => self.pii(node, &path),
                "quota" => self.quota(node, &path),
                _ => self.shadow(node, &path),
            }
        }
    }

    /// `spec.schema`, and what it implies for the rest of the spec.
    fn schema(&mut self, node: &Spanned<Node>, path: &str) {
        let Some(fields) = self.map(node, path, SCHEMA_FIELDS, SCHEMA_FIELDS) else { return };
        for (_, node, path) in fields {
            if let Some(name) = self.string(node, &path)
                && !is_message_name(name)
            {
                self.error(
                    &path,
                    node,
                    format!("{name:?} is not a message name: use the full name, such as acme.profile.v1.UserProfile"),
                );
            }
        }
    }

    fn shadow(&mut self, node: &Spanned<Node>, path: &str) {
        let Some(fields) = self.map(node, path, SHADOW_FIELDS, &["backend"]) else { return };
        for (field, node, path) in fields {
            match field {
                "backend" => {
                    if let Some(name) = self.string(node, &path)
                        && !is_dns_label(name)
                    {
                        self.error(&path, node, format!("{name:?} is not a plugin name"));
                    }
                }
                "mirror" => self.one_of(node, &path, &["writes", "none"]),
                "compare_reads" => match node.value {
                    Node::Float(f) if (0.0..=1.0).contains(&f) => {}
                    Node::Int(0 | 1) => {}
                    Node::Float(_) | Node::Int(_) => {
                        self.error(&path, node, "a share of reads: a number from 0 to 1, such as 0.05");
                    }
                    ref other => {
                        self.error(&path, node, format!("expected a number from 0 to 1, found {}", other.kind()));
                    }
                },
                _ => self.integer(node, &path, 1, MAX_SHADOW_QUEUE),
            }
        }
    }

    fn quota(&mut self, node: &Spanned<Node>, path: &str) {
        let Some(fields) = self.map(node, path, QUOTA_FIELDS, &[]) else { return };
        for (field, node, path) in fields {
            match field {
                "enforce" => {
                    if !matches!(node.value, Node::Bool(_)) {
                        self.error(&path, node, format!("expected true or false, found {}", node.value.kind()));
                    }
                }
                _ => {
                    self.duration(node, &path, Duration::from_millis(1));
                    if let Node::Str(text) = &node.value
                        && duration::parse(text).is_ok_and(|d| d > MAX_QUOTA_BURST)
                    {
                        self.error(&path, node, format!("{text} is too long; the maximum is 60s"));
                    }
                }
            }
        }
    }

    fn pii(&mut self, node: &Spanned<Node>, path: &str) {
        let Some(fields) = self.map(node, path, PII_FIELDS, &[]) else { return };
        for (field, node, path) in fields {
            match field {
                "encrypt" => {
                    if !matches!(node.value, Node::Bool(_)) {
                        self.error(&path, node, format!("expected true or false, found {}", node.value.kind()));
                    }
                }
                _ => self.policy(node, &path),
            }
        }
    }

    fn policy(&mut self, node: &Spanned<Node>, path: &str) {
        let Node::Map(entries) = &node.value else {
            self.error(
                path,
                node,
                format!("expected a mapping of PII classes to actions, found {}", node.value.kind()),
            );
            return;
        };
        let actions = PiiAction::ALL.map(PiiAction::as_str);
        for (key, value) in entries {
            let entry_path = join(path, &key.value);
            if key.value != "default" && PiiClass::parse(&key.value).is_none() {
                self.error(
                    &entry_path,
                    key,
                    format!("{:?} is not a PII class (classes: {}, or default)", key.value, PiiClass::names()),
                );
            }
            self.one_of(value, &entry_path, &actions);
        }
    }

    fn needs(&mut self, node: &Spanned<Node>, path: &str) {
        let Some(fields) = self.map(node, path, NEEDS_FIELDS, &[]) else { return };
        for (field, node, path) in fields {
            match field {
                "consistency" => self.one_of(node, &path, &["strong", "eventual"]),
                "durability" => self.one_of(node, &path, &["durable", "ephemeral"]),
                "read_rps" | "write_rps" => self.integer(node, &path, 0, MAX_RPS),
                "max_value_bytes" => self.integer(node, &path, 1, 1 << 30),
                "ttl" => self.duration(node, &path, Duration::from_secs(1)),
                "subscribe" => {
                    if !matches!(node.value, Node::Bool(_)) {
                        self.error(&path, node, format!("expected true or false, found {}", node.value.kind()));
                    }
                }
                _ => self.duration(node, &path, Duration::from_secs(60)),
            }
        }
    }

    fn access(&mut self, node: &Spanned<Node>, path: &str) {
        let Some(fields) = self.map(node, path, ACCESS_FIELDS, &[]) else { return };
        for (_, node, path) in fields {
            let Node::Seq(items) = &node.value else {
                self.error(&path, node, format!("expected a list of principals, found {}", node.value.kind()));
                continue;
            };
            if items.len() > MAX_ACCESS_ENTRIES {
                self.error(&path, node, format!("{} entries, over the limit of {MAX_ACCESS_ENTRIES}", items.len()));
            }
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                if let Some(selector) = self.string(item, &item_path)
                    && let Err(why) = check_selector(selector)
                {
                    self.error(&item_path, item, why);
                }
            }
        }
    }
}

/// Checks a principal selector: `*`, `user:ID`, `group:ID`, `scope:ID`,
/// `dns:NAME` (optionally `dns:*.DOMAIN`), or a SPIFFE id
/// `spiffe://TRUST-DOMAIN/PATH` (optionally ending in `/*`).
pub fn check_selector(selector: &str) -> Result<(), String> {
    if selector.len() > MAX_SELECTOR_LEN {
        return Err(format!("longer than {MAX_SELECTOR_LEN} characters"));
    }
    if selector == "*" {
        return Ok(());
    }
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if let Some(rest) = selector.strip_prefix("spiffe://") {
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        let domain_ok = !domain.is_empty()
            && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if domain_ok && (path.is_empty() || visible(path)) && !rest.contains("//") {
            return Ok(());
        }
        return Err(format!("{selector:?} is not a SPIFFE id (spiffe://trust-domain/path)"));
    }
    match selector.split_once(':') {
        Some(("user" | "group" | "scope", id)) if visible(id) => Ok(()),
        Some(("dns", name))
            if visible(name)
                && name.trim_start_matches("*.").bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{selector:?} is not a principal: use user:ID, group:NAME, scope:NAME, dns:HOST, spiffe://DOMAIN/PATH or *"
        )),
    }
}

/// Whether `name` is a fully qualified protobuf message name: dot-separated
/// identifiers, without the leading dot.
pub fn is_message_name(name: &str) -> bool {
    name.len() <= MAX_MESSAGE_NAME
        && name.split('.').all(|part| {
            part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Every structural problem of a parsed document.
pub fn check(root: &Spanned<Node>) -> Vec<SpecError> {
    let mut checker = Checker { errors: Vec::new() };
    checker.document(root);
    checker.related(root);
    checker.errors
}

impl Checker {
    /// Rules between fields: `pii` needs `schema`, and a schema types the
    /// values of keyvalue and timeseries namespaces only.
    fn related(&mut self, root: &Spanned<Node>) {
        let Some(spec) = field(root, "spec") else { return };
        let schema = field(spec, "schema");
        if let Some(pii) = field(spec, "pii")
            && schema.is_none()
        {
            self.error("spec.pii", pii, "spec.pii needs spec.schema: the message whose tagged fields it acts on");
        }
        if let (Some(schema), Some(pattern)) = (schema, field(spec, "pattern"))
            && matches!(&pattern.value, Node::Str(p) if p == "graph")
        {
            self.error(
                "spec.schema",
                schema,
                "a schema types keyvalue values and timeseries payloads; graph properties are not typed",
            );
        }
        self.quota_rates(spec);
    }

    /// An enforced quota needs a rate to enforce, and a rate of 0 would
    /// refuse every call of its class (access lists are the way to that).
    fn quota_rates(&mut self, spec: &Spanned<Node>) {
        let Some(enforce) = field(spec, "quota").and_then(|q| field(q, "enforce")) else { return };
        if !matches!(enforce.value, Node::Bool(true)) {
            return;
        }
        let needs = field(spec, "needs");
        let rates: Vec<_> = ["read_rps", "write_rps"]
            .into_iter()
            .filter_map(|name| Some((name, needs.and_then(|n| field(n, name))?)))
            .collect();
        if rates.is_empty() {
            self.error(
                "spec.quota.enforce",
                enforce,
                "an enforced quota needs spec.needs.read_rps or spec.needs.write_rps (calls per second)",
            );
        }
        for (name, rate) in rates {
            if matches!(rate.value, Node::Int(0)) {
                self.error(
                    &format!("spec.needs.{name}"),
                    rate,
                    "0 would refuse every call of this class under an enforced quota; leave it out for no limit, or use spec.access",
                );
            }
        }
    }
}

fn field<'a>(node: &'a Spanned<Node>, name: &str) -> Option<&'a Spanned<Node>> {
    match &node.value {
        Node::Map(entries) => entries.iter().find(|(k, _)| k.value == name).map(|(_, v)| v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn errors(text: &str) -> Vec<String> {
        check(&parse(text).unwrap()).into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_valid_document_has_no_errors() {
        let text = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: orders, team: shop, labels: {tier: gold}}\nspec:\n  pattern: keyvalue\n  backend: postgres\n  needs: {consistency: strong, durability: durable, read_rps: 5000, write_rps: 500, max_value_bytes: 65536, ttl: 24h}\n  access: {read: ['group:web', 'spiffe://acme/*'], write: ['user:alice'], admin: ['*'], pii: ['dns:*.svc.acme']}\n";
        assert_eq!(errors(text), Vec::<String>::new());
    }

    #[test]
    fn every_error_is_reported_with_its_path_and_line() {
        let text = "apiVersion: prism/v2\nkind: Table\nmetadata:\n  name: Bad_Name\n  colour: red\nspec:\n  pattern: document\n  backnd: redis\n  needs:\n    ttl: forever\n    read_rps: lots\n    write_rps: -1\n    consistency: linearizable\n  access:\n    read: [alice]\n  shadow: {pg: pg}\n";
        let errs = errors(text);
        let expect = [
            "apiVersion (line 1, column 13): expected \"prism/v1\"",
            "kind (line 2, column 7)",
            "metadata.name (line 4, column 9)",
            "metadata.colour (line 5, column 3): unknown field",
            "spec.pattern (line 7, column 12): \"document\" is not one of",
            "spec.backnd (line 8, column 3): unknown field `backnd`; did you mean `backend`?",
            "spec.needs.ttl (line 10, column 10): invalid duration",
            "spec.needs.read_rps (line 11, column 15): expected an integer, found a string",
            "spec.needs.write_rps (line 12, column 16): -1 is out of range",
            "spec.needs.consistency (line 13, column 18)",
            "spec.access.read[0] (line 15, column 12): \"alice\" is not a principal",
            "spec.shadow.backend (line 16, column 11): the required field `backend` is missing",
            "spec.shadow.pg (line 16, column 12): unknown field `pg`",
        ];
        for needle in expect {
            assert!(
                errs.iter().any(|e| e.starts_with(needle) || e.contains(needle)),
                "missing {needle:?} in:\n{}",
                errs.join("\n")
            );
        }
        assert_eq!(errs.len(), expect.len(), "{}", errs.join("\n"));
    }

    #[test]
    fn schema_and_pii() {
        let base = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: a}\nspec:\n";
        let ok = format!(
            "{base}  pattern: keyvalue\n  schema: {{message: acme.profile.v1.UserProfile}}\n  pii: {{policy: {{email: mask, phone: last4, name: initial, ssn: redact, default: hash}}, encrypt: true}}\n"
        );
        assert_eq!(errors(&ok), Vec::<String>::new());
        let cases = [
            ("  pattern: keyvalue\n  schema: {message: 'acme..X'}\n", "spec.schema.message"),
            ("  pattern: keyvalue\n  schema: {message: .acme.X}\n", "not a message name"),
            ("  pattern: keyvalue\n  schema: {}\n", "required field `message`"),
            ("  pattern: keyvalue\n  schema: {message: a.B, type: x}\n", "unknown field `type`"),
            ("  pattern: keyvalue\n  pii: {encrypt: true}\n", "spec.pii needs spec.schema"),
            ("  pattern: graph\n  schema: {message: a.B}\n", "graph properties are not typed"),
            (
                "  pattern: keyvalue\n  schema: {message: a.B}\n  pii: {policy: {mail: mask}}\n",
                "\"mail\" is not a PII class",
            ),
            (
                "  pattern: keyvalue\n  schema: {message: a.B}\n  pii: {policy: {email: blur}}\n",
                "\"blur\" is not one of",
            ),
            ("  pattern: keyvalue\n  schema: {message: a.B}\n  pii: {encrypt: yes please}\n", "expected true or false"),
            ("  pattern: keyvalue\n  schema: {message: a.B}\n  pii: {policy: [mask]}\n", "mapping of PII classes"),
        ];
        for (spec, needle) in cases {
            let errs = errors(&format!("{base}{spec}"));
            assert!(errs.iter().any(|e| e.contains(needle)), "{needle:?} not in {errs:?}");
        }
    }

    #[test]
    fn quota() {
        let base = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: a}\nspec:\n  pattern: keyvalue\n";
        for ok in [
            "  needs: {read_rps: 100}\n  quota: {enforce: true}\n",
            "  needs: {write_rps: 1}\n  quota: {enforce: true, burst: 250ms}\n",
            "  quota: {enforce: false}\n",
            "  needs: {read_rps: 0}\n  quota: {burst: 60s}\n",
            "  quota: {}\n",
        ] {
            assert_eq!(errors(&format!("{base}{ok}")), Vec::<String>::new(), "{ok}");
        }
        let cases = [
            ("  quota: {enforce: true}\n", "spec.quota.enforce (line 6, column 20): an enforced quota needs"),
            (
                "  needs: {read_rps: 0}\n  quota: {enforce: true}\n",
                "spec.needs.read_rps (line 6, column 21): 0 would refuse",
            ),
            (
                "  needs: {read_rps: 5}\n  quota: {enforce: 1}\n",
                "spec.quota.enforce (line 7, column 20): expected true or false",
            ),
            (
                "  needs: {read_rps: 5}\n  quota: {burst: 61s}\n",
                "spec.quota.burst (line 7, column 18): 61s is too long",
            ),
            ("  needs: {read_rps: 5}\n  quota: {burst: 0s}\n", "spec.quota.burst (line 7, column 18): 0s is too short"),
            ("  needs: {read_rps: 5}\n  quota: {burst: 5}\n", "expected a duration with a unit"),
            ("  needs: {read_rps: 5}\n  quota: {brust: 1s}\n", "unknown field `brust`; did you mean `burst`?"),
            ("  quota: [enforce]\n", "spec.quota (line 6, column 10): expected a mapping"),
        ];
        for (spec, needle) in cases {
            let errs = errors(&format!("{base}{spec}"));
            assert!(errs.iter().any(|e| e.contains(needle)), "{needle:?} not in {errs:?}");
        }
    }

    #[test]
    fn shadow() {
        let base = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: a}\nspec:\n  pattern: keyvalue\n";
        for ok in [
            "  shadow: {backend: postgres}\n",
            "  shadow: {backend: pg, mirror: none, compare_reads: 0.05, queue: 100}\n",
            "  shadow: {backend: pg, compare_reads: 1}\n",
        ] {
            assert_eq!(errors(&format!("{base}{ok}")), Vec::<String>::new(), "{ok}");
        }
        let cases = [
            ("  shadow: {}\n", "required field `backend`"),
            ("  shadow: {backend: Postgres}\n", "not a plugin name"),
            ("  shadow: {backend: pg, mirror: reads}\n", "\"reads\" is not one of writes, none"),
            ("  shadow: {backend: pg, compare_reads: 1.5}\n", "a number from 0 to 1"),
            ("  shadow: {backend: pg, compare_reads: -0.1}\n", "a number from 0 to 1"),
            ("  shadow: {backend: pg, compare_reads: half}\n", "expected a number from 0 to 1"),
            ("  shadow: {backend: pg, queue: 0}\n", "out of range"),
            ("  shadow: {backend: pg, queue: 2000000}\n", "out of range"),
            ("  shadow: postgres\n", "expected a mapping"),
        ];
        for (spec, needle) in cases {
            let errs = errors(&format!("{base}{spec}"));
            assert!(errs.iter().any(|e| e.contains(needle)), "{needle:?} not in {errs:?}");
        }
    }

    #[test]
    fn missing_and_mistyped_sections() {
        let errs = errors("apiVersion: prism/v1\nkind: Namespace\nmetadata: orders\n");
        assert!(
            errs.iter().any(|e| e.contains("metadata") && e.contains("expected a mapping, found a string")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("spec") && e.contains("required field `spec` is missing")), "{errs:?}");
        let errs = errors("- a\n- b\n");
        assert!(errs[0].contains("expected a mapping, found a list"), "{errs:?}");
        let errs = errors(
            "apiVersion: prism/v1\nkind: Namespace\nmetadata: {team: x}\nspec: {pattern: keyvalue, needs: {ttl: 60, retention: 10s, subscribe: often}}\n",
        );
        assert!(
            errs.iter().any(|e| e.contains("spec.needs.subscribe") && e.contains("expected true or false")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("metadata.name") && e.contains("missing")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("spec.needs.ttl") && e.contains("such as 60s")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("spec.needs.retention") && e.contains("too short")), "{errs:?}");
    }

    #[test]
    fn selectors() {
        for ok in [
            "*",
            "user:alice",
            "group:web-team",
            "scope:kv.read",
            "spiffe://acme.org/ns/web",
            "spiffe://acme/*",
            "dns:api.acme.com",
            "dns:*.svc",
        ] {
            assert_eq!(check_selector(ok), Ok(()), "{ok}");
        }
        for bad in [
            "alice",
            "user:",
            "user:a b",
            "role:x",
            "spiffe://",
            "spiffe://Acme/x",
            "spiffe://a//b",
            "dns:a_b",
            &"x".repeat(300),
        ] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
    }
}
