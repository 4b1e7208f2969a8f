//! The Prism plugin conformance suite.
//!
//! It starts a plugin binary the way the proxy does, initializes it with a
//! given configuration, and checks the plugin protocol contract against the
//! plugin's real backend: every KeyValue call, versions, TTL expiry,
//! compare-and-set under concurrent writers, ordered and resumable scans,
//! limits, namespace isolation, lifecycle, and durability across a restart;
//! and, for plugins that declare them, the TimeSeries and Graph patterns
//! (idempotent appends, paging, aggregates, retention, neighbors, bounded
//! traversals, cascading deletes).
//!
//! Capabilities are checked both ways: what a plugin declares must work,
//! and what it does not declare must be refused cleanly (UNIMPLEMENTED),
//! never silently ignored. Run it from the command line with
//! `prism-conformance --plugin PATH --config JSON`, or from Rust with [`run`].

/// Fails the check with a message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

// After the macro, so that every check module can use it. One module per
// pattern, plus the lifecycle checks and the runner they share.
mod graph;
mod keyvalue;
mod lifecycle;
mod process;
mod runner;
mod timeseries;

pub use process::{PluginProcess, Subject};

use serde::Serialize;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The declared capability works.
    Pass,
    /// The plugin broke the contract.
    Fail,
    /// The capability is not declared, and the plugin refused it cleanly.
    NotClaimed,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: &'static str,
    /// The capability the check is about (a row of the conformance matrix).
    pub capability: &'static str,
    pub outcome: Outcome,
    /// Why it failed, or what was refused.
    pub detail: String,
    pub millis: u64,
}

/// The capabilities a plugin declared, as reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Declared {
    pub backend: String,
    pub version: String,
    pub ttl: bool,
    pub cas: bool,
    pub scan: bool,
    pub durable: bool,
    pub strong: bool,
    pub max_key_bytes: u64,
    pub max_value_bytes: u64,
    /// The patterns (KeyValue, TimeSeries, Graph), and TimeSeries
    /// retention.
    pub keyvalue: bool,
    pub timeseries: bool,
    pub graph: bool,
    pub retention: bool,
    /// TimeSeries Subscribe.
    pub subscribe: bool,
}

/// The result of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub subject: String,
    pub declared: Declared,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail).collect()
    }

    /// A plain-text table for terminals and test logs.
    pub fn table(&self) -> String {
        let mut out =
            format!("conformance of {} ({} {}):\n", self.subject, self.declared.backend, self.declared.version);
        for c in &self.checks {
            let outcome = match c.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::NotClaimed => "not claimed",
            };
            out.push_str(&format!("  {outcome:<11} {:<12} {:<40} {}\n", c.capability, c.id, c.detail));
        }
        out
    }
}

/// Runs the conformance suite against `subject`.
///
/// Namespaces are named uniquely per run and dropped at the end, so runs
/// can share a real server with other runs and other data.
pub async fn run(subject: &Subject) -> Result<Report, String> {
    runner::run(subject).await
}
