//! `prism-plugin-redis`: KeyValue on Redis.

use std::process::ExitCode;

use prism_plugin_redis::Redis;
use prism_plugin_sdk::PluginServer;

fn main() -> ExitCode {
    PluginServer::<Redis>::new().keyvalue().timeseries().main()
}
