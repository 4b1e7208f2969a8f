//! The results: the median run of each cell, as a table and as JSON.

use std::path::Path;

use anyhow::Context;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

use crate::args::Plan;
use crate::run::Measurement;

/// A right-aligned cell, for numbers.
fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

fn new_table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(header);
    table
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub cores: usize,
    pub plan: Plan,
    pub targets: Vec<String>,
    /// The median run (by throughput) of every target × workload ×
    /// concurrency cell.
    pub summary: Vec<Measurement>,
    /// Every run.
    pub runs: Vec<Measurement>,
}

impl Report {
    pub fn new(plan: Plan, runs: Vec<Measurement>) -> Self {
        let mut summary = Vec::new();
        let mut keys: Vec<(String, crate::args::Workload, usize)> = Vec::new();
        for m in &runs {
            let k = (m.target.clone(), m.workload, m.concurrency);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for (target, workload, concurrency) in keys {
            let mut cell: Vec<&Measurement> = runs
                .iter()
                .filter(|m| m.target == target && m.workload == workload && m.concurrency == concurrency)
                .collect();
            // At a fixed rate every run has about the same throughput; the
            // median is then the run with the median p50 latency.
            if plan.rate.is_some() {
                cell.sort_by_key(|m| m.latency_us.p50);
            } else {
                cell.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
            }
            // With an even count the lower middle run: a real run, not an
            // average of two.
            if let Some(m) = cell.get((cell.len().saturating_sub(1)) / 2) {
                summary.push((*m).clone());
            }
        }
        Self {
            tool: "prism-bench",
            version: env!("CARGO_PKG_VERSION"),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            targets: plan.targets.iter().map(ToString::to_string).collect(),
            plan,
            summary,
            runs,
        }
    }

    pub fn table(&self) -> String {
        let mut table = new_table(vec![
            "target",
            "workload",
            "in flight",
            "ops/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "errors",
            "server CPU %",
            "peak RSS MiB",
        ]);
        for m in &self.summary {
            let errors = if m.errors.is_empty() {
                "0".to_owned()
            } else {
                m.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
            };
            table.add_row(vec![
                Cell::new(&m.target),
                Cell::new(m.workload.name()),
                right(m.concurrency.to_string()),
                right(format!("{:.0}", m.throughput)),
                right(m.latency_us.p50.to_string()),
                right(m.latency_us.p90.to_string()),
                right(m.latency_us.p99.to_string()),
                right(m.latency_us.p999.to_string()),
                right(m.latency_us.max.to_string()),
                Cell::new(errors),
                right(m.server_cpu_percent.map_or("-".to_owned(), |c| format!("{c:.0}"))),
                right(m.server_peak_rss_mib.map_or("-".to_owned(), |r| format!("{r:.1}"))),
            ]);
        }
        let mut out = table.to_string();
        if let Some(batches) = self.batch_table() {
            out.push_str("\n\nBatches: keys per request and keys per second\n");
            out.push_str(&batches);
        }
        if let Some(lag) = self.lag_table() {
            out.push_str(
                "\n\nOpen loop: how late requests were sent after their intended start (part of the latency)\n",
            );
            out.push_str(&lag);
        }
        if let Some(processes) = self.process_table() {
            out.push_str("\n\nServer processes\n");
            out.push_str(&processes);
        }
        out
    }

    fn batch_table(&self) -> Option<String> {
        let rows: Vec<_> = self.summary.iter().filter(|m| m.workload.batched()).collect();
        if rows.is_empty() {
            return None;
        }
        let mut table = new_table(vec!["target", "workload", "in flight", "batch", "items/s"]);
        for m in rows {
            table.add_row(vec![
                Cell::new(&m.target),
                Cell::new(m.workload.name()),
                right(m.concurrency.to_string()),
                right(m.batch.to_string()),
                right(format!("{:.0}", m.items_per_second)),
            ]);
        }
        Some(table.to_string())
    }

    fn lag_table(&self) -> Option<String> {
        let rows: Vec<_> = self.summary.iter().filter_map(|m| Some((m, m.send_lag_us.as_ref()?))).collect();
        if rows.is_empty() {
            return None;
        }
        let mut table = new_table(vec!["target", "workload", "in flight", "lag p50 µs", "lag p99 µs", "lag max µs"]);
        for (m, lag) in rows {
            table.add_row(vec![
                Cell::new(&m.target),
                Cell::new(m.workload.name()),
                right(m.concurrency.to_string()),
                right(lag.p50.to_string()),
                right(lag.p99.to_string()),
                right(lag.max.to_string()),
            ]);
        }
        Some(table.to_string())
    }

    fn process_table(&self) -> Option<String> {
        if self.summary.iter().all(|m| m.processes.is_empty()) {
            return None;
        }
        let mut table =
            new_table(vec!["target", "workload", "in flight", "process", "CPU s/s", "RSS MiB", "peak RSS MiB"]);
        for m in &self.summary {
            for p in &m.processes {
                table.add_row(vec![
                    Cell::new(&m.target),
                    Cell::new(m.workload.name()),
                    right(m.concurrency.to_string()),
                    Cell::new(format!("{} ({})", p.name, p.pid)),
                    right(format!("{:.3}", p.cpu_per_second)),
                    right(format!("{:.1}", p.rss_mib)),
                    right(format!("{:.1}", p.peak_rss_mib)),
                ]);
            }
        }
        Some(table.to_string())
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
    }
}
