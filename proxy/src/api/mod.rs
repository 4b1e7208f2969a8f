//! The client-facing pattern services.

pub mod admin;
pub mod graph;
pub mod keyvalue;
pub mod timeseries;

use std::future::Future;

use tonic::{Response, Status};

use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::gateway::Route;
use crate::plugin::Plugin;

/// Checks a required name (a series, an event id, a vertex id or an edge
/// label) against the proxy's key limit.
pub(crate) fn check_name(route: &Route, what: &str, name: &str) -> Result<(), ProxyError> {
    if name.is_empty() {
        return Err(ProxyError::InvalidArgument(format!("{what} must not be empty")));
    }
    if name.len() > route.max_key_bytes {
        return Err(ProxyError::InvalidArgument(format!(
            "{what} is {} bytes, over the limit of {} bytes",
            name.len(),
            route.max_key_bytes
        )));
    }
    Ok(())
}

/// Runs one plugin call under the request's deadline and maps its failure.
pub(crate) async fn call_plugin<T>(
    ctx: &RequestContext,
    plugin: &Plugin,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, ProxyError> {
    match tokio::time::timeout_at(ctx.deadline, call).await {
        Err(_) => Err(ProxyError::DeadlineExceeded(format!(
            "deadline exceeded after {} ms waiting for plugin {}",
            ctx.started.elapsed().as_millis(),
            plugin.name()
        ))),
        Ok(Err(status)) => Err(ProxyError::from_plugin(plugin.name(), &status)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}
