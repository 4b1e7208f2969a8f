//! `prism-conformance`: run the plugin conformance suite from the shell.
//!
//! Exit codes: 0 every check passed (or was cleanly not claimed), 1 a check
//! failed, 2 usage error or the plugin could not be started.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prism_plugin_conformance::{Subject, run};

#[derive(Debug, Parser)]
#[command(version, about = "Check a Prism backend plugin against the plugin protocol contract")]
struct Cli {
    /// The plugin binary.
    #[arg(long)]
    plugin: PathBuf,
    /// The plugin's configuration as a JSON object (the `config:` block of
    /// the proxy config).
    #[arg(long, default_value = "{}")]
    config: String,
    /// Name used in the report (defaults to the binary name).
    #[arg(long)]
    name: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: serde_json::Value = match serde_json::from_str(&cli.config) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            eprintln!("prism-conformance: --config must be a JSON object");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("prism-conformance: --config is not valid JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let name = cli.name.clone().unwrap_or_else(|| {
        cli.plugin.file_name().map_or_else(|| "plugin".to_owned(), |n| n.to_string_lossy().into_owned())
    });
    let subject = Subject { name, binary: cli.plugin.clone(), config };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("prism-conformance: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(run(&subject)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("prism-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("prism-conformance: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.failures().is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
