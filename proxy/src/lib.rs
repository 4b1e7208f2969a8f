//! Prism proxy: the data access gateway.
//!
//! Clients speak the pattern APIs (`prism.keyvalue.v1`, ...) to this
//! process; it resolves each call's namespace to a backend plugin and
//! forwards the call to the plugin process over gRPC. `server` names the
//! stages of the request path in order and builds it.

pub mod admin_http;
pub mod api;
pub mod config;
pub mod context;
pub mod control;
pub mod error;
pub mod health;
pub mod layer;
pub mod logging;
pub mod metrics;
pub mod plugin;
#[cfg(test)]
mod proptests;
pub mod quota;
pub mod routes;
pub mod security;
pub mod server;
pub mod shadow;
pub mod startup;

/// The namespace document (the `prism-namespace` crate, shared with
/// `prismctl`).
pub use prism_namespace as namespace;
