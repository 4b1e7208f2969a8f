//! The plugin's connection: one Redis server, or a Redis Cluster.
//!
//! Every key of a namespace carries the namespace's hash tag, so all of a
//! namespace's keys sit in one cluster slot: scripts touching several keys,
//! pipelines and scans run on one node, exactly as on a single server. The
//! cluster client follows `MOVED`/`ASK` redirections and refreshes its slot
//! map after a failover; the rest of the plugin does not know which mode it
//! runs in.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Cmd, ConnectionInfo, Pipeline, RedisFuture, Value};

/// A cheap-to-clone handle on the connection(s); clones share them.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How to connect.
pub struct Settings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub password: Option<String>,
}

impl Conn {
    /// A connection to one server. Lazy: the plugin starts while Redis is
    /// down, reports unhealthy, and connects when Redis comes back.
    pub fn single(mut info: ConnectionInfo, settings: &Settings) -> redis::RedisResult<Self> {
        if let Some(password) = &settings.password {
            let redis = info.redis_settings().clone().set_password(password.clone());
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self::Single(ConnectionManager::new_lazy_with_config(client, config)?))
    }

    /// A cluster connection from seed nodes (any reachable one is enough:
    /// the client reads the slot map from it). Lazy, like [`Conn::single`].
    pub fn cluster(seeds: Vec<ConnectionInfo>, settings: &Settings) -> redis::RedisResult<Self> {
        let mut builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.response_timeout)
            // A call during a failover fails within about a second rather
            // than retrying for the whole failover: the proxy's caller owns
            // the deadline and the retry decision.
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(400);
        if let Some(password) = &settings.password {
            builder = builder.password(password.clone());
        }
        let client = builder.build()?;
        let config = ClusterConfig::new()
            .set_connection_timeout(settings.connect_timeout)
            .set_response_timeout(settings.response_timeout);
        Ok(Self::Cluster(client.get_pending_async_connection_with_config(config)))
    }
}

impl Conn {
    /// Whether Redis answers. On a cluster, a `PING` to every master that
    /// succeeds if any one answers: one master down is a failover in
    /// progress (the calls to its slots say so), not a dead backend whose
    /// plugin should be restarted.
    pub async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Self::Single(c) => redis::cmd("PING").query_async::<String>(c).await.map(drop),
            Self::Cluster(c) => {
                let any =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::OneSucceeded)));
                c.route_command(redis::cmd("PING"), any).await.map(drop)
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A Lua script call built like `redis::ScriptInvocation`, which cannot be
/// sent inside a pipeline: a write that waits for replicas sends the script
/// and a `WAIT` together, so both go on the same connection in order (a
/// `WAIT` on another connection would not cover the write).
pub struct Call<'s> {
    script: &'s redis::Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

/// Replicas a write waits for before it is acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub replicas: u32,
    pub timeout_ms: u64,
}

impl<'s> Call<'s> {
    pub fn new(script: &'s redis::Script) -> Self {
        Self { script, keys: Vec::new(), args: Vec::new() }
    }

    pub fn key(&mut self, key: impl redis::ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }

    /// Runs the script (loading it first if the server lost it) and, with
    /// `wait`, `WAIT`s for the replicas. Returns the script's reply and how
    /// many replicas confirmed (`None` without `wait`).
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        wait: Option<Wait>,
    ) -> redis::RedisResult<(T, Option<u32>)> {
        match self.send(conn, wait).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load_async(conn).await?;
                self.send(conn, wait).await
            }
            other => other,
        }
    }

    async fn send<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        wait: Option<Wait>,
    ) -> redis::RedisResult<(T, Option<u32>)> {
        match wait {
            None => self.evalsha().query_async::<T>(conn).await.map(|v| (v, None)),
            Some(wait) => {
                let mut pipe = redis::pipe();
                pipe.add_command(self.evalsha());
                pipe.cmd("WAIT").arg(wait.replicas).arg(wait.timeout_ms);
                pipe.query_async::<(T, u32)>(conn).await.map(|(v, acks)| (v, Some(acks)))
            }
        }
    }
}
