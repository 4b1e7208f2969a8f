//! Prism proxy: the data access gateway.
//!
//! Clients speak the pattern APIs (`prism.keyvalue.v1`, ...) to this
//! process; it resolves each call's namespace to a backend plugin and
//! forwards the call to the plugin process over gRPC. See `server` for the
//! request path, top to bottom.

pub mod api;
pub mod config;
pub mod context;
pub mod control;
pub mod error;
pub mod gateway;
pub mod logging;
pub mod namespace;
pub mod plugin;
pub mod security;
pub mod server;
