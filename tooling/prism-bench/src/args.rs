//! Command line and its validation into a [`Plan`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tonic::metadata::{Ascii, MetadataValue};

use crate::value::PROFILE_SIZE;

#[derive(Debug, Parser)]
#[command(
    name = "prism-bench",
    version,
    about = "Load generator for Prism's KeyValue API and the baselines it is measured against."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run workloads against targets and report throughput and latency.
    Run(Box<RunArgs>),
    /// Serve a floor service (`run` starts these itself for the grpc-floor
    /// and grpc-redis-floor targets).
    Floor(FloorArgs),
    /// Apply new namespaces through the Admin API, one at a time, and time
    /// each apply and how long until a Get on the namespace is served.
    ApplyLatency(ApplyLatencyArgs),
    /// Wait until a (starting) proxy answers a Get on a namespace, and
    /// print when: `served <unix µs> <attempts>`.
    FirstCall(FirstCallArgs),
    /// Receive OTLP/gRPC trace exports and count them (a collector that
    /// costs next to nothing, to measure what tracing costs the proxy).
    OtlpSink(OtlpSinkArgs),
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Get of a random existing key.
    Get,
    /// Put of a random key.
    Put,
    /// 90% get, 10% put.
    Mixed,
    /// One page of a prefix scan (`--scan-page` keys).
    Scan,
    /// Graph: a `Traverse` of `--traverse-depth` edges from a random vertex
    /// of a preloaded graph (`--key-space` vertices, `--graph-degree` edges
    /// out of each). Prism targets on a Graph namespace only.
    Traverse,
    /// One BatchGet of `--batch` random existing keys (Redis: MGET).
    BatchGet,
    /// One BatchPut of `--batch` random keys (Redis: MSET).
    BatchPut,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Mixed => "mixed",
            Self::Scan => "scan",
            Self::Traverse => "traverse",
            Self::BatchGet => "batch-get",
            Self::BatchPut => "batch-put",
        }
    }

    pub fn reads(self) -> bool {
        !matches!(self, Self::Put | Self::BatchPut)
    }

    /// Whether one request carries `--batch` keys.
    pub fn batched(self) -> bool {
        matches!(self, Self::BatchGet | Self::BatchPut)
    }
}

/// What puts and the preload write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueKind {
    /// `--value-size` bytes of filler, the same for every key.
    Raw,
    /// A 1 KiB `bench.v1.Profile` message with five PII-tagged fields
    /// (tooling/prism-bench/proto/profile.proto), for typed namespaces.
    Profile,
}

/// What is measured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Prism's KeyValue API, on this namespace.
    Prism(String),
    /// Redis directly, through redis-rs.
    Redis,
    /// twemproxy (nutcracker) in front of Redis.
    Twemproxy,
    /// A minimal tonic KeyValue service answering from memory.
    GrpcFloor,
    /// A minimal tonic KeyValue service calling Redis.
    GrpcRedisFloor,
    /// A minimal tonic KeyValue service running the postgres plugin's own
    /// statements on a pooled, prepared connection.
    GrpcPgFloor,
    /// The same statements on the same pool, from the bench itself: SQL
    /// straight to PostgreSQL, no gRPC hop.
    Postgres,
    /// The same SQL through PgBouncer (`--pgbouncer`), the user's
    /// alternative to a data gateway in front of PostgreSQL.
    Pgbouncer,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prism(ns) => write!(f, "prism/{ns}"),
            Self::Redis => f.write_str("redis"),
            Self::Twemproxy => f.write_str("twemproxy"),
            Self::GrpcFloor => f.write_str("grpc-floor"),
            Self::GrpcRedisFloor => f.write_str("grpc-redis-floor"),
            Self::GrpcPgFloor => f.write_str("grpc-pg-floor"),
            Self::Postgres => f.write_str("postgres"),
            Self::Pgbouncer => f.write_str("pgbouncer"),
        }
    }
}

impl Target {
    pub fn supports(&self, workload: Workload) -> bool {
        // Redis has no ordered prefix scan to compare with (SCAN walks the
        // hash table) and twemproxy refuses SCAN altogether.
        match workload {
            // The direct SQL targets run the plugin's Get and Put only.
            Workload::Scan | Workload::BatchGet | Workload::BatchPut
                if matches!(self, Self::Postgres | Self::Pgbouncer) =>
            {
                false
            }
            Workload::Scan => !matches!(self, Self::Redis | Self::Twemproxy),
            // The floors and Redis serve KeyValue only.
            Workload::Traverse => matches!(self, Self::Prism(_)),
            // The PostgreSQL floor runs only the plugin's single-key
            // statements, and twemproxy splits MGET/MSET across servers,
            // which would measure its fan-out rather than one call.
            Workload::BatchGet | Workload::BatchPut => !matches!(self, Self::GrpcPgFloor | Self::Twemproxy),
            _ => true,
        }
    }
}

pub fn parse_target(s: &str) -> Result<Target, String> {
    match s {
        "redis" => Ok(Target::Redis),
        "twemproxy" => Ok(Target::Twemproxy),
        "grpc-floor" => Ok(Target::GrpcFloor),
        "grpc-redis-floor" => Ok(Target::GrpcRedisFloor),
        "grpc-pg-floor" => Ok(Target::GrpcPgFloor),
        "postgres" => Ok(Target::Postgres),
        "pgbouncer" => Ok(Target::Pgbouncer),
        "prism" => Err("prism needs a namespace: prism/<namespace>".to_owned()),
        _ => match s.strip_prefix("prism/") {
            Some(ns) if !ns.is_empty() => Ok(Target::Prism(ns.to_owned())),
            _ => Err(format!(
                "unknown target {s:?}; expected prism/<namespace>, redis, twemproxy, grpc-floor, grpc-redis-floor, grpc-pg-floor, postgres or pgbouncer"
            )),
        },
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 500ms, 1m)"))
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("must be a positive number of requests per second".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to measure, repeatable: prism/<namespace>, redis, twemproxy,
    /// grpc-floor, grpc-redis-floor, grpc-pg-floor, postgres, pgbouncer. Targets run one after the other with
    /// the same settings.
    #[arg(long = "target", short = 't', required = true, value_parser = parse_target)]
    pub targets: Vec<Target>,
    /// Workloads, comma separated or repeated.
    #[arg(long = "workload", short = 'w', value_enum, value_delimiter = ',', default_value = "get")]
    pub workloads: Vec<Workload>,
    /// Requests in flight, comma separated for a sweep (e.g. 1,16,64).
    #[arg(long, short = 'c', value_delimiter = ',', default_value = "64", value_parser = parse_positive)]
    pub concurrency: Vec<usize>,
    /// Client connections the in-flight requests share.
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub connections: usize,
    /// Open loop: start requests at this fixed total rate (per second) and
    /// measure latency from each request's intended start. Without it the
    /// loop is closed: each worker sends as fast as answers come back.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// How long each measurement lasts (after warm-up).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Measure this many requests instead of a duration.
    #[arg(long, value_parser = parse_positive)]
    pub requests: Option<usize>,
    /// Load before each measurement that is not recorded.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Values of puts and preloaded keys.
    #[arg(long, value_enum, default_value = "raw")]
    pub value: ValueKind,
    /// Size in bytes of raw values [default: 100]. Profiles are 1 KiB.
    #[arg(long, value_parser = parse_positive)]
    pub value_size: Option<usize>,
    /// Number of distinct keys; read workloads preload them all.
    #[arg(long, default_value_t = 10_000, value_parser = parse_positive)]
    pub key_space: usize,
    /// Keys per scan page.
    #[arg(long, default_value_t = 10, value_parser = parse_positive)]
    pub scan_page: usize,
    /// Keys per request of the batch-get and batch-put workloads, 1 to 500
    /// [default: 10].
    #[arg(long, value_parser = parse_positive)]
    pub batch: Option<usize>,
    /// Traverse workload: edges out of each preloaded vertex.
    #[arg(long, default_value_t = 4, value_parser = parse_positive)]
    pub graph_degree: usize,
    /// Traverse workload: the depth of each traversal.
    #[arg(long, default_value_t = 3, value_parser = parse_positive)]
    pub traverse_depth: usize,
    /// Measure every cell this many times (interleaved across targets) and
    /// report the median run: by throughput, or with --rate by p50 latency.
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub repeat: usize,
    /// Prism's client endpoint.
    #[arg(long, default_value = "127.0.0.1:8980")]
    pub prism: String,
    /// OAuth2 bearer token sent with every call to prism targets (a proxy
    /// that requires tokens; the caller's rights decide, for example,
    /// whether typed values are masked).
    #[arg(long, env = "PRISM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PostgreSQL URL for the grpc-pg-floor.
    #[arg(long, default_value = DEFAULT_POSTGRES)]
    pub postgres: String,
    /// Redis URL for the redis target and the grpc-redis-floor.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// PostgreSQL URL through PgBouncer, for the pgbouncer target.
    #[arg(long)]
    pub pgbouncer: Option<String>,
    /// pgbouncer process, reported for the pgbouncer target.
    #[arg(long)]
    pub pgbouncer_pid: Option<u32>,
    /// twemproxy address (host:port) for the twemproxy target.
    #[arg(long)]
    pub twemproxy: Option<String>,
    /// Process whose CPU time and peak RSS (with its descendants, i.e. the
    /// plugins) are reported for prism targets.
    #[arg(long)]
    pub prism_pid: Option<u32>,
    /// redis-server process, reported for the redis target.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// nutcracker process, reported for the twemproxy target.
    #[arg(long)]
    pub twemproxy_pid: Option<u32>,
    /// A backend server process (say, redis-server) whose CPU is reported
    /// with every target, apart from the target's own server: what a
    /// request costs the store behind a gateway.
    #[arg(long)]
    pub backend_pid: Option<u32>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Do not draw a progress bar (it is hidden anyway when stderr is not a
    /// terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Arguments of `apply-latency`.
#[derive(Debug, Args)]
pub struct ApplyLatencyArgs {
    /// Prism's client endpoint (the Admin API is served there).
    #[arg(long, default_value = "127.0.0.1:8980")]
    pub prism: String,
    /// Names of the new namespaces: `<prefix>-<i>`.
    #[arg(long, default_value = "probe")]
    pub prefix: String,
    /// Namespaces to apply, one after the other.
    #[arg(long, default_value_t = 5, value_parser = parse_positive)]
    pub count: usize,
    /// The plugin of the new keyvalue namespaces.
    #[arg(long, default_value = "memstore")]
    pub backend: String,
    /// Wait between two applies, so that each one meets a proxy at rest
    /// (a namespaces directory is reloaded after every change).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub pause: Duration,
    /// Give up on a namespace that is not served after this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Also write the samples as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `first-call`.
#[derive(Debug, Args)]
pub struct FirstCallArgs {
    /// Prism's client endpoint.
    #[arg(long, default_value = "127.0.0.1:8980")]
    pub prism: String,
    /// The namespace the Get is sent to (a key never written: any answer,
    /// found or not, counts).
    #[arg(long)]
    pub namespace: String,
    /// Give up after this long.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
}

/// Arguments of `otlp-sink`.
#[derive(Debug, Args)]
pub struct OtlpSinkArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct FloorArgs {
    /// grpc: answers from memory; grpc-redis: calls Redis; grpc-pg: runs
    /// the postgres plugin's statements.
    #[arg(long, value_enum)]
    pub kind: FloorKind,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    #[arg(long, default_value = DEFAULT_POSTGRES)]
    pub postgres: String,
}

/// The PostgreSQL the grpc-pg-floor uses (the machine's, trusted on
/// loopback).
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FloorKind {
    Grpc,
    GrpcRedis,
    GrpcPg,
}

/// How long each measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    After(#[serde(with = "humantime_serde_secs")] Duration),
    Requests(usize),
}

mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A validated run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    #[serde(skip)]
    pub targets: Vec<Target>,
    pub workloads: Vec<Workload>,
    pub concurrency: Vec<usize>,
    pub connections: usize,
    pub rate: Option<f64>,
    pub stop: Stop,
    pub warmup_seconds: f64,
    pub value: ValueKind,
    /// Bytes per value.
    pub value_size: usize,
    pub key_space: usize,
    pub scan_page: usize,
    /// Keys per request of the batch workloads.
    pub batch: usize,
    pub graph_degree: usize,
    pub traverse_depth: usize,
    pub repeat: usize,
    /// Whether calls carry a bearer token (never the token itself).
    pub authenticated: bool,
    /// `Bearer <token>` for the authorization header of prism calls.
    #[serde(skip)]
    pub authorization: Option<MetadataValue<Ascii>>,
}

/// Raw value size when `--value-size` is not given.
const DEFAULT_VALUE_SIZE: usize = 100;

/// Keys per batch request when `--batch` is not given.
const DEFAULT_BATCH: usize = 10;

/// The proxy's default `limits.max_batch_items`: a larger batch would only
/// measure the refusal.
pub const MAX_BATCH: usize = 500;

/// Default measurement length when neither `--duration` nor `--requests`
/// is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

impl RunArgs {
    /// Checks what clap cannot check flag by flag; lists every problem.
    pub fn plan(&self) -> Result<Plan, String> {
        let mut errors = Vec::new();
        let stop = match (self.duration, self.requests) {
            (Some(_), Some(_)) => {
                errors.push("--duration and --requests exclude each other; choose one".to_owned());
                Stop::After(DEFAULT_DURATION)
            }
            (Some(d), None) if d.is_zero() => {
                errors.push("--duration must be longer than zero".to_owned());
                Stop::After(d)
            }
            (Some(d), None) => Stop::After(d),
            (None, Some(n)) => Stop::Requests(n),
            (None, None) => Stop::After(DEFAULT_DURATION),
        };
        if self.rate.is_some() && self.duration.is_none() {
            // A fixed-rate run is defined by its schedule, which needs an end
            // time; a request count would let a stalled target stretch it.
            errors.push("--rate needs --duration (an open-loop run follows a schedule of fixed length)".to_owned());
        }
        if self.targets.contains(&Target::Twemproxy) && self.twemproxy.is_none() {
            errors.push("the twemproxy target needs --twemproxy <host:port>".to_owned());
        }
        if self.targets.contains(&Target::Pgbouncer) && self.pgbouncer.is_none() {
            errors.push("the pgbouncer target needs --pgbouncer <postgres://user@host:port/db>".to_owned());
        }
        for target in &self.targets {
            for workload in &self.workloads {
                if !target.supports(*workload) {
                    errors.push(format!("target {target} does not support the {} workload", workload.name()));
                }
            }
        }
        let batched = self.workloads.iter().any(|w| w.batched());
        let batch = match self.batch {
            Some(n) if !batched => {
                errors.push("--batch applies to the batch-get and batch-put workloads".to_owned());
                n
            }
            Some(n) if n > MAX_BATCH => {
                errors.push(format!(
                    "--batch must be at most {MAX_BATCH} (the proxy's default limits.max_batch_items), got {n}"
                ));
                n
            }
            Some(n) => n,
            None => DEFAULT_BATCH,
        };
        if self.workloads.contains(&Workload::Scan) && self.scan_page > 10_000 {
            errors.push("--scan-page must be at most 10000".to_owned());
        }
        if self.workloads.contains(&Workload::Traverse) {
            if self.workloads.iter().any(|w| *w != Workload::Traverse) {
                errors.push(
                    "the traverse workload runs on a Graph namespace: measure it apart from the KeyValue workloads"
                        .to_owned(),
                );
            }
            if self.traverse_depth > 16 {
                errors.push("--traverse-depth must be at most 16 (the plugins' traversal depth limit)".to_owned());
            }
            if self.graph_degree > 100 {
                errors.push("--graph-degree must be at most 100".to_owned());
            }
        }
        let value_size = match (self.value, self.value_size) {
            (ValueKind::Raw, size) => size.unwrap_or(DEFAULT_VALUE_SIZE),
            (ValueKind::Profile, None) => PROFILE_SIZE,
            (ValueKind::Profile, Some(_)) => {
                errors.push(format!("--value-size applies to raw values; a profile is always {PROFILE_SIZE} bytes"));
                PROFILE_SIZE
            }
        };
        let authorization = match self.token.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                errors.push("--token (or PRISM_TOKEN) is empty".to_owned());
                None
            }
            Some(token) => match MetadataValue::try_from(format!("Bearer {token}")) {
                Ok(mut value) => {
                    // Kept out of Debug output.
                    value.set_sensitive(true);
                    Some(value)
                }
                Err(_) => {
                    // Never echo the token: it is a credential.
                    errors.push("--token (or PRISM_TOKEN) has characters a header cannot carry".to_owned());
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        let mut workloads = self.workloads.clone();
        workloads.dedup();
        let mut targets = Vec::new();
        for t in &self.targets {
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
        Ok(Plan {
            targets,
            workloads,
            concurrency: self.concurrency.clone(),
            connections: self.connections,
            rate: self.rate,
            stop,
            warmup_seconds: self.warmup.as_secs_f64(),
            value: self.value,
            value_size,
            key_space: self.key_space,
            scan_page: self.scan_page,
            batch,
            graph_degree: self.graph_degree,
            traverse_depth: self.traverse_depth,
            repeat: self.repeat,
            authenticated: authorization.is_some(),
            authorization,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["prism-bench", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(r) => Ok(*r),
            Command::Floor(_) | Command::OtlpSink(_) | Command::ApplyLatency(_) | Command::FirstCall(_) => {
                unreachable!()
            }
        }
    }

    fn plan_error(args: &[&str]) -> String {
        run_args(args).unwrap().plan().unwrap_err()
    }

    fn parse_error(args: &[&str]) -> String {
        run_args(args).unwrap_err().to_string()
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let e = parse_error(&["-t", "grpc-floor", "--concurrency", "0"]);
        assert!(e.contains("--concurrency") && e.contains("at least 1"), "{e}");
        let e = parse_error(&["-t", "grpc-floor", "--connections", "0"]);
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn unknown_workload_and_target_are_named() {
        let e = parse_error(&["-t", "grpc-floor", "-w", "get,frobnicate"]);
        assert!(e.contains("frobnicate") && e.contains("mixed"), "{e}");
        let e = parse_error(&["-t", "memcached"]);
        assert!(e.contains("unknown target \"memcached\""), "{e}");
        let e = parse_error(&["-t", "prism"]);
        assert!(e.contains("prism/<namespace>"), "{e}");
    }

    #[test]
    fn traverse_runs_alone_on_prism_targets() {
        let e = plan_error(&["-t", "redis", "-t", "prism/g", "-w", "traverse,get"]);
        assert!(e.contains("target redis does not support the traverse workload"), "{e}");
        assert!(e.contains("apart from the KeyValue workloads"), "{e}");
        let e = plan_error(&["-t", "prism/g", "-w", "traverse", "--traverse-depth", "17"]);
        assert!(e.contains("--traverse-depth must be at most 16"), "{e}");
        let e = parse_error(&["-t", "prism/g", "-w", "traverse", "--graph-degree", "0"]);
        assert!(e.contains("at least 1"), "{e}");
        let plan = run_args(&["-t", "prism/g", "-w", "traverse"]).unwrap().plan().unwrap();
        assert_eq!((plan.graph_degree, plan.traverse_depth), (4, 3));
    }

    #[test]
    fn rate_needs_duration() {
        let e = plan_error(&["-t", "grpc-floor", "--rate", "1000"]);
        assert!(e.contains("--rate needs --duration"), "{e}");
        let e = plan_error(&["-t", "grpc-floor", "--rate", "1000", "--requests", "10"]);
        assert!(e.contains("--rate needs --duration"), "{e}");
        let e = parse_error(&["-t", "grpc-floor", "--rate=-5", "--duration", "1s"]);
        assert!(e.contains("positive"), "{e}");
        let plan = run_args(&["-t", "grpc-floor", "--rate", "1000", "--duration", "2s"]).unwrap().plan().unwrap();
        assert_eq!(plan.rate, Some(1000.0));
        assert_eq!(plan.stop, Stop::After(Duration::from_secs(2)));
    }

    #[test]
    fn every_problem_is_listed() {
        let e = plan_error(&["-t", "redis", "-t", "twemproxy", "-w", "scan", "--duration", "1s", "--requests", "5"]);
        assert!(e.contains("exclude each other"), "{e}");
        assert!(e.contains("needs --twemproxy"), "{e}");
        assert!(e.contains("target redis does not support the scan workload"), "{e}");
        assert!(e.contains("target twemproxy does not support the scan workload"), "{e}");
        let e = plan_error(&["-t", "postgres", "-t", "pgbouncer", "-w", "get,batch-get"]);
        assert!(e.contains("needs --pgbouncer"), "{e}");
        assert!(e.contains("target postgres does not support the batch-get workload"), "{e}");
        assert!(e.contains("target pgbouncer does not support the batch-get workload"), "{e}");
    }

    #[test]
    fn bad_durations_are_explained() {
        let e = parse_error(&["-t", "grpc-floor", "--duration", "ten"]);
        assert!(e.contains("examples: 10s"), "{e}");
        let e = plan_error(&["-t", "grpc-floor", "--duration", "0s"]);
        assert!(e.contains("longer than zero"), "{e}");
    }

    #[test]
    fn defaults_and_sweeps() {
        let plan =
            run_args(&["-t", "prism/demo", "-t", "redis", "-t", "redis", "-c", "1,16,64"]).unwrap().plan().unwrap();
        assert_eq!(plan.targets, vec![Target::Prism("demo".to_owned()), Target::Redis]);
        assert_eq!(plan.concurrency, vec![1, 16, 64]);
        assert_eq!(plan.workloads, vec![Workload::Get]);
        assert_eq!(plan.stop, Stop::After(DEFAULT_DURATION));
        assert_eq!(plan.value_size, 100);
        assert_eq!(plan.value, ValueKind::Raw);
    }

    #[test]
    fn profile_values() {
        let plan = run_args(&["-t", "prism/typed", "--value", "profile"]).unwrap().plan().unwrap();
        assert_eq!(plan.value, ValueKind::Profile);
        assert_eq!(plan.value_size, PROFILE_SIZE);
        let plan = run_args(&["-t", "prism/typed", "--value", "raw", "--value-size", "300"]).unwrap().plan().unwrap();
        assert_eq!(plan.value_size, 300);
        let e = parse_error(&["-t", "prism/typed", "--value", "json"]);
        assert!(e.contains("json") && e.contains("raw") && e.contains("profile"), "{e}");
        let e = plan_error(&["-t", "prism/typed", "--value", "profile", "--value-size", "2048"]);
        assert!(e.contains("--value-size applies to raw values"), "{e}");
        let e = parse_error(&["-t", "prism/typed", "--value-size", "0"]);
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn batch_size_is_checked() {
        let plan =
            run_args(&["-t", "prism/demo", "-t", "grpc-floor", "-w", "batch-get,batch-put"]).unwrap().plan().unwrap();
        assert_eq!(plan.workloads, vec![Workload::BatchGet, Workload::BatchPut]);
        assert_eq!(plan.batch, DEFAULT_BATCH);
        let plan = run_args(&["-t", "redis", "-w", "batch-put", "--batch", "500"]).unwrap().plan().unwrap();
        assert_eq!(plan.batch, 500);
        let plan = run_args(&["-t", "grpc-redis-floor", "-w", "batch-get", "--batch", "1"]).unwrap().plan().unwrap();
        assert_eq!(plan.batch, 1);
        let e = parse_error(&["-t", "grpc-floor", "-w", "batch-get", "--batch", "0"]);
        assert!(e.contains("--batch") && e.contains("at least 1"), "{e}");
        let e = parse_error(&["-t", "grpc-floor", "-w", "batch-get", "--batch", "ten"]);
        assert!(e.contains("--batch") && e.contains("invalid digit"), "{e}");
        let e = plan_error(&["-t", "grpc-floor", "-w", "batch-get", "--batch", "501"]);
        assert!(e.contains("--batch must be at most 500") && e.contains("got 501"), "{e}");
        let e = plan_error(&["-t", "grpc-floor", "-w", "get", "--batch", "10"]);
        assert!(e.contains("--batch applies to the batch-get and batch-put workloads"), "{e}");
        let e =
            plan_error(&["-t", "grpc-pg-floor", "-t", "twemproxy", "--twemproxy", "127.0.0.1:1", "-w", "batch-put"]);
        assert!(e.contains("target grpc-pg-floor does not support the batch-put workload"), "{e}");
        assert!(e.contains("target twemproxy does not support the batch-put workload"), "{e}");
    }

    #[test]
    fn tokens_become_a_hidden_bearer_header() {
        let plan = run_args(&["-t", "prism/typed", "--token", "eyJ.abc.def"]).unwrap().plan().unwrap();
        let value = plan.authorization.as_ref().unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer eyJ.abc.def");
        assert!(plan.authenticated);
        assert!(!format!("{plan:?}").contains("eyJ"), "the token is not in Debug output");
        assert!(!serde_json::to_string(&plan).unwrap().contains("eyJ"), "nor in the JSON report");
        let e = plan_error(&["-t", "prism/typed", "--token", " "]);
        assert!(e.contains("--token") && e.contains("empty"), "{e}");
        let e = plan_error(&["-t", "prism/typed", "--token", "secret\nline"]);
        assert!(e.contains("cannot carry") && !e.contains("secret"), "{e}");
    }
}
