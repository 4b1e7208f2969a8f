//! `prism-plugin-postgres`: KeyValue on PostgreSQL.

use std::process::ExitCode;

use prism_plugin_postgres::Postgres;
use prism_plugin_sdk::PluginServer;

fn main() -> ExitCode {
    PluginServer::<Postgres>::new().keyvalue().timeseries().graph().main()
}
