//! `grpc.health.v1`, per service. The Admin service serves while the proxy
//! does. A pattern service (KeyValue, TimeSeries, Graph) is SERVING while
//! at least one of its plugins is: the plugins that serve a namespace of
//! the pattern, or, when no namespace uses it yet, the plugins that declare
//! it. With none of them up (or none at all) it is NOT_SERVING, so a load
//! balancer or a client's health check sees a proxy that cannot serve it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use prism_proto::admin::v1::admin_service_server::AdminServiceServer;
use prism_proto::graph::v1::graph_service_server::GraphServiceServer;
use prism_proto::keyvalue::v1::key_value_service_server::KeyValueServiceServer;
use prism_proto::plugin::v1::Pattern;
use prism_proto::timeseries::v1::time_series_service_server::TimeSeriesServiceServer;
use tokio_stream::wrappers::WatchStream;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::graph::GraphApi;
use crate::api::keyvalue::KeyValueApi;
use crate::api::timeseries::TimeSeriesApi;
use crate::control::admin::AdminApi;
use crate::namespace::PatternKind;
use crate::plugin::Plugins;
use crate::routes::{RouteTable, Routes};

/// The pattern services and the pattern each serves.
const PATTERN_SERVICES: [(&str, PatternKind); 3] = [
    (<KeyValueServiceServer<KeyValueApi> as NamedService>::NAME, PatternKind::Keyvalue),
    (<TimeSeriesServiceServer<TimeSeriesApi> as NamedService>::NAME, PatternKind::Timeseries),
    (<GraphServiceServer<GraphApi> as NamedService>::NAME, PatternKind::Graph),
];

const ADMIN_SERVICE: &str = <AdminServiceServer<AdminApi> as NamedService>::NAME;

fn proto_pattern(pattern: PatternKind) -> Pattern {
    match pattern {
        PatternKind::Keyvalue => Pattern::Keyvalue,
        PatternKind::Timeseries => Pattern::Timeseries,
        PatternKind::Graph => Pattern::Graph,
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
    reporter.set_service_status(ADMIN_SERVICE, ServingStatus::Serving).await;
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
    for service in PATTERN_SERVICES.iter().map(|(s, _)| *s).chain([ADMIN_SERVICE, ""]) {
        reporter.set_service_status(service, ServingStatus::NotServing).await;
    }
}
