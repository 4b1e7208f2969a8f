//! The admin HTTP listener: `/metrics` (Prometheus, OpenMetrics text),
//! `/healthz` (the process is up), `/readyz` (namespaces loaded and every
//! plugin that serves a namespace serving; says what is not), and `/status`
//! (namespaces and plugins as JSON).
//!
//! On a loopback address it is open to the machine, like Envoy's admin
//! port. On any other address it follows the client listener's rules: TLS
//! (with client certificates) when `tls` is configured, and `/metrics` and
//! `/status` only for authenticated proxy administrators and
//! `admin_http.readers`; `/healthz` and `/readyz` stay open, as probes
//! carry no credentials.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::control::Controller;
use crate::health;
use crate::metrics::Metrics;
use crate::plugin::{PluginStatus, Plugins};
use crate::routes::Routes;
use crate::security::Principal;
use crate::security::admin::AdminPolicy;
use crate::security::audit::Audit;
use crate::security::authn::{Authenticating, Authenticator, Credentials};
use crate::security::tls;

/// Who may read `/metrics` and `/status` on a non-loopback address.
pub struct Guard {
    pub authenticator: Arc<Authenticator>,
    pub policy: AdminPolicy,
    /// `admin_http.readers`.
    pub readers: Vec<String>,
}

/// What the handlers read.
#[derive(Clone)]
pub struct AdminHttp {
    pub metrics: Arc<Metrics>,
    pub routes: Arc<Routes>,
    pub plugins: Arc<Plugins>,
    pub controller: Arc<Controller>,
    /// `None` on a loopback address: no credentials asked.
    pub guard: Option<Arc<Guard>>,
}

impl AdminHttp {
    /// The routes of the listener.
    pub fn router(self) -> Router {
        let guarded = Router::new()
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .route_layer(middleware::from_fn_with_state(self.clone(), authorize));
        Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).merge(guarded).with_state(self)
    }

    /// Serves until `stop`: plain HTTP, or TLS connections from `tls`.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<(Arc<tls::Reloading>, Audit)>,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let metrics = self.metrics.clone();
        let router = self.router();
        let Some((tls, audit)) = tls else {
            return axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
        };
        let mut incoming = tls.incoming(listener, audit, metrics, stop.clone());
        while let Some(Ok(stream)) = incoming.next().await {
            // The request's credentials read the client certificate from
            // this extension, as on the gRPC listener.
            let peer = tonic::transport::server::Connected::connect_info(&stream);
            let service = hyper_util::service::TowerToHyperService::new(router.clone().layer(axum::Extension(peer)));
            let stop = stop.clone();
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::select! {
                    served = connection => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "admin http connection ended with an error");
                        }
                    }
                    () = stop.cancelled() => {}
                }
            });
        }
        Ok(())
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<AdminHttp>) -> Response {
    let problems = health::not_ready(admin.controller.loaded(), &admin.routes, &admin.plugins);
    if problems.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let text: String = problems.iter().map(|p| format!("- {p}\n")).collect();
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{text}")).into_response()
}

async fn metrics(State(admin): State<AdminHttp>) -> Response {
    match admin.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Serialize)]
struct NamespaceStatus {
    name: String,
    pattern: &'static str,
    plugin: String,
    ready: bool,
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    ready: bool,
    not_ready: Vec<String>,
    route_table_version: u64,
    namespaces: Vec<NamespaceStatus>,
    plugins: Vec<PluginStatus>,
}

async fn status(State(admin): State<AdminHttp>) -> Response {
    let not_ready = health::not_ready(admin.controller.loaded(), &admin.routes, &admin.plugins);
    let table = admin.routes.snapshot();
    let mut namespaces: Vec<NamespaceStatus> = table
        .iter()
        .map(|r| NamespaceStatus {
            name: r.name().to_owned(),
            pattern: r.pattern().as_str(),
            plugin: r.plugin.name().to_owned(),
            ready: r.plugin.is_serving(),
        })
        .collect();
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    let plugins = admin.plugins.values().map(|p| p.status()).collect();
    axum::Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        ready: not_ready.is_empty(),
        not_ready,
        route_table_version: admin.routes.version(),
        namespaces,
        plugins,
    })
    .into_response()
}

/// Lets through the callers `/metrics` and `/status` allow.
async fn authorize(State(admin): State<AdminHttp>, request: Request, next: Next) -> Response {
    let Some(guard) = &admin.guard else { return next.run(request).await };
    let credentials = Credentials::of(&request);
    let authenticated = match guard.authenticator.authenticate(request.uri().path(), credentials) {
        Authenticating::Done(result) => result,
        Authenticating::Verifying(verifying) => verifying.await,
    };
    let principal: Arc<Principal> = match authenticated {
        Ok(principal) => principal,
        Err(why) => {
            admin.metrics.authentication_failure(why.reason());
            return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
        }
    };
    if guard.policy.is_proxy_admin(&principal) || principal.matches_any(&guard.readers) {
        return next.run(request).await;
    }
    (StatusCode::FORBIDDEN, format!("{principal} may not read this page (auth.admins or admin_http.readers)\n"))
        .into_response()
}
