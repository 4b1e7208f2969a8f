//! Prometheus metrics (OpenMetrics text on the admin listener's `/metrics`).
//!
//! Every label is bounded: namespaces come from the registry (a name that
//! is not served is counted as `_unknown`), methods and codes are closed
//! sets, plugins come from the config; never a key, a principal or a free
//! string. The request path records through handles cached per route and
//! method, so a call costs a few atomic operations, not a lookup per metric.
//! Gauges that describe state (plugins, routes, queues) are read when
//! Prometheus scrapes, by a collector the server registers
//! (`health::StateCollector`), and cost nothing per request.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The label of a namespace the proxy does not serve.
pub const UNKNOWN_NAMESPACE: &str = "_unknown";

/// Latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The data-plane methods, a closed set of label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Put,
    Get,
    Delete,
    BatchGet,
    BatchPut,
    Scan,
    Append,
    Query,
    Aggregate,
    PutVertex,
    GetVertex,
    DeleteVertex,
    PutEdge,
    DeleteEdge,
    Neighbors,
    Traverse,
    /// Opening a subscription (its life is in the `subscription_*` metrics).
    Subscribe,
}

const METHODS: usize = 17;

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "Put",
            Self::Get => "Get",
            Self::Delete => "Delete",
            Self::BatchGet => "BatchGet",
            Self::BatchPut => "BatchPut",
            Self::Scan => "Scan",
            Self::Append => "Append",
            Self::Query => "Query",
            Self::Aggregate => "Aggregate",
            Self::PutVertex => "PutVertex",
            Self::GetVertex => "GetVertex",
            Self::DeleteVertex => "DeleteVertex",
            Self::PutEdge => "PutEdge",
            Self::DeleteEdge => "DeleteEdge",
            Self::Neighbors => "Neighbors",
            Self::Traverse => "Traverse",
            Self::Subscribe => "Subscribe",
        }
    }
}

/// The gRPC code names, as label values (`OK`, `NOT_FOUND`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    namespace: Arc<str>,
    pattern: &'static str,
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    namespace: Arc<str>,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCallLabels {
    namespace: Arc<str>,
    method: &'static str,
    plugin: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    namespace: Arc<str>,
    right: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    namespace: Arc<str>,
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    namespace: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: Arc<str>,
}

/// What became of one copy handed to a namespace's shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowOutcome {
    Mirrored,
    MirrorFailed,
    Dropped,
    Matched,
    Mismatched,
    CompareFailed,
}

impl ShadowOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mirrored => "mirrored",
            Self::MirrorFailed => "mirror_failed",
            Self::Dropped => "dropped",
            Self::Matched => "matched",
            Self::Mismatched => "mismatched",
            Self::CompareFailed => "compare_failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The proxy's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// What the server registers once the proxy's parts exist.
    state: OnceLock<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    plugin_duration: Family<PluginCallLabels, Histogram, fn() -> Histogram>,
    request_bytes: Family<MethodLabels, Counter>,
    response_bytes: Family<MethodLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    limit_hits: Family<LimitLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    rejected_documents: Gauge,
    audit_dropped: Counter,
    shadow: Family<ShadowLabels, Counter>,
    shadow_queue: Family<NamespaceLabels, Gauge>,
    subscriptions: Family<NamespaceLabels, Gauge>,
    subscription_events: Family<NamespaceLabels, Counter>,
    subscriptions_ended: Family<EndLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    namespace: Arc<str>,
    reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("prism");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Data calls (KeyValue, TimeSeries, Graph) by namespace, pattern, method and gRPC code",
            requests.clone(),
        );
        let duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time the proxy took to answer a data call, from the request to the reply",
            duration.clone(),
        );
        let plugin_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "plugin_request_duration_seconds",
            "Time a data call spent in its plugin (the plugin hop), by plugin",
            plugin_duration.clone(),
        );
        let request_bytes = Family::<MethodLabels, Counter>::default();
        registry.register("request_bytes", "Bytes of data-call request messages", request_bytes.clone());
        let response_bytes = Family::<MethodLabels, Counter>::default();
        registry.register("response_bytes", "Bytes of data-call reply messages", response_bytes.clone());
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "authentication_failures",
            "Calls and TLS handshakes refused for their credentials, by reason",
            auth_failures.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "authorization_denials",
            "Authenticated calls refused for lack of a right on a namespace",
            denials.clone(),
        );
        let limit_hits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_hits",
            "Calls refused by a limit (limits.* or the namespace's needs), by namespace and limit",
            limit_hits.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("registry_reloads", "Loads of the namespace registry, by result", reloads.clone());
        let rejected_documents = Gauge::default();
        registry.register(
            "registry_rejected_documents",
            "Namespace documents the last registry load skipped as invalid",
            rejected_documents.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_records_dropped",
            "Audit records dropped because the writer's queue was full",
            audit_dropped.clone(),
        );
        let shadow = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_copies",
            "Copies of a namespace's calls handed to its shadow (spec.shadow), by what became of them: mirrored, mirror_failed, dropped (queue full), matched, mismatched, compare_failed",
            shadow.clone(),
        );
        let shadow_queue = Family::<NamespaceLabels, Gauge>::default();
        registry.register("shadow_queue_depth", "Copies waiting for a namespace's shadow", shadow_queue.clone());
        let subscriptions = Family::<NamespaceLabels, Gauge>::default();
        registry.register("subscriptions", "TimeSeries subscriptions open, by namespace", subscriptions.clone());
        let subscription_events = Family::<NamespaceLabels, Counter>::default();
        registry.register(
            "subscription_events",
            "Events sent to TimeSeries subscribers, by namespace",
            subscription_events.clone(),
        );
        let subscriptions_ended = Family::<EndLabels, Counter>::default();
        registry.register(
            "subscriptions_ended",
            "TimeSeries subscriptions ended, by namespace and reason: client (went away), slow (stopped reading), idle, shutdown, plugin (failed or ended)",
            subscriptions_ended.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The proxy's version (always 1)", build);
        Self {
            registry,
            state: OnceLock::new(),
            requests,
            duration,
            plugin_duration,
            request_bytes,
            response_bytes,
            auth_failures,
            denials,
            limit_hits,
            reloads,
            rejected_documents,
            audit_dropped,
            shadow,
            shadow_queue,
            subscriptions,
            subscription_events,
            subscriptions_ended,
        }
    }

    /// The open-subscriptions gauge and the events counter of `namespace`.
    pub fn subscription(&self, namespace: &Arc<str>) -> (Gauge, Counter) {
        let labels = NamespaceLabels { namespace: namespace.clone() };
        (self.subscriptions.get_or_create(&labels).clone(), self.subscription_events.get_or_create(&labels).clone())
    }

    /// A subscription of `namespace` ended, for `reason`.
    pub fn subscription_ended(&self, namespace: &Arc<str>, reason: &'static str) {
        self.subscriptions_ended.get_or_create(&EndLabels { namespace: namespace.clone(), reason }).inc();
    }

    /// One copy handed to `namespace`'s shadow and what became of it.
    pub fn shadow(&self, namespace: &Arc<str>, outcome: ShadowOutcome) {
        self.shadow.get_or_create(&ShadowLabels { namespace: namespace.clone(), outcome: outcome.as_str() }).inc();
    }

    /// The depth gauge of `namespace`'s shadow queue.
    pub fn shadow_queue(&self, namespace: &Arc<str>) -> Gauge {
        self.shadow_queue.get_or_create(&NamespaceLabels { namespace: namespace.clone() }).clone()
    }

    /// Registers the collector of the proxy's state gauges (read at each
    /// scrape). Once; a second one is ignored.
    pub fn register_state(&self, collector: Box<dyn Collector>) {
        let mut state = Registry::with_prefix("prism");
        state.register_collector(collector);
        let _ = self.state.set(state);
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode_registry(&mut text, &self.registry)?;
        if let Some(state) = self.state.get() {
            prometheus_client::encoding::text::encode_registry(&mut text, state)?;
        }
        prometheus_client::encoding::text::encode_eof(&mut text)?;
        Ok(text)
    }

    /// The cached handles of one route's metrics.
    pub fn route(self: &Arc<Self>, namespace: &str, pattern: &'static str, plugin: &str) -> RouteMetrics {
        RouteMetrics {
            metrics: self.clone(),
            namespace: Arc::from(namespace),
            pattern,
            plugin: Arc::from(plugin),
            methods: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// A data call that never reached a route (unknown namespace, wrong
    /// pattern, a right missing): counted under the namespace's label when
    /// the proxy serves it, `_unknown` otherwise.
    pub fn unrouted(&self, namespace: Option<&str>, pattern: &'static str, method: Method, code: tonic::Code) {
        let namespace = Arc::from(namespace.unwrap_or(UNKNOWN_NAMESPACE));
        self.requests
            .get_or_create(&RequestLabels { namespace, pattern, method: method.as_str(), code: code_name(code) })
            .inc();
    }

    pub fn authentication_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn denial(&self, namespace: &str, right: &'static str) {
        self.denials.get_or_create(&DenialLabels { namespace: Arc::from(namespace), right }).inc();
    }

    /// A call refused by `limit`; `namespace` is `None` for the proxy-wide
    /// limits (the concurrency limit).
    pub fn limit_hit(&self, namespace: Option<&str>, limit: &'static str) {
        let namespace = Arc::from(namespace.unwrap_or(""));
        self.limit_hits.get_or_create(&LimitLabels { namespace, limit }).inc();
    }

    pub fn registry_reload(&self, ok: bool, rejected: usize) {
        self.reloads.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" } }).inc();
        if ok {
            self.rejected_documents.set(i64::try_from(rejected).unwrap_or(i64::MAX));
        }
    }

    pub fn audit_record_dropped(&self) {
        self.audit_dropped.inc();
    }
}

/// One method's handles for one route.
#[derive(Debug)]
struct MethodMetrics {
    duration: Histogram,
    plugin_duration: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
    codes: [OnceLock<Counter>; 17],
}

/// The metrics of one route, resolved once per method (and code).
#[derive(Debug)]
pub struct RouteMetrics {
    metrics: Arc<Metrics>,
    namespace: Arc<str>,
    pattern: &'static str,
    plugin: Arc<str>,
    methods: [OnceLock<MethodMetrics>; METHODS],
}

/// What one data call did, for [`RouteMetrics::record`].
#[derive(Debug, Clone, Copy)]
pub struct CallRecord {
    pub method: Method,
    pub code: tonic::Code,
    pub elapsed: Duration,
    /// Time in the plugin, when the call reached it.
    pub plugin: Option<Duration>,
    pub request_bytes: usize,
    pub response_bytes: usize,
}

impl RouteMetrics {
    fn method(&self, method: Method) -> &MethodMetrics {
        self.methods[method as usize].get_or_init(|| {
            let m = &self.metrics;
            let labels = MethodLabels { namespace: self.namespace.clone(), method: method.as_str() };
            MethodMetrics {
                duration: m.duration.get_or_create_owned(&labels),
                plugin_duration: m.plugin_duration.get_or_create_owned(&PluginCallLabels {
                    namespace: self.namespace.clone(),
                    method: method.as_str(),
                    plugin: self.plugin.clone(),
                }),
                request_bytes: m.request_bytes.get_or_create_owned(&labels),
                response_bytes: m.response_bytes.get_or_create_owned(&labels),
                codes: std::array::from_fn(|_| OnceLock::new()),
            }
        })
    }

    /// Records one data call on this route.
    pub fn record(&self, call: &CallRecord) {
        let method = self.method(call.method);
        let code = call.code;
        method.codes[code as usize]
            .get_or_init(|| {
                self.metrics.requests.get_or_create_owned(&RequestLabels {
                    namespace: self.namespace.clone(),
                    pattern: self.pattern,
                    method: call.method.as_str(),
                    code: code_name(code),
                })
            })
            .inc();
        method.duration.observe(call.elapsed.as_secs_f64());
        if let Some(plugin) = call.plugin {
            method.plugin_duration.observe(plugin.as_secs_f64());
        }
        method.request_bytes.inc_by(call.request_bytes as u64);
        method.response_bytes.inc_by(call.response_bytes as u64);
    }

    /// The open-subscriptions gauge and the events counter of this
    /// namespace.
    pub fn subscription(&self) -> (Gauge, Counter) {
        self.metrics.subscription(&self.namespace)
    }

    /// A subscription of this namespace ended, for `reason`.
    pub fn subscription_ended(&self, reason: &'static str) {
        self.metrics.subscription_ended(&self.namespace, reason);
    }

    /// A call refused by one of this namespace's limits.
    pub fn limit_hit(&self, limit: &'static str) {
        self.metrics.limit_hit(Some(&self.namespace), limit);
    }

    /// A caller refused for lack of `right` on this namespace.
    pub fn denial(&self, right: &'static str) {
        self.metrics.denial(&self.namespace, right);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_call_is_counted_once_per_metric_with_bounded_labels() {
        let metrics = Arc::new(Metrics::new());
        let route = metrics.route("orders", "keyvalue", "redis");
        let call = CallRecord {
            method: Method::Get,
            code: tonic::Code::Ok,
            elapsed: Duration::from_micros(300),
            plugin: Some(Duration::from_micros(120)),
            request_bytes: 20,
            response_bytes: 100,
        };
        route.record(&call);
        route.record(&CallRecord { code: tonic::Code::NotFound, plugin: None, ..call });
        metrics.unrouted(None, "keyvalue", Method::Put, tonic::Code::NotFound);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"prism_requests_total{namespace="orders",pattern="keyvalue",method="Get",code="OK"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"code="NOT_FOUND"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"prism_requests_total{namespace="_unknown",pattern="keyvalue",method="Put",code="NOT_FOUND"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"prism_request_duration_seconds_count{namespace="orders",method="Get"} 2"#), "{text}");
        assert!(
            text.contains(
                r#"prism_plugin_request_duration_seconds_count{namespace="orders",method="Get",plugin="redis"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"prism_response_bytes_total{namespace="orders",method="Get"} 200"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn every_code_has_a_name() {
        for code in 0..17 {
            assert!(!code_name(tonic::Code::from_i32(code)).is_empty());
        }
    }
}
