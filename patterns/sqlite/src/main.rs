//! `prism-plugin-sqlite`: durable embedded KeyValue on SQLite.

use std::process::ExitCode;

use prism_plugin_sdk::PluginServer;
use prism_plugin_sqlite::Sqlite;

fn main() -> ExitCode {
    PluginServer::<Sqlite>::new().keyvalue().timeseries().graph().main()
}
