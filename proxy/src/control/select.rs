//! Which plugin serves a namespace: the needs a backend must meet, and the
//! rule table that picks one when the spec names none.
//!
//! A plugin is a *candidate* when its declared capabilities meet every hard
//! need of the namespace (pattern, TTL, consistency, durability, value
//! size). The first rule whose condition matches the needs names the
//! backend kinds it prefers, in order; the first candidate of one of those
//! kinds wins. When no rule matches (or none of its kinds is a candidate),
//! the proxy's `default_backend` is used if it is a candidate, then the
//! embedded kinds, then any candidate. The plan always says which rule
//! decided, so the choice can be checked.

use std::sync::Arc;

use prism_proto::plugin::v1::{Capabilities, Consistency as CapConsistency, Durability as CapDurability};

use crate::namespace::{Consistency, Durability, Needs, PatternKind};
use crate::plugin::Plugin;
use crate::routes::proto_pattern;

/// One row of the selection table.
pub struct Rule {
    /// The condition, as shown in plans and docs.
    pub when: &'static str,
    pub matches: fn(PatternKind, &Needs) -> bool,
    /// Backend kinds, most preferred first.
    pub prefer: &'static [&'static str],
}

/// Read rate from which an ephemeral namespace with a TTL counts as a
/// cache, which Redis serves best.
pub const CACHE_READ_RPS: u64 = 1000;

/// The selection table, evaluated top to bottom.
pub const RULES: &[Rule] = &[
    Rule {
        // A graph database runs traversals in one query; the others walk
        // them level by level. Still only among the plugins that meet the
        // hard needs, so a durable need skips an ephemeral FalkorDB.
        when: "a graph (pattern graph)",
        matches: |p, _| p == PatternKind::Graph,
        prefer: &["falkordb", "postgres", "sqlite", "memstore"],
    },
    Rule {
        // A log the backend can tail natively (a Kafka topic, a JetStream
        // stream) before one kept in memory.
        when: "a followed series (pattern timeseries, needs.subscribe)",
        matches: |p, n| p == PatternKind::Timeseries && n.subscribe == Some(true),
        prefer: &["kafka", "nats", "memstore"],
    },
    Rule {
        when: "durable and strongly consistent",
        matches: |_, n| n.durability == Some(Durability::Durable) && n.consistency == Some(Consistency::Strong),
        prefer: &["postgres", "sqlite"],
    },
    Rule {
        when: "durable",
        matches: |_, n| n.durability == Some(Durability::Durable),
        prefer: &["postgres", "sqlite", "nats"],
    },
    Rule {
        when: "ephemeral cache: a TTL and at least 1000 reads per second",
        matches: |_, n| {
            n.durability != Some(Durability::Durable) && n.ttl.is_some() && n.read_rps.unwrap_or(0) >= CACHE_READ_RPS
        },
        prefer: &["redis", "memstore"],
    },
    Rule {
        when: "ephemeral",
        matches: |_, n| n.durability == Some(Durability::Ephemeral),
        prefer: &["memstore", "redis"],
    },
    Rule {
        when: "strongly consistent",
        matches: |_, n| n.consistency == Some(Consistency::Strong),
        prefer: &["postgres", "sqlite", "memstore"],
    },
];

/// Kinds tried when no rule decides and the default backend is not a
/// candidate: the embedded ones first, as they need no server.
pub const FALLBACK: &[&str] = &["sqlite", "memstore", "postgres", "redis", "nats", "falkordb", "kafka"];

/// A plugin as seen by selection: its name, kind and declared capabilities.
#[derive(Debug, Clone)]
pub struct Offer {
    pub plugin: Arc<Plugin>,
    pub kind: String,
    pub caps: Capabilities,
}

/// Why `caps` cannot serve a namespace with `pattern` and `needs`: one
/// message per unmet need, each with the field it is about.
pub fn unmet(pattern: PatternKind, needs: &Needs, caps: &Capabilities) -> Vec<(&'static str, String)> {
    let mut why = Vec::new();
    if !caps.patterns.contains(&(proto_pattern(pattern) as i32)) {
        why.push(("spec.pattern", format!("does not serve the {} pattern", pattern.as_str())));
    }
    if needs.ttl.is_some() && !caps.ttl {
        why.push(("spec.needs.ttl", "does not support TTL".to_owned()));
    }
    if needs.retention.is_some() && !caps.retention {
        why.push(("spec.needs.retention", "does not enforce a retention".to_owned()));
    }
    if needs.subscribe == Some(true) {
        if pattern != PatternKind::Timeseries {
            why.push(("spec.needs.subscribe", "only TimeSeries series can be followed".to_owned()));
        } else if !caps.subscribe {
            why.push(("spec.needs.subscribe", "cannot follow a series as it grows (Subscribe)".to_owned()));
        }
    }
    if needs.consistency == Some(Consistency::Strong) && caps.consistency != CapConsistency::Strong as i32 {
        why.push(("spec.needs.consistency", "is only eventually consistent".to_owned()));
    }
    if needs.durability == Some(Durability::Durable) && caps.durability != CapDurability::Durable as i32 {
        why.push(("spec.needs.durability", "does not keep data across restarts".to_owned()));
    }
    if let Some(max) = needs.max_value_bytes
        && caps.max_value_bytes > 0
        && max > caps.max_value_bytes
    {
        why.push(("spec.needs.max_value_bytes", format!("accepts values up to {} bytes", caps.max_value_bytes)));
    }
    why
}

/// Picks a plugin for a namespace that names none. Returns the offer and
/// the reason, or why nothing fits.
pub fn choose(
    pattern: PatternKind,
    needs: &Needs,
    offers: &[Offer],
    default_backend: Option<&str>,
) -> Result<(Offer, String), String> {
    let candidates: Vec<&Offer> = offers.iter().filter(|o| unmet(pattern, needs, &o.caps).is_empty()).collect();
    if candidates.is_empty() {
        let why: Vec<String> = offers
            .iter()
            .map(|o| {
                let reasons: Vec<String> = unmet(pattern, needs, &o.caps).into_iter().map(|(_, r)| r).collect();
                format!("{} ({}) {}", o.plugin.name(), o.kind, reasons.join(", "))
            })
            .collect();
        return Err(if why.is_empty() {
            "no plugin has started yet, so none can be checked against the needs".to_owned()
        } else {
            format!("no plugin meets the needs: {}", why.join("; "))
        });
    }
    let by_kind = |kind: &str| candidates.iter().find(|o| o.kind == kind).map(|o| (*o).clone());
    for rule in RULES {
        if !(rule.matches)(pattern, needs) {
            continue;
        }
        if let Some(offer) = rule.prefer.iter().find_map(|k| by_kind(k)) {
            let reason = format!(
                "needs are {}: the selection table prefers {}; chose {} (plugin {})",
                rule.when,
                rule.prefer.join(", "),
                offer.kind,
                offer.plugin.name()
            );
            return Ok((offer, reason));
        }
    }
    if let Some(default) = default_backend
        && let Some(offer) = candidates.iter().find(|o| o.plugin.name() == default)
    {
        let reason = format!("no rule of the selection table decided; the proxy's default_backend is {default}");
        return Ok(((*offer).clone(), reason));
    }
    let offer = FALLBACK
        .iter()
        .find_map(|k| by_kind(k))
        .or_else(|| candidates.first().map(|o| (*o).clone()))
        .ok_or_else(|| "no candidate".to_owned())?;
    let reason = format!(
        "no rule of the selection table decided; chose {} (plugin {}), the first of {} that meets the needs",
        offer.kind,
        offer.plugin.name(),
        FALLBACK.join(", ")
    );
    Ok((offer, reason))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prism_proto::plugin::v1::Pattern;

    use super::*;
    use crate::config::Config;

    fn offer(name: &str, kind: &str, ttl: bool, strong: bool, durable: bool) -> Offer {
        let config = Config::parse(&format!("namespaces_dir: x\nplugins:\n  {name}: {{command: [x]}}\n")).unwrap();
        Offer {
            plugin: Arc::new(Plugin::new(name.to_owned(), config.plugins[name].clone())),
            kind: kind.to_owned(),
            caps: Capabilities {
                patterns: vec![Pattern::Keyvalue as i32],
                ttl,
                cas: true,
                scan: true,
                max_key_bytes: 1024,
                max_value_bytes: 1 << 20,
                consistency: if strong { CapConsistency::Strong } else { CapConsistency::Eventual } as i32,
                durability: if durable { CapDurability::Durable } else { CapDurability::Ephemeral } as i32,
                ..Default::default()
            },
        }
    }

    fn all() -> Vec<Offer> {
        vec![
            offer("mem", "memstore", true, true, false),
            offer("lite", "sqlite", true, true, true),
            offer("pg", "postgres", true, true, true),
            offer("cache", "redis", true, false, false),
            offer("js", "nats", false, true, true),
        ]
    }

    fn pick(needs: Needs, offers: &[Offer], default: Option<&str>) -> String {
        choose(PatternKind::Keyvalue, &needs, offers, default).map(|(o, _)| o.plugin.name().to_owned()).unwrap()
    }

    #[test]
    fn the_table() {
        let durable = Needs { durability: Some(Durability::Durable), ..Default::default() };
        let strong_durable = Needs { consistency: Some(Consistency::Strong), ..durable.clone() };
        let cache = Needs { ttl: Some(Duration::from_secs(60)), read_rps: Some(5000), ..Default::default() };
        let ephemeral = Needs { durability: Some(Durability::Ephemeral), ..Default::default() };
        let strong = Needs { consistency: Some(Consistency::Strong), ..Default::default() };
        assert_eq!(pick(strong_durable.clone(), &all(), None), "pg");
        assert_eq!(pick(durable.clone(), &all(), None), "pg");
        assert_eq!(pick(cache, &all(), None), "cache");
        assert_eq!(pick(ephemeral, &all(), None), "mem");
        assert_eq!(pick(strong, &all(), None), "pg");
        assert_eq!(pick(Needs::default(), &all(), Some("mem")), "mem");
        assert_eq!(pick(Needs::default(), &all(), None), "lite");
        // Without PostgreSQL, the embedded durable store.
        let no_pg: Vec<Offer> = all().into_iter().filter(|o| o.kind != "postgres").collect();
        assert_eq!(pick(strong_durable, &no_pg, None), "lite");
        // Durable but eventually consistent is fine on NATS when nothing else is durable.
        let only_nats: Vec<Offer> = all().into_iter().filter(|o| o.kind == "nats" || o.kind == "memstore").collect();
        assert_eq!(pick(durable, &only_nats, None), "js");
    }

    #[test]
    fn a_graph_goes_to_the_graph_database_when_it_meets_the_needs() {
        let graph = |name: &str, kind: &str, durable: bool| {
            let mut o = offer(name, kind, false, true, durable);
            o.caps.patterns = vec![Pattern::Graph as i32];
            o
        };
        let offers =
            vec![graph("pg", "postgres", true), graph("fdb", "falkordb", false), graph("mem", "memstore", false)];
        let (o, reason) = choose(PatternKind::Graph, &Needs::default(), &offers, Some("mem")).unwrap();
        assert_eq!(o.plugin.name(), "fdb");
        assert!(reason.contains("a graph (pattern graph)"), "{reason}");
        // A durable need skips an ephemeral FalkorDB.
        let durable = Needs { durability: Some(Durability::Durable), ..Default::default() };
        let (o, _) = choose(PatternKind::Graph, &durable, &offers, None).unwrap();
        assert_eq!(o.plugin.name(), "pg");
        // KeyValue namespaces are not affected.
        assert_eq!(pick(Needs::default(), &all(), None), "lite");
    }

    #[test]
    fn a_followed_series_goes_to_a_backend_that_can_follow_it() {
        let ts = |name: &str, kind: &str, durable: bool, subscribe: bool| {
            let mut o = offer(name, kind, false, true, durable);
            o.caps.patterns = vec![Pattern::Timeseries as i32];
            o.caps.subscribe = subscribe;
            o
        };
        let offers = vec![ts("lite", "sqlite", true, false), ts("mem", "memstore", false, true)];
        let follow = Needs { subscribe: Some(true), ..Default::default() };
        let (o, reason) = choose(PatternKind::Timeseries, &follow, &offers, Some("lite")).unwrap();
        assert_eq!(o.plugin.name(), "mem");
        assert!(reason.contains("a followed series"), "{reason}");
        // Without it, the default backend.
        let (o, _) = choose(PatternKind::Timeseries, &Needs::default(), &offers, Some("lite")).unwrap();
        assert_eq!(o.plugin.name(), "lite");
        // A hard need: nothing else will do, and the error says why.
        let durable = Needs { durability: Some(Durability::Durable), ..follow.clone() };
        let err = choose(PatternKind::Timeseries, &durable, &offers, None).unwrap_err();
        assert!(err.contains("lite (sqlite) cannot follow a series"), "{err}");
        let err = choose(PatternKind::Keyvalue, &follow, &all(), None).unwrap_err();
        assert!(err.contains("only TimeSeries series can be followed"), "{err}");
    }

    #[test]
    fn reasons_name_the_rule() {
        let needs = Needs {
            durability: Some(Durability::Durable),
            consistency: Some(Consistency::Strong),
            ..Default::default()
        };
        let (_, reason) = choose(PatternKind::Keyvalue, &needs, &all(), None).unwrap();
        assert!(reason.contains("durable and strongly consistent") && reason.contains("postgres"), "{reason}");
    }

    #[test]
    fn impossible_needs_say_why_each_plugin_fails() {
        let needs = Needs {
            durability: Some(Durability::Durable),
            ttl: Some(Duration::from_secs(60)),
            consistency: Some(Consistency::Strong),
            ..Default::default()
        };
        let offers = vec![offer("cache", "redis", true, false, false), offer("js", "nats", false, true, true)];
        let err = choose(PatternKind::Keyvalue, &needs, &offers, None).unwrap_err();
        assert!(err.contains("cache (redis) is only eventually consistent, does not keep data"), "{err}");
        assert!(err.contains("js (nats) does not support TTL"), "{err}");
        let err = choose(PatternKind::Graph, &Needs::default(), &all(), None).unwrap_err();
        assert!(err.contains("does not serve the graph pattern"), "{err}");
    }
}
