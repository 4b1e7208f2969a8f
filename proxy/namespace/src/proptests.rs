//! Property tests of the parsers that read what teams write: namespace
//! documents and durations. `PROPTEST_CASES=100000 cargo test -p
//! prism-namespace proptests` runs them longer.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde::Serialize;

use crate::yaml::{self, SpecError};
use crate::{NamespaceDoc, PatternKind, duration};

/// A YAML value to write out with serde-saphyr.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum Y {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Y>),
    Map(BTreeMap<String, Y>),
}

fn map(entries: impl IntoIterator<Item = (&'static str, Y)>) -> Y {
    Y::Map(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn s(text: impl Into<String>) -> Y {
    Y::Str(text.into())
}

/// Words a namespace document is made of, valid or nearly so, so that
/// generated documents reach the deep checks and not only "unknown field".
const WORDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "team",
    "labels",
    "pattern",
    "backend",
    "needs",
    "access",
    "schema",
    "pii",
    "shadow",
    "quota",
    "enforce",
    "burst",
    "consistency",
    "durability",
    "read_rps",
    "write_rps",
    "max_value_bytes",
    "ttl",
    "retention",
    "read",
    "write",
    "admin",
    "message",
    "policy",
    "encrypt",
    "mirror",
    "compare_reads",
    "queue",
    "prism/v1",
    "Namespace",
    "keyvalue",
    "timeseries",
    "graph",
    "strong",
    "eventual",
    "durable",
    "ephemeral",
    "writes",
    "none",
    "email",
    "default",
    "mask",
    "hash",
    "redact",
    "memstore",
    "redis",
    "1h",
    "30d",
    "10s",
    "0s",
    "group:web",
    "user:1",
    "*",
    "acme.v1.Profile",
    "",
    "yes",
    "null",
    "~",
    "1",
    "-1",
    "0.5",
    "3650d",
    "3651d",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn scalar() -> impl Strategy<Value = Y> {
    prop_oneof![
        Just(Y::Null),
        any::<bool>().prop_map(Y::Bool),
        prop_oneof![any::<i64>(), -2i64..70_000].prop_map(Y::Int),
        prop_oneof![any::<f64>(), 0.0f64..=1.0].prop_map(Y::Float),
        word().prop_map(Y::Str),
    ]
}

/// Any YAML value a few levels deep, with keys mostly from [`WORDS`].
fn value() -> impl Strategy<Value = Y> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Y::Seq),
            prop::collection::btree_map(word(), inner, 0..6).prop_map(Y::Map),
        ]
    })
}

/// A document shaped like a namespace, each part possibly anything.
fn document_like() -> impl Strategy<Value = Y> {
    let part = |good: Y| prop_oneof![3 => Just(good), 1 => value()];
    (
        part(s("prism/v1")),
        part(s("Namespace")),
        part(map([("name", s("demo"))])),
        part(s("keyvalue")),
        prop::collection::btree_map(word(), value(), 0..5),
    )
        .prop_map(|(api, kind, metadata, pattern, mut spec)| {
            spec.insert("pattern".to_owned(), pattern);
            map([("apiVersion", api), ("kind", kind), ("metadata", metadata), ("spec", Y::Map(spec))])
        })
}

/// What a refused document must satisfy: at least one error, each saying
/// something, none the "internal" disagreement between the structural
/// checks and the typed form.
fn check_refusal(text: &str, errors: &[SpecError]) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty(), "refused without a reason: {text:?}");
    for e in errors {
        prop_assert!(!e.message.trim().is_empty(), "an error without a message for {text:?}: {e:?}");
        prop_assert!(!e.message.starts_with("internal"), "the checks and the typed form disagree on {text:?}: {e}");
    }
    Ok(())
}

/// A valid document, as the fields it sets.
#[derive(Debug, Clone)]
struct Valid {
    name: String,
    team: Option<String>,
    labels: BTreeMap<String, String>,
    pattern: PatternKind,
    backend: Option<String>,
    read_rps: Option<u64>,
    ttl: Option<u64>,
    retention: Option<u64>,
    read: Vec<String>,
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,20}[a-z0-9])?"
}

fn valid() -> impl Strategy<Value = Valid> {
    (
        dns_label(),
        prop::option::of("[ -~]{1,63}"),
        prop::collection::btree_map("[a-zA-Z0-9._/-]{1,20}", "[ -~]{0,40}", 0..4),
        prop::sample::select(&[PatternKind::Keyvalue, PatternKind::Timeseries, PatternKind::Graph][..]),
        prop::option::of(dns_label()),
        prop::option::of(0u64..=10_000_000),
        prop::option::of(1u64..=86_400 * 3650),
        prop::option::of(60u64..=86_400 * 3650),
        prop::collection::vec(prop_oneof![Just("*".to_owned()), "(user|group|scope):[!-~]{1,20}"], 0..4),
    )
        .prop_map(|(name, team, labels, pattern, backend, read_rps, ttl, retention, read)| Valid {
            name,
            team,
            labels,
            pattern,
            backend,
            read_rps,
            ttl,
            // Only timeseries namespaces keep a retention.
            retention: retention.filter(|_| pattern == PatternKind::Timeseries),
            read,
        })
}

impl Valid {
    fn to_yaml(&self) -> Y {
        let mut metadata = BTreeMap::from([("name".to_owned(), s(&self.name))]);
        if let Some(team) = &self.team {
            metadata.insert("team".to_owned(), s(team));
        }
        if !self.labels.is_empty() {
            metadata.insert("labels".to_owned(), Y::Map(self.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect()));
        }
        let mut needs = BTreeMap::new();
        if let Some(rps) = self.read_rps {
            needs.insert("read_rps".to_owned(), Y::Int(i64::try_from(rps).unwrap()));
        }
        if let Some(ttl) = self.ttl {
            needs.insert("ttl".to_owned(), s(format!("{ttl}s")));
        }
        if let Some(retention) = self.retention {
            needs.insert(
                "retention".to_owned(),
                s(humantime::format_duration(Duration::from_secs(retention)).to_string()),
            );
        }
        let mut spec = BTreeMap::from([("pattern".to_owned(), s(self.pattern.as_str()))]);
        if let Some(backend) = &self.backend {
            spec.insert("backend".to_owned(), s(backend));
        }
        if !needs.is_empty() {
            spec.insert("needs".to_owned(), Y::Map(needs));
        }
        if !self.read.is_empty() {
            spec.insert("access".to_owned(), map([("read", Y::Seq(self.read.iter().map(s).collect()))]));
        }
        map([
            ("apiVersion", s("prism/v1")),
            ("kind", s("Namespace")),
            ("metadata", Y::Map(metadata)),
            ("spec", Y::Map(spec)),
        ])
    }

    fn check(&self, doc: &NamespaceDoc) -> Result<(), TestCaseError> {
        prop_assert_eq!(&doc.metadata.name, &self.name);
        prop_assert_eq!(&doc.metadata.team, &self.team);
        prop_assert_eq!(&doc.metadata.labels, &self.labels);
        prop_assert_eq!(doc.spec.pattern, self.pattern);
        prop_assert_eq!(&doc.spec.backend, &self.backend);
        prop_assert_eq!(doc.spec.needs.read_rps, self.read_rps);
        prop_assert_eq!(doc.spec.needs.ttl, self.ttl.map(Duration::from_secs));
        prop_assert_eq!(doc.spec.needs.retention, self.retention.map(Duration::from_secs));
        let read = doc.spec.access.as_ref().map(|a| a.read.clone()).unwrap_or_default();
        prop_assert_eq!(read, self.read.clone());
        Ok(())
    }
}

/// Units humantime reads, with their length.
const UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("sec", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("hours", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("days", 86_400_000_000_000),
    ("w", 7 * 86_400_000_000_000),
];

proptest! {
    #[test]
    fn yaml_never_panics_and_errors_say_something(text in any::<String>()) {
        if let Err(e) = yaml::parse(&text) {
            prop_assert!(!e.message.trim().is_empty(), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn any_text_is_a_document_or_refused_with_reasons(text in any::<String>()) {
        if let Err(errors) = NamespaceDoc::parse(&text) {
            check_refusal(&text, &errors)?;
        }
    }

    #[test]
    fn any_yaml_is_a_document_or_refused_with_located_reasons(doc in document_like()) {
        let text = serde_saphyr::to_string(&doc).unwrap();
        if let Err(errors) = NamespaceDoc::parse(&text) {
            check_refusal(&text, &errors)?;
            // The text is YAML, so every problem is somewhere in it.
            for e in &errors {
                prop_assert!(e.line > 0, "unlocated error for {text:?}: {e:?}");
            }
        }
    }

    #[test]
    fn valid_documents_round_trip(valid in valid()) {
        let text = serde_saphyr::to_string(&valid.to_yaml()).unwrap();
        let doc = NamespaceDoc::parse(&text);
        prop_assert!(doc.is_ok(), "{text}\n{:?}", doc.err());
        valid.check(&doc.unwrap())?;
    }

    #[test]
    fn durations_never_panic(text in any::<String>()) {
        if let Err(e) = duration::parse(&text) {
            prop_assert!(e.contains("write it like"), "{text:?}: {e}");
        }
    }

    #[test]
    fn durations_read_their_number_and_unit(
        n in 0u64..1_000_000,
        unit in prop::sample::select(UNITS),
        space in prop::sample::select(&["", " "][..]),
        pad in prop::sample::select(&["", " ", "\t"][..]),
    ) {
        let text = format!("{pad}{n}{space}{}{pad}", unit.0);
        let nanos = u128::from(n) * u128::from(unit.1);
        let expected = Duration::new(
            u64::try_from(nanos / 1_000_000_000).unwrap(),
            u32::try_from(nanos % 1_000_000_000).unwrap(),
        );
        prop_assert_eq!(duration::parse(&text), Ok(expected), "{:?}", text);
    }

    #[test]
    fn formatted_durations_read_back(secs in 0u64..=86_400 * 36_500, nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos);
        let text = humantime::format_duration(d).to_string();
        prop_assert_eq!(duration::parse(&text), Ok(d), "{}", text);
    }
}
