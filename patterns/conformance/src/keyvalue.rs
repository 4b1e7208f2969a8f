//! The KeyValue checks, the lifecycle checks, and the run (the TimeSeries
//! and Graph checks are in submodules).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchPutRequest, DeleteRequest, GetRequest, PutItem, PutRequest, ScanRequest,
};
use prism_proto::plugin::v1::{
    Capabilities, Consistency, DescribeNamespaceRequest, DropNamespaceRequest, Durability, HealthRequest,
    InitializeRequest, InitializeResponse, NamespaceSettings, Pattern, PrepareNamespaceRequest, ProtocolVersion,
    health_response,
};
use tonic::{Code, Status};

use crate::{CheckResult, Declared, Outcome, PluginProcess, Report, Subject};

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

// After the macro, so that the submodules can use it.
mod graph;
mod timeseries;

fn show(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Expects a call to fail with `code`.
fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) -> Check {
    match result {
        Err(s) if s.code() == code => Ok(()),
        Err(s) => Err(format!("{what}: expected {code:?}, got {}", show(&s))),
        Ok(v) => Err(format!("{what}: expected {code:?}, got success {v:?}")),
    }
}

/// A key as shown in a failure message: long keys are cut.
fn shown(key: &str) -> String {
    if key.chars().count() <= 40 {
        format!("{key:?}")
    } else {
        format!("{:?}... ({} bytes)", key.chars().take(20).collect::<String>(), key.len())
    }
}

fn put_req(ns: &str, key: &str, value: &[u8]) -> PutRequest {
    PutRequest { namespace: ns.into(), key: key.into(), value: Bytes::copy_from_slice(value), ..Default::default() }
}

struct Suite<'a> {
    subject: &'a Subject,
    plugin: PluginProcess,
    caps: Capabilities,
    run_id: String,
    next: AtomicU32,
    created: Mutex<Vec<String>>,
}

async fn initialize(plugin: &PluginProcess, subject: &Subject) -> Result<InitializeResponse, String> {
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
    async fn namespace(&self) -> Result<String, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("conf-{}-{n}", self.run_id);
        self.prepare(&name).await?;
        Ok(name)
    }

    async fn prepare(&self, name: &str) -> Check {
        self.prepare_with(name, Pattern::Keyvalue, 0).await
    }

    async fn prepare_with(&self, name: &str, pattern: Pattern, retention_seconds: u64) -> Check {
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

    async fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<u64, String> {
        self.plugin
            .keyvalue()
            .put(put_req(ns, key, value))
            .await
            .map(|r| r.into_inner().version)
            .map_err(|s| format!("Put {}: {}", shown(key), show(&s)))
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<(Bytes, u64)>, String> {
        let r = self
            .plugin
            .keyvalue()
            .get(GetRequest { namespace: ns.into(), key: key.into() })
            .await
            .map_err(|s| format!("Get {}: {}", shown(key), show(&s)))?
            .into_inner();
        Ok(r.found.then_some((r.value, r.version)))
    }

    async fn delete(&self, ns: &str, key: &str, if_version: Option<u64>) -> Result<bool, Status> {
        self.plugin
            .keyvalue()
            .delete(DeleteRequest { namespace: ns.into(), key: key.into(), if_version })
            .await
            .map(|r| r.into_inner().deleted)
    }

    /// Every key under `prefix`, following page tokens.
    async fn scan_keys(&self, ns: &str, prefix: &str, page_size: u32) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        let mut token = String::new();
        for _ in 0..10_000 {
            let page = self
                .plugin
                .keyvalue()
                .scan(ScanRequest { namespace: ns.into(), prefix: prefix.into(), page_size, page_token: token })
                .await
                .map_err(|s| format!("Scan {prefix:?}: {}", show(&s)))?
                .into_inner();
            ensure!(
                page.items.len() <= page_size as usize,
                "a page of {} items for page_size {page_size}",
                page.items.len()
            );
            keys.extend(page.items.into_iter().map(|e| e.key));
            if page.next_page_token.is_empty() {
                return Ok(keys);
            }
            token = page.next_page_token;
        }
        Err("scan did not end after 10000 pages".to_owned())
    }

    // === lifecycle ===

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
        let result = self.plugin.keyvalue().get(GetRequest { namespace: name.clone(), key: "k".into() }).await;
        expect_code(result, Code::FailedPrecondition, "Get in a namespace never prepared")?;
        let result = self.plugin.keyvalue().put(put_req(&name, "k", b"v")).await;
        expect_code(result, Code::FailedPrecondition, "Put in a namespace never prepared")
    }

    async fn drop_namespace(&self) -> Check {
        let ns = self.namespace().await?;
        self.put(&ns, "k", b"v").await?;
        self.plugin
            .lifecycle()
            .drop_namespace(DropNamespaceRequest { namespace: ns.clone() })
            .await
            .map_err(|s| format!("DropNamespace: {}", show(&s)))?;
        let result = self.plugin.keyvalue().get(GetRequest { namespace: ns.clone(), key: "k".into() }).await;
        expect_code(result, Code::FailedPrecondition, "Get after DropNamespace")?;
        self.prepare(&ns).await?;
        ensure!(self.get(&ns, "k").await?.is_none(), "data survived DropNamespace");
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
        let ns = self.namespace().await?;
        let holds = |ns: String| async move {
            self.plugin
                .lifecycle()
                .describe_namespace(DescribeNamespaceRequest { namespace: ns })
                .await
                .map(|r| r.into_inner().holds_data)
                .map_err(|s| format!("DescribeNamespace: {}", show(&s)))
        };
        ensure!(!holds(ns.clone()).await?, "a fresh namespace is said to hold data");
        self.put(&ns, "k", b"v").await?;
        ensure!(holds(ns.clone()).await?, "a namespace with a key is said to hold no data");
        let other = self.namespace().await?;
        ensure!(!holds(other).await?, "another namespace's key counts as data here");
        // After deleting every key the answer may stay true: a backend that
        // keeps history (NATS) still stores the old values.
        Ok(())
    }

    // === basic calls ===

    async fn put_get(&self) -> Check {
        let ns = self.namespace().await?;
        let v = self.put(&ns, "user/1", b"alice").await?;
        ensure!(v > 0, "Put returned version 0");
        let got = self.get(&ns, "user/1").await?;
        ensure!(got == Some((Bytes::from_static(b"alice"), v)), "Get returned {got:?}, wrote version {v}");
        let key = "ключ/é/😀 with spaces";
        let v = self.put(&ns, key, b"unicode").await?;
        ensure!(
            self.get(&ns, key).await? == Some((Bytes::from_static(b"unicode"), v)),
            "unicode key did not round trip"
        );
        Ok(())
    }

    async fn missing(&self) -> Check {
        let ns = self.namespace().await?;
        ensure!(self.get(&ns, "nothing").await?.is_none(), "Get of a missing key found something");
        let deleted = self.delete(&ns, "nothing", None).await.map_err(|s| show(&s))?;
        ensure!(!deleted, "Delete of a missing key answered deleted=true");
        Ok(())
    }

    async fn overwrite(&self) -> Check {
        let ns = self.namespace().await?;
        let v1 = self.put(&ns, "k", b"one").await?;
        let v2 = self.put(&ns, "k", b"two").await?;
        ensure!(v2 > v1, "overwrite got version {v2}, not above {v1}");
        ensure!(self.get(&ns, "k").await? == Some((Bytes::from_static(b"two"), v2)), "overwrite not visible");
        Ok(())
    }

    async fn delete_existing(&self) -> Check {
        let ns = self.namespace().await?;
        self.put(&ns, "k", b"v").await?;
        ensure!(self.delete(&ns, "k", None).await.map_err(|s| show(&s))?, "Delete of an existing key answered false");
        ensure!(self.get(&ns, "k").await?.is_none(), "deleted key still readable");
        if self.caps.scan {
            ensure!(self.scan_keys(&ns, "", 10).await?.is_empty(), "deleted key still scanned");
        }
        Ok(())
    }

    async fn versions_never_reused(&self) -> Check {
        let ns = self.namespace().await?;
        let mut versions = Vec::new();
        for i in 0..10 {
            versions.push(self.put(&ns, &format!("k{}", i % 3), b"v").await?);
        }
        ensure!(versions.windows(2).all(|w| w[0] < w[1]), "versions do not grow with each write: {versions:?}");
        let before = self.put(&ns, "again", b"v").await?;
        self.delete(&ns, "again", None).await.map_err(|s| show(&s))?;
        let after = self.put(&ns, "again", b"v").await?;
        ensure!(after > before, "a key written again after a delete got version {after}, not above {before}");
        Ok(())
    }

    async fn batch(&self) -> Check {
        let ns = self.namespace().await?;
        let items: Vec<PutItem> = (0..10)
            .map(|i| PutItem { key: format!("b{i}"), value: Bytes::from(vec![i as u8 + 1; i + 1]), ttl_seconds: 0 })
            .collect();
        let versions = self
            .plugin
            .keyvalue()
            .batch_put(BatchPutRequest { namespace: ns.clone(), items })
            .await
            .map_err(|s| format!("BatchPut: {}", show(&s)))?
            .into_inner()
            .versions;
        ensure!(versions.len() == 10, "BatchPut returned {} versions for 10 items", versions.len());
        ensure!(versions.windows(2).all(|w| w[0] < w[1]), "batch versions not growing: {versions:?}");
        let keys: Vec<String> = ["b3", "missing", "b0", "b3"].into_iter().map(String::from).collect();
        let items = self
            .plugin
            .keyvalue()
            .batch_get(BatchGetRequest { namespace: ns.clone(), keys: keys.clone() })
            .await
            .map_err(|s| format!("BatchGet: {}", show(&s)))?
            .into_inner()
            .items;
        ensure!(items.iter().map(|i| &i.key).eq(keys.iter()), "BatchGet results not in request order");
        ensure!(
            items[0].found && items[0].value[..] == [4; 4] && items[0].version == versions[3],
            "b3 wrong: {:?}",
            items[0]
        );
        ensure!(!items[1].found, "a missing key was found");
        ensure!(items[2].found && items[2].version == versions[0], "b0 wrong");
        ensure!(items[3] == items[0], "a key asked twice answered differently");
        // One bad item rejects the whole batch before anything is written.
        let bad = vec![
            PutItem { key: "ok-item".into(), value: Bytes::from_static(b"v"), ttl_seconds: 0 },
            PutItem { key: "bad-item".into(), value: Bytes::new(), ttl_seconds: 0 },
        ];
        let result = self.plugin.keyvalue().batch_put(BatchPutRequest { namespace: ns.clone(), items: bad }).await;
        expect_code(result, Code::InvalidArgument, "BatchPut with an empty value")?;
        ensure!(self.get(&ns, "ok-item").await?.is_none(), "part of a rejected batch was written");
        Ok(())
    }

    async fn empty_results(&self) -> Check {
        let ns = self.namespace().await?;
        let items = self
            .plugin
            .keyvalue()
            .batch_get(BatchGetRequest { namespace: ns.clone(), keys: vec![] })
            .await
            .map_err(|s| format!("BatchGet of no keys: {}", show(&s)))?
            .into_inner()
            .items;
        ensure!(items.is_empty(), "BatchGet of no keys returned {} items", items.len());
        let versions = self
            .plugin
            .keyvalue()
            .batch_put(BatchPutRequest { namespace: ns.clone(), items: vec![] })
            .await
            .map_err(|s| format!("BatchPut of no items: {}", show(&s)))?
            .into_inner()
            .versions;
        ensure!(versions.is_empty(), "BatchPut of no items returned versions");
        if self.caps.scan {
            let page = self
                .plugin
                .keyvalue()
                .scan(ScanRequest { namespace: ns.clone(), ..Default::default() })
                .await
                .map_err(|s| format!("Scan of an empty namespace: {}", show(&s)))?
                .into_inner();
            ensure!(page.items.is_empty() && page.next_page_token.is_empty(), "Scan of an empty namespace not empty");
        }
        Ok(())
    }

    // === values and limits ===

    async fn binary_values(&self) -> Check {
        let ns = self.namespace().await?;
        let all_bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
        let v = self.put(&ns, "bytes", &all_bytes).await?;
        ensure!(
            self.get(&ns, "bytes").await? == Some((Bytes::from(all_bytes.clone()), v)),
            "a value with every byte value did not round trip"
        );
        let nuls = [0u8; 64];
        self.put(&ns, "nuls", &nuls).await?;
        ensure!(self.get(&ns, "nuls").await?.map(|r| r.0) == Some(Bytes::copy_from_slice(&nuls)), "NUL bytes lost");
        Ok(())
    }

    async fn value_limit(&self) -> Check {
        let ns = self.namespace().await?;
        let max = usize::try_from(self.caps.max_value_bytes).map_err(|e| e.to_string())?;
        ensure!(max > 0, "max_value_bytes is not declared");
        let at_limit = vec![0xA5u8; max];
        self.put(&ns, "max", &at_limit)
            .await
            .map_err(|e| format!("a value of exactly max_value_bytes ({max}): {e}"))?;
        let read = self.get(&ns, "max").await?.map(|r| r.0.len());
        ensure!(read == Some(max), "value at the limit read back as {read:?} bytes");
        let over = vec![0xA5u8; max + 1];
        expect_code(
            self.plugin.keyvalue().put(put_req(&ns, "over", &over)).await,
            Code::InvalidArgument,
            "a value one byte over max_value_bytes",
        )?;
        expect_code(
            self.plugin.keyvalue().put(put_req(&ns, "empty", b"")).await,
            Code::InvalidArgument,
            "an empty value",
        )?;
        ensure!(self.get(&ns, "over").await?.is_none(), "the oversized value was stored");
        Ok(())
    }

    async fn key_limit(&self) -> Check {
        let ns = self.namespace().await?;
        let max = usize::try_from(self.caps.max_key_bytes).map_err(|e| e.to_string())?;
        ensure!(max > 0, "max_key_bytes is not declared");
        let key = "k".repeat(max);
        let v = self.put(&ns, &key, b"v").await.map_err(|e| format!("a key of exactly max_key_bytes ({max}): {e}"))?;
        ensure!(self.get(&ns, &key).await?.map(|r| r.1) == Some(v), "key at the limit not readable");
        let over = "k".repeat(max + 1);
        expect_code(
            self.plugin.keyvalue().put(put_req(&ns, &over, b"v")).await,
            Code::InvalidArgument,
            "a key one byte over max_key_bytes",
        )?;
        expect_code(self.plugin.keyvalue().put(put_req(&ns, "", b"v")).await, Code::InvalidArgument, "an empty key")
    }

    async fn isolation(&self) -> Check {
        let a = self.namespace().await?;
        // A name that extends the first, to catch key prefixes that collide.
        let b = format!("{a}0");
        self.prepare(&b).await?;
        self.put(&a, "shared", b"from-a").await?;
        self.put(&b, "shared", b"from-b").await?;
        self.put(&b, "only-b", b"x").await?;
        ensure!(
            self.get(&a, "shared").await?.map(|r| r.0) == Some(Bytes::from_static(b"from-a")),
            "namespace a sees b's value"
        );
        ensure!(self.get(&a, "only-b").await?.is_none(), "namespace a sees b's key");
        self.delete(&b, "shared", None).await.map_err(|s| show(&s))?;
        ensure!(self.get(&a, "shared").await?.is_some(), "a delete in b removed a's key");
        if self.caps.scan {
            let keys = self.scan_keys(&a, "", 100).await?;
            ensure!(keys == ["shared"], "scan of a lists {keys:?}");
        }
        Ok(())
    }

    // === TTL ===

    async fn ttl_expiry(&self) -> Check {
        let ns = self.namespace().await?;
        let mut req = put_req(&ns, "session", b"token");
        req.ttl_seconds = 1;
        self.plugin.keyvalue().put(req).await.map_err(|s| format!("Put with ttl_seconds=1: {}", show(&s)))?;
        self.put(&ns, "stays", b"v").await?;
        ensure!(self.get(&ns, "session").await?.is_some(), "value with a TTL not readable right after the write");
        let deadline = Instant::now() + Duration::from_secs(8);
        while self.get(&ns, "session").await?.is_some() {
            ensure!(Instant::now() < deadline, "a value with ttl_seconds=1 is still readable after 8s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let items = self
            .plugin
            .keyvalue()
            .batch_get(BatchGetRequest { namespace: ns.clone(), keys: vec!["session".into()] })
            .await
            .map_err(|s| show(&s))?
            .into_inner()
            .items;
        ensure!(!items[0].found, "BatchGet still returns the expired value");
        if self.caps.scan {
            let keys = self.scan_keys(&ns, "", 10).await?;
            ensure!(keys == ["stays"], "scan lists {keys:?} after expiry");
        }
        if self.caps.cas {
            let mut create = put_req(&ns, "session", b"new");
            create.if_version = Some(0);
            self.plugin
                .keyvalue()
                .put(create)
                .await
                .map_err(|s| format!("create-only write over an expired key: {}", show(&s)))?;
        }
        Ok(())
    }

    async fn ttl_cleared_by_overwrite(&self) -> Check {
        let ns = self.namespace().await?;
        let mut req = put_req(&ns, "k", b"short");
        req.ttl_seconds = 1;
        self.plugin.keyvalue().put(req).await.map_err(|s| show(&s))?;
        self.put(&ns, "k", b"forever").await?;
        tokio::time::sleep(Duration::from_millis(2200)).await;
        ensure!(self.get(&ns, "k").await?.is_some(), "a write without TTL did not clear the earlier TTL");
        Ok(())
    }

    async fn ttl_refused(&self) -> Check {
        let ns = self.namespace().await?;
        let mut req = put_req(&ns, "k", b"v");
        req.ttl_seconds = 60;
        expect_code(self.plugin.keyvalue().put(req).await, Code::Unimplemented, "Put with ttl_seconds")?;
        let item = PutItem { key: "k".into(), value: Bytes::from_static(b"v"), ttl_seconds: 60 };
        let result =
            self.plugin.keyvalue().batch_put(BatchPutRequest { namespace: ns.clone(), items: vec![item] }).await;
        expect_code(result, Code::Unimplemented, "BatchPut with ttl_seconds")?;
        ensure!(self.get(&ns, "k").await?.is_none(), "a refused TTL write was stored anyway");
        Ok(())
    }

    // === compare-and-set ===

    async fn cas(&self) -> Check {
        let ns = self.namespace().await?;
        let cas_put = |key: &str, value: &[u8], v: u64| {
            let mut r = put_req(&ns, key, value);
            r.if_version = Some(v);
            r
        };
        let kv = self.plugin.keyvalue();
        let v1 = kv
            .clone()
            .put(cas_put("acct", b"100", 0))
            .await
            .map_err(|s| format!("create-only write: {}", show(&s)))?
            .into_inner()
            .version;
        expect_code(
            kv.clone().put(cas_put("acct", b"999", 0)).await,
            Code::Aborted,
            "create-only write of an existing key",
        )?;
        let v2 = kv
            .clone()
            .put(cas_put("acct", b"90", v1))
            .await
            .map_err(|s| format!("write at the current version: {}", show(&s)))?
            .into_inner()
            .version;
        ensure!(v2 > v1, "CAS write got version {v2}, not above {v1}");
        expect_code(kv.clone().put(cas_put("acct", b"80", v1)).await, Code::Aborted, "write at a stale version")?;
        ensure!(
            self.get(&ns, "acct").await?.map(|r| r.0) == Some(Bytes::from_static(b"90")),
            "a failed CAS changed the value"
        );
        expect_code(kv.clone().put(cas_put("ghost", b"x", 5)).await, Code::Aborted, "CAS write of a missing key")?;
        expect_code(self.delete(&ns, "acct", Some(v1)).await, Code::Aborted, "delete at a stale version")?;
        ensure!(
            self.delete(&ns, "acct", Some(v2)).await.map_err(|s| show(&s))?,
            "delete at the current version answered false"
        );
        ensure!(self.get(&ns, "acct").await?.is_none(), "CAS delete did not delete");
        Ok(())
    }

    async fn cas_concurrent(&self) -> Check {
        let ns = self.namespace().await?;
        self.put(&ns, "counter", b"0").await?;
        const WRITERS: usize = 4;
        const INCREMENTS: usize = 10;
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let mut kv = self.plugin.keyvalue();
            let ns = ns.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    loop {
                        let cur = kv
                            .get(GetRequest { namespace: ns.clone(), key: "counter".into() })
                            .await
                            .map_err(|s| show(&s))?
                            .into_inner();
                        let n: u64 = std::str::from_utf8(&cur.value)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| format!("counter holds {:?}", cur.value))?;
                        let mut req = put_req(&ns, "counter", (n + 1).to_string().as_bytes());
                        req.if_version = Some(cur.version);
                        match kv.put(req).await {
                            Ok(_) => break,
                            Err(s) if s.code() == Code::Aborted => continue,
                            Err(s) => return Err(show(&s)),
                        }
                    }
                }
                Ok::<_, String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        let last = self.get(&ns, "counter").await?.map(|r| r.0);
        let want = (WRITERS * INCREMENTS).to_string();
        ensure!(last.as_deref() == Some(want.as_bytes()), "lost updates: counter is {last:?}, expected {want}");
        Ok(())
    }

    async fn cas_refused(&self) -> Check {
        let ns = self.namespace().await?;
        self.put(&ns, "k", b"v").await?;
        let mut req = put_req(&ns, "k", b"changed");
        req.if_version = Some(0);
        expect_code(self.plugin.keyvalue().put(req).await, Code::Unimplemented, "Put with if_version")?;
        expect_code(self.delete(&ns, "k", Some(1)).await, Code::Unimplemented, "Delete with if_version")?;
        ensure!(self.get(&ns, "k").await?.map(|r| r.0) == Some(Bytes::from_static(b"v")), "a refused CAS changed data");
        Ok(())
    }

    // === scans ===

    async fn scan_order(&self) -> Check {
        let ns = self.namespace().await?;
        let keys = ["b", "a/b", "a", "A", "a0", "é", "z", "\u{10000}", "a/a", "aa", "~", "a b"];
        let mut versions = std::collections::HashMap::new();
        for k in keys {
            versions.insert(k.to_owned(), self.put(&ns, k, k.as_bytes()).await?);
        }
        let mut want: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        want.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        let page = self
            .plugin
            .keyvalue()
            .scan(ScanRequest { namespace: ns.clone(), page_size: 100, ..Default::default() })
            .await
            .map_err(|s| show(&s))?
            .into_inner();
        let got: Vec<String> = page.items.iter().map(|e| e.key.clone()).collect();
        ensure!(got == want, "scan order {got:?}, expected bytewise {want:?}");
        for e in &page.items {
            ensure!(
                e.value == e.key.as_bytes() && Some(&e.version) == versions.get(&e.key),
                "scan entry {:?} has the wrong value or version",
                e.key
            );
        }
        Ok(())
    }

    async fn scan_prefix(&self) -> Check {
        let ns = self.namespace().await?;
        for k in ["a", "a/", "a/1", "a/2/x", "a0", "a.", "b/1", "é/1", "é", "éa/1", "\u{10FFFF}x", "\u{10FFFF}"] {
            self.put(&ns, k, b"v").await?;
        }
        for (prefix, want) in [
            ("a/", vec!["a/", "a/1", "a/2/x"]),
            ("a", vec!["a", "a.", "a/", "a/1", "a/2/x", "a0"]),
            ("é/", vec!["é/1"]),
            ("é", vec!["é", "é/1", "éa/1"]),
            ("\u{10FFFF}", vec!["\u{10FFFF}", "\u{10FFFF}x"]),
            ("zzz", vec![]),
        ] {
            let got = self.scan_keys(&ns, prefix, 2).await?;
            ensure!(got == want, "prefix {prefix:?}: got {got:?}, expected {want:?}");
        }
        Ok(())
    }

    async fn scan_paging(&self) -> Check {
        let ns = self.namespace().await?;
        for i in 0..25 {
            self.put(&ns, &format!("item/{i:03}"), b"v").await?;
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = self
                .plugin
                .keyvalue()
                .scan(ScanRequest { namespace: ns.clone(), prefix: "item/".into(), page_size: 7, page_token: token })
                .await
                .map_err(|s| show(&s))?
                .into_inner();
            pages += 1;
            ensure!(page.items.len() <= 7, "page of {} for page_size 7", page.items.len());
            if pages == 2 {
                // Behind and ahead of the cursor, while the scan runs.
                self.put(&ns, "item/000a", b"behind").await?;
                self.put(&ns, "item/999", b"ahead").await?;
                self.delete(&ns, "item/020", None).await.map_err(|s| show(&s))?;
            }
            seen.extend(page.items.into_iter().map(|e| e.key));
            if page.next_page_token.is_empty() {
                break;
            }
            ensure!(pages < 100, "scan does not end");
            token = page.next_page_token;
        }
        let mut want: Vec<String> = (0..25).filter(|i| *i != 20).map(|i| format!("item/{i:03}")).collect();
        want.push("item/999".into());
        ensure!(seen == want, "paged scan across writes returned {seen:?}");

        // A token only resumes the scan it came from.
        let page = self
            .plugin
            .keyvalue()
            .scan(ScanRequest {
                namespace: ns.clone(),
                prefix: "item/".into(),
                page_size: 3,
                page_token: String::new(),
            })
            .await
            .map_err(|s| show(&s))?
            .into_inner();
        let other = self.namespace().await?;
        let result = self
            .plugin
            .keyvalue()
            .scan(ScanRequest {
                namespace: other,
                prefix: "item/".into(),
                page_size: 3,
                page_token: page.next_page_token.clone(),
            })
            .await;
        expect_code(result, Code::InvalidArgument, "a page token used in another namespace")?;
        let result = self
            .plugin
            .keyvalue()
            .scan(ScanRequest {
                namespace: ns.clone(),
                prefix: "x/".into(),
                page_size: 3,
                page_token: page.next_page_token,
            })
            .await;
        expect_code(result, Code::InvalidArgument, "a page token used with another prefix")?;
        let result = self
            .plugin
            .keyvalue()
            .scan(ScanRequest { namespace: ns, prefix: String::new(), page_size: 3, page_token: "garbage!".into() })
            .await;
        expect_code(result, Code::InvalidArgument, "a malformed page token")
    }

    async fn scan_refused(&self) -> Check {
        let ns = self.namespace().await?;
        let result = self.plugin.keyvalue().scan(ScanRequest { namespace: ns, ..Default::default() }).await;
        expect_code(result, Code::Unimplemented, "Scan")
    }

    // === durability ===

    /// Writes, restarts the plugin process, and reads back. Replaces
    /// `self.plugin` with the new process.
    async fn restart_durability(&mut self) -> Check {
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

    async fn cleanup(&self) {
        let names = self.created.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for name in names {
            let _ = self.plugin.lifecycle().drop_namespace(DropNamespaceRequest { namespace: name }).await;
        }
    }
}

struct Recorder {
    checks: Vec<CheckResult>,
}

impl Recorder {
    /// Runs a check of a declared capability (or of the core contract).
    async fn claimed(&mut self, id: &'static str, capability: &'static str, check: impl Future<Output = Check>) {
        let started = Instant::now();
        let result = check.await;
        let (outcome, detail) = match result {
            Ok(()) => (Outcome::Pass, String::new()),
            Err(e) => (Outcome::Fail, e),
        };
        self.push(id, capability, outcome, detail, started);
    }

    /// Runs the refusal check of an undeclared capability.
    async fn refused(&mut self, id: &'static str, capability: &'static str, check: impl Future<Output = Check>) {
        let started = Instant::now();
        let (outcome, detail) = match check.await {
            Ok(()) => (Outcome::NotClaimed, "not declared; refused with UNIMPLEMENTED".to_owned()),
            Err(e) => (Outcome::Fail, format!("not declared, but not refused cleanly: {e}")),
        };
        self.push(id, capability, outcome, detail, started);
    }

    fn push(&mut self, id: &'static str, capability: &'static str, outcome: Outcome, detail: String, started: Instant) {
        let millis = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        self.checks.push(CheckResult { id, capability, outcome, detail, millis });
    }
}

pub(crate) async fn run(subject: &Subject) -> Result<Report, String> {
    let plugin = PluginProcess::start(&subject.binary).await?;
    let init = initialize(&plugin, subject).await?;
    let caps = init.capabilities.clone().unwrap_or_default();
    if !caps.patterns.contains(&(Pattern::Keyvalue as i32)) {
        return Err(format!("{} does not declare the KeyValue pattern", subject.name));
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
        timeseries: caps.patterns.contains(&(Pattern::Timeseries as i32)),
        graph: caps.patterns.contains(&(Pattern::Graph as i32)),
        retention: caps.retention,
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut suite = Suite { subject, plugin, caps, run_id, next: AtomicU32::new(0), created: Mutex::new(Vec::new()) };
    let mut r = Recorder { checks: Vec::new() };

    r.claimed("lifecycle.health", "lifecycle", suite.health()).await;
    r.claimed("lifecycle.initialize_again", "lifecycle", suite.initialize_again()).await;
    r.claimed("lifecycle.protocol_version", "lifecycle", suite.protocol_version()).await;
    r.claimed("lifecycle.unprepared_namespace", "lifecycle", suite.unprepared_namespace()).await;
    r.claimed("lifecycle.drop_namespace", "lifecycle", suite.drop_namespace()).await;
    r.claimed("lifecycle.describe_namespace", "lifecycle", suite.describe_namespace()).await;
    r.claimed("kv.put_get", "basic", suite.put_get()).await;
    r.claimed("kv.missing", "basic", suite.missing()).await;
    r.claimed("kv.delete", "basic", suite.delete_existing()).await;
    r.claimed("kv.empty_results", "basic", suite.empty_results()).await;
    r.claimed("kv.batch", "batch", suite.batch()).await;
    r.claimed("kv.overwrite", "versions", suite.overwrite()).await;
    r.claimed("kv.versions_never_reused", "versions", suite.versions_never_reused()).await;
    r.claimed("kv.binary_values", "values", suite.binary_values()).await;
    r.claimed("kv.value_limit", "limits", suite.value_limit()).await;
    r.claimed("kv.key_limit", "limits", suite.key_limit()).await;
    r.claimed("kv.isolation", "isolation", suite.isolation()).await;
    if suite.caps.ttl {
        r.claimed("kv.ttl_expiry", "ttl", suite.ttl_expiry()).await;
        r.claimed("kv.ttl_cleared_by_overwrite", "ttl", suite.ttl_cleared_by_overwrite()).await;
    } else {
        r.refused("kv.ttl_refused", "ttl", suite.ttl_refused()).await;
    }
    if suite.caps.cas {
        r.claimed("kv.cas", "cas", suite.cas()).await;
        r.claimed("kv.cas_concurrent", "cas", suite.cas_concurrent()).await;
    } else {
        r.refused("kv.cas_refused", "cas", suite.cas_refused()).await;
    }
    if suite.caps.scan {
        r.claimed("kv.scan_order", "scan", suite.scan_order()).await;
        r.claimed("kv.scan_prefix", "scan", suite.scan_prefix()).await;
        r.claimed("kv.scan_paging", "scan", suite.scan_paging()).await;
    } else {
        r.refused("kv.scan_refused", "scan", suite.scan_refused()).await;
    }
    if declared.timeseries {
        r.claimed("ts.append_idempotent", "timeseries", suite.ts_append_idempotent()).await;
        r.claimed("ts.query_paging", "timeseries", suite.ts_query_paging()).await;
        r.claimed("ts.aggregate", "timeseries", suite.ts_aggregate()).await;
        r.claimed("ts.bad_input", "timeseries", suite.ts_bad_input()).await;
        r.claimed("ts.isolation", "timeseries", suite.ts_isolation()).await;
    } else {
        r.refused("ts.refused", "timeseries", suite.ts_refused()).await;
    }
    if declared.timeseries && declared.retention {
        r.claimed("ts.retention", "retention", suite.ts_retention()).await;
    } else {
        r.refused("ts.retention_refused", "retention", suite.ts_retention_refused()).await;
    }
    if declared.graph {
        r.claimed("graph.vertices_edges", "graph", suite.graph_vertices_edges()).await;
        r.claimed("graph.neighbors_paging", "graph", suite.graph_neighbors_paging()).await;
        r.claimed("graph.traverse_bounded", "graph", suite.graph_traverse_bounded()).await;
        r.claimed("graph.isolation", "graph", suite.graph_isolation()).await;
    } else {
        r.refused("graph.refused", "graph", suite.graph_refused()).await;
    }
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

    suite.cleanup().await;
    let subject_name = subject.name.clone();
    suite.plugin.stop().await?;
    Ok(Report { subject: subject_name, declared, checks: r.checks })
}
