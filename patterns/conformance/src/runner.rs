//! The run: starts the plugin, initializes it, and runs every pattern's
//! checks through a [`Recorder`]; the [`Suite`] holds what the checks share
//! (the plugin process, its declared capabilities, the namespaces made).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use bytes::Bytes;
use prism_proto::keyvalue::v1::PutRequest;
use prism_proto::plugin::v1::{
    Capabilities, Consistency, DropNamespaceRequest, Durability, InitializeRequest, InitializeResponse,
    NamespaceSettings, Pattern, PrepareNamespaceRequest, ProtocolVersion,
};
use tonic::{Code, Status};

use crate::{CheckResult, Declared, Outcome, PluginProcess, Report, Subject, graph, keyvalue, lifecycle, timeseries};

pub(crate) type Check = Result<(), String>;

pub(crate) fn show(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Expects a call to fail with `code`.
pub(crate) fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) -> Check {
    match result {
        Err(s) if s.code() == code => Ok(()),
        Err(s) => Err(format!("{what}: expected {code:?}, got {}", show(&s))),
        Ok(v) => Err(format!("{what}: expected {code:?}, got success {v:?}")),
    }
}

/// A key as shown in a failure message: long keys are cut.
pub(crate) fn shown(key: &str) -> String {
    if key.chars().count() <= 40 {
        format!("{key:?}")
    } else {
        format!("{:?}... ({} bytes)", key.chars().take(20).collect::<String>(), key.len())
    }
}

pub(crate) fn put_req(ns: &str, key: &str, value: &[u8]) -> PutRequest {
    PutRequest { namespace: ns.into(), key: key.into(), value: Bytes::copy_from_slice(value), ..Default::default() }
}

/// What the checks share.
pub(crate) struct Suite<'a> {
    pub(crate) subject: &'a Subject,
    pub(crate) plugin: PluginProcess,
    pub(crate) caps: Capabilities,
    pub(crate) run_id: String,
    next: AtomicU32,
    created: Mutex<Vec<String>>,
}

pub(crate) async fn initialize(plugin: &PluginProcess, subject: &Subject) -> Result<InitializeResponse, String> {
    plugin
        .lifecycle()
        .initialize(InitializeRequest {
            protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
            instance: format!("conformance-{}", subject.name),
            config_json: subject.config.to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("Initialize failed: {}", show(&s)))
}

impl Suite<'_> {
    /// A fresh, prepared namespace, named uniquely for this run.
    pub(crate) async fn namespace(&self) -> Result<String, String> {
        self.namespace_of(Pattern::Keyvalue, 0).await
    }

    /// A fresh, prepared namespace of `pattern`, with a retention when
    /// `retention_seconds > 0`.
    pub(crate) async fn namespace_of(&self, pattern: Pattern, retention_seconds: u64) -> Result<String, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("conf-{}-{n}", self.run_id);
        self.prepare_with(&name, pattern, retention_seconds).await?;
        Ok(name)
    }

    pub(crate) async fn prepare(&self, name: &str) -> Check {
        self.prepare_with(name, Pattern::Keyvalue, 0).await
    }

    pub(crate) async fn prepare_with(&self, name: &str, pattern: Pattern, retention_seconds: u64) -> Check {
        let settings = NamespaceSettings {
            name: name.to_owned(),
            pattern: pattern as i32,
            max_value_bytes: self.caps.max_value_bytes,
            retention_seconds,
        };
        self.plugin
            .lifecycle()
            .prepare_namespace(PrepareNamespaceRequest { settings: Some(settings) })
            .await
            .map_err(|s| format!("PrepareNamespace {name}: {}", show(&s)))?;
        let mut created = self.created.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !created.iter().any(|c| c == name) {
            created.push(name.to_owned());
        }
        Ok(())
    }

    pub(crate) async fn cleanup(&self) {
        let names = self.created.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for name in names {
            let _ = self.plugin.lifecycle().drop_namespace(DropNamespaceRequest { namespace: name }).await;
        }
    }
}

/// Collects the results of the checks.
pub(crate) struct Recorder {
    checks: Vec<CheckResult>,
}

impl Recorder {
    /// Runs a check of a declared capability (or of the core contract).
    pub(crate) async fn claimed(
        &mut self,
        id: &'static str,
        capability: &'static str,
        check: impl Future<Output = Check>,
    ) {
        let started = Instant::now();
        let result = check.await;
        let (outcome, detail) = match result {
            Ok(()) => (Outcome::Pass, String::new()),
            Err(e) => (Outcome::Fail, e),
        };
        self.push(id, capability, outcome, detail, started);
    }

    /// Runs the refusal check of an undeclared capability.
    pub(crate) async fn refused(
        &mut self,
        id: &'static str,
        capability: &'static str,
        check: impl Future<Output = Check>,
    ) {
        let started = Instant::now();
        let (outcome, detail) = match check.await {
            Ok(()) => (Outcome::NotClaimed, "not declared; refused with UNIMPLEMENTED".to_owned()),
            Err(e) => (Outcome::Fail, format!("not declared, but not refused cleanly: {e}")),
        };
        self.push(id, capability, outcome, detail, started);
    }

    pub(crate) fn push(
        &mut self,
        id: &'static str,
        capability: &'static str,
        outcome: Outcome,
        detail: String,
        started: Instant,
    ) {
        let millis = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        self.checks.push(CheckResult { id, capability, outcome, detail, millis });
    }
}

/// Runs the whole suite against `subject`.
pub(crate) async fn run(subject: &Subject) -> Result<Report, String> {
    let plugin = PluginProcess::start(&subject.binary).await?;
    let init = initialize(&plugin, subject).await?;
    let caps = init.capabilities.clone().unwrap_or_default();
    if !caps
        .patterns
        .iter()
        .any(|p| [Pattern::Keyvalue as i32, Pattern::Graph as i32, Pattern::Timeseries as i32].contains(p))
    {
        // The lifecycle checks write and read through one of them.
        return Err(format!("{} declares no pattern", subject.name));
    }
    let declared = Declared {
        backend: init.backend.clone(),
        version: init.version.clone(),
        ttl: caps.ttl,
        cas: caps.cas,
        scan: caps.scan,
        durable: caps.durability == Durability::Durable as i32,
        strong: caps.consistency == Consistency::Strong as i32,
        max_key_bytes: caps.max_key_bytes,
        max_value_bytes: caps.max_value_bytes,
        keyvalue: caps.patterns.contains(&(Pattern::Keyvalue as i32)),
        timeseries: caps.patterns.contains(&(Pattern::Timeseries as i32)),
        graph: caps.patterns.contains(&(Pattern::Graph as i32)),
        retention: caps.retention,
        subscribe: caps.subscribe,
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut suite = Suite { subject, plugin, caps, run_id, next: AtomicU32::new(0), created: Mutex::new(Vec::new()) };
    let mut r = Recorder { checks: Vec::new() };

    lifecycle::checks(&mut suite, &mut r).await;
    if declared.keyvalue {
        keyvalue::checks(&suite, &mut r).await;
    } else {
        r.refused("kv.refused", "basic", suite.kv_refused()).await;
    }
    timeseries::checks(&suite, &mut r, &declared).await;
    graph::checks(&suite, &mut r, &declared).await;
    lifecycle::durability(&mut suite, &mut r, &declared).await;

    suite.cleanup().await;
    let subject_name = subject.name.clone();
    suite.plugin.stop().await?;
    Ok(Report { subject: subject_name, declared, checks: r.checks })
}
