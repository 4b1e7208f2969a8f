//! `prism-plugin-kafka`: TimeSeries on Kafka topics.

use std::process::ExitCode;

use prism_plugin_kafka::Kafka;
use prism_plugin_sdk::PluginServer;

fn main() -> ExitCode {
    PluginServer::<Kafka>::new().timeseries().main()
}
