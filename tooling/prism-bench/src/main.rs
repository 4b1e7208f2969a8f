use std::process::ExitCode;

use clap::Parser;
use prism_bench::args::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Floor(args) => prism_bench::floor::serve(args).await,
        Command::OtlpSink(args) => prism_bench::otlp_sink::serve(args).await,
        Command::ApplyLatency(args) => prism_bench::probe::apply_latency(args).await,
        Command::FirstCall(args) => prism_bench::probe::first_call(args).await,
        Command::Run(args) => {
            let json = args.json.clone();
            match prism_bench::run(*args).await {
                Ok(report) => {
                    println!("{}", report.table());
                    match json {
                        Some(path) => report.write_json(&path),
                        None => Ok(()),
                    }
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prism-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
