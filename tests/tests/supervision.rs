//! Plugin processes: crash recovery, shutdown, orphan prevention, and
//! plugins reached by address (container mode).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use prism_proto::keyvalue::v1::{GetRequest, PutRequest};
use prism_tests::{PluginProcess, ProxyConfig, alive, eventually, signal};
use tonic::Code;

const MEMSTORE: &str = "prism-plugin-memstore";

fn put(key: &str) -> PutRequest {
    PutRequest { namespace: "demo".into(), key: key.into(), value: b"v".to_vec().into(), ..Default::default() }
}

#[tokio::test]
async fn killed_plugin_fails_calls_with_unavailable_then_recovers() {
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]\npool_size: 2\nrestart_backoff_min: 200ms")
        .keyvalue("demo", "memstore")
        .start();
    let kv = proxy.kv().await;
    let first = proxy.wait_child(MEMSTORE, Duration::from_secs(10));
    kv.clone().put(put("before")).await.unwrap();

    // Load from 16 tasks while the plugin is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let mut kv = kv.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes: BTreeMap<String, u32> = BTreeMap::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let code = match kv.put(put(&format!("t{t}/{i}"))).await {
                    Ok(_) => "Ok".to_owned(),
                    Err(e) => format!("{:?}", e.code()),
                };
                *codes.entry(code).or_default() += 1;
            }
            codes
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(first, Signal::SIGKILL);

    // A new process takes over and calls succeed again.
    let recovered = eventually(Duration::from_secs(20), || {
        let mut kv = kv.clone();
        async move { kv.put(put("after")).await.is_ok() }
    })
    .await;
    assert!(recovered, "no successful call after the plugin was killed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);

    let mut totals: BTreeMap<String, u32> = BTreeMap::new();
    for task in tasks {
        for (code, n) in task.await.unwrap() {
            *totals.entry(code).or_default() += n;
        }
    }
    eprintln!("status counts during the crash: {totals:?}");
    assert!(totals.get("Ok").copied().unwrap_or(0) > 0);
    assert!(totals.get("Unavailable").copied().unwrap_or(0) > 0, "the crash was not observed: {totals:?}");
    let unexpected: Vec<_> = totals.keys().filter(|c| *c != "Ok" && *c != "Unavailable").collect();
    assert!(unexpected.is_empty(), "calls failed with codes other than UNAVAILABLE: {totals:?}");

    let second = proxy.wait_child(MEMSTORE, Duration::from_secs(10));
    assert_ne!(first, second, "a new plugin process serves");
    assert!(!alive(first));
    assert!(proxy.logs.contains("plugin down; restarting"));
}

#[tokio::test]
async fn unavailable_message_names_the_plugin_while_it_is_down() {
    // A long backoff keeps the plugin down long enough to look.
    let proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]\nrestart_backoff_min: 5s\nrestart_backoff_max: 5s")
        .keyvalue("demo", "memstore")
        .start();
    let mut kv = proxy.kv().await;
    let pid = proxy.wait_child(MEMSTORE, Duration::from_secs(10));
    signal(pid, Signal::SIGKILL);
    // Calls in flight when it died fail with "connection lost"; once the
    // supervisor has seen the exit, calls fail at once with the reason.
    let down = eventually(Duration::from_secs(3), || {
        let mut kv = kv.clone();
        async move { matches!(kv.put(put("x")).await, Err(e) if e.message().contains("exited")) }
    })
    .await;
    assert!(down);
    let err = kv.get(GetRequest { namespace: "demo".into(), key: "x".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("plugin memstore is unavailable: process exited"), "{}", err.message());
}

// Multi-threaded: `terminate` blocks this thread while the client's
// connection task must still run to answer the server's GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_leaves_no_child_behind() {
    let mut proxy = ProxyConfig::memstore()
        .plugin("second", "command: [prism-plugin-memstore]")
        .keyvalue("other", "second")
        .start();
    proxy.kv().await.put(put("k")).await.unwrap();
    let children = proxy.children(MEMSTORE);
    assert_eq!(children.len(), 2, "one process per plugin: {children:?}");

    let status = proxy.terminate(Duration::from_secs(20));
    assert!(status.success(), "proxy exit status {status:?}");
    for pid in children {
        assert!(!alive(pid), "plugin {pid} outlived the proxy");
    }
    assert!(proxy.logs.contains("plugin stopped"));
    assert!(proxy.logs.contains("proxy stopped"));
    assert!(!proxy.logs.contains("did not finish in time"), "an idle client delayed shutdown");
}

#[tokio::test]
async fn plugins_exit_when_the_proxy_is_killed() {
    let proxy = ProxyConfig::memstore().start();
    let pid = proxy.wait_child(MEMSTORE, Duration::from_secs(10));
    proxy.signal(Signal::SIGKILL);
    // The plugin sees its stdin close and stops by itself.
    let gone = eventually(Duration::from_secs(10), || async move { !alive(pid) }).await;
    assert!(gone, "plugin {pid} is orphaned");
}

#[tokio::test]
async fn a_plugin_that_cannot_start_makes_its_namespaces_unavailable() {
    let proxy = ProxyConfig::memstore()
        .plugin("broken", "command: [/nonexistent/prism-plugin-nothing]\nstart_timeout: 1s")
        .keyvalue("lost", "broken")
        .start();
    let mut kv = proxy.kv().await;
    kv.put(put("fine")).await.unwrap();
    let err = kv.get(GetRequest { namespace: "lost".into(), key: "k".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("plugin broken"), "{}", err.message());
}

#[tokio::test]
async fn plugin_reached_by_address_like_a_container() {
    let plugin = PluginProcess::start_tcp(MEMSTORE);
    let proxy = ProxyConfig::new()
        .plugin(
            "remote",
            &format!(
                "address: {}\nhealth_interval: 200ms\nrestart_backoff_min: 100ms\nrestart_backoff_max: 500ms",
                plugin.addr
            ),
        )
        .keyvalue("demo", "remote")
        .start();
    let mut kv = proxy.kv().await;
    let v = kv.put(put("k")).await.unwrap().into_inner().version;
    let got = kv.get(GetRequest { namespace: "demo".into(), key: "k".into() }).await.unwrap().into_inner();
    assert!(got.found && got.version == v);
    assert!(proxy.children(MEMSTORE).is_empty(), "the proxy does not start address plugins");

    // When the remote plugin goes away, calls fail with UNAVAILABLE.
    drop(plugin);
    let down = eventually(Duration::from_secs(10), || {
        let mut kv = kv.clone();
        async move { matches!(kv.put(put("k2")).await, Err(e) if e.code() == Code::Unavailable) }
    })
    .await;
    assert!(down, "calls to a vanished address plugin must fail with UNAVAILABLE");
}

#[tokio::test]
async fn an_address_plugin_that_restarts_is_initialized_again() {
    // Fix the port so the restarted plugin comes back at the same address.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let start = || {
        std::process::Command::new(prism_tests::bin_path(MEMSTORE))
            .args(["--listen", &addr.to_string()])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let proxy = ProxyConfig::new()
        .plugin(
            "remote",
            &format!("address: {addr}\nhealth_interval: 200ms\nrestart_backoff_min: 100ms\nrestart_backoff_max: 300ms"),
        )
        .keyvalue("demo", "remote")
        .start();
    let kv = proxy.kv().await;
    kv.clone().put(put("k")).await.unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = start();
    // The new process knows nothing of the namespace until the proxy
    // initializes and prepares it again.
    let back = eventually(Duration::from_secs(15), || {
        let mut kv = kv.clone();
        async move { kv.put(put("k")).await.is_ok() }
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(back, "the proxy did not re-initialize the restarted plugin");
}

/// Ctrl-C in a terminal signals the whole foreground process group. The
/// plugins are in their own groups, so they do not get it: the proxy drains
/// them (Drain, then their standard input closes), as documented.
#[tokio::test]
async fn ctrl_c_to_the_process_group_lets_the_proxy_drain_its_plugins() {
    let mut proxy = ProxyConfig::new()
        .plugin("memstore", "command: [prism-plugin-memstore]")
        .plugin("lite", "command: [prism-plugin-sqlite]\nconfig:\n  path: g.sqlite3")
        .keyvalue("demo", "lite")
        .start();
    let mut kv = proxy.kv().await;
    kv.put(put("k")).await.unwrap();
    let pgid = nix::unistd::Pid::from_raw(proxy.pid() as i32);
    nix::sys::signal::killpg(pgid, Signal::SIGINT).unwrap();
    let status = proxy.wait(Duration::from_secs(30)).expect("the proxy stops on SIGINT");
    assert!(status.success(), "{status:?}\n{}", proxy.logs.text());
    let sdk = |needle: &str| proxy.logs.lines_with(&[needle, "prism_plugin_sdk"]);
    assert!(sdk("SIGINT received").is_empty(), "a plugin got the terminal's SIGINT:\n{}", proxy.logs.text());
    assert_eq!(sdk("parent closed stdin, stopping").len(), 2, "both plugins drained:\n{}", proxy.logs.text());
}

/// The plugin socket directory is private to the proxy's user, and one left
/// behind by a proxy killed with SIGKILL is removed by the next proxy.
#[tokio::test]
async fn socket_directory_is_private_and_a_killed_proxy_s_is_swept() {
    use std::os::unix::fs::PermissionsExt;
    let socket_dir = |proxy: &prism_tests::Proxy| {
        let line = proxy.logs.lines_with(&["plugin process started"]).pop().expect("no plugin started");
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        let socket = std::path::PathBuf::from(line["fields"]["socket"].as_str().unwrap());
        socket.parent().unwrap().to_owned()
    };
    let first = ProxyConfig::memstore().start();
    let pid = first.wait_child(MEMSTORE, Duration::from_secs(10));
    let left = socket_dir(&first);
    assert_eq!(std::fs::metadata(&left).unwrap().permissions().mode() & 0o777, 0o700, "{}", left.display());
    first.signal(Signal::SIGKILL);
    assert!(eventually(Duration::from_secs(10), || async move { !alive(pid) }).await);
    assert!(left.exists(), "SIGKILL leaves the directory behind");
    // Reaped, as its parent (a shell, systemd) would: a zombie still counts as running.
    drop(first);

    let second = ProxyConfig::memstore().start();
    second.wait_child(MEMSTORE, Duration::from_secs(10));
    let dir = left.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let dir = dir.clone();
            async move { !dir.exists() }
        })
        .await,
        "{} was not swept",
        left.display()
    );
    assert!(socket_dir(&second).exists());
}
