//! `prism-plugin-sqlite`: durable embedded KeyValue on SQLite.

use std::process::ExitCode;

use prism_plugin_sdk::PluginServer;
use prism_plugin_sqlite::Sqlite;

#[tokio::main]
async fn main() -> ExitCode {
    PluginServer::<Sqlite>::new().keyvalue().timeseries().graph().run().await
}
