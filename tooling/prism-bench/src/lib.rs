//! prism-bench: a load generator for Prism's KeyValue API that measures the
//! baselines a user would otherwise have (Redis directly, twemproxy, and
//! minimal tonic services) in the same run with the same settings.

pub mod args;
pub mod floor;
pub mod otlp_sink;
pub mod probe;
pub mod procstat;
pub mod report;
pub mod run;
pub mod schedule;
pub mod value;

use std::io::IsTerminal;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::{Plan, RunArgs};
use crate::run::Measurement;
use crate::value::Values;

/// Runs the whole matrix: for each repetition, workload and concurrency,
/// every target in turn, so that noise from other work on the machine is
/// spread over all targets rather than hitting one.
pub async fn run(args: RunArgs) -> anyhow::Result<report::Report> {
    let plan: Plan = args.plan().map_err(|e| anyhow::anyhow!("{e}"))?;
    let max_conc = plan.concurrency.iter().copied().max().unwrap_or(1);
    let connections = plan.connections.min(max_conc);
    let values = Values::new(plan.value, plan.value_size);

    let mut targets = Vec::new();
    for t in &plan.targets {
        let connected = run::connect(t, &args, &plan, connections).await.with_context(|| format!("target {t}"))?;
        if plan.workloads.contains(&args::Workload::Traverse) {
            run::preload_graph(&connected, &plan).await?;
        } else if plan.workloads.iter().any(|w| w.reads()) {
            run::preload(&connected, &plan, &values).await?;
        }
        targets.push(connected);
    }

    let cells = plan.repeat * plan.workloads.len() * plan.concurrency.len() * targets.len();
    let show = !args.no_progress && std::io::stderr().is_terminal();
    let mut measurements: Vec<Measurement> = Vec::with_capacity(cells);
    let mut n = 0;
    for rep in 0..plan.repeat {
        for &workload in &plan.workloads {
            for &concurrency in &plan.concurrency {
                for target in &targets {
                    n += 1;
                    let bar = if show {
                        ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr())
                    } else {
                        ProgressBar::hidden()
                    };
                    bar.set_style(
                        ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(format!(
                        "[{n}/{cells}] {} {} c={concurrency} run {}",
                        target.target,
                        workload.name(),
                        rep + 1
                    ));
                    let m = run::measure(target, &plan, &values, workload, concurrency, rep + 1, &bar)
                        .await
                        .with_context(|| format!("target {} workload {}", target.target, workload.name()))?;
                    bar.finish_and_clear();
                    if !show {
                        let items =
                            if m.batch > 1 { format!(" ({:.0} items/s)", m.items_per_second) } else { String::new() };
                        eprintln!(
                            "[{n}/{cells}] {} {} c={concurrency} run {}: {:.0} ops/s{items} p50 {} us p99 {} us",
                            m.target,
                            workload.name(),
                            rep + 1,
                            m.throughput,
                            m.latency_us.p50,
                            m.latency_us.p99
                        );
                    }
                    measurements.push(m);
                }
            }
        }
    }
    Ok(report::Report::new(plan, measurements))
}
