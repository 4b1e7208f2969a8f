//! Build a Prism backend plugin.
//!
//! A plugin is a process that stores data for the proxy. Its author
//! implements [`Backend`] (lifecycle) and a pattern trait such as
//! [`KeyValueStore`], then calls [`PluginServer::main`] from its `main`
//! (it builds the runtime; [`PluginServer::run`] runs on the caller's):
//!
//! ```no_run
//! # use prism_plugin_sdk::{PluginServer, KeyValueStore};
//! # fn main_of<MyStore: KeyValueStore>() -> std::process::ExitCode {
//! PluginServer::<MyStore>::new().keyvalue().main()
//! # }
//! ```
//!
//! The SDK handles the rest: the Unix socket or TCP listener, Initialize and
//! namespace preparation, health, draining on shutdown, page tokens, and the
//! refusal of calls that need a capability the plugin does not declare.

mod backend;
mod call;
pub mod cursor;
mod error;
mod graph;
pub mod keys;
mod keyvalue;
mod lifecycle;
#[cfg(test)]
mod proptests;
pub mod retention;
mod serve;
mod state;
mod timeseries;
pub mod view;

pub use backend::{
    Backend, BucketStats, Capabilities, Consistency, Direction, Durability, Edge, EdgePage, Event, EventPage,
    EventStream, GraphStore, KeyValueStore, LogPosition, Namespace, NamespaceSettings, Pattern, PutOp, RangeQuery,
    Record, ScanPage, SubscribeFrom, Subscription, TimeSeriesStore, TraversePage, Vertex,
};
pub use error::{PluginError, PluginResult};
pub use graph::{DEFAULT_TRAVERSE_RESULTS, MAX_TRAVERSE_DEPTH, MAX_TRAVERSE_RESULTS};
pub use keyvalue::{DEFAULT_SCAN_PAGE, MAX_BATCH_ITEMS, MAX_SCAN_PAGE};
pub use prism_proto as proto;
pub use prism_proto::wire::MAX_MESSAGE_BYTES;
pub use serve::PluginServer;
pub use timeseries::{DEFAULT_PAGE_ITEMS, MAX_APPEND_EVENTS, MAX_BUCKETS, MAX_PAGE_ITEMS, retention_cutoff};
