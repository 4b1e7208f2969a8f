//! The client-facing pattern services.

pub mod admin;
pub mod keyvalue;

use std::future::Future;

use tonic::{Response, Status};

use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::plugin::Plugin;

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
