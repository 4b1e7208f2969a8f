//! Build a Prism backend plugin.
//!
//! A plugin is a process that stores data for the proxy. Its author
//! implements [`Backend`] (lifecycle) and a pattern trait such as
//! [`KeyValueStore`], then calls [`PluginServer::run`]:
//!
//! ```no_run
//! # use prism_plugin_sdk::{PluginServer, KeyValueStore};
//! # async fn main_of<MyStore: KeyValueStore>() -> std::process::ExitCode {
//! PluginServer::<MyStore>::new().keyvalue().run().await
//! # }
//! ```
//!
//! The SDK handles the rest: the Unix socket or TCP listener, Initialize and
//! namespace preparation, health, draining on shutdown, page tokens, and the
//! refusal of calls that need a capability the plugin does not declare.

mod backend;
pub mod cursor;
mod error;
pub mod keys;
mod keyvalue;
mod lifecycle;
mod serve;
mod state;
mod transport;

pub use backend::{Backend, KeyValueStore, Namespace, PutOp, Record, ScanPage};
pub use error::{PluginError, PluginResult};
pub use keyvalue::{DEFAULT_SCAN_PAGE, MAX_BATCH_ITEMS, MAX_SCAN_PAGE};
pub use prism_proto as proto;
pub use serve::PluginServer;
pub use transport::MAX_MESSAGE_BYTES;
