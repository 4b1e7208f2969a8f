//! Dynamic shell completion (`source <(COMPLETE=bash prismctl)`): the
//! names of the namespaces the proxy serves, asked of the proxy on each
//! Tab. Any failure (no proxy, no answer in time, refused) completes
//! nothing and prints nothing: a Tab must never hang or spill errors.

use std::ffi::{OsStr, OsString};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use prism_proto::admin::v1::ListNamespacesRequest;
use prism_proto::admin::v1::admin_service_client::AdminServiceClient;

/// Longest a completion waits for the proxy, connecting included.
const WAIT: Duration = Duration::from_secs(1);

/// Completes a namespace name; `pattern` (`keyvalue`, `timeseries`,
/// `graph`) keeps only that pattern's namespaces, empty keeps all.
pub fn namespaces(pattern: &'static str) -> ArgValueCompleter {
    ArgValueCompleter::new(move |current: &OsStr| {
        let Some(current) = current.to_str() else { return Vec::new() };
        names(pattern)
            .unwrap_or_default()
            .into_iter()
            .filter(|name| name.starts_with(current))
            .map(CompletionCandidate::new)
            .collect()
    })
}

fn names(pattern: &str) -> Option<Vec<String>> {
    let mut client = crate::client(typed_globals()?).ok()?;
    client.timeout = client.timeout.min(WAIT);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    runtime.block_on(async {
        let list = tokio::time::timeout(WAIT, async {
            let mut admin = AdminServiceClient::new(client.channel().await.ok()?);
            admin.list_namespaces(client.request(ListNamespacesRequest {})).await.ok()
        })
        .await
        .ok()??
        .into_inner();
        let of_pattern = list.namespaces.into_iter().filter(|n| pattern.is_empty() || n.pattern == pattern);
        Some(of_pattern.map(|n| n.name).collect())
    })
}

/// The global options of the command line being completed (`--endpoint`,
/// `--config`, ... and their environment variables), so that the names
/// come from the proxy the command will talk to.
fn typed_globals() -> Option<crate::GlobalArgs> {
    // The shell runs `prismctl -- prismctl WORD...`.
    let words: Vec<OsString> = std::env::args_os().skip_while(|a| a != "--").skip(1).collect();
    let matches = crate::Cli::command().ignore_errors(true).try_get_matches_from(words).ok()?;
    crate::GlobalArgs::from_arg_matches(&matches).ok()
}
