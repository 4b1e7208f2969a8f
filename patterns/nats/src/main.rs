//! `prism-plugin-nats`: KeyValue on NATS JetStream key-value buckets, TimeSeries
//! on streams.

use std::process::ExitCode;

use prism_plugin_nats::Nats;
use prism_plugin_sdk::PluginServer;

fn main() -> ExitCode {
    PluginServer::<Nats>::new().keyvalue().timeseries().main()
}
