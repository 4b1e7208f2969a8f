//! The proxy's state as others see it: `grpc.health.v1` per service, the
//! readiness of `/readyz`, and the state gauges of `/metrics`.
//!
//! The Admin service serves while the proxy does. A pattern service
//! (KeyValue, TimeSeries, Graph) is SERVING while at least one of its
//! plugins is: the plugins that serve a namespace of the pattern, or, when
//! no namespace uses it yet, the plugins that declare it. With none of them
//! up (or none at all) it is NOT_SERVING, so a load balancer or a client's
//! health check sees a proxy that cannot serve it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use prism_proto::admin::v1::admin_service_server::AdminServiceServer;
use prism_proto::graph::v1::graph_service_server::GraphServiceServer;
use prism_proto::keyvalue::v1::key_value_service_server::KeyValueServiceServer;
use prism_proto::timeseries::v1::time_series_service_server::TimeSeriesServiceServer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::graph::GraphApi;
use crate::api::keyvalue::KeyValueApi;
use crate::api::timeseries::TimeSeriesApi;
use crate::control::admin::AdminApi;
use crate::namespace::PatternKind;
use crate::plugin::{Phase, Plugins};
use crate::routes::{RouteTable, Routes, proto_pattern};
use crate::security::audit::Audit;

/// The pattern services and the pattern each serves.
const PATTERN_SERVICES: [(&str, PatternKind); 3] = [
    (<KeyValueServiceServer<KeyValueApi> as NamedService>::NAME, PatternKind::Keyvalue),
    (<TimeSeriesServiceServer<TimeSeriesApi> as NamedService>::NAME, PatternKind::Timeseries),
    (<GraphServiceServer<GraphApi> as NamedService>::NAME, PatternKind::Graph),
];

const ADMIN_SERVICE: &str = <AdminServiceServer<AdminApi> as NamedService>::NAME;

/// The services that serve while the proxy does: the Admin API, health and
/// server reflection.
const ALWAYS_SERVICES: [&str; 4] = [
    ADMIN_SERVICE,
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Every service a client can call: what reflection lists and health has
/// an entry for (never the plugin protocol's services).
pub fn public_services() -> impl Iterator<Item = &'static str> {
    PATTERN_SERVICES.iter().map(|(s, _)| *s).chain(ALWAYS_SERVICES)
}

/// `grpc.health.v1.Health` as the health protocol says: tonic-health's
/// service, except that `Watch` of a service it does not know answers one
/// SERVICE_UNKNOWN message and keeps the call open, instead of failing the
/// call with NOT_FOUND.
///
/// `Watch` streams end (with OK) once `closing` is cancelled, at shutdown
/// after NOT_SERVING was reported: they are calls like any other, and a
/// graceful shutdown would otherwise wait `shutdown_grace` for every
/// client that watches.
pub struct HealthApi {
    inner: tonic_health::server::HealthService,
    closing: CancellationToken,
}

impl HealthApi {
    pub fn new(reporter: HealthReporter, closing: CancellationToken) -> Self {
        Self { inner: tonic_health::server::HealthService::from_health_reporter(reporter), closing }
    }
}

type HealthStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<tonic_health::pb::HealthCheckResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for HealthApi {
    async fn check(
        &self,
        request: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
        self.inner.check(request).await
    }

    type WatchStream = HealthStream;

    async fn watch(
        &self,
        request: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthStream>, tonic::Status> {
        let closing = self.closing.clone().cancelled_owned();
        match self.inner.watch(request).await {
            Ok(stream) => Ok(tonic::Response::new(Box::pin(stream.into_inner().take_until(closing)) as HealthStream)),
            Err(status) if status.code() == tonic::Code::NotFound => {
                let unknown = tonic_health::pb::HealthCheckResponse {
                    status: tonic_health::pb::health_check_response::ServingStatus::ServiceUnknown as i32,
                };
                let stream = futures::stream::once(async move { Ok(unknown) })
                    .chain(futures::stream::pending())
                    .take_until(closing);
                Ok(tonic::Response::new(Box::pin(stream) as HealthStream))
            }
            Err(status) => Err(status),
        }
    }
}

/// Whether any plugin that can serve `pattern` is serving.
pub fn pattern_serving(pattern: PatternKind, table: &RouteTable, plugins: &Plugins) -> bool {
    let routed: Vec<_> = table.iter().filter(|r| r.pattern() == pattern).map(|r| r.plugin.clone()).collect();
    if !routed.is_empty() {
        return routed.iter().any(|p| p.is_serving());
    }
    let wanted = proto_pattern(pattern) as i32;
    plugins
        .values()
        .filter(|p| p.known().and_then(|i| i.capabilities.clone()).is_some_and(|c| c.patterns.contains(&wanted)))
        .any(|p| p.is_serving())
}

/// Keeps the pattern services' health in step with their plugins and the
/// route table, until the task is aborted.
pub async fn watch(reporter: HealthReporter, routes: Arc<Routes>, plugins: Arc<Plugins>) {
    for service in ALWAYS_SERVICES.into_iter().chain([""]) {
        reporter.set_service_status(service, ServingStatus::Serving).await;
    }
    let mut changes = futures::stream::select_all(
        std::iter::once(WatchStream::new(routes.subscribe()))
            .chain(plugins.values().map(|p| WatchStream::new(p.subscribe()))),
    );
    let mut shown: HashMap<&str, ServingStatus> = HashMap::new();
    // Each stream yields once at once, then on every change.
    while changes.next().await.is_some() {
        let table = routes.snapshot();
        for (service, pattern) in PATTERN_SERVICES {
            let status = if pattern_serving(pattern, &table, &plugins) {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if shown.get(service) != Some(&status) {
                tracing::info!(service, status = ?status, "health changed");
                reporter.set_service_status(service, status).await;
                shown.insert(service, status);
            }
        }
    }
}

/// Marks every service NOT_SERVING, at shutdown: new calls should go to
/// another proxy while this one finishes the calls it has.
pub async fn shutting_down(reporter: &HealthReporter) {
    for service in public_services().chain([""]) {
        reporter.set_service_status(service, ServingStatus::NotServing).await;
    }
}

/// What keeps the proxy from being ready: namespaces not loaded yet, or a
/// plugin that serves a namespace and is not serving. Empty when ready.
pub fn not_ready(loaded: bool, routes: &Routes, plugins: &Plugins) -> Vec<String> {
    let mut problems = Vec::new();
    if !loaded {
        problems.push("namespaces: not loaded from the registry yet".to_owned());
    }
    let table = routes.snapshot();
    for plugin in plugins.values() {
        let routed: Vec<&str> = table.iter().filter(|r| Arc::ptr_eq(&r.plugin, plugin)).map(|r| r.name()).collect();
        if routed.is_empty() || plugin.is_serving() {
            continue;
        }
        let status = plugin.status();
        let why = if status.message.is_empty() { String::new() } else { format!(": {}", status.message) };
        problems.push(format!("plugin {}: {}{why} (serves {})", plugin.name(), status.phase, routed.join(", ")));
    }
    problems
}

/// The gauges that describe the proxy's state, read at each scrape.
#[derive(Debug)]
pub struct StateCollector {
    pub plugins: Arc<Plugins>,
    pub routes: Arc<Routes>,
    /// The concurrency limit's permits, and how many there are.
    pub permits: Arc<tokio::sync::Semaphore>,
    pub max_in_flight: usize,
    pub audit: Audit,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginStateLabels {
    plugin: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PatternLabel {
    pattern: &'static str,
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let in_flight = self.max_in_flight.saturating_sub(self.permits.available_permits());
        gauge(
            &mut encoder,
            "requests_in_flight",
            "Calls being served now",
            i64::try_from(in_flight).unwrap_or(i64::MAX),
        )?;

        let plugins: Vec<(PluginLabel, Phase, u64)> = self
            .plugins
            .values()
            .map(|p| (PluginLabel { plugin: p.name().to_owned() }, p.phase(), p.restarts()))
            .collect();
        let mut up = encoder.encode_descriptor(
            "plugin_up",
            "Whether the plugin's process is reachable (1) or not (0)",
            None,
            MetricType::Gauge,
        )?;
        for (label, phase, _) in &plugins {
            ConstGauge::new(i64::from(phase.connection().is_some())).encode(up.encode_family(label)?)?;
        }
        let mut ready = encoder.encode_descriptor(
            "plugin_ready",
            "Whether the plugin serves calls (1): reachable and its backend healthy",
            None,
            MetricType::Gauge,
        )?;
        for (label, phase, _) in &plugins {
            ConstGauge::new(i64::from(matches!(phase, Phase::Ready(_)))).encode(ready.encode_family(label)?)?;
        }
        let mut state = encoder.encode_descriptor(
            "plugin_state",
            "The plugin's state: 1 for the state it is in, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for (label, phase, _) in &plugins {
            for name in Phase::NAMES {
                let labels = PluginStateLabels { plugin: label.plugin.clone(), state: name };
                ConstGauge::new(i64::from(phase.name() == name)).encode(state.encode_family(&labels)?)?;
            }
        }
        let mut restarts = encoder.encode_descriptor(
            "plugin_restarts",
            "Times the plugin was restarted (command) or reconnected (address) after it went down",
            None,
            MetricType::Counter,
        )?;
        for (label, _, count) in &plugins {
            ConstCounter::new(*count).encode(restarts.encode_family(label)?)?;
        }

        gauge(
            &mut encoder,
            "route_table_version",
            "Changes of the route table since the proxy started",
            i64::try_from(self.routes.version()).unwrap_or(i64::MAX),
        )?;
        let table = self.routes.snapshot();
        let mut namespaces =
            encoder.encode_descriptor("namespaces", "Namespaces served, by pattern", None, MetricType::Gauge)?;
        for pattern in [PatternKind::Keyvalue, PatternKind::Timeseries, PatternKind::Graph] {
            let count = table.iter().filter(|r| r.pattern() == pattern).count();
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                .encode(namespaces.encode_family(&PatternLabel { pattern: pattern.as_str() })?)?;
        }

        if let Some((depth, capacity)) = self.audit.depth() {
            gauge(&mut encoder, "audit_queue_depth", "Audit records waiting to be written", depth as i64)?;
            gauge(&mut encoder, "audit_queue_capacity", "Audit records that may wait", capacity as i64)?;
        }
        Ok(())
    }
}
