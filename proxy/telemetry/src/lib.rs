//! Logs and traces for the Prism proxy and its plugins, set up one way.
//!
//! [`init`] installs the process's `tracing` subscriber: structured logs on
//! standard error (text or JSON, filtered by `PRISM_LOG` or a default level),
//! and, when traces are configured, an OpenTelemetry layer that exports spans
//! over OTLP/gRPC.
//!
//! Whether a call is traced is decided once, when it arrives ([`sample`],
//! [`sample_fields`]): a caller's W3C `traceparent` decides (its sampled
//! flag), else a share of the calls (`Sampling::Ratio`) is. A traced call's
//! spans are INFO spans, exported, and every log line inside them carries
//! the request id and trace id; the spans of every other call are DEBUG
//! spans, which cost nothing unless debug logs are on (a span formatted
//! for the logs costs more than the rest of a plugin call: measured in
//! ADR-011). Deciding up front, rather than letting the OpenTelemetry
//! sampler drop spans it was handed, is what makes a low ratio cheap: an
//! unsampled call builds no OpenTelemetry span at all.
//!
//! The W3C trace context crosses the proxy → plugin hop through
//! [`inject`] and [`sample_fields`]; the plugin follows the proxy's decision.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

/// The environment variable with the log filter (an `EnvFilter` directive);
/// plugins inherit it from the proxy.
pub const LOG_ENV: &str = "PRISM_LOG";

/// The W3C trace-context headers, as constant names (read on every call).
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Whether spans are exported; read on every request to pick the span level.
static TRACING: AtomicBool = AtomicBool::new(false);

/// The share of the calls with no caller's decision that are traced, as
/// `f64` bits (0 in a plugin: its traces start in the proxy).
static ROOT_RATIO: AtomicU64 = AtomicU64::new(0);

/// Whether this process exports traces (set by [`init`]).
pub fn tracing_on() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Whether `span` is exported: an INFO span (or higher) while tracing is on.
pub fn traced(span: &tracing::Span) -> bool {
    tracing_on() && span.metadata().is_some_and(|meta| *meta.level() <= tracing::Level::INFO)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the logs go and how much of them.
#[derive(Debug, Clone)]
pub struct Logs {
    pub format: LogFormat,
    /// The filter when `PRISM_LOG` is not set, e.g. `info`.
    pub default_filter: String,
}

/// Which traces are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Follow the caller's decision when a call carries a trace context, and
    /// keep this share of the traces that start here (the proxy).
    Ratio(f64),
    /// Only follow the caller's decision (a plugin: its traces start in the
    /// proxy, and its own health checks are never traced).
    ParentOnly,
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct Traces {
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    pub sampling: Sampling,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// More resource attributes (`deployment.environment`, ...).
    pub resource: Vec<(String, String)>,
    /// Longest wait for one export.
    pub timeout: Duration,
}

/// The standard OpenTelemetry variables through which a process the proxy
/// starts (a plugin) learns where and as what to export.
const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";
const TIMEOUT_ENV: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const RESOURCE_ENV: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// What `OTEL_RESOURCE_ATTRIBUTES` percent-encodes in a key or value: its
/// separators, `%` itself, and what is not printable ASCII.
const RESOURCE_RESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b',').add(b'=').add(b'%').add(b' ');

impl Traces {
    /// The environment of a child process (a plugin) that makes it export
    /// to the same collector as `service_name`, with the same resource
    /// attributes and export timeout.
    pub fn child_env(&self, service_name: &str) -> Vec<(String, String)> {
        let encode = |text: &str| percent_encoding::utf8_percent_encode(text, RESOURCE_RESERVED).to_string();
        let resource: Vec<String> = self.resource.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        vec![
            (ENDPOINT_ENV.to_owned(), self.endpoint.clone()),
            (SERVICE_NAME_ENV.to_owned(), service_name.to_owned()),
            (TIMEOUT_ENV.to_owned(), self.timeout.as_millis().to_string()),
            (RESOURCE_ENV.to_owned(), resource.join(",")),
        ]
    }

    /// The traces [`Traces::child_env`] set up for this process, read back
    /// from the environment; `None` when it names no collector. Such a
    /// process only follows its caller's decisions ([`Sampling::ParentOnly`]).
    pub fn from_env(default_service_name: &str) -> Option<Self> {
        let endpoint = std::env::var(ENDPOINT_ENV).ok().filter(|e| !e.is_empty())?;
        Some(Self {
            endpoint,
            sampling: Sampling::ParentOnly,
            service_name: std::env::var(SERVICE_NAME_ENV).unwrap_or_else(|_| default_service_name.to_owned()),
            resource: resource_attributes(&std::env::var(RESOURCE_ENV).unwrap_or_default()),
            timeout: std::env::var(TIMEOUT_ENV)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map_or(Duration::from_secs(10), Duration::from_millis),
        })
    }
}

/// `key=value,key=value` with percent-encoded parts, as
/// `OTEL_RESOURCE_ATTRIBUTES` writes them. The OpenTelemetry SDK reads the
/// variable too but does not decode it; these decoded pairs override its.
fn resource_attributes(text: &str) -> Vec<(String, String)> {
    let decode = |part: &str| percent_encoding::percent_decode_str(part.trim()).decode_utf8_lossy().into_owned();
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter { endpoint: String, source: opentelemetry_otlp::ExporterBuildError },
}

/// The installed telemetry; flushes the spans still buffered when shut down.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. The batch
    /// processor's thread blocks on the export, which is a tonic call: the
    /// runtime it was built in must keep running meanwhile (a current-thread
    /// runtime, as a plugin's, only runs inside `block_on`), so the blocking
    /// wait happens on a blocking thread while this future is awaited.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("traces: shutdown: {e}"),
            Err(e) => eprintln!("traces: shutdown: {e}"),
        }
    }
}

/// Whether text logs are coloured: only on a terminal, and not when
/// `NO_COLOR` is set to anything but empty (no-color.org). Logs written to a
/// file or a pipe (journald, a log shipper, the proxy reading a plugin's
/// stderr) must not carry escape codes.
fn colours(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Client libraries that log routine events: async-nats each reconnect
/// attempt while the server is down (INFO), tokio-postgres every server
/// NOTICE ("relation ... already exists, skipping"; INFO), redis-rs every
/// failed connection attempt to a cluster node while it fails over (WARN,
/// once per call). Each call's failure is reported by the plugin anyway;
/// these stay at the given level unless the filter names the library.
// rskafka logs every failed request at ERROR, an unknown topic (a namespace
// nothing was appended to yet) included; the kafka plugin reports the
// failures that matter itself.
const CHATTY_LIBRARIES: &[(&str, &str)] =
    &[("async_nats", "warn"), ("tokio_postgres", "warn"), ("redis", "error"), ("rskafka", "off")];

/// `directives` with each of [`CHATTY_LIBRARIES`] at its level where the
/// filter does not name it.
pub fn quiet_libraries(directives: &str) -> String {
    let mut filter = directives.trim().to_owned();
    for (library, level) in CHATTY_LIBRARIES {
        let named = filter.split(',').any(|d| d.trim().split(['=', '[', ':']).next() == Some(*library));
        if !named {
            if !filter.is_empty() {
                filter.push(',');
            }
            filter.push_str(library);
            filter.push('=');
            filter.push_str(level);
        }
    }
    filter
}

/// Installs the global subscriber. With `traces`, must run inside a tokio
/// runtime (the OTLP exporter is a tonic client). A second call in one
/// process (tests) leaves the first subscriber in place.
pub fn init(logs: &Logs, traces: Option<&Traces>) -> Result<Telemetry, TelemetryError> {
    let directives = std::env::var(LOG_ENV).ok().filter(|d| !d.trim().is_empty());
    let log_filter = EnvFilter::new(quiet_libraries(directives.as_deref().unwrap_or(&logs.default_filter)));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colours(std::io::IsTerminal::is_terminal(&std::io::stderr()), std::env::var_os("NO_COLOR")));
    let fmt = match logs.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
    .with_filter(log_filter);
    let Some(traces) = traces else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Ok(Telemetry::default());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(traces.endpoint.clone())
        .with_timeout(traces.timeout)
        .build()
        .map_err(|source| TelemetryError::Exporter { endpoint: traces.endpoint.clone(), source })?;
    let root_ratio = match traces.sampling {
        Sampling::Ratio(ratio) => ratio.clamp(0.0, 1.0),
        Sampling::ParentOnly => 0.0,
    };
    // The decision is taken before a span exists (`sample`); every span
    // built is one to keep.
    let sampler = Sampler::AlwaysOn;
    let resource = Resource::builder()
        .with_service_name(traces.service_name.clone())
        .with_attributes(traces.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Only Prism's own spans (the request, the plugin call, the plugin's
    // call, the backend call) are exported, and only at INFO, the level
    // they have when their call is traced.
    let exported = filter::filter_fn(|meta| {
        meta.is_span() && meta.target().starts_with("prism") && *meta.level() <= tracing::Level::INFO
    });
    let otel =
        tracing_opentelemetry::layer().with_tracer(provider.tracer("prism")).with_location(false).with_filter(exported);
    let _ = tracing_subscriber::registry().with(fmt).with(otel).try_init();
    ROOT_RATIO.store(root_ratio.to_bits(), Ordering::Relaxed);
    TRACING.store(true, Ordering::Relaxed);
    Ok(Telemetry { provider: Some(provider) })
}

/// Reads W3C trace context from HTTP/gRPC headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Trace context as the plugin protocol carries it.
struct Fields<'a> {
    traceparent: &'a str,
    tracestate: &'a str,
}

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" if !self.traceparent.is_empty() => Some(self.traceparent),
            "tracestate" if !self.tracestate.is_empty() => Some(self.tracestate),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[derive(Default)]
struct Collected {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Collected {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// Whether a call that arrived with `headers` is traced: `Some` with its
/// parent (the caller's span; an empty context for a new trace), `None` when
/// it is not. Tracing off answers `None` without reading the headers.
pub fn sample(headers: &http::HeaderMap) -> Option<Context> {
    if !tracing_on() {
        return None;
    }
    if !headers.contains_key(&TRACEPARENT) {
        return sample_root();
    }
    follow(propagator().extract(&Headers(headers)))
}

/// [`sample`] for a call whose trace context came as bytes (a plugin call's
/// `traceparent` and `tracestate`).
pub fn sample_fields(traceparent: &[u8], tracestate: &[u8]) -> Option<Context> {
    if !tracing_on() {
        return None;
    }
    if traceparent.is_empty() {
        return sample_root();
    }
    let (Ok(traceparent), Ok(tracestate)) = (std::str::from_utf8(traceparent), std::str::from_utf8(tracestate)) else {
        return sample_root();
    };
    follow(propagator().extract(&Fields { traceparent, tracestate }))
}

/// The caller's decision when its trace context is valid; a malformed one
/// is ignored, as W3C Trace Context asks, and the call is sampled as a root.
fn follow(parent: Context) -> Option<Context> {
    let span_context = parent.span().span_context().clone();
    if !span_context.is_valid() {
        return sample_root();
    }
    span_context.is_sampled().then_some(parent)
}

fn sample_root() -> Option<Context> {
    let ratio = f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed));
    (ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)).then(Context::new)
}

/// Makes `span` the child of `parent` (from [`sample`]) when it is a span.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceparent` and `tracestate` of `span`, to send with a call it
/// makes; `None` when the span is not traced.
pub fn inject(span: &tracing::Span) -> Option<(String, Option<String>)> {
    let cx: Context = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut collected = Collected::default();
    propagator().inject_context(&cx, &mut collected);
    collected.traceparent.map(|tp| (tp, collected.tracestate))
}

/// The trace id of `span`, for log lines and error messages; `None` when the
/// span is not traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chatty_libraries_are_kept_to_warnings_unless_named() {
        assert_eq!(quiet_libraries("info"), "info,async_nats=warn,tokio_postgres=warn,redis=error,rskafka=off");
        assert_eq!(quiet_libraries(""), "async_nats=warn,tokio_postgres=warn,redis=error,rskafka=off");
        assert_eq!(
            quiet_libraries("debug,async_nats=debug,rskafka=debug"),
            "debug,async_nats=debug,rskafka=debug,tokio_postgres=warn,redis=error"
        );
        // A plugin crate whose name contains a library's is not the library.
        assert_eq!(
            quiet_libraries("prism_plugin_redis=debug,redis::cluster_handling=info"),
            "prism_plugin_redis=debug,redis::cluster_handling=info,async_nats=warn,tokio_postgres=warn,rskafka=off"
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(colours(true, Some("".into())));
        assert!(!colours(true, Some("1".into())));
        assert!(!colours(false, None));
    }

    #[test]
    fn a_traceparent_header_is_read() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        let cx = propagator().extract(&Headers(&headers));
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let fields = Fields { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate: "" };
        assert!(propagator().extract(&fields).span().span_context().is_sampled());
    }

    #[test]
    fn garbage_trace_context_is_ignored() {
        for bad in ["", "00-zz", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "not a header"] {
            let fields = Fields { traceparent: bad, tracestate: "" };
            assert!(!propagator().extract(&fields).span().span_context().is_valid(), "{bad}");
        }
        // Not UTF-8: ignored (a root), no panic.
        assert!(sample_fields(&[0xff, 0xfe], b"").is_none());
    }

    #[test]
    fn an_untraced_span_injects_nothing() {
        assert!(inject(&tracing::Span::none()).is_none());
        assert!(trace_id(&tracing::Span::none()).is_none());
    }

    fn headers(traceparent: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().unwrap());
        headers
    }

    fn parent(traceparent: &str) -> Context {
        propagator().extract(&Headers(&headers(traceparent)))
    }

    /// The caller decides when it sent a valid trace context; otherwise
    /// the root ratio does. One test, as the ratio is process-wide.
    #[test]
    fn the_caller_decides_else_the_ratio() {
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        ROOT_RATIO.store(0.0f64.to_bits(), Ordering::Relaxed);
        let followed = follow(parent(sampled)).unwrap();
        assert_eq!(followed.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(follow(parent(unsampled)).is_none());
        assert!(follow(parent("00-garbage-01")).is_none(), "a malformed context is a root, and the ratio is 0");

        ROOT_RATIO.store(1.0f64.to_bits(), Ordering::Relaxed);
        assert!(follow(parent(unsampled)).is_none(), "the caller's no wins over the ratio");
        let root = follow(parent("00-garbage-01")).unwrap();
        assert!(!root.span().span_context().is_valid(), "a new trace has no parent");

        ROOT_RATIO.store(0.25f64.to_bits(), Ordering::Relaxed);
        let kept = (0..20_000).filter(|_| sample_root().is_some()).count();
        // 5000 expected; 4 standard deviations (~61 each) either side.
        assert!((4_750..=5_250).contains(&kept), "{kept} of 20000 kept at 0.25");
        ROOT_RATIO.store(0.0f64.to_bits(), Ordering::Relaxed);
    }

    #[test]
    fn resource_attributes_are_decoded() {
        assert_eq!(
            resource_attributes("team=a%2Cb%3Dc, env=prod,broken,=x"),
            vec![("team".to_owned(), "a,b=c".to_owned()), ("env".to_owned(), "prod".to_owned())]
        );
        assert!(resource_attributes("").is_empty());
    }

    #[test]
    fn a_child_reads_back_the_resource_it_was_given() {
        let traces = Traces {
            endpoint: "http://127.0.0.1:4317".to_owned(),
            sampling: Sampling::Ratio(1.0),
            service_name: "prism-proxy".to_owned(),
            resource: vec![("team".to_owned(), "a,b=c 100% é".to_owned()), ("env".to_owned(), "prod".to_owned())],
            timeout: Duration::from_secs(3),
        };
        let env: std::collections::HashMap<_, _> = traces.child_env("prism-proxy-plugin-mem").into_iter().collect();
        assert_eq!(env[TIMEOUT_ENV], "3000");
        assert_eq!(resource_attributes(&env[RESOURCE_ENV]), traces.resource);
    }

    #[test]
    fn tracing_off_samples_nothing() {
        assert!(!tracing_on());
        assert!(sample(&headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).is_none());
        assert!(sample_fields(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", b"").is_none());
    }
}
