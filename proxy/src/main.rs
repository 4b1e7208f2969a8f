//! `prism-proxy`: runs the gateway from a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prism_proxy::config::Config;
use prism_proxy::{logging, namespace, server};

/// Exit code for a configuration the proxy refuses (as clap uses for usage
/// errors).
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(version, about = "Prism data access gateway")]
struct Cli {
    /// Proxy configuration file (YAML).
    #[arg(long, short, env = "PRISM_CONFIG")]
    config: PathBuf,
    /// Check the configuration and namespace files, print the result, and
    /// exit without serving.
    #[arg(long)]
    check: bool,
    /// Serve a non-loopback address without client authentication. Anyone
    /// who can reach it may read, write and administer every namespace;
    /// logged as an error at start.
    #[arg(long)]
    allow_insecure_remote: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("prism-proxy: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check {
        return check(&config);
    }
    logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("prism-proxy: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config, cli.allow_insecure_remote, server::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "prism-proxy failed");
            ExitCode::FAILURE
        }
    }
}

fn check(config: &Config) -> ExitCode {
    let Some(dir) = &config.namespaces_dir else {
        println!("ok    config (namespaces are in the PostgreSQL registry, not checked here)");
        return ExitCode::SUCCESS;
    };
    match namespace::load_dir(dir) {
        Err(err) => {
            eprintln!("prism-proxy: cannot read {}: {err}", dir.display());
            ExitCode::from(EXIT_CONFIG)
        }
        Ok(loaded) => {
            for (file, doc) in &loaded.namespaces {
                println!("ok    {} ({})", doc.metadata.name, file.display());
            }
            for err in &loaded.errors {
                println!("error {err}");
            }
            if loaded.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_CONFIG) }
        }
    }
}
