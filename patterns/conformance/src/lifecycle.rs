//! The lifecycle checks (Initialize, Health, namespaces) and durability
//! across a restart of the plugin process.

use std::time::Instant;

use bytes::Bytes;
use prism_proto::graph::v1::{GetVertexRequest, PutVertexRequest};
use prism_proto::keyvalue::v1::GetRequest;
use prism_proto::plugin::v1::{
    DescribeNamespaceRequest, DropNamespaceRequest, HealthRequest, InitializeRequest, Pattern, ProtocolVersion,
    health_response,
};
use prism_proto::timeseries::v1::{AppendRequest, Event, QueryRequest};
use tonic::{Code, Status};

use crate::runner::{Check, Recorder, Suite, expect_code, initialize, put_req, show};
use crate::{Declared, Outcome, PluginProcess};

/// Runs the lifecycle checks, each as declared or refused.
pub(crate) async fn checks(suite: &mut Suite<'_>, r: &mut Recorder) {
    r.claimed("lifecycle.health", "lifecycle", suite.health()).await;
    r.claimed("lifecycle.initialize_again", "lifecycle", suite.initialize_again()).await;
    r.claimed("lifecycle.protocol_version", "lifecycle", suite.protocol_version()).await;
    r.claimed("lifecycle.unprepared_namespace", "lifecycle", suite.unprepared_namespace()).await;
    r.claimed("lifecycle.drop_namespace", "lifecycle", suite.drop_namespace()).await;
    r.claimed("lifecycle.describe_namespace", "lifecycle", suite.describe_namespace()).await;
}

/// Writes, restarts the plugin and reads back, when the plugin declares
/// durable storage.
pub(crate) async fn durability(suite: &mut Suite<'_>, r: &mut Recorder, declared: &Declared) {
    if declared.durable {
        let started = Instant::now();
        let result = suite.restart_durability().await;
        let (outcome, detail) = match result {
            Ok(()) => (Outcome::Pass, String::new()),
            Err(e) => (Outcome::Fail, e),
        };
        r.push("durability.restart", "durability", outcome, detail, started);
    } else {
        r.push(
            "durability.restart",
            "durability",
            Outcome::NotClaimed,
            "declared ephemeral; data is not expected to survive a restart".to_owned(),
            Instant::now(),
        );
    }
}

impl Suite<'_> {
    /// Whether the plugin serves KeyValue; the lifecycle checks write and
    /// read a key then, else a vertex, else an event (the runner refuses a
    /// plugin with no pattern).
    fn kv(&self) -> bool {
        self.caps.patterns.contains(&(Pattern::Keyvalue as i32))
    }

    fn probe_pattern(&self) -> Pattern {
        if self.kv() {
            Pattern::Keyvalue
        } else if self.caps.patterns.contains(&(Pattern::Graph as i32)) {
            Pattern::Graph
        } else {
            Pattern::Timeseries
        }
    }

    /// Writes one item (key, vertex or event `k`) in `ns`.
    async fn probe_write(&self, ns: &str) -> Check {
        match self.probe_pattern() {
            Pattern::Graph => {
                let vertex =
                    PutVertexRequest { namespace: ns.into(), id: "k".into(), label: "v".into(), ..Default::default() };
                self.plugin.graph().put_vertex(vertex).await.map(drop).map_err(|s| format!("PutVertex: {}", show(&s)))
            }
            Pattern::Timeseries => {
                let event = Event { timestamp: 1_700_000_000_000, event_id: "k".into(), ..Default::default() };
                let append = AppendRequest { namespace: ns.into(), series: "k".into(), events: vec![event] };
                self.plugin.timeseries().append(append).await.map(drop).map_err(|s| format!("Append: {}", show(&s)))
            }
            _ => self.put(ns, "k", b"v").await.map(drop),
        }
    }

    /// Whether item `k` is in `ns`.
    async fn probe_read(&self, ns: &str) -> Result<bool, Status> {
        match self.probe_pattern() {
            Pattern::Graph => {
                let r =
                    self.plugin.graph().get_vertex(GetVertexRequest { namespace: ns.into(), id: "k".into() }).await?;
                Ok(r.into_inner().found)
            }
            Pattern::Timeseries => {
                let query = QueryRequest {
                    namespace: ns.into(),
                    series: "k".into(),
                    start: 0,
                    end: i64::MAX,
                    limit: 1,
                    ..Default::default()
                };
                Ok(!self.plugin.timeseries().query(query).await?.into_inner().events.is_empty())
            }
            _ => {
                let r = self.plugin.keyvalue().get(GetRequest { namespace: ns.into(), key: "k".into() }).await?;
                Ok(r.into_inner().found)
            }
        }
    }

    async fn probe_namespace(&self) -> Result<String, String> {
        self.namespace_of(self.probe_pattern(), 0).await
    }

    async fn health(&self) -> Check {
        let r = self.plugin.lifecycle().health(HealthRequest {}).await.map_err(|s| show(&s))?.into_inner();
        ensure!(r.status == health_response::Status::Serving as i32, "Health is {} ({})", r.status, r.message);
        Ok(())
    }

    async fn initialize_again(&self) -> Check {
        let again = initialize(&self.plugin, self.subject).await?;
        ensure!(again.capabilities.as_ref() == Some(&self.caps), "a repeated Initialize changed the capabilities");
        let mut other = self.subject.config.clone();
        if let Some(map) = other.as_object_mut() {
            map.insert("conformance_probe".into(), true.into());
        }
        let result = self
            .plugin
            .lifecycle()
            .initialize(InitializeRequest {
                protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
                instance: "conformance".into(),
                config_json: other.to_string(),
            })
            .await;
        expect_code(result, Code::FailedPrecondition, "Initialize with another config")
    }

    async fn protocol_version(&self) -> Check {
        let result = self
            .plugin
            .lifecycle()
            .initialize(InitializeRequest {
                protocol_version: 2,
                instance: "conformance".into(),
                config_json: self.subject.config.to_string(),
            })
            .await;
        expect_code(result, Code::FailedPrecondition, "Initialize with protocol version 2")
    }

    async fn unprepared_namespace(&self) -> Check {
        let name = format!("conf-{}-never-prepared", self.run_id);
        expect_code(self.probe_read(&name).await, Code::FailedPrecondition, "a read in a namespace never prepared")?;
        match self.probe_pattern() {
            Pattern::Graph => {
                let vertex = PutVertexRequest { namespace: name, id: "k".into(), ..Default::default() };
                let result = self.plugin.graph().put_vertex(vertex).await;
                expect_code(result, Code::FailedPrecondition, "PutVertex in a namespace never prepared")
            }
            Pattern::Timeseries => {
                let event = Event { timestamp: 1, event_id: "k".into(), ..Default::default() };
                let append = AppendRequest { namespace: name, series: "k".into(), events: vec![event] };
                let result = self.plugin.timeseries().append(append).await;
                expect_code(result, Code::FailedPrecondition, "Append in a namespace never prepared")
            }
            _ => {
                let result = self.plugin.keyvalue().put(put_req(&name, "k", b"v")).await;
                expect_code(result, Code::FailedPrecondition, "Put in a namespace never prepared")
            }
        }
    }

    async fn drop_namespace(&self) -> Check {
        let ns = self.probe_namespace().await?;
        self.probe_write(&ns).await?;
        self.plugin
            .lifecycle()
            .drop_namespace(DropNamespaceRequest { namespace: ns.clone() })
            .await
            .map_err(|s| format!("DropNamespace: {}", show(&s)))?;
        expect_code(self.probe_read(&ns).await, Code::FailedPrecondition, "a read after DropNamespace")?;
        self.prepare_with(&ns, self.probe_pattern(), 0).await?;
        let survived = self.probe_read(&ns).await.map_err(|s| format!("a read after preparing again: {}", show(&s)))?;
        ensure!(!survived, "data survived DropNamespace");
        // Dropping twice is fine.
        for _ in 0..2 {
            self.plugin
                .lifecycle()
                .drop_namespace(DropNamespaceRequest { namespace: ns.clone() })
                .await
                .map_err(|s| format!("DropNamespace again: {}", show(&s)))?;
        }
        Ok(())
    }

    /// DescribeNamespace must say whether a namespace holds data: the
    /// proxy refuses to delete (and orphan) one that does.
    async fn describe_namespace(&self) -> Check {
        let ns = self.probe_namespace().await?;
        let holds = |ns: String| async move {
            self.plugin
                .lifecycle()
                .describe_namespace(DescribeNamespaceRequest { namespace: ns })
                .await
                .map(|r| r.into_inner().holds_data)
                .map_err(|s| format!("DescribeNamespace: {}", show(&s)))
        };
        ensure!(!holds(ns.clone()).await?, "a fresh namespace is said to hold data");
        self.probe_write(&ns).await?;
        ensure!(holds(ns.clone()).await?, "a namespace with data is said to hold none");
        let other = self.probe_namespace().await?;
        ensure!(!holds(other).await?, "another namespace's key counts as data here");
        // After deleting every key the answer may stay true: a backend that
        // keeps history (NATS) still stores the old values.
        Ok(())
    }

    /// Writes, restarts the plugin process, and reads back. Replaces
    /// `self.plugin` with the new process.
    async fn restart_durability(&mut self) -> Check {
        if !self.kv() {
            let patterns = self.patterns_before_restart().await?;
            let old = std::mem::replace(&mut self.plugin, PluginProcess::start(&self.subject.binary).await?);
            old.stop().await?;
            initialize(&self.plugin, self.subject).await?;
            return self.patterns_after_restart(patterns).await;
        }
        let ns = self.namespace().await?;
        let mut written = Vec::new();
        for i in 0..5 {
            let key = format!("durable/{i}");
            written.push((key.clone(), self.put(&ns, &key, format!("value-{i}").as_bytes()).await?));
        }
        let newest = written.iter().map(|(_, v)| *v).max().unwrap_or(0);
        let patterns = self.patterns_before_restart().await?;
        let old = std::mem::replace(&mut self.plugin, PluginProcess::start(&self.subject.binary).await?);
        old.stop().await?;
        initialize(&self.plugin, self.subject).await?;
        self.prepare(&ns).await?;
        for (i, (key, version)) in written.iter().enumerate() {
            let got = self.get(&ns, key).await?;
            let want = (Bytes::from(format!("value-{i}")), *version);
            ensure!(got.as_ref() == Some(&want), "after a restart {key:?} reads {got:?}, expected {want:?}");
        }
        let after = self.put(&ns, "durable/new", b"v").await?;
        ensure!(after > newest, "after a restart a write got version {after}, not above {newest}: versions reused");
        self.patterns_after_restart(patterns).await
    }
}
