//! A client channel over several proxies: round robin (power of two
//! choices, tonic's balancer) over the proxies that are up, with the
//! standard gRPC health service deciding which are.
//!
//! tonic's `Channel::balance_list` keeps sending calls to a proxy that went
//! away (each fails with "tcp connect error" until it is back). Here each
//! proxy is watched with `grpc.health.v1.Health/Watch` for the overall
//! service (`""`) on a connection of its own: a proxy leaves the rotation
//! the moment that stream breaks or reports NOT_SERVING (a proxy that
//! drains for shutdown reports it first, so a rolling restart fails no
//! call), and joins again once it answers SERVING. While no proxy is up,
//! calls wait for one until their deadline.

use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A channel balancing calls over the healthy ones of `endpoints`. A proxy
/// that is down is tried again every `retry_every`. Must be called inside
/// a tokio runtime (it spawns one watcher per endpoint, which stop when
/// the channel and its clones are dropped).
pub fn balanced_channel(endpoints: impl IntoIterator<Item = Endpoint>, retry_every: Duration) -> Channel {
    let endpoints: Vec<Endpoint> = endpoints.into_iter().collect();
    let (channel, changes) = Channel::balance_channel(endpoints.len().max(1));
    for (key, endpoint) in endpoints.into_iter().enumerate() {
        tokio::spawn(watch(key, endpoint, changes.clone(), retry_every));
    }
    channel
}

/// Keeps `endpoint` in the balancer exactly while it reports SERVING.
async fn watch(key: usize, endpoint: Endpoint, changes: Sender<Change<usize, Endpoint>>, retry_every: Duration) {
    let mut member = false;
    loop {
        if let Ok(health) = endpoint.connect().await {
            let request = HealthCheckRequest { service: String::new() };
            if let Ok(stream) = HealthClient::new(health).watch(request).await {
                let mut stream = stream.into_inner();
                while let Ok(Some(reply)) = stream.message().await {
                    let serving = reply.status == ServingStatus::Serving as i32;
                    if serving != member {
                        let change = if serving { Change::Insert(key, endpoint.clone()) } else { Change::Remove(key) };
                        if changes.send(change).await.is_err() {
                            return;
                        }
                        member = serving;
                    }
                }
            }
        }
        if member {
            if changes.send(Change::Remove(key)).await.is_err() {
                return;
            }
            member = false;
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(retry_every).await;
    }
}
