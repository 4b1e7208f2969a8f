//! Assembling and running the proxy.
//!
//! The request path, outermost first (see [`serve`], where it is built):
//!
//!  1. **Listener**: TCP, with TLS (and client certificates) when
//!     configured; handshakes run off the accept loop (`security::tls`).
//!  2. **Concurrency limit** (`layer::limit`): a call beyond
//!     `limits.max_concurrent_requests` is refused at once.
//!  3. **Request context** (`layer::context`): request id and deadline.
//!  4. **Audit** (`layer::audit`): the record written when the call ends.
//!  5. **Authentication** (`layer::authn`): who is calling.
//!  6. **Wire status** (`layer::wire`): a request the codec refuses is
//!     INVALID_ARGUMENT (does not decode) or RESOURCE_EXHAUSTED (too large).
//!  7. **Services**: health and reflection; the Admin API
//!     (`control::admin`); the pattern services (`api`), whose every call
//!     goes through one `forward` step: authorize → validate → call the
//!     plugin (`plugin`, under the deadline, over a pooled connection) →
//!     map errors (`error`, the one place errors become gRPC codes).

use std::future::Future;
use std::sync::Arc;

use prism_proto::admin::v1::admin_service_server::AdminServiceServer;
use prism_proto::graph::v1::graph_service_server::GraphServiceServer;
use prism_proto::keyvalue::v1::key_value_service_server::KeyValueServiceServer;
use prism_proto::timeseries::v1::time_series_service_server::TimeSeriesServiceServer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tower::ServiceBuilder;

use crate::admin_http::{AdminHttp, Guard};
use crate::api::DataPlane;
use crate::api::graph::GraphApi;
use crate::api::keyvalue::KeyValueApi;
use crate::api::subscribe::Subscriptions;
use crate::api::timeseries::TimeSeriesApi;
use crate::config::Config;
use crate::control::Controller;
use crate::control::admin::AdminApi;
use crate::health::{self, StateCollector};
use crate::layer::audit::AuditLayer;
use crate::layer::authn::AuthnLayer;
use crate::layer::context::ContextLayer;
use crate::layer::limit::ConcurrencyLimitLayer;
use crate::layer::wire::WireStatusLayer;
use crate::logging;
use crate::metrics::Metrics;
use crate::plugin::{self, Plugins, Supervisor};
use crate::routes::Routes;
use crate::security::admin::AdminPolicy;
use crate::security::audit::Audit;
use crate::security::authn::Authenticator;
use crate::security::jwt::MAX_HEADER_LIST_BYTES;
use crate::security::tls;
use crate::startup::{self, Options, StartError};

/// Runs the proxy on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight calls finish (up to `shutdown_grace`), and
/// drains and stops every plugin. `config.listen` is not used: the caller
/// bound the listener (tests bind `127.0.0.1:0` and run it in-process).
pub async fn run(
    config: Config,
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    // reqwest (JWKS fetches) uses the process-wide provider; one backend.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let loaded = startup::load(&config, options, addr).map_err(StartError::Refused)?;
    // Both listeners are bound before any plugin starts: a proxy that
    // cannot listen stops before it has started anything.
    let admin_addr = config.admin_http.listen;
    let admin_listener =
        TcpListener::bind(admin_addr).await.map_err(|source| StartError::Bind { addr: admin_addr, source })?;
    if !config.authenticates() {
        if addr.ip().is_loopback() {
            tracing::warn!(
                tls = config.tls.is_some(),
                "DEV MODE: no client authentication; every caller may do everything; serving loopback only"
            );
        } else {
            tracing::error!(
                listen = %addr,
                "INSECURE: no client authentication on a non-loopback address (--allow-insecure-remote); anyone who can reach it may read, write and administer every namespace"
            );
        }
    }
    let metrics = Arc::new(Metrics::new());
    let authenticator = Arc::new(startup::authenticator(&config).await?);
    let audit = Audit::start(&config.audit.sink, metrics.clone()).await?;

    let socket_dir = plugin::socket_dir::create().map_err(StartError::SocketDir)?;
    let routes = Arc::new(Routes::default());
    let plugins = Arc::new(plugin::plugins(&config.plugins));
    let permits = Arc::new(Semaphore::new(config.limits.max_concurrent_requests));
    metrics.register_state(Box::new(StateCollector {
        plugins: plugins.clone(),
        routes: routes.clone(),
        permits: permits.clone(),
        max_in_flight: config.limits.max_concurrent_requests,
        audit: audit.clone(),
    }));
    let controller = Arc::new(Controller::new(
        routes.clone(),
        plugins.clone(),
        loaded.registry,
        loaded.keyring,
        &config,
        metrics.clone(),
    ));

    let stop = CancellationToken::new();
    // The admin listener answers from the start: `/readyz` says what the
    // proxy still waits for.
    let admin = AdminHttp {
        metrics: metrics.clone(),
        routes: routes.clone(),
        plugins: plugins.clone(),
        controller: controller.clone(),
        guard: (!admin_addr.ip().is_loopback()).then(|| {
            Arc::new(Guard {
                authenticator: authenticator.clone(),
                policy: AdminPolicy::new(config.auth.as_ref()),
                readers: config.admin_http.readers.clone(),
            })
        }),
    };
    // Off loopback, the admin listener has TLS when the client listener
    // has (the same files; HTTP/1.1 offered too, for curl and Prometheus).
    let admin_tls = match &config.tls {
        Some(files) if !admin_addr.ip().is_loopback() => {
            let reloading = tls::Reloading::new(files.clone(), tls::Protocols::Http).map_err(StartError::Tls)?;
            tokio::spawn(reloading.clone().watch(stop.clone()));
            Some((reloading, audit.clone()))
        }
        _ => None,
    };
    if let Ok(bound) = admin_listener.local_addr() {
        tracing::info!(addr = %bound, tls = admin_tls.is_some(), "admin http listening");
    }
    let admin_server = tokio::spawn(admin.serve(admin_listener, admin_tls, stop.clone()));

    let source = routes.clone();
    let env_config = config.clone();
    let supervisor = Arc::new(Supervisor {
        socket_dir: socket_dir.path().to_owned(),
        work_dir: config.base_dir.clone(),
        namespaces: Arc::new(move |plugin: &str| source.namespaces_of(plugin)),
        env: Arc::new(move |plugin: &str| logging::plugin_env(&env_config, plugin)),
        stop: stop.clone(),
    });
    let mut supervisors = JoinSet::new();
    for plugin in plugins.values() {
        supervisors.spawn(supervisor.clone().run(plugin.clone()));
    }

    // Open the listener once plugins are up (or their start timeout passed),
    // so the first calls do not fail just because the proxy is young.
    let mut waits = JoinSet::new();
    for plugin in plugins.values().cloned() {
        waits.spawn(async move {
            let ready = plugin.wait_connected(plugin.config().start_timeout).await;
            (plugin, ready)
        });
    }
    while let Some(Ok((plugin, ready))) = waits.join_next().await {
        if !ready {
            tracing::error!(plugin = plugin.name(), status = ?plugin.status().message, "plugin not ready; serving anyway");
        }
    }

    // Namespaces are planned once the plugins have declared what they can
    // do. A registry that cannot be read now is retried by the watcher.
    tracing::info!(registry = %controller.registry().describe(), "loading namespaces");
    if let Err(e) = controller.reconcile().await {
        tracing::error!(error = %e, "cannot load namespaces yet; retrying on the next registry change");
    }
    let watcher = controller.watch().map_err(|e| StartError::Registry(e.to_string()))?;

    let parts =
        Parts { config: &config, routes, plugins, controller, authenticator, audit, metrics, permits, tls: loaded.tls };
    let result = serve(parts, listener, &stop, shutdown).await;

    watcher.abort();
    stop.cancel();
    let _ = admin_server.await;
    while supervisors.join_next().await.is_some() {}
    drop(socket_dir);
    tracing::info!("proxy stopped");
    result
}

/// What the request path is built from.
struct Parts<'a> {
    config: &'a Config,
    routes: Arc<Routes>,
    plugins: Arc<Plugins>,
    controller: Arc<Controller>,
    authenticator: Arc<Authenticator>,
    audit: Audit,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    tls: Option<Arc<tls::Reloading>>,
}

/// Builds the request path and serves it until `shutdown`.
async fn serve(
    parts: Parts<'_>,
    listener: TcpListener,
    stop: &CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let Parts { config, routes, plugins, controller, authenticator, audit, metrics, permits, tls } = parts;
    let limits = &config.limits;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;

    let health = tonic_health::server::HealthReporter::new();
    let closing = tokio_util::sync::CancellationToken::new();
    let health_service =
        tonic_health::pb::health_server::HealthServer::new(health::HealthApi::new(health.clone(), closing.clone()));
    let health_watch = tokio::spawn(health::watch(health.clone(), routes.clone(), plugins.clone()));
    // Reflection lists the services a client can call, not the plugin
    // protocol's (their types are still there for the public ones' sake).
    let reflection = || {
        health::public_services().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(prism_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, service| builder.with_service_name(service),
        )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let admin = AdminApi::new(routes.clone(), plugins, controller, AdminPolicy::new(config.auth.as_ref()));
    let namespaces = routes.snapshot().len();
    let plane = DataPlane::new(routes, limits.clone(), metrics.clone());
    // Ended (UNAVAILABLE, resumable) when the proxy stops serving, so that
    // shutdown never waits for a subscriber.
    let subscriptions = Subscriptions::new(limits.max_subscriptions, closing.clone(), audit.clone());

    let layers = ServiceBuilder::new()
        // Outermost, so an overloaded proxy refuses a call before it
        // spends anything on it.
        .layer(ConcurrencyLimitLayer::new(permits, limits.max_concurrent_requests, metrics.clone()))
        // Next, so every later stage and every log line of the call has its
        // request id, deadline and span (the trace's root in the proxy).
        .layer(ContextLayer::new(limits.request_timeout))
        // Outside authentication, so refused calls are recorded too.
        .layer(AuditLayer::new(audit.clone()))
        // Last before the services, so no service sees an unauthenticated
        // call.
        .layer(AuthnLayer::new(authenticator, metrics.clone()))
        // Innermost: it corrects the codes the services' codec answers,
        // before the audit record and the metrics see them.
        .layer(WireStatusLayer::new(limits.max_message_bytes))
        .into_inner();
    let max = limits.max_message_bytes;
    let router = Server::builder()
        // Above the token limit, so an over-long token is refused (and
        // audited) by authentication, not by HTTP/2 before any layer runs.
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .layer(layers)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AdminServiceServer::new(admin).max_decoding_message_size(max).max_encoding_message_size(max))
        .add_service(
            KeyValueServiceServer::new(KeyValueApi::new(plane.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            TimeSeriesServiceServer::new(TimeSeriesApi::new(plane.clone(), subscriptions))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            GraphServiceServer::new(GraphApi::new(plane)).max_decoding_message_size(max).max_encoding_message_size(max),
        );

    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let mut server = match &tls {
        Some(tls) => {
            tokio::spawn(tls.clone().watch(stop.clone()));
            let incoming = tls.clone().incoming(listener, audit, metrics, stop.clone());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
    };
    tracing::info!(%addr, tls = tls.is_some(), namespaces, "listening");

    tokio::select! {
        () = shutdown => {}
        ended = &mut server => {
            health_watch.abort();
            // The server only ends by itself on an error.
            return match ended {
                Ok(result) => result.map_err(StartError::from),
                Err(join) => Err(StartError::Task(join)),
            };
        }
    }
    tracing::info!("shutting down: no new calls; waiting for in-flight calls");
    health_watch.abort();
    health::shutting_down(&health).await;
    if !config.shutdown_delay.is_zero() {
        tracing::info!(delay = ?config.shutdown_delay, "NOT_SERVING reported; serving on before closing");
        tokio::time::sleep(config.shutdown_delay).await;
    }
    closing.cancel();
    let _ = stop_accepting.send(());
    match tokio::time::timeout(config.shutdown_grace, &mut server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(_)) => {}
        Err(_) => {
            tracing::warn!(grace = ?config.shutdown_grace, "in-flight calls did not finish in time; closing them");
            server.abort();
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
