//! The floors: the least a gRPC KeyValue gateway can cost on this machine.
//!
//! `grpc` answers from memory; `grpc-redis` forwards Get and Put to Redis
//! over one multiplexed connection, as the redis plugin does (BatchGet as
//! one MGET, BatchPut as one MSET); `grpc-pg`
//! runs the postgres plugin's own Get and Put statements (the same table
//! shape, liveness condition and version sequence) on a pool of 16
//! connections, each statement prepared once per connection. All speak
//! Prism's public KeyValue API with tonic's default server settings, so the
//! same client measures them and Prism.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use prism_proto::keyvalue::v1::key_value_service_server::{KeyValueService, KeyValueServiceServer};
use prism_proto::keyvalue::v1::{
    BatchGetRequest, BatchGetResponse, BatchPutRequest, BatchPutResponse, DeleteRequest, DeleteResponse, Entry,
    GetRequest, GetResponse, GetResult, PutRequest, PutResponse, ScanRequest, ScanResponse,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::args::{FloorArgs, FloorKind};

enum Store {
    // A std lock: it is never held across an await and is uncontended
    // for the microseconds a map lookup takes.
    Memory(RwLock<BTreeMap<String, Bytes>>),
    Redis(redis::aio::MultiplexedConnection),
    Postgres(deadpool_postgres::Pool),
}

/// The floor's schema, apart from any plugin's.
const PG_SCHEMA: &str = "prism_floor";
/// The postgres plugin's statements, on the floor's schema.
const PG_GET: &str = "SELECT value, version FROM prism_floor.kv WHERE ns = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())";
const PG_PUT: &str = "INSERT INTO prism_floor.kv (ns, key, value, version, expires_at)
     VALUES ($1, $2, $3, nextval('prism_floor.kv_version'), NULL)
     ON CONFLICT (ns, key) DO UPDATE
       SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
     RETURNING version";

fn pg_status(e: &dyn std::fmt::Display) -> Status {
    Status::unavailable(format!("postgres: {e}"))
}

/// Runs the postgres plugin's Get statement (prepared once per pooled
/// connection): the value, if the key is live.
pub async fn pg_get(pool: &deadpool_postgres::Pool, ns: &str, key: &str) -> Result<Option<Bytes>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let statement = client.prepare_cached(PG_GET).await.map_err(|e| e.to_string())?;
    let row = client.query_opt(&statement, &[&ns, &key]).await.map_err(|e| e.to_string())?;
    Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
}

/// Runs the postgres plugin's Put statement; the new version.
pub async fn pg_put(pool: &deadpool_postgres::Pool, ns: &str, key: &str, value: &[u8]) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let statement = client.prepare_cached(PG_PUT).await.map_err(|e| e.to_string())?;
    let row = client.query_one(&statement, &[&ns, &key, &value]).await.map_err(|e| e.to_string())?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// A pool of the floor's connections, with its schema in place (also the
/// pool of the `postgres` and `pgbouncer` targets, which run the same
/// statements without the gRPC hop).
pub async fn pg_pool(url: &str) -> anyhow::Result<deadpool_postgres::Pool> {
    use std::str::FromStr;
    let config = tokio_postgres::Config::from_str(url)?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    let pool = deadpool_postgres::Pool::builder(manager).max_size(16).build()?;
    let client = pool.get().await?;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA};
             CREATE TABLE IF NOT EXISTS {PG_SCHEMA}.kv (
                 ns text COLLATE \"C\" NOT NULL, key text COLLATE \"C\" NOT NULL, value bytea NOT NULL,
                 version bigint NOT NULL, expires_at timestamptz, PRIMARY KEY (ns, key));
             CREATE SEQUENCE IF NOT EXISTS {PG_SCHEMA}.kv_version;"
        ))
        .await?;
    Ok(pool)
}

pub struct Floor {
    store: Store,
}

fn redis_status(e: &redis::RedisError) -> Status {
    Status::unavailable(format!("redis: {e}"))
}

#[tonic::async_trait]
impl KeyValueService for Floor {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        match &self.store {
            Store::Memory(map) => {
                map.write().unwrap_or_else(PoisonError::into_inner).insert(req.key, req.value);
            }
            Store::Postgres(pool) => {
                let version = pg_put(pool, &req.namespace, &req.key, &req.value).await.map_err(|e| pg_status(&e))?;
                return Ok(Response::new(PutResponse { version }));
            }
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                redis::cmd("SET")
                    .arg(&req.key)
                    .arg(&req.value[..])
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| redis_status(&e))?;
            }
        }
        Ok(Response::new(PutResponse { version: 1 }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        let value = match &self.store {
            Store::Memory(map) => map.read().unwrap_or_else(PoisonError::into_inner).get(&req.key).cloned(),
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                redis::cmd("GET")
                    .arg(&req.key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
                    .map_err(|e| redis_status(&e))?
                    .map(Bytes::from)
            }
            Store::Postgres(pool) => pg_get(pool, &req.namespace, &req.key).await.map_err(|e| pg_status(&e))?,
        };
        Ok(Response::new(GetResponse { found: value.is_some(), value: value.unwrap_or_default(), version: 1 }))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(Status::unimplemented("the floor serves Get, Put and Scan"))
    }

    async fn batch_get(&self, request: Request<BatchGetRequest>) -> Result<Response<BatchGetResponse>, Status> {
        let req = request.into_inner();
        let values: Vec<Option<Bytes>> = match &self.store {
            Store::Memory(map) => {
                let map = map.read().unwrap_or_else(PoisonError::into_inner);
                req.keys.iter().map(|k| map.get(k).cloned()).collect()
            }
            // MGET refuses an empty key list; an empty batch finds nothing.
            Store::Redis(_) if req.keys.is_empty() => Vec::new(),
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                redis::cmd("MGET")
                    .arg(&req.keys)
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut conn)
                    .await
                    .map_err(|e| redis_status(&e))?
                    .into_iter()
                    .map(|v| v.map(Bytes::from))
                    .collect()
            }
            Store::Postgres(_) => return Err(Status::unimplemented("the PostgreSQL floor serves Get and Put")),
        };
        let items = req
            .keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| GetResult { key, found: value.is_some(), value: value.unwrap_or_default(), version: 1 })
            .collect();
        Ok(Response::new(BatchGetResponse { items }))
    }

    async fn batch_put(&self, request: Request<BatchPutRequest>) -> Result<Response<BatchPutResponse>, Status> {
        let req = request.into_inner();
        let n = req.items.len();
        match &self.store {
            Store::Memory(map) => {
                let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
                for item in req.items {
                    map.insert(item.key, item.value);
                }
            }
            Store::Redis(_) if n == 0 => {}
            Store::Redis(conn) => {
                // One MSET: all items or none in one round trip, as the
                // redis plugin's batch script writes them.
                let mut mset = redis::cmd("MSET");
                for item in &req.items {
                    mset.arg(&item.key).arg(&item.value[..]);
                }
                let mut conn = conn.clone();
                mset.query_async::<()>(&mut conn).await.map_err(|e| redis_status(&e))?;
            }
            Store::Postgres(_) => return Err(Status::unimplemented("the PostgreSQL floor serves Get and Put")),
        }
        Ok(Response::new(BatchPutResponse { versions: vec![1; n] }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = request.into_inner();
        let Store::Memory(map) = &self.store else {
            return Err(Status::unimplemented("the Redis and PostgreSQL floors serve Get and Put"));
        };
        let map = map.read().unwrap_or_else(PoisonError::into_inner);
        let items = map
            .range(req.prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&req.prefix))
            .take(req.page_size.max(1) as usize)
            .map(|(k, v)| Entry { key: k.clone(), value: v.clone(), version: 1 })
            .collect();
        Ok(Response::new(ScanResponse { items, next_page_token: String::new() }))
    }
}

/// Serves a floor and prints `listening <addr>` on stdout once it accepts
/// connections, so that whoever started it can connect.
pub async fn serve(args: FloorArgs) -> anyhow::Result<()> {
    let store = match args.kind {
        FloorKind::Grpc => Store::Memory(RwLock::new(BTreeMap::new())),
        FloorKind::GrpcRedis => {
            Store::Redis(redis::Client::open(args.redis.as_str())?.get_multiplexed_async_connection().await?)
        }
        FloorKind::GrpcPg => Store::Postgres(pg_pool(&args.postgres).await?),
    };
    let listener = TcpListener::bind(args.listen).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("listening {addr}\n").as_bytes()).await?;
    stdout.flush().await?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(KeyValueServiceServer::new(Floor { store }))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
