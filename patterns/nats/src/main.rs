//! `prism-plugin-nats`: KeyValue on NATS JetStream key-value buckets.

use std::process::ExitCode;

use prism_plugin_nats::Nats;
use prism_plugin_sdk::PluginServer;

#[tokio::main]
async fn main() -> ExitCode {
    PluginServer::<Nats>::new().keyvalue().run().await
}
