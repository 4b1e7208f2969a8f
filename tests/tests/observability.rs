//! Observability with the real tools: Debian's Prometheus scrapes a running
//! proxy and its query API sees the calls; an OTLP receiver gets one trace
//! per call, client → proxy → plugin → backend; `/readyz` follows the
//! plugins; the admin listener off loopback asks for credentials.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use prism_proto::keyvalue::v1::{GetRequest, PutRequest};
use prism_tests::otlp::Collector;
use prism_tests::{Proxy, ProxyConfig, eventually, services, signal};
use serde_json::Value;

fn put(ns: &str, key: &str, value: &[u8]) -> PutRequest {
    PutRequest { namespace: ns.into(), key: key.into(), value: value.to_vec().into(), ..Default::default() }
}

fn get(ns: &str, key: &str) -> GetRequest {
    GetRequest { namespace: ns.into(), key: key.into() }
}

/// A memstore proxy whose plugin is restarted slowly after a crash, so the
/// outage is long enough for a scrape (and a readiness probe) to see.
fn proxy() -> Proxy {
    ProxyConfig::new()
        .plugin(
            "memstore",
            "command: [prism-plugin-memstore]\nhealth_interval: 200ms\nrestart_backoff_min: 3s\nrestart_backoff_max: 3s",
        )
        .keyvalue("demo", "memstore")
        .start()
}

async fn http_get(url: &str) -> (u16, String, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, content_type, response.text().await.unwrap())
}

/// A Prometheus server scraping one target every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(program: &Path, target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: prism\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = services::free_port();
        let child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// The value of an instant query with one result, if it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/query", self.url))
            .form(&[("query", query)])
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        let result = body["data"]["result"].as_array()?;
        let [one] = &result[..] else { return None };
        one["value"][1].as_str()?.parse().ok()
    }

    async fn sees(&self, query: &str, expected: f64) -> bool {
        eventually(Duration::from_secs(30), || async { self.value(query).await == Some(expected) }).await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scrapes the proxy: its query API counts the calls by
/// namespace, method and code, the latency histogram counts them too, an
/// unknown namespace is `_unknown` (bounded labels), and a killed plugin
/// shows as down, then up again.
#[tokio::test]
async fn prometheus_scrapes_calls_and_plugin_state() {
    let Some(program) = services::require_program("prometheus") else { return };
    let proxy = proxy();
    let mut kv = proxy.kv().await;
    for i in 0..7 {
        kv.put(put("demo", &format!("k{i}"), b"v")).await.unwrap();
    }
    for i in 0..5 {
        assert!(kv.get(get("demo", &format!("k{i}"))).await.unwrap().into_inner().found);
    }
    for _ in 0..3 {
        kv.get(get("no-such-namespace", "k")).await.unwrap_err();
    }
    let prometheus = Prometheus::start(&program, proxy.admin_addr);
    for (query, expected) in [
        (r#"prism_requests_total{namespace="demo",pattern="keyvalue",method="Put",code="OK"}"#, 7.0),
        (r#"prism_requests_total{namespace="demo",method="Get",code="OK"}"#, 5.0),
        (r#"prism_request_duration_seconds_count{namespace="demo",method="Get"}"#, 5.0),
        (r#"prism_plugin_request_duration_seconds_count{namespace="demo",method="Put",plugin="memstore"}"#, 7.0),
        (r#"prism_requests_total{namespace="_unknown",method="Get",code="NOT_FOUND"}"#, 3.0),
        (r#"prism_plugin_up{plugin="memstore"}"#, 1.0),
        (r#"prism_namespaces{pattern="keyvalue"}"#, 1.0),
    ] {
        assert!(prometheus.sees(query, expected).await, "Prometheus does not see {query} = {expected}");
    }
    // No series names a key.
    let (_, _, text) = http_get(&format!("{}/metrics", proxy.admin_url())).await;
    assert!(!text.contains("k3") && !text.contains("no-such-namespace"), "a key or a free string in a label:\n{text}");

    let plugin = proxy.wait_child("prism-plugin-memstore", Duration::from_secs(10));
    signal(plugin, Signal::SIGKILL);
    assert!(prometheus.sees(r#"prism_plugin_up{plugin="memstore"}"#, 0.0).await, "the killed plugin never showed down");
    assert!(prometheus.sees(r#"prism_plugin_up{plugin="memstore"}"#, 1.0).await, "the plugin never showed up again");
    assert!(prometheus.sees(r#"prism_plugin_restarts_total{plugin="memstore"}"#, 1.0).await);
}

/// `/readyz` is ready with every routed plugin serving, says which one is
/// not while it is down, and is ready again after the restart; `/healthz`
/// answers throughout; `/status` lists namespaces and plugins.
#[tokio::test]
async fn readyz_follows_the_plugins() {
    let proxy = proxy();
    let admin = proxy.admin_url();
    assert_eq!(http_get(&format!("{admin}/readyz")).await.0, 200);
    let (status, content_type, text) = http_get(&format!("{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(text.contains("prism_build_info") && text.ends_with("# EOF\n"), "{text}");

    let plugin = proxy.wait_child("prism-plugin-memstore", Duration::from_secs(10));
    signal(plugin, Signal::SIGKILL);
    let unready = eventually(Duration::from_secs(5), || async {
        let (status, _, text) = http_get(&format!("{admin}/readyz")).await;
        status == 503 && text.contains("plugin memstore") && text.contains("demo")
    })
    .await;
    assert!(unready, "/readyz did not say the plugin is down");
    assert_eq!(http_get(&format!("{admin}/healthz")).await.0, 200, "/healthz is about the process");
    let (_, _, status) = http_get(&format!("{admin}/status")).await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(status["namespaces"][0]["name"], "demo", "{status}");
    assert_eq!(status["plugins"][0]["name"], "memstore", "{status}");
    let ready =
        eventually(Duration::from_secs(15), || async { http_get(&format!("{admin}/readyz")).await.0 == 200 }).await;
    assert!(ready, "/readyz did not become ready after the restart");
}

/// Off loopback, `/metrics` and `/status` need an authenticated proxy
/// administrator or reader, over TLS when the proxy has TLS; the probes
/// stay open.
#[tokio::test]
async fn the_admin_listener_off_loopback_needs_credentials() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let issuer = prism_tests::pki::OidcIssuer::start("k1").await;
    let ca = prism_tests::pki::Ca::new("Admin CA");
    let files = tempfile::tempdir().unwrap();
    let server = ca.server();
    let cert = prism_tests::pki::write(files.path(), "server.pem", &server.cert);
    let key = prism_tests::pki::write(files.path(), "server.key", &server.key);
    let security = format!(
        "tls: {{cert: {}, key: {}}}\nauth:\n  admins: [\"group:ops\"]\n  jwt: {{issuer: \"{}\", audiences: [prism]}}\n",
        cert.display(),
        key.display(),
        issuer.url
    );
    let config = ProxyConfig::memstore().extra(&security);
    let path = config.write();
    let yaml = std::fs::read_to_string(&path).unwrap().replace(
        "admin_http: {listen: \"127.0.0.1:0\"}",
        "admin_http: {listen: \"0.0.0.0:0\", readers: [\"user:prometheus\"]}",
    );
    std::fs::write(&path, yaml).unwrap();
    let proxy = Proxy::start_file(&path);
    let port = proxy.admin_addr.port();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let token = |sub: &str, group: &str| {
        let claims = serde_json::json!({
            "iss": issuer.url, "aud": "prism", "exp": prism_tests::pki::now() + 300, "sub": sub, "groups": [group],
        });
        prism_tests::pki::token("k1", &claims)
    };
    let status = |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().status().as_u16() };

    assert_eq!(status(client.get(url("/healthz"))).await, 200);
    assert_eq!(status(client.get(url("/readyz"))).await, 200);
    assert_eq!(status(client.get(url("/metrics"))).await, 401, "no credentials");
    assert_eq!(status(client.get(url("/metrics")).bearer_auth("garbage")).await, 401);
    assert_eq!(status(client.get(url("/status")).bearer_auth(token("someone", "others"))).await, 403);
    assert_eq!(status(client.get(url("/metrics")).bearer_auth(token("admin", "ops"))).await, 200);
    assert_eq!(status(client.get(url("/metrics")).bearer_auth(token("prometheus", "scrapers"))).await, 200);
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()), "plain HTTP was served");
}

/// The proxy config's `tracing` block, exporting to `collector`.
fn tracing(collector: &Collector, sampling_ratio: f64) -> String {
    format!("tracing: {{otlp_endpoint: \"{}\", sampling_ratio: {sampling_ratio}}}", collector.endpoint())
}

/// One call with a client `traceparent` is one trace: the proxy's span is
/// the client span's child, the plugin call the proxy span's, the plugin's
/// span the plugin call's and the backend call the plugin span's, on both
/// plugin transports; no key or value is in any span attribute.
#[tokio::test]
async fn a_client_trace_reaches_the_plugin_and_its_backend() {
    let collector = Collector::start();
    let proxy = ProxyConfig::new()
        .plugin("mux", "command: [prism-plugin-memstore]\ntransport: multiplex")
        .plugin("unary", "command: [prism-plugin-memstore]\ntransport: unary")
        .keyvalue("traced", "mux")
        .keyvalue("traced-unary", "unary")
        .extra(&tracing(&collector, 0.0))
        // Export at once instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start();
    let mut kv = proxy.kv().await;
    for (namespace, trace_id) in
        [("traced", "4bf92f3577b34da6a3ce929d0e0e4736"), ("traced-unary", "0af7651916cd43dd8448eb211c80319c")]
    {
        let client_span = "00f067aa0ba902b7";
        let mut request = tonic::Request::new(put(namespace, "secret-key-42", b"secret-value-42"));
        request.metadata_mut().insert("traceparent", format!("00-{trace_id}-{client_span}-01").parse().unwrap());
        kv.put(request).await.unwrap();

        let complete = eventually(Duration::from_secs(20), || async {
            collector.spans().iter().filter(|s| s.trace_id == trace_id).count() >= 4
        })
        .await;
        let spans: Vec<_> = collector.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
        assert!(complete, "{namespace}: not every span arrived: {spans:#?}");
        let find = |service_prefix: &str, name_part: &str| {
            spans
                .iter()
                .find(|s| s.service.starts_with(service_prefix) && s.name.contains(name_part))
                .unwrap_or_else(|| panic!("{namespace}: no {name_part} span of {service_prefix}: {spans:#?}"))
                .clone()
        };
        let request_span = find("prism-proxy", "KeyValueService/Put");
        let plugin_call = find("prism-proxy", "prism.plugin.v1/Put");
        let plugin_span = find("prism-proxy-plugin", "KeyValueBackend/Put");
        let backend_span = find("prism-proxy-plugin", "memstore put");
        assert_eq!(request_span.parent_span_id, client_span, "{namespace}: the proxy span's parent");
        assert_eq!(plugin_call.parent_span_id, request_span.span_id, "{namespace}: the plugin call's parent");
        assert_eq!(plugin_span.parent_span_id, plugin_call.span_id, "{namespace}: the plugin span's parent");
        assert_eq!(backend_span.parent_span_id, plugin_span.span_id, "{namespace}: the backend span's parent");
        assert_eq!(backend_span.attribute("db.system"), Some("memstore"));
        assert_eq!(backend_span.attribute("db.operation"), Some("put"));
        assert_eq!(request_span.kind, 2, "server");
        assert_eq!(plugin_call.kind, 3, "client");
        for span in &spans {
            for (key, value) in &span.attributes {
                assert!(
                    !value.contains("secret-key-42") && !value.contains("secret-value-42"),
                    "{namespace}: span {} carries a key or value in {key}",
                    span.name
                );
            }
        }
    }
    // With a sampling ratio of 0, a call without a traceparent is not
    // traced, nor is one whose client did not sample it (flags 00).
    let before = collector.spans().len();
    kv.put(put("traced", "untraced", b"v")).await.unwrap();
    let mut request = tonic::Request::new(put("traced", "unsampled", b"v"));
    request
        .metadata_mut()
        .insert("traceparent", "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".parse().unwrap());
    kv.put(request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(collector.spans().len(), before, "an unsampled call was exported: {:#?}", collector.spans());
}

/// With a sampling ratio of 1 every call is traced: one without a
/// `traceparent`, or with a malformed one, starts a new trace of its own
/// (proxy, plugin and backend spans).
#[tokio::test]
async fn a_call_without_a_client_trace_starts_one() {
    let collector = Collector::start();
    let proxy = ProxyConfig::new()
        .plugin("mem", "command: [prism-plugin-memstore]\ntransport: multiplex")
        .keyvalue("roots", "mem")
        .extra(&tracing(&collector, 1.0))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start();
    let mut kv = proxy.kv().await;
    kv.put(put("roots", "a", b"v")).await.unwrap();
    let mut request = tonic::Request::new(get("roots", "a"));
    request.metadata_mut().insert("traceparent", "00-not-a-trace-context-01".parse().unwrap());
    kv.get(request).await.unwrap();

    let roots = |spans: &[prism_tests::otlp::ReceivedSpan]| -> Vec<prism_tests::otlp::ReceivedSpan> {
        spans.iter().filter(|s| s.service == "prism-proxy" && s.parent_span_id.is_empty()).cloned().collect()
    };
    let complete = eventually(Duration::from_secs(20), || async {
        let spans = collector.spans();
        let roots = roots(&spans);
        roots.len() >= 2 && roots.iter().all(|root| spans.iter().filter(|s| s.trace_id == root.trace_id).count() >= 4)
    })
    .await;
    let spans = collector.spans();
    assert!(complete, "not two complete traces: {spans:#?}");
    let roots = roots(&spans);
    assert!(roots.iter().any(|s| s.name.contains("KeyValueService/Put")), "{roots:#?}");
    assert!(roots.iter().any(|s| s.name.contains("KeyValueService/Get")), "{roots:#?}");
    assert_ne!(roots[0].trace_id, roots[1].trace_id, "two calls, two traces");
}

/// Spans still buffered when the proxy stops are exported, the plugins'
/// included: a plugin (one runtime thread by default) flushes its exporter
/// while its runtime still runs, instead of hanging until it is killed.
#[tokio::test]
async fn buffered_spans_are_exported_on_shutdown() {
    let collector = Collector::start();
    let mut proxy = ProxyConfig::new()
        .plugin("mem", "command: [prism-plugin-memstore]\ntransport: multiplex")
        .keyvalue("flushed", "mem")
        .extra(&tracing(&collector, 1.0))
        // No export before the shutdown: only the flush can deliver them.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .start();
    let mut kv = proxy.kv().await;
    kv.put(put("flushed", "k", b"v")).await.unwrap();
    drop(kv);
    // Off this runtime, which must run to close the client's connection.
    let status = tokio::task::spawn_blocking(move || proxy.terminate(Duration::from_secs(30))).await.unwrap();
    assert!(status.success(), "{status}");
    let spans = collector.spans();
    for (service, name) in [
        ("prism-proxy", "KeyValueService/Put"),
        ("prism-proxy", "prism.plugin.v1/Put"),
        ("prism-proxy-plugin-mem", "KeyValueBackend/Put"),
        ("prism-proxy-plugin-mem", "memstore put"),
    ] {
        assert!(
            spans.iter().any(|s| s.service == service && s.name.contains(name)),
            "{service} {name} was not exported at shutdown: {spans:#?}"
        );
    }
}

/// A call that fails on the server's side (here: its plugin is gone) is
/// logged with its request id, so the id a client got back finds the log
/// line, with tracing off and logs at the default level.
#[tokio::test]
async fn a_failed_call_is_logged_with_its_request_id() {
    let plugin = prism_tests::PluginProcess::start_tcp("prism-plugin-memstore");
    let proxy = ProxyConfig::new()
        .plugin("remote", &format!("address: {}\nhealth_interval: 1h", plugin.addr))
        .keyvalue("fails", "remote")
        .start();
    let mut kv = proxy.kv().await;
    kv.put(put("fails", "k", b"v")).await.unwrap();
    drop(plugin);
    let mut request = tonic::Request::new(get("fails", "k"));
    request.metadata_mut().insert("x-request-id", "req-failed-42".parse().unwrap());
    let status = kv.get(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let logged = eventually(Duration::from_secs(5), || async {
        !proxy.logs.lines_with(&["call failed", "req-failed-42", "Unavailable"]).is_empty()
    })
    .await;
    assert!(logged, "no log line with the failed call's request id:\n{}", proxy.logs.text());
    // A call that succeeds, or fails for the client's reasons, is not logged.
    let mut request = tonic::Request::new(get("nowhere", "k"));
    request.metadata_mut().insert("x-request-id", "req-not-found-43".parse().unwrap());
    assert_eq!(kv.get(request).await.unwrap_err().code(), tonic::Code::NotFound);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!proxy.logs.contains("req-not-found-43"), "a client error was logged");
}

/// Text logs written to a pipe (a file, journald, a log shipper) carry no
/// ANSI colour codes, from the proxy or from the plugins it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("namespaces")).unwrap();
    let port = prism_tests::services::free_port();
    let config = dir.path().join("prism.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin_http: {{listen: \"127.0.0.1:0\"}}\nlog: {{format: text}}\nnamespaces_dir: namespaces\nplugins:\n  memstore:\n    command: [prism-plugin-memstore]\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(prism_tests::bin_path("prism-proxy"))
        .arg("--config")
        .arg(&config)
        .env("PRISM_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the plugin has started and the proxy listens, then stop it.
    assert!(
        eventually(Duration::from_secs(30), || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() })
            .await
    );
    signal(child.id(), Signal::SIGTERM);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    assert!(stderr.contains("listening"), "{stderr}");
    assert!(stderr.contains("initialized"), "the plugin's lines are there too: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in logs written to a pipe:\n{stderr}");
}
