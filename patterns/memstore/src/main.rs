//! `prism-plugin-memstore`: an in-memory backend, the zero-dependency default.

use std::process::ExitCode;

use prism_plugin_memstore::MemStore;
use prism_plugin_sdk::PluginServer;

fn main() -> ExitCode {
    PluginServer::<MemStore>::new().keyvalue().timeseries().graph().main()
}
