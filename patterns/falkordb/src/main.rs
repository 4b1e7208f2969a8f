//! `prism-plugin-falkordb`: Graph on FalkorDB (openCypher).

use std::process::ExitCode;

use prism_plugin_falkordb::FalkorDb;
use prism_plugin_sdk::PluginServer;

fn main() -> ExitCode {
    PluginServer::<FalkorDb>::new().graph().main()
}
