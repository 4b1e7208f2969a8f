//! Driving load at one target: connections, workers, measurement.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use prism_proto::graph::v1::graph_service_client::GraphServiceClient;
use prism_proto::graph::v1::{Direction, PutEdgeRequest, PutVertexRequest, TraverseRequest};
use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use prism_proto::keyvalue::v1::{BatchGetRequest, BatchPutRequest, GetRequest, PutItem, PutRequest, ScanRequest};
use redis::IntoConnectionInfo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::args::{Plan, Stop, Target, Workload};
use crate::procstat;
use crate::schedule::{Rng, Schedule, key, latency};
use crate::value::Values;

/// Histogram range: 1 µs to 100 s, 3 significant digits.
const HIST_MAX_US: u64 = 100_000_000;

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_US, 3)?)
}

/// A connection of one kind. Clones share the underlying connection.
#[derive(Clone)]
pub enum Conn {
    Grpc {
        client: KeyValueServiceClient<Channel>,
        /// The same connection's Graph client (the traverse workload).
        graph: Box<GraphServiceClient<Channel>>,
        namespace: String,
        /// `Bearer <token>`, sent with every call when set.
        authorization: Option<MetadataValue<Ascii>>,
    },
    Redis(redis::aio::MultiplexedConnection),
    /// SQL on a pool of PostgreSQL connections (directly or through
    /// PgBouncer), the postgres plugin's own statements.
    Postgres(deadpool_postgres::Pool),
}

/// The namespace column of the direct SQL targets' rows (apart from the
/// floor's and every plugin's).
const SQL_NS: &str = "direct";

/// A target ready to be measured: its connections and, when the bench
/// started it, the server process.
pub struct Connected {
    pub target: Target,
    pub conns: Vec<Conn>,
    /// Server process whose CPU and memory are reported.
    pub server_pid: Option<u32>,
    /// Backend process reported apart (`--backend-pid`).
    pub backend_pid: Option<u32>,
    // Kept so the floor process lives as long as the target (kill on drop).
    _child: Option<Child>,
}

async fn grpc(addr: &str, namespace: &str, authorization: Option<&MetadataValue<Ascii>>) -> anyhow::Result<Conn> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(Conn::Grpc {
        client: KeyValueServiceClient::new(channel.clone()),
        graph: Box::new(GraphServiceClient::new(channel)),
        namespace: namespace.to_owned(),
        authorization: authorization.cloned(),
    })
}

async fn redis_conn(url: &str, twemproxy: bool) -> anyhow::Result<Conn> {
    let mut info = url.into_connection_info()?;
    if twemproxy {
        // twemproxy closes the connection on CLIENT SETINFO, which redis-rs
        // sends after connecting unless told not to.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)?;
    let conn = client.get_multiplexed_async_connection().await.with_context(|| format!("cannot connect to {url}"))?;
    Ok(Conn::Redis(conn))
}

/// Starts this binary as a floor server and waits for its address.
async fn start_floor(kind: &str, redis: &str, postgres: &str) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["floor", "--kind", kind, "--listen", "127.0.0.1:0", "--redis", redis, "--postgres", postgres])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the floor server")?;
    let stdout = child.stdout.take().context("floor stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("the floor server did not start within 10 s")??
        .context("the floor server exited before listening")?;
    let addr = line.strip_prefix("listening ").context("unexpected floor output")?.to_owned();
    Ok((child, addr))
}

pub async fn connect(
    target: &Target,
    args: &crate::args::RunArgs,
    plan: &Plan,
    connections: usize,
) -> anyhow::Result<Connected> {
    let mut child = None;
    let mut conns = Vec::with_capacity(connections);
    let server_pid = match target {
        Target::Prism(ns) => {
            for _ in 0..connections {
                conns.push(grpc(&args.prism, ns, plan.authorization.as_ref()).await?);
            }
            args.prism_pid
        }
        Target::GrpcFloor | Target::GrpcRedisFloor | Target::GrpcPgFloor => {
            let kind = match target {
                Target::GrpcFloor => "grpc",
                Target::GrpcRedisFloor => "grpc-redis",
                _ => "grpc-pg",
            };
            let (c, addr) = start_floor(kind, &args.redis, &args.postgres).await?;
            let pid = c.id();
            child = Some(c);
            for _ in 0..connections {
                // The floors check no credentials.
                conns.push(grpc(&addr, "floor", None).await?);
            }
            pid
        }
        Target::Redis => {
            for _ in 0..connections {
                conns.push(redis_conn(&args.redis, false).await?);
            }
            args.redis_pid
        }
        Target::Twemproxy => {
            let addr = args.twemproxy.as_deref().context("--twemproxy is required")?;
            for _ in 0..connections {
                conns.push(redis_conn(&format!("redis://{addr}"), true).await?);
            }
            args.twemproxy_pid
        }
        Target::Postgres | Target::Pgbouncer => {
            let url = if *target == Target::Postgres {
                args.postgres.as_str()
            } else {
                args.pgbouncer.as_deref().context("--pgbouncer is required")?
            };
            // One pool of 16 connections, as the floor and the plugin have;
            // every worker shares it.
            let pool = crate::floor::pg_pool(url).await.with_context(|| format!("cannot connect to {url}"))?;
            conns.push(Conn::Postgres(pool));
            if *target == Target::Postgres { None } else { args.pgbouncer_pid }
        }
    };
    Ok(Connected { target: target.clone(), conns, server_pid, backend_pid: args.backend_pid, _child: child })
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    Put,
    Scan,
    Traverse,
    BatchGet,
    BatchPut,
}

/// The sizes a call needs besides its key.
#[derive(Debug, Clone, Copy)]
struct Shape {
    scan_page: usize,
    traverse_depth: usize,
    batch: usize,
}

impl Op {
    fn pick(workload: Workload, rng: &mut Rng) -> Self {
        match workload {
            Workload::Get => Self::Get,
            Workload::Put => Self::Put,
            Workload::Scan => Self::Scan,
            Workload::Traverse => Self::Traverse,
            Workload::BatchGet => Self::BatchGet,
            Workload::BatchPut => Self::BatchPut,
            Workload::Mixed if rng.below(10) == 0 => Self::Put,
            Workload::Mixed => Self::Get,
        }
    }
}

/// A request with the connection's credentials.
fn request<T>(message: T, authorization: Option<&MetadataValue<Ascii>>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.clone());
    }
    request
}

/// Runs one request; the error is the label it is counted under.
async fn call(conn: &mut Conn, op: Op, key_index: u64, value: &Bytes, shape: Shape) -> Result<(), String> {
    let k = key(key_index);
    match conn {
        Conn::Grpc { client, graph, namespace, authorization } => {
            let auth = authorization.as_ref();
            let result = match op {
                Op::Get => {
                    client.get(request(GetRequest { namespace: namespace.clone(), key: k }, auth)).await.map(|r| {
                        // A preloaded key that is missing means the target
                        // lost data or the preload failed: count it.
                        if r.get_ref().found { Ok(()) } else { Err("not found".to_owned()) }
                    })
                }
                Op::Put => client
                    .put(request(
                        PutRequest {
                            namespace: namespace.clone(),
                            key: k,
                            value: value.clone(),
                            ttl_seconds: 0,
                            if_version: None,
                        },
                        auth,
                    ))
                    .await
                    .map(|_| Ok(())),
                Op::Scan => {
                    let mut prefix = k;
                    prefix.pop();
                    client
                        .scan(request(
                            ScanRequest {
                                namespace: namespace.clone(),
                                prefix,
                                page_size: u32::try_from(shape.scan_page).unwrap_or(u32::MAX),
                                page_token: String::new(),
                            },
                            auth,
                        ))
                        .await
                        .map(|_| Ok(()))
                }
                Op::BatchGet | Op::BatchPut => return Err("a batch needs its keys".to_owned()),
                Op::Traverse => {
                    let walk = TraverseRequest {
                        namespace: namespace.clone(),
                        start: k,
                        direction: Direction::Out as i32,
                        labels: Vec::new(),
                        max_depth: i32::try_from(shape.traverse_depth).unwrap_or(i32::MAX),
                        limit: 0,
                    };
                    graph.traverse(request(walk, auth)).await.map(|r| {
                        // Every vertex has out-edges: an empty walk means the
                        // preload is missing.
                        if r.get_ref().vertices.is_empty() { Err("nothing reached".to_owned()) } else { Ok(()) }
                    })
                }
            };
            match result {
                Ok(inner) => inner,
                Err(status) => Err(format!("{:?}", status.code())),
            }
        }
        Conn::Redis(c) => {
            let result = match op {
                Op::Get => match redis::cmd("GET").arg(&k).query_async::<Option<Vec<u8>>>(c).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => return Err("not found".to_owned()),
                    Err(e) => Err(e),
                },
                Op::Put => redis::cmd("SET").arg(&k).arg(&value[..]).query_async::<()>(c).await,
                Op::Scan | Op::Traverse | Op::BatchGet | Op::BatchPut => return Err("unsupported".to_owned()),
            };
            result.map_err(|e| format!("redis {:?}", e.kind()))
        }
        Conn::Postgres(pool) => match op {
            Op::Get => match crate::floor::pg_get(pool, SQL_NS, &k).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("not found".to_owned()),
                Err(e) => Err(format!("postgres: {e}")),
            },
            Op::Put => {
                crate::floor::pg_put(pool, SQL_NS, &k, value).await.map(|_| ()).map_err(|e| format!("postgres: {e}"))
            }
            Op::Scan | Op::Traverse | Op::BatchGet | Op::BatchPut => Err("unsupported".to_owned()),
        },
    }
}

/// Runs one batch request on the keys `indices`; the error is the label it
/// is counted under.
async fn call_batch(conn: &mut Conn, op: Op, indices: &[u64], values: &Values) -> Result<(), String> {
    let keys: Vec<String> = indices.iter().map(|&i| key(i)).collect();
    match conn {
        Conn::Grpc { client, namespace, authorization, .. } => {
            let auth = authorization.as_ref();
            let result = match op {
                Op::BatchGet => client
                    .batch_get(request(BatchGetRequest { namespace: namespace.clone(), keys }, auth))
                    .await
                    .map(|r| {
                        let items = &r.get_ref().items;
                        // Every key was preloaded: a short or partial answer
                        // means lost data or a broken preload.
                        if items.len() == indices.len() && items.iter().all(|i| i.found) {
                            Ok(())
                        } else {
                            Err("not found".to_owned())
                        }
                    }),
                Op::BatchPut => {
                    let items = keys
                        .into_iter()
                        .zip(indices)
                        .map(|(key, &i)| PutItem { key, value: values.of(i).clone(), ttl_seconds: 0 })
                        .collect();
                    client
                        .batch_put(request(BatchPutRequest { namespace: namespace.clone(), items }, auth))
                        .await
                        .map(|_| Ok(()))
                }
                Op::Get | Op::Put | Op::Scan | Op::Traverse => return Err("not a batch".to_owned()),
            };
            match result {
                Ok(inner) => inner,
                Err(status) => Err(format!("{:?}", status.code())),
            }
        }
        Conn::Redis(c) => {
            let result = match op {
                Op::BatchGet => match redis::cmd("MGET").arg(&keys).query_async::<Vec<Option<Vec<u8>>>>(c).await {
                    Ok(found) if found.len() == indices.len() && found.iter().all(Option::is_some) => Ok(()),
                    Ok(_) => return Err("not found".to_owned()),
                    Err(e) => Err(e),
                },
                Op::BatchPut => {
                    let mut mset = redis::cmd("MSET");
                    for (k, &i) in keys.iter().zip(indices) {
                        mset.arg(k).arg(&values.of(i)[..]);
                    }
                    mset.query_async::<()>(c).await
                }
                Op::Get | Op::Put | Op::Scan | Op::Traverse => return Err("not a batch".to_owned()),
            };
            result.map_err(|e| format!("redis {:?}", e.kind()))
        }
        Conn::Postgres(_) => Err("unsupported".to_owned()),
    }
}

/// The `j`th edge out of vertex `i` of the traverse workload's graph: a
/// fixed pseudo-random vertex, so every run loads the same graph.
pub fn edge_target(i: u64, j: u64, vertices: u64) -> u64 {
    i.wrapping_mul(2_654_435_761).wrapping_add(j.wrapping_mul(40_503)).wrapping_add(j) % vertices
}

/// Writes the traverse workload's graph: `--key-space` vertices, then
/// `--graph-degree` edges out of each.
pub async fn preload_graph(target: &Connected, plan: &Plan) -> anyhow::Result<()> {
    let vertices = plan.key_space as u64;
    let degree = plan.graph_degree as u64;
    for edges in [false, true] {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks: tokio::task::JoinSet<Result<(), String>> = tokio::task::JoinSet::new();
        for w in 0..32 {
            let Conn::Grpc { graph, namespace, authorization, .. } = target.conns[w % target.conns.len()].clone()
            else {
                bail!("the traverse workload needs a prism target");
            };
            let next = next.clone();
            let (mut graph, auth) = (*graph, authorization);
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= vertices {
                        return Ok(());
                    }
                    let result = if edges {
                        let mut result = Ok(());
                        for j in 0..degree {
                            let edge = PutEdgeRequest {
                                namespace: namespace.clone(),
                                from: key(i),
                                to: key(edge_target(i, j, vertices)),
                                label: "next".to_owned(),
                                properties: Default::default(),
                            };
                            if let Err(e) = graph.put_edge(request(edge, auth.as_ref())).await {
                                result = Err(e);
                                break;
                            }
                        }
                        result
                    } else {
                        let vertex = PutVertexRequest {
                            namespace: namespace.clone(),
                            id: key(i),
                            label: "v".to_owned(),
                            properties: Default::default(),
                        };
                        graph.put_vertex(request(vertex, auth.as_ref())).await.map(drop)
                    };
                    result.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined? {
                bail!("preloading the graph of {vertices} vertices into {} failed: {e}", target.target);
            }
        }
    }
    Ok(())
}

/// Writes every key once so that reads find them.
pub async fn preload(target: &Connected, plan: &Plan, values: &Values) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks: tokio::task::JoinSet<Result<(), String>> = tokio::task::JoinSet::new();
    for w in 0..32 {
        let mut conn = target.conns[w % target.conns.len()].clone();
        let next = next.clone();
        let values = values.clone();
        let key_space = plan.key_space as u64;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= key_space {
                    return Ok(());
                }
                call(&mut conn, Op::Put, i, values.of(i), Shape { scan_page: 0, traverse_depth: 0, batch: 1 }).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined? {
            bail!("preloading {} keys into {} failed: {e}", plan.key_space, target.target);
        }
    }
    Ok(())
}

/// One measurement of one cell.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    pub target: String,
    pub workload: Workload,
    pub concurrency: usize,
    pub connections: usize,
    pub rate: Option<f64>,
    pub run: usize,
    /// Requests answered successfully.
    pub ok: u64,
    /// Failed requests by status code (gRPC code name or Redis error kind).
    pub errors: BTreeMap<String, u64>,
    pub elapsed_seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Keys per request: `--batch` for the batch workloads, else 1.
    pub batch: usize,
    /// Keys read or written per second: `throughput` × `batch`.
    pub items_per_second: f64,
    pub latency_us: Percentiles,
    /// CPU seconds of the server process tree during the measurement.
    pub server_cpu_seconds: Option<f64>,
    /// The same as a share of one core.
    pub server_cpu_percent: Option<f64>,
    /// Sum of the peak resident sets of the server process tree.
    pub server_peak_rss_mib: Option<f64>,
    pub server_processes: Option<usize>,
    /// The same per process of the server tree (the proxy and each plugin
    /// apart), by pid.
    pub processes: Vec<ProcessCost>,
    /// Open loop only: how late requests were sent after their intended
    /// start (pacing error plus the wake-up of a worker). Part of the
    /// latency, shown apart so it can be told from the server's share.
    pub send_lag_us: Option<Percentiles>,
    /// The `--backend-pid` process over the measurement.
    pub backend: Option<ProcessCost>,
}

/// CPU and memory of one server process over a measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessCost {
    pub pid: u32,
    pub name: String,
    pub cpu_seconds: f64,
    /// CPU seconds per second of measurement (1.0 is one core).
    pub cpu_per_second: f64,
    /// Peak resident set since the process started.
    pub peak_rss_mib: f64,
    /// Resident set at the end of the measurement.
    pub rss_mib: f64,
}

fn process_costs(before: Option<&procstat::Sample>, after: Option<&procstat::Sample>, secs: f64) -> Vec<ProcessCost> {
    const MIB: f64 = 1024.0 * 1024.0;
    let (Some(before), Some(after)) = (before, after) else { return Vec::new() };
    after
        .each
        .iter()
        .map(|a| {
            // A process that started during the measurement counts from 0.
            let start = before.each.iter().find(|b| b.pid == a.pid).map_or(0.0, |b| b.cpu_seconds);
            let cpu_seconds = (a.cpu_seconds - start).max(0.0);
            ProcessCost {
                pid: a.pid,
                name: a.name.clone(),
                cpu_seconds,
                cpu_per_second: cpu_seconds / secs,
                peak_rss_mib: a.peak_rss_bytes as f64 / MIB,
                rss_mib: a.rss_bytes as f64 / MIB,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

struct WorkerResult {
    hist: Histogram<u64>,
    /// Open loop: send time minus intended start.
    lag: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    last: Duration,
}

/// Shared by the workers of one phase.
struct Phase {
    workload: Workload,
    start: Instant,
    length: Option<Duration>,
    requests: Option<u64>,
    schedule: Option<Schedule>,
    next: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
    values: Values,
    key_space: u64,
    shape: Shape,
}

/// Open loop: request numbers, each released by the pacer at its intended
/// start. Workers take turns waiting on the receiver.
struct Due {
    schedule: Schedule,
    next: tokio::sync::Mutex<mpsc::UnboundedReceiver<u64>>,
}

/// How much of a wait is spun rather than slept: `nanosleep` wakes up to
/// the thread's timer slack (50 µs by default) late, and tokio's timer has
/// 1 ms ticks, which would be charged to every request as latency.
const SPIN: Duration = Duration::from_micros(100);

/// Sleeps until `due` with microsecond precision: the OS sleep for most of
/// the wait, then a yielding spin.
fn sleep_until_precisely(due: std::time::Instant) {
    loop {
        let left = due.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::thread::yield_now();
        }
    }
}

/// Releases request numbers at their intended starts, on its own thread so
/// that neither the runtime's timer nor busy workers delay the schedule.
/// Ends when the phase is over or every worker is gone.
fn pace(phase: &Phase, schedule: Schedule, due: &mpsc::UnboundedSender<u64>) {
    let start = phase.start.into_std();
    for i in 0u64.. {
        if phase.stop.load(Ordering::Relaxed) || phase.requests.is_some_and(|n| i >= n) {
            break;
        }
        let at = schedule.offset(i);
        if phase.length.is_some_and(|l| at >= l) {
            break;
        }
        sleep_until_precisely(start + at);
        if due.send(i).is_err() {
            break;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, HIST_MAX_US)
}

async fn worker(phase: Arc<Phase>, mut conn: Conn, seed: u64, due: Option<Arc<Due>>) -> anyhow::Result<WorkerResult> {
    let mut rng = Rng::new(seed);
    let mut out =
        WorkerResult { hist: histogram()?, lag: histogram()?, ok: 0, errors: BTreeMap::new(), last: Duration::ZERO };
    // The keys of one batch request, reused so the loop does not allocate.
    let mut picks = Vec::with_capacity(phase.shape.batch);
    loop {
        if phase.stop.load(Ordering::Relaxed) {
            break;
        }
        let intended = match &due {
            Some(due) => {
                let next = due.next.lock().await.recv().await;
                let Some(i) = next else { break };
                let at = due.schedule.offset(i);
                out.lag.saturating_record(micros(phase.start.elapsed().saturating_sub(at)));
                at
            }
            None => {
                let i = phase.next.fetch_add(1, Ordering::Relaxed);
                if phase.requests.is_some_and(|n| i >= n) {
                    break;
                }
                let now = phase.start.elapsed();
                if phase.length.is_some_and(|l| now >= l) {
                    break;
                }
                now
            }
        };
        let op = Op::pick(phase.workload, &mut rng);
        let result = if phase.workload.batched() {
            picks.clear();
            picks.extend((0..phase.shape.batch).map(|_| rng.below(phase.key_space)));
            call_batch(&mut conn, op, &picks, &phase.values).await
        } else {
            let i = rng.below(phase.key_space);
            call(&mut conn, op, i, phase.values.of(i), phase.shape).await
        };
        let completed = phase.start.elapsed();
        out.hist.saturating_record(micros(latency(intended, completed)));
        out.last = out.last.max(completed);
        match result {
            Ok(()) => out.ok += 1,
            Err(label) => *out.errors.entry(label).or_default() += 1,
        }
        phase.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(out)
}

/// Progress of the phase being measured, for the bar.
pub struct Progress {
    pub done: Arc<AtomicU64>,
}

/// Runs `workload` at `concurrency` for the plan's warm-up (not recorded),
/// then measures it.
pub async fn measure(
    target: &Connected,
    plan: &Plan,
    values: &Values,
    workload: Workload,
    concurrency: usize,
    run: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Measurement> {
    let phase = |length: Option<Duration>, requests: Option<u64>| Phase {
        workload,
        start: Instant::now(),
        length,
        requests,
        schedule: plan.rate.map(Schedule::new),
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        values: values.clone(),
        key_space: plan.key_space as u64,
        shape: Shape { scan_page: plan.scan_page, traverse_depth: plan.traverse_depth, batch: plan.batch },
    };
    if plan.warmup_seconds > 0.0 {
        run_phase(target, Arc::new(phase(Some(Duration::from_secs_f64(plan.warmup_seconds)), None)), concurrency, None)
            .await?;
    }
    let (length, requests) = match plan.stop {
        Stop::After(d) => (Some(d), None),
        Stop::Requests(n) => (None, Some(n as u64)),
    };
    let before = target.server_pid.and_then(procstat::sample);
    let backend_before = target.backend_pid.and_then(procstat::sample);
    let phase = Arc::new(phase(length, requests));
    let results = run_phase(target, phase.clone(), concurrency, Some(bar)).await?;
    let after = target.server_pid.and_then(procstat::sample);
    let backend_after = target.backend_pid.and_then(procstat::sample);

    let mut hist = histogram()?;
    let mut lag = histogram()?;
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    let mut elapsed = Duration::ZERO;
    for r in results {
        hist.add(&r.hist)?;
        lag.add(&r.lag)?;
        ok += r.ok;
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
        elapsed = elapsed.max(r.last);
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let batch = if workload.batched() { plan.batch } else { 1 };
    let cpu = match (&before, &after) {
        (Some(b), Some(a)) => Some((a.cpu_seconds - b.cpu_seconds).max(0.0)),
        _ => None,
    };
    Ok(Measurement {
        target: target.target.to_string(),
        workload,
        concurrency,
        connections: target.conns.len(),
        rate: plan.rate,
        run,
        ok,
        errors,
        elapsed_seconds: secs,
        throughput: ok as f64 / secs,
        batch,
        items_per_second: (ok * batch as u64) as f64 / secs,
        latency_us: Percentiles::of(&hist),
        server_cpu_seconds: cpu,
        server_cpu_percent: cpu.map(|c| 100.0 * c / secs),
        server_peak_rss_mib: after.as_ref().map(|a| a.peak_rss_bytes as f64 / (1024.0 * 1024.0)),
        server_processes: after.as_ref().map(|a| a.processes),
        processes: process_costs(before.as_ref(), after.as_ref(), secs),
        send_lag_us: phase.schedule.is_some().then(|| Percentiles::of(&lag)),
        backend: process_costs(backend_before.as_ref(), backend_after.as_ref(), secs)
            .into_iter()
            .find(|p| Some(p.pid) == target.backend_pid),
    })
}

async fn run_phase(
    target: &Connected,
    phase: Arc<Phase>,
    concurrency: usize,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<Vec<WorkerResult>> {
    let mut tasks = tokio::task::JoinSet::new();
    let due = phase.schedule.map(|schedule| {
        let (tx, rx) = mpsc::unbounded_channel();
        let pacer = phase.clone();
        std::thread::spawn(move || pace(&pacer, schedule, &tx));
        Arc::new(Due { schedule, next: tokio::sync::Mutex::new(rx) })
    });
    for w in 0..concurrency {
        let conn = target.conns[w % target.conns.len()].clone();
        tasks.spawn(worker(phase.clone(), conn, 0x5EED ^ (w as u64).wrapping_mul(0x9E37_79B9), due.clone()));
    }
    let ticker = bar.map(|bar| {
        let bar = bar.clone();
        let phase = phase.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let done = phase.done.load(Ordering::Relaxed);
                let secs = phase.start.elapsed().as_secs_f64();
                match (phase.length, phase.requests) {
                    (Some(l), _) => bar.set_position((1000.0 * (secs / l.as_secs_f64()).min(1.0)) as u64),
                    (None, Some(n)) => bar.set_position(1000 * done / n.max(1)),
                    (None, None) => {}
                }
                bar.set_message(format!("{:.0} ops/s", done as f64 / secs.max(1e-3)));
            }
        })
    });
    let mut results = Vec::with_capacity(concurrency);
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(e.into()),
        }
        // One failed worker ends the phase for all.
        if failure.is_some() {
            phase.stop.store(true, Ordering::Relaxed);
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(results),
    }
}
