//! `prismctl migrate ...`: moving a KeyValue namespace to another backend
//! without downtime (mirror → backfill → verify → promote → finalize, or
//! rollback). Each step is one Admin API call; backfill and verify run on
//! the proxy, and this command follows them until they end.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Subcommand};
use prism_proto::admin::v1::admin_service_client::AdminServiceClient;
use prism_proto::admin::v1::migrate_namespace_request::Step;
use prism_proto::admin::v1::{GetMigrationRequest, MigrateNamespaceRequest, Migration};
use serde_json::json;
use tonic::transport::Channel;

use crate::Client;
use crate::complete::namespaces;
use crate::output::{emit, table};

/// `prismctl migrate NAMESPACE --to BACKEND` starts a migration; the
/// subcommands take it through its steps.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MigrateArgs {
    #[command(subcommand)]
    step: Option<MigrateCommand>,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The namespace to move.
    #[arg(required = true, add = namespaces("keyvalue"))]
    namespace: Option<String>,
    /// The plugin to move it to (as named in the proxy's config).
    #[arg(long, required = true, value_name = "BACKEND")]
    to: Option<String>,
    /// Share of reads also sent to the target and compared (0 to 1).
    #[arg(long, default_value_t = 0.05)]
    compare_reads: f64,
    /// Writes waiting to be mirrored that the queue holds [default: 10000].
    // 0 lets the proxy choose.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    queue: u32,
    /// Start even if the target already holds data of the namespace.
    #[arg(long)]
    force: bool,
    /// Say what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Step 1: mirror the namespace's writes to BACKEND (same as
    /// `prismctl migrate NAMESPACE --to BACKEND`).
    #[command(
        after_help = "Examples:\n  prismctl migrate start orders --to postgres\n  prismctl migrate start orders --to postgres --compare-reads 0.2 --dry-run"
    )]
    Start(StartArgs),
    /// Step 2: copy every key to the target without overwriting newer
    /// writes; shows progress until done (resumable).
    #[command(
        after_help = "Examples:\n  prismctl migrate backfill orders\n  prismctl migrate backfill orders --rate 500\n  prismctl migrate backfill orders --no-wait"
    )]
    Backfill {
        /// The namespace being moved.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// Keys copied per second at most [default: 2000].
        // 0 lets the proxy choose.
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        rate: u64,
        /// Start it and return; follow with `prismctl migrate status`.
        #[arg(long)]
        no_wait: bool,
        /// Say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Step 3: compare both sides in full, then compared reads for a clean
    /// window; fails when they differ.
    #[command(
        after_help = "Examples:\n  prismctl migrate verify orders\n  prismctl migrate verify orders --clean-window 1m"
    )]
    Verify {
        /// The namespace being moved.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// How long compared reads must show no difference.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        clean_window: Duration,
        /// Start it and return; follow with `prismctl migrate status`.
        #[arg(long)]
        no_wait: bool,
        /// Say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Step 4: the target becomes the primary, for every proxy at once.
    #[command(
        after_help = "Examples:\n  prismctl migrate promote orders\n  prismctl migrate promote orders --switch-timeout 30s"
    )]
    Promote {
        /// The namespace being moved.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// How long the proxies may take to drain before the switch is
        /// undone.
        #[arg(long = "switch-timeout", value_parser = humantime::parse_duration, default_value = "10s")]
        switch_timeout: Duration,
        /// Say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Step 5: stop mirroring to the old backend.
    #[command(after_help = "Examples:\n  prismctl migrate finalize orders\n  prismctl migrate finalize orders --purge")]
    Finalize {
        /// The namespace being moved.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// Also delete the namespace's data in the old backend.
        #[arg(long)]
        purge: bool,
        /// Say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Back to the old backend alone (before or after promote).
    ///
    /// Before promote the target's copy is deleted; after promote the old
    /// backend becomes the primary again.
    #[command(after_help = "Examples:\n  prismctl migrate rollback orders\n  prismctl migrate rollback orders --purge")]
    Rollback {
        /// The namespace being moved.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
        /// After promote: also delete the namespace's data in the target.
        #[arg(long)]
        purge: bool,
        /// After promote: how long the proxies may take to drain before the
        /// switch back is undone.
        #[arg(long = "switch-timeout", value_parser = humantime::parse_duration, default_value = "10s")]
        switch_timeout: Duration,
        /// Say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The migration's phase, progress, last verify report and history.
    #[command(after_help = "Examples:\n  prismctl migrate status orders\n  prismctl migrate status orders -o json")]
    Status {
        /// The namespace being moved.
        #[arg(add = namespaces("keyvalue"))]
        namespace: String,
    },
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

pub async fn run(client: &Client, args: MigrateArgs) -> anyhow::Result<()> {
    let mut admin = AdminServiceClient::new(client.channel().await?);
    let cmd = match args.step {
        Some(cmd) => cmd,
        None => MigrateCommand::Start(args.start),
    };
    let mut request = MigrateNamespaceRequest::default();
    let mut follow = false;
    let mut step_time = Duration::ZERO;
    match cmd {
        MigrateCommand::Status { namespace } => {
            let m = get(client, &mut admin, &namespace).await?;
            return show(client, &m);
        }
        MigrateCommand::Start(start) => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&start.compare_reads),
                "--compare-reads must be between 0 and 1, not {}",
                start.compare_reads
            );
            request.namespace = start.namespace.unwrap_or_default();
            request.step = Step::Start as i32;
            request.target = start.to.unwrap_or_default();
            request.compare_reads = start.compare_reads;
            request.queue = start.queue;
            request.force = start.force;
            request.dry_run = start.dry_run;
        }
        MigrateCommand::Backfill { namespace, rate, no_wait, dry_run } => {
            request = MigrateNamespaceRequest { namespace, step: Step::Backfill as i32, rate, dry_run, ..request };
            follow = !no_wait && !dry_run;
        }
        MigrateCommand::Verify { namespace, clean_window, no_wait, dry_run } => {
            anyhow::ensure!(clean_window.as_secs() >= 1, "--clean-window must be at least 1s");
            request = MigrateNamespaceRequest {
                namespace,
                step: Step::Verify as i32,
                clean_window_seconds: secs(clean_window),
                dry_run,
                ..request
            };
            follow = !no_wait && !dry_run;
        }
        MigrateCommand::Promote { namespace, switch_timeout, dry_run } => {
            request = MigrateNamespaceRequest {
                namespace,
                step: Step::Promote as i32,
                timeout_seconds: secs(switch_timeout).max(1),
                dry_run,
                ..request
            };
            step_time = switch_timeout;
        }
        MigrateCommand::Finalize { namespace, purge, dry_run } => {
            request = MigrateNamespaceRequest { namespace, step: Step::Finalize as i32, purge, dry_run, ..request };
        }
        MigrateCommand::Rollback { namespace, purge, switch_timeout, dry_run } => {
            request = MigrateNamespaceRequest {
                namespace,
                step: Step::Rollback as i32,
                purge,
                timeout_seconds: secs(switch_timeout).max(1),
                dry_run,
                ..request
            };
            step_time = switch_timeout;
        }
    }
    let namespace = request.namespace.clone();
    let dry_run = request.dry_run;
    let mut call = client.request(request);
    // A switch waits for every proxy to drain; give it its own time.
    call.set_timeout(client.timeout.max(step_time * 2 + Duration::from_secs(10)));
    let reply = admin.migrate_namespace(call).await?.into_inner();
    let m = reply.migration.unwrap_or_default();
    if client.format.is_table() || !follow {
        if client.format.is_table() {
            println!("{}", reply.message);
            if dry_run {
                return Ok(());
            }
        } else if !follow {
            return emit(client.format, &migration_json(&m), String::new);
        }
    }
    if !follow {
        println!("next: {}", m.next);
        return Ok(());
    }
    let m = wait(client, &mut admin, &namespace, &m.phase).await?;
    if client.format.is_table() {
        show(client, &m)?;
    } else {
        emit(client.format, &migration_json(&m), String::new)?;
    }
    anyhow::ensure!(m.error.is_empty(), "the {} step stopped: {}", m.phase, m.error);
    if let Some(v) = m.verify.as_ref().filter(|_| m.phase == "backfilled" && !m.history.is_empty()) {
        anyhow::ensure!(
            v.clean || v.finished_at.is_empty(),
            "verify found differences: {} missing, {} extra, {} different, {} of {} compared reads; see `prismctl migrate status {namespace}`",
            v.missing,
            v.extra,
            v.different,
            v.read_mismatches,
            v.reads_compared
        );
    }
    Ok(())
}

async fn get(client: &Client, admin: &mut AdminServiceClient<Channel>, namespace: &str) -> anyhow::Result<Migration> {
    let request = client.request(GetMigrationRequest { namespace: namespace.to_owned() });
    Ok(admin.get_migration(request).await?.into_inner().migration.unwrap_or_default())
}

/// Polls the migration while it stays in `phase` (a background step),
/// with a progress bar on a terminal.
async fn wait(
    client: &Client,
    admin: &mut AdminServiceClient<Channel>,
    namespace: &str,
    phase: &str,
) -> anyhow::Result<Migration> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} keys {msg}") {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    let mut last_line = std::time::Instant::now();
    loop {
        let m = get(client, admin, namespace).await?;
        let (done, total, line) = progress(&m);
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(line.clone());
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!("{phase}: {done}/{total} keys {line}");
            last_line = std::time::Instant::now();
        }
        if m.phase != phase || !m.error.is_empty() {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `(done, total, what to say)` of a running step.
fn progress(m: &Migration) -> (u64, u64, String) {
    match (m.phase.as_str(), &m.backfill, &m.verify) {
        ("backfilling", Some(b), _) => {
            (b.scanned, b.total.max(b.scanned), format!("{:.0} keys/s, ETA {}", b.keys_per_second, eta(b.eta_seconds)))
        }
        ("verifying", _, Some(v)) => (
            v.source_keys,
            m.backfill.as_ref().map_or(v.source_keys, |b| b.total.max(v.source_keys)),
            format!("compared ({} matched so far)", v.matched),
        ),
        _ => (0, 0, String::new()),
    }
}

fn eta(seconds: u64) -> String {
    if seconds == 0 { "-".to_owned() } else { humantime::format_duration(Duration::from_secs(seconds)).to_string() }
}

fn migration_json(m: &Migration) -> serde_json::Value {
    json!({
        "namespace": m.namespace,
        "source": m.source,
        "target": m.target,
        "phase": m.phase,
        "next": m.next,
        "revision": m.revision,
        "started_at": m.started_at,
        "updated_at": m.updated_at,
        "error": m.error,
        "backfill": m.backfill.as_ref().map(|b| json!({
            "total": b.total, "scanned": b.scanned, "copied": b.copied, "skipped": b.skipped,
            "undone": b.undone, "rate": b.rate, "keys_per_second": b.keys_per_second,
            "eta_seconds": b.eta_seconds, "started_at": b.started_at, "finished_at": b.finished_at,
            "owner": b.owner,
        })),
        "verify": m.verify.as_ref().map(|v| json!({
            "started_at": v.started_at, "finished_at": v.finished_at, "owner": v.owner,
            "source_keys": v.source_keys, "target_keys": v.target_keys, "matched": v.matched,
            "missing": v.missing, "extra": v.extra, "different": v.different, "settled": v.settled, "busy": v.busy,
            "samples": v.samples, "window_seconds": v.window_seconds,
            "reads_compared": v.reads_compared, "read_mismatches": v.read_mismatches, "clean": v.clean,
        })),
        "history": m.history.iter().map(|e| json!({"at": e.at, "phase": e.phase, "by": e.by, "note": e.note})).collect::<Vec<_>>(),
    })
}

fn show(client: &Client, m: &Migration) -> anyhow::Result<()> {
    emit(client.format, &migration_json(m), || {
        let mut rows = vec![
            vec!["namespace".to_owned(), m.namespace.clone()],
            vec!["from → to".to_owned(), format!("{} → {}", m.source, m.target)],
            vec!["phase".to_owned(), m.phase.clone()],
            vec!["next".to_owned(), m.next.clone()],
        ];
        if !m.error.is_empty() {
            rows.push(vec!["error".to_owned(), m.error.clone()]);
        }
        if let Some(b) = &m.backfill {
            rows.push(vec![
                "backfill".to_owned(),
                format!(
                    "{}/{} keys scanned: {} copied, {} already there, {} undone; {:.0} keys/s (limit {}){}",
                    b.scanned,
                    b.total,
                    b.copied,
                    b.skipped,
                    b.undone,
                    b.keys_per_second,
                    b.rate,
                    if b.finished_at.is_empty() {
                        format!(", ETA {}, on {}", eta(b.eta_seconds), b.owner)
                    } else {
                        format!(", done {}", b.finished_at)
                    }
                ),
            ]);
        }
        if let Some(v) = &m.verify {
            let state =
                if !v.finished_at.is_empty() { if v.clean { "clean" } else { "DIFFERENCES" } } else { "running" };
            rows.push(vec![
                "verify".to_owned(),
                format!(
                    "{state}: {} keys in {}, {} in {}; {} matched, {} missing, {} extra, {} different ({} settled on a second look, {} busy); {} of {} compared reads differed in {}s",
                    v.source_keys,
                    m.source,
                    v.target_keys,
                    m.target,
                    v.matched,
                    v.missing,
                    v.extra,
                    v.different,
                    v.settled,
                    v.busy,
                    v.read_mismatches,
                    v.reads_compared,
                    v.window_seconds
                ),
            ]);
            for sample in &v.samples {
                rows.push(vec![String::new(), sample.clone()]);
            }
        }
        let mut text = table(&["FIELD", "VALUE"], rows);
        if !m.history.is_empty() {
            let events = m
                .history
                .iter()
                .rev()
                .take(10)
                .rev()
                .map(|e| vec![e.at.clone(), e.phase.clone(), e.by.clone(), e.note.clone()])
                .collect();
            text.push_str("\n\n");
            text.push_str(&table(&["TIME", "PHASE", "BY", "NOTE"], events));
        }
        text
    })
}
