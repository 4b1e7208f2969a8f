//! `prismctl plugins ...`

use clap::Subcommand;
use prism_proto::admin::v1::admin_service_client::AdminServiceClient;
use prism_proto::admin::v1::{ListPluginsRequest, PluginInfo};
use prism_proto::plugin::v1::{Capabilities, Consistency, Durability, Pattern};
use serde_json::json;

use crate::Client;
use crate::output::{columns, emit, table};

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List the proxy's plugins: backend, health, capabilities, restarts.
    #[command(
        after_help = "Examples:\n  prismctl plugins list\n  prismctl plugins list -o wide\n  prismctl plugins list -o json"
    )]
    List,
}

pub async fn run(client: &Client, cmd: PluginsCommand) -> anyhow::Result<()> {
    match cmd {
        PluginsCommand::List => {
            let mut admin = AdminServiceClient::new(client.channel().await?);
            let plugins = admin.list_plugins(client.request(ListPluginsRequest {})).await?.into_inner().plugins;
            let docs: Vec<_> = plugins.iter().map(plugin_json).collect();
            emit(client.format, &docs, || {
                let rows = plugins
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.backend.clone(),
                            if p.message.is_empty() { p.phase.clone() } else { format!("{} ({})", p.phase, p.message) },
                            p.restarts.to_string(),
                            p.capabilities.as_ref().map(capability_list).unwrap_or_default().join(","),
                            p.namespaces.join(","),
                            p.version.clone(),
                            p.pid.to_string(),
                        ]
                    })
                    .collect();
                let all = ["NAME", "BACKEND", "STATUS", "RESTARTS", "CAPABILITIES", "NAMESPACES", "VERSION", "PID"];
                table(columns(client.format, &all, 6), rows)
            })
        }
    }
}

/// Capability flags as short names: patterns, then ttl/cas/scan,
/// consistency and durability.
fn capability_list(c: &Capabilities) -> Vec<String> {
    let mut list: Vec<String> = c
        .patterns
        .iter()
        .filter_map(|p| Pattern::try_from(*p).ok())
        .map(|p| p.as_str_name().trim_start_matches("PATTERN_").to_lowercase())
        .collect();
    for (flag, name) in [(c.ttl, "ttl"), (c.cas, "cas"), (c.scan, "scan")] {
        if flag {
            list.push(name.to_owned());
        }
    }
    if let Ok(consistency) = Consistency::try_from(c.consistency) {
        list.push(consistency.as_str_name().trim_start_matches("CONSISTENCY_").to_lowercase());
    }
    if let Ok(durability) = Durability::try_from(c.durability) {
        list.push(durability.as_str_name().trim_start_matches("DURABILITY_").to_lowercase());
    }
    list
}

fn plugin_json(p: &PluginInfo) -> serde_json::Value {
    json!({
        "name": p.name,
        "backend": p.backend,
        "version": p.version,
        "phase": p.phase,
        "message": p.message,
        "pid": p.pid,
        "target": p.target,
        "restarts": p.restarts,
        "capabilities": p.capabilities.as_ref().map(|c| json!({
            "list": capability_list(c),
            "max_key_bytes": c.max_key_bytes,
            "max_value_bytes": c.max_value_bytes,
        })),
        "namespaces": p.namespaces,
    })
}
