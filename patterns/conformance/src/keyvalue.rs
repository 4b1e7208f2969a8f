//! The KeyValue checks: every call, versions, limits, isolation, TTL,
//! compare-and-set and scans, each capability as declared or refused.

use std::time::{Duration, Instant};

use bytes::Bytes;
use prism_proto::keyvalue::v1::{BatchGetRequest, BatchPutRequest, DeleteRequest, GetRequest, PutItem, ScanRequest};
use tonic::{Code, Status};

use crate::runner::{Check, Recorder, Suite, expect_code, put_req, show, shown};

/// Runs the KeyValue checks, each as declared or refused.
pub(crate) async fn checks(suite: &Suite<'_>, r: &mut Recorder) {
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
}

impl Suite<'_> {
    /// A plugin without KeyValue refuses its calls with UNIMPLEMENTED.
    pub(crate) async fn kv_refused(&self) -> Check {
        let ns = format!("conf-{}-no-kv", self.run_id);
        let r = self.plugin.keyvalue().get(GetRequest { namespace: ns.clone(), key: "k".into() }).await;
        expect_code(r, Code::Unimplemented, "Get")?;
        expect_code(self.plugin.keyvalue().put(put_req(&ns, "k", b"v")).await, Code::Unimplemented, "Put")
    }

    pub(crate) async fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<u64, String> {
        self.plugin
            .keyvalue()
            .put(put_req(ns, key, value))
            .await
            .map(|r| r.into_inner().version)
            .map_err(|s| format!("Put {}: {}", shown(key), show(&s)))
    }

    pub(crate) async fn get(&self, ns: &str, key: &str) -> Result<Option<(Bytes, u64)>, String> {
        let r = self
            .plugin
            .keyvalue()
            .get(GetRequest { namespace: ns.into(), key: key.into() })
            .await
            .map_err(|s| format!("Get {}: {}", shown(key), show(&s)))?
            .into_inner();
        Ok(r.found.then_some((r.value, r.version)))
    }

    pub(crate) async fn delete(&self, ns: &str, key: &str, if_version: Option<u64>) -> Result<bool, Status> {
        self.plugin
            .keyvalue()
            .delete(DeleteRequest { namespace: ns.into(), key: key.into(), if_version })
            .await
            .map(|r| r.into_inner().deleted)
    }

    /// Every key under `prefix`, following page tokens.
    pub(crate) async fn scan_keys(&self, ns: &str, prefix: &str, page_size: u32) -> Result<Vec<String>, String> {
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
}
