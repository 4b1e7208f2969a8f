//! Assembling and running the proxy.
//!
//! The request path, outermost first:
//!   1. TCP listener, with TLS (and client certificates) when configured;
//!      handshakes run off the accept loop (`security::tls`).
//!   2. `ContextLayer`: request id, deadline, concurrency limit, and who is
//!      calling (certificate, bearer token): it refuses unauthenticated
//!      calls and writes the audit record when a call ends. It sits
//!      outermost so that every call, even a rejected one, is counted,
//!      audited and carries an id.
//!   3. The gRPC router: health, reflection, the admin service, and the
//!      pattern services.
//!   4. The pattern service: authorization and namespace lookup
//!      (`Gateway::authorize`), validation, then the plugin call under the
//!      request's deadline (`api::call_plugin`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prism_proto::admin::v1::admin_service_server::AdminServiceServer;
use prism_proto::graph::v1::graph_service_server::GraphServiceServer;
use prism_proto::keyvalue::v1::key_value_service_server::KeyValueServiceServer;
use prism_proto::timeseries::v1::time_series_service_server::TimeSeriesServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::api::admin::AdminApi;
use crate::api::graph::GraphApi;
use crate::api::keyvalue::KeyValueApi;
use crate::api::timeseries::TimeSeriesApi;
use crate::config::Config;
use crate::config::Require;
use crate::context::ContextLayer;
use crate::control::Controller;
use crate::control::registry::Registry;
use crate::gateway::Gateway;
use crate::plugin::Supervisor;
use crate::security::audit::Audit;
use crate::security::authn::Authenticator;
use crate::security::jwt::JwtVerifier;
use crate::security::tls;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0}: client authentication is not configured (dev mode), so the proxy only serves loopback addresses (127.0.0.1, ::1); configure tls.client_ca or auth.jwt, or start with --allow-insecure-remote"
    )]
    NotLoopback(SocketAddr),
    #[error("tls: {0}")]
    Tls(String),
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Audit(String),
    #[error("no namespace registry configured (namespaces_dir or registry.postgres)")]
    NoRegistry,
    #[error("namespace registry: {0}")]
    Registry(String),
    #[error("cannot create the plugin socket directory: {0}")]
    SocketDir(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the proxy until `shutdown` resolves, then stops accepting, lets
/// in-flight calls finish (up to `shutdown_grace`), and drains and stops
/// every plugin.
pub async fn run(
    config: Config,
    allow_insecure_remote: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    // reqwest (JWKS fetches) uses the process-wide provider; one backend.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !config.authenticates() {
        if !config.listen.ip().is_loopback() {
            if !allow_insecure_remote {
                return Err(StartError::NotLoopback(config.listen));
            }
            tracing::error!(
                listen = %config.listen,
                "INSECURE: no client authentication on a non-loopback address (--allow-insecure-remote); anyone who can reach it may read, write and administer every namespace"
            );
        } else {
            tracing::warn!(
                tls = config.tls.is_some(),
                "DEV MODE: no client authentication; every caller may do everything; serving loopback only"
            );
        }
    }
    let authenticator = Arc::new(match &config.auth {
        Some(auth) if config.authenticates() => Authenticator::new(
            true,
            auth.require,
            match &auth.jwt {
                Some(jwt) => Some(JwtVerifier::new(jwt.clone()).await.map_err(StartError::Auth)?),
                None => None,
            },
        ),
        // Client certificates alone.
        None if config.authenticates() => Authenticator::new(true, Require::Mtls, None),
        _ => Authenticator::dev(),
    });
    let audit = Audit::start(&config.audit.sink).await.map_err(StartError::Audit)?;
    let tls = config.tls.clone().map(tls::Reloading::new).transpose().map_err(StartError::Tls)?;

    let socket_dir = tempfile::Builder::new().prefix("prism-").tempdir().map_err(StartError::SocketDir)?;
    let registry = match (&config.namespaces_dir, &config.registry) {
        (Some(dir), _) => Registry::Directory(dir.clone()),
        (None, Some(r)) => Registry::postgres(r.postgres.clone()),
        (None, None) => return Err(StartError::NoRegistry),
    };
    let gateway = Arc::new(Gateway::new(config));

    let stop = CancellationToken::new();
    let source = gateway.clone();
    let supervisor = Arc::new(Supervisor {
        socket_dir: socket_dir.path().to_owned(),
        work_dir: gateway.config.base_dir.clone(),
        namespaces: Arc::new(move |plugin: &str| source.namespaces_of(plugin)),
        log_format: gateway.config.log.format,
        stop: stop.clone(),
    });
    let mut supervisors = JoinSet::new();
    for plugin in gateway.plugins.values() {
        supervisors.spawn(supervisor.clone().run(plugin.clone()));
    }

    // Open the listener once plugins are up (or their start timeout passed),
    // so the first calls do not fail just because the proxy is young.
    let mut waits = JoinSet::new();
    for plugin in gateway.plugins.values().cloned() {
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
    let controller = Arc::new(Controller::new(gateway.clone(), registry, false));
    tracing::info!(registry = %controller.registry().describe(), "loading namespaces");
    if let Err(e) = controller.reconcile().await {
        tracing::error!(error = %e, "cannot load namespaces yet; retrying on the next registry change");
    }
    let watcher = controller.watch().map_err(|e| StartError::Registry(e.to_string()))?;

    let security = Security { authenticator, audit, tls };
    let result = serve(&gateway, &controller, security, &stop, shutdown).await;

    watcher.abort();
    stop.cancel();
    while supervisors.join_next().await.is_some() {}
    drop(socket_dir);
    tracing::info!("proxy stopped");
    result
}

struct Security {
    authenticator: Arc<Authenticator>,
    audit: Audit,
    tls: Option<Arc<tls::Reloading>>,
}

async fn serve(
    gateway: &Arc<Gateway>,
    controller: &Arc<Controller>,
    security: Security,
    stop: &CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let config = &gateway.config;
    let limits = &config.limits;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KeyValueServiceServer<KeyValueApi>>().await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(prism_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(prism_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let admin = AdminServiceServer::new(AdminApi::new(gateway.clone(), controller.clone()));
    let keyvalue = KeyValueServiceServer::new(KeyValueApi::new(gateway.clone()))
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);

    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;

    let router = Server::builder()
        .layer(ContextLayer::new(
            limits.max_concurrent_requests,
            limits.request_timeout,
            security.authenticator.clone(),
            security.audit.clone(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(keyvalue)
        .add_service(
            TimeSeriesServiceServer::new(TimeSeriesApi::new(gateway.clone()))
                .max_decoding_message_size(limits.max_message_bytes)
                .max_encoding_message_size(limits.max_message_bytes),
        )
        .add_service(
            GraphServiceServer::new(GraphApi::new(gateway.clone()))
                .max_decoding_message_size(limits.max_message_bytes)
                .max_encoding_message_size(limits.max_message_bytes),
        );

    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let mut server = match &security.tls {
        Some(tls) => {
            tokio::spawn(tls.clone().watch(stop.clone()));
            let incoming = tls.clone().incoming(listener, security.audit.clone(), stop.clone());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
    };
    tracing::info!(%addr, tls = security.tls.is_some(), namespaces = gateway.routes().len(), "listening");

    tokio::select! {
        () = shutdown => {}
        ended = &mut server => {
            // The server only ends by itself on an error.
            return match ended {
                Ok(result) => result.map_err(StartError::from),
                Err(join) => Err(StartError::Task(join)),
            };
        }
    }
    tracing::info!("shutting down: no new calls; waiting for in-flight calls");
    health.set_not_serving::<KeyValueServiceServer<KeyValueApi>>().await;
    health.set_not_serving::<AdminServiceServer<AdminApi>>().await;
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
