//! The request path in-process: the proxy (`server::run` on a listener the
//! test bound) and a memstore plugin (served on a TCP listener, as a plugin
//! container would be) in the test's own runtime, with tokio's clock paused.
//! Time then only moves when every task waits on a timer, so TTLs of hours
//! expire in an instant and nothing sleeps real seconds. The end-to-end
//! tests against the real binaries stay; these add what virtual time makes
//! cheap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::net::SocketAddr;
use std::time::Duration;

use prism_plugin_memstore::MemStore;
use prism_plugin_sdk::PluginServer;
use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::keyvalue::v1::{GetRequest, PutRequest, ScanRequest};
use prism_proxy::config::Config;
use prism_proxy::server;
use prism_proxy::startup::Options;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A proxy and its memstore plugin, both in this process.
struct InProcess {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    proxy: tokio::task::JoinHandle<Result<(), prism_proxy::startup::StartError>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts both; `namespaces` are `(file name, document)`.
    async fn start(namespaces: &[(&str, &str)]) -> Self {
        let plugin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plugin_addr = plugin.local_addr().unwrap();
        tokio::spawn(PluginServer::<MemStore>::new().keyvalue().serve_tcp(plugin, std::future::pending()));

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("namespaces")).unwrap();
        for (file, doc) in namespaces {
            std::fs::write(dir.path().join("namespaces").join(file), doc).unwrap();
        }
        let path = dir.path().join("prism.yaml");
        std::fs::write(
            &path,
            format!(
                "namespaces_dir: namespaces\nadmin_http: {{listen: \"127.0.0.1:0\"}}\nplugins:\n  memstore: {{address: \"{plugin_addr}\"}}\n"
            ),
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let proxy = tokio::spawn(server::run(config, Options::default(), listener, async {
            let _ = stopped.await;
        }));
        Self { addr, stop: Some(stop), proxy, _dir: dir }
    }

    /// A client, once the proxy serves `namespace`.
    async fn kv(&self, namespace: &str) -> KeyValueServiceClient<Channel> {
        for _ in 0..200 {
            if let Ok(channel) = Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await {
                let mut kv = KeyValueServiceClient::new(channel);
                if kv.get(get(namespace, "probe")).await.is_ok() {
                    return kv;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the proxy never served namespace {namespace}");
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.proxy.await.unwrap().unwrap();
    }
}

fn put(ns: &str, key: &str, ttl_seconds: u64) -> PutRequest {
    PutRequest { namespace: ns.into(), key: key.into(), value: b"v".to_vec().into(), ttl_seconds, if_version: None }
}

fn get(ns: &str, key: &str) -> GetRequest {
    GetRequest { namespace: ns.into(), key: key.into() }
}

const DEMO: &str =
    "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: demo}\nspec: {pattern: keyvalue, backend: memstore}\n";
const CACHE: &str = "apiVersion: prism/v1\nkind: Namespace\nmetadata: {name: cache}\nspec: {pattern: keyvalue, backend: memstore, needs: {ttl: 1h}}\n";

/// A value with a TTL is there until the TTL passes, and gone after, from
/// reads and scans; values without one stay.
#[tokio::test(start_paused = true)]
async fn ttl_expires_in_virtual_time() {
    let stack = InProcess::start(&[("demo.yaml", DEMO)]).await;
    let mut kv = stack.kv("demo").await;
    kv.put(put("demo", "session", 2 * 3600)).await.unwrap();
    kv.put(put("demo", "forever", 0)).await.unwrap();

    tokio::time::sleep(Duration::from_secs(2 * 3600 - 60)).await;
    assert!(kv.get(get("demo", "session")).await.unwrap().into_inner().found, "expired a minute early");
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(!kv.get(get("demo", "session")).await.unwrap().into_inner().found, "still there after its TTL");
    let scan = kv.scan(ScanRequest { namespace: "demo".into(), ..Default::default() }).await.unwrap().into_inner();
    let keys: Vec<String> = scan.items.into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["forever"]);
    stack.stop().await;
}

/// A namespace's `needs.ttl` applies to writes that set none; a write's
/// own TTL wins.
#[tokio::test(start_paused = true)]
async fn namespace_ttl_applies_in_virtual_time() {
    let stack = InProcess::start(&[("cache.yaml", CACHE)]).await;
    let mut kv = stack.kv("cache").await;
    kv.put(put("cache", "default", 0)).await.unwrap();
    kv.put(put("cache", "own", 3 * 3600)).await.unwrap();

    tokio::time::sleep(Duration::from_secs(3600 + 1)).await;
    assert!(!kv.get(get("cache", "default")).await.unwrap().into_inner().found, "the namespace ttl of 1h not applied");
    assert!(kv.get(get("cache", "own")).await.unwrap().into_inner().found, "a write's own ttl was overridden");
    stack.stop().await;
}
