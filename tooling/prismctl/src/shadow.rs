//! `prismctl shadow ...`: the shadow of a namespace (`spec.shadow`).

use clap::Subcommand;
use prism_proto::admin::v1::admin_service_client::AdminServiceClient;
use prism_proto::admin::v1::{GetShadowStatusRequest, ListShadowDiffsRequest};
use serde_json::json;

use crate::Client;
use crate::complete::namespaces;
use crate::output::{emit, table};

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// The shadow's queue and counters: writes mirrored, failed and
    /// dropped; reads compared, matched and mismatched.
    #[command(after_help = "Examples:\n  prismctl shadow status orders\n  prismctl shadow status orders -o json")]
    Status {
        /// The namespace (its document has a `spec.shadow`).
        #[arg(add = namespaces(""))]
        namespace: String,
    },
    /// The last mismatches found comparing reads, newest first (keys and
    /// values by hash, never by content).
    #[command(after_help = "Examples:\n  prismctl shadow diffs orders\n  prismctl shadow diffs orders -o json")]
    Diffs {
        /// The namespace (its document has a `spec.shadow`).
        #[arg(add = namespaces(""))]
        namespace: String,
    },
}

pub async fn run(client: &Client, cmd: ShadowCommand) -> anyhow::Result<()> {
    let mut admin = AdminServiceClient::new(client.channel().await?);
    match cmd {
        ShadowCommand::Status { namespace } => {
            let s = admin
                .get_shadow_status(client.request(GetShadowStatusRequest { namespace }))
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            let doc = json!({
                "namespace": s.namespace,
                "primary": s.primary,
                "backend": s.backend,
                "backend_phase": s.backend_phase,
                "mirror": s.mirror,
                "compare_reads": s.compare_reads,
                "queue": {"depth": s.queue_depth, "capacity": s.queue_capacity},
                "writes": {"mirrored": s.mirrored, "failed": s.mirror_failed, "dropped": s.dropped},
                "reads": {"matched": s.matched, "mismatched": s.mismatched, "failed": s.compare_failed},
                "last_error": s.last_error,
                "since": s.since,
            });
            emit(client.format, &doc, || {
                let mut rows = vec![
                    vec!["namespace".to_owned(), s.namespace.clone()],
                    vec!["primary".to_owned(), s.primary.clone()],
                    vec!["shadow".to_owned(), format!("{} ({})", s.backend, s.backend_phase)],
                    vec!["mirror".to_owned(), s.mirror.clone()],
                    vec!["compare reads".to_owned(), format!("{}", s.compare_reads)],
                    vec!["queue".to_owned(), format!("{} / {}", s.queue_depth, s.queue_capacity)],
                    vec![
                        "writes".to_owned(),
                        format!("{} mirrored, {} failed, {} dropped", s.mirrored, s.mirror_failed, s.dropped),
                    ],
                    vec![
                        "reads".to_owned(),
                        format!("{} matched, {} mismatched, {} failed", s.matched, s.mismatched, s.compare_failed),
                    ],
                    vec!["since".to_owned(), s.since.clone()],
                ];
                if !s.last_error.is_empty() {
                    rows.push(vec!["last error".to_owned(), s.last_error.clone()]);
                }
                table(&["FIELD", "VALUE"], rows)
            })
        }
        ShadowCommand::Diffs { namespace } => {
            let diffs =
                admin.list_shadow_diffs(client.request(ListShadowDiffsRequest { namespace })).await?.into_inner().diffs;
            let docs: Vec<_> = diffs
                .iter()
                .map(
                    |d| json!({"time": d.time, "method": d.method, "key_hash": d.key_hash, "difference": d.difference}),
                )
                .collect();
            emit(client.format, &docs, || {
                if diffs.is_empty() {
                    return "no mismatches".to_owned();
                }
                let rows = diffs
                    .iter()
                    .map(|d| vec![d.time.clone(), d.method.clone(), d.key_hash.clone(), d.difference.clone()])
                    .collect();
                table(&["TIME", "METHOD", "KEY HASH", "DIFFERENCE"], rows)
            })
        }
    }
}
