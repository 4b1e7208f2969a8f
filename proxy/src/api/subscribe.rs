//! TimeSeries Subscribe: a long-lived stream of a series' events, relayed
//! from the namespace's plugin to the client (ADR-017).
//!
//! Opening one goes through the same steps as every data call (authorize →
//! validate → call the plugin → map errors), under the request's deadline;
//! after that the subscription lives by its own limits, not the request's:
//!
//! - `limits.max_subscriptions` open at once (they hold no slot of
//!   `max_concurrent_requests`, which counts calls until they answer);
//! - each relays through a buffer of `limits.subscription_buffer_bytes`:
//!   when its client reads slower than events come, the relay stops reading
//!   from the plugin (the events wait in the backend, not in the proxy), and
//!   if the buffer stays full for `limits.subscription_stall_timeout` the
//!   subscription ends with RESOURCE_EXHAUSTED;
//! - one that receives nothing for `limits.subscription_idle_timeout` ends
//!   with DEADLINE_EXCEEDED, and all end with UNAVAILABLE at shutdown.
//!
//! Every message carries a position, so a client that sees any of these
//! ends subscribes again from the last one it received, without a gap. Each
//! subscription has a plugin connection of its own, so a stalled one never
//! holds back the flow-control window other calls share. The audit log has
//! the Subscribe call's record when it opens and a `subscription_end`
//! record when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use prism_proto::timeseries::v1::subscribe_request::Start;
use prism_proto::timeseries::v1::{SubscribeRequest, SubscribeResponse};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{DataPlane, check_name, replace};
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::metrics::{CallRecord, Method};
use crate::namespace::PatternKind;
use crate::routes::Route;
use crate::security::Right;
use crate::security::audit::{Audit, PiiReturned, Record, SubscriptionEnd};

/// What the client's stream yields.
pub type SubscribeStream = BoxStream<'static, Result<SubscribeResponse, Status>>;

/// A message on its way to the client, holding its share of the buffer
/// until the client's stream takes it.
type Buffered = Result<(SubscribeResponse, OwnedSemaphorePermit), Status>;

/// The proxy's subscriptions: the limit on how many are open, the signal
/// that ends them at shutdown, and the audit log their ends are written to.
pub struct Subscriptions {
    permits: Arc<Semaphore>,
    closing: CancellationToken,
    audit: Audit,
}

impl Subscriptions {
    pub fn new(max: usize, closing: CancellationToken, audit: Audit) -> Self {
        Self { permits: Arc::new(Semaphore::new(max)), closing, audit }
    }
}

/// Why a subscription ended.
enum End {
    /// The client went away (cancelled, disconnected).
    Client,
    /// The client stopped reading while its buffer was full.
    Slow,
    /// No event for the idle timeout.
    Idle,
    /// The proxy is shutting down.
    Shutdown,
    /// The plugin failed the stream or ended it.
    Plugin(ProxyError),
}

impl End {
    fn reason(&self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Slow => "slow",
            Self::Idle => "idle",
            Self::Shutdown => "shutdown",
            Self::Plugin(_) => "plugin",
        }
    }
}

const RESUME: &str = "subscribe again from the last position received";

impl DataPlane {
    /// Opens a subscription: authorize (read) → validate → open the
    /// plugin's stream under the request's deadline → relay it.
    pub async fn subscribe(
        &self,
        subscriptions: &Subscriptions,
        mut request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let peer = request.remote_addr();
        let ctx = RequestContext::take(&mut request)?;
        let req = request.into_inner();
        let request_bytes = req.encoded_len();
        let keys = (Some(req.series.as_str()), 1);
        let route = match self.routes.authorize(&ctx, &req.namespace, PatternKind::Timeseries, Right::Read, keys) {
            Ok(route) => route,
            Err(refused) => {
                let namespace = refused.route.as_deref().map(Route::name);
                self.metrics.unrouted(
                    namespace,
                    PatternKind::Timeseries.as_str(),
                    Method::Subscribe,
                    refused.error.code(),
                );
                return Err(refused.error.into());
            }
        };
        // A subscription's opening takes a read token; it holds no slot of
        // the concurrency limit (it has its own, limits.max_subscriptions).
        if let Err(error) = route.quotas.admit(route.name(), Right::Read) {
            return Err(self.refuse(&route, Method::Subscribe, PatternKind::Timeseries, error));
        }
        let opened = self.open(subscriptions, &ctx, peer, &route, req).await;
        route.metrics.record(&CallRecord {
            method: Method::Subscribe,
            code: opened.as_ref().map_or_else(ProxyError::code, |_| tonic::Code::Ok),
            elapsed: ctx.started.elapsed(),
            plugin: None,
            request_bytes,
            response_bytes: 0,
        });
        match opened {
            Ok(stream) => Ok(Response::new(stream)),
            Err(error) => {
                if let ProxyError::OverLimit { limit, .. } = &error {
                    route.metrics.limit_hit(limit);
                }
                Err(error.into())
            }
        }
    }

    async fn open(
        &self,
        subscriptions: &Subscriptions,
        ctx: &RequestContext,
        peer: Option<SocketAddr>,
        route: &Arc<Route>,
        req: SubscribeRequest,
    ) -> Result<SubscribeStream, ProxyError> {
        check_name(route, "series", &req.series)?;
        match &req.start {
            Some(Start::FromTimestamp(at)) if *at < 0 => {
                return Err(ProxyError::InvalidArgument(format!("from_timestamp {at} is before the Unix epoch")));
            }
            Some(Start::FromPosition(p)) if p.is_empty() => {
                return Err(ProxyError::InvalidArgument(
                    "from_position is empty: leave start unset to begin with the next event".to_owned(),
                ));
            }
            _ => {}
        }
        let permit = subscriptions.permits.clone().try_acquire_owned().map_err(|_| {
            route.metrics.limit_hit("max_subscriptions");
            ProxyError::ResourceExhausted(format!(
                "the proxy is serving its limit of {} subscriptions (limits.max_subscriptions); retry later",
                self.limits.max_subscriptions
            ))
        })?;
        let raw = route.codec.as_ref().map(|codec| {
            let raw = ctx.principal.may(route.doc.spec.access.as_ref(), Right::Pii);
            if !codec.plan().classes().is_empty() {
                ctx.note(|facts| {
                    facts.pii = Some(PiiReturned {
                        returned: if raw { "raw" } else { "masked" },
                        classes: codec.plan().classes().iter().map(|c| c.as_str()).collect(),
                    });
                });
            }
            raw
        });
        let plugin = route.plugin.clone();
        let series = req.series.clone();
        let request = ctx.call_options().stream_request(req);
        let open = async {
            let mut client = plugin.timeseries_dedicated().await?;
            client
                .subscribe(request)
                .await
                .map(Response::into_inner)
                .map_err(|s| ProxyError::from_plugin(plugin.name(), &s))
        };
        let upstream = tokio::time::timeout_at(ctx.deadline, open)
            .await
            .map_err(|_| ProxyError::plugin_deadline(plugin.name(), ctx.started.elapsed()))??;

        let (tx, rx) = mpsc::unbounded_channel::<Buffered>();
        let relay = Relay {
            route: route.clone(),
            raw,
            buffer: Arc::new(Semaphore::new(self.limits.subscription_buffer_bytes)),
            buffer_bytes: self.limits.subscription_buffer_bytes,
            idle: self.limits.subscription_idle_timeout,
            stall: self.limits.subscription_stall_timeout,
            closing: subscriptions.closing.clone(),
        };
        let audit = subscriptions.audit.clone();
        let (ctx, route) = (ctx.clone(), route.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let (open, events) = route.metrics.subscription();
            open.inc();
            let (end, delivered) = relay.run(upstream, &tx, &events).await;
            open.dec();
            drop(permit);
            let status = match &end {
                End::Client => None,
                End::Slow => Some(ProxyError::ResourceExhausted(format!(
                    "subscription ended: the subscriber read nothing for {:?} while {} bytes of events waited for it (limits.subscription_stall_timeout); {RESUME}",
                    relay.stall, relay.buffer_bytes
                ))),
                End::Idle => Some(ProxyError::DeadlineExceeded(format!(
                    "subscription ended: no event for {:?} (limits.subscription_idle_timeout); {RESUME}",
                    relay.idle
                ))),
                End::Shutdown => {
                    Some(ProxyError::Unavailable(format!("the proxy is shutting down; {RESUME}, on another proxy")))
                }
                End::Plugin(e) => Some(resumable(e)),
            };
            let code = status.as_ref().map_or(tonic::Code::Cancelled, ProxyError::code);
            route.metrics.subscription_ended(end.reason());
            if audit.enabled() {
                audit.write(Record::subscription_end(&SubscriptionEnd {
                    request_id: &ctx.request_id,
                    principal: &ctx.principal,
                    peer,
                    namespace: route.name(),
                    series: &series,
                    status: code,
                    reason: end.reason(),
                    lasted: started.elapsed(),
                    events: delivered,
                }));
            }
            if let Some(status) = status {
                let _ = tx.send(Err(status.into()));
            }
        });
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            // The message's share of the buffer is released here, as the
            // client's stream takes it.
            let item = rx.recv().await?;
            Some((item.map(|(message, _share)| message), rx))
        })))
    }
}

/// A plugin's failure of a live subscription, with what the client does.
fn resumable(error: &ProxyError) -> ProxyError {
    match error {
        ProxyError::Unavailable(m) => ProxyError::Unavailable(format!("{m}; {RESUME}")),
        ProxyError::DeadlineExceeded(m) => ProxyError::DeadlineExceeded(format!("{m}; {RESUME}")),
        ProxyError::Internal(m) => ProxyError::Internal(m.clone()),
        other => ProxyError::Unavailable(format!("{other}; {RESUME}")),
    }
}

/// One subscription's relay from the plugin's stream to the client's.
struct Relay {
    route: Arc<Route>,
    /// PII of a typed namespace: whether the caller sees raw values.
    raw: Option<bool>,
    buffer: Arc<Semaphore>,
    buffer_bytes: usize,
    idle: Duration,
    stall: Duration,
    closing: CancellationToken,
}

impl Relay {
    /// Relays until the subscription ends; returns why, and the events it
    /// delivered.
    async fn run(
        &self,
        mut upstream: Streaming<SubscribeResponse>,
        tx: &mpsc::UnboundedSender<Buffered>,
        events: &prometheus_client::metrics::counter::Counter,
    ) -> (End, u64) {
        let mut delivered = 0u64;
        let plugin = self.route.plugin.name();
        let end = loop {
            let next = async {
                if self.idle.is_zero() {
                    Ok(upstream.message().await)
                } else {
                    tokio::time::timeout(self.idle, upstream.message()).await
                }
            };
            let message = tokio::select! {
                biased;
                () = self.closing.cancelled() => break End::Shutdown,
                () = tx.closed() => break End::Client,
                next = next => match next {
                    Err(_) => break End::Idle,
                    Ok(Ok(Some(message))) => message,
                    Ok(Ok(None)) => {
                        break End::Plugin(ProxyError::Unavailable(format!("plugin {plugin} ended the subscription")));
                    }
                    Ok(Err(status)) => break End::Plugin(ProxyError::from_plugin(plugin, &status)),
                },
            };
            let message = match self.reveal(message) {
                Ok(message) => message,
                Err(e) => break End::Plugin(e),
            };
            // Capped, so one event larger than the buffer still passes
            // (alone).
            let cost = u32::try_from(message.encoded_len().clamp(1, self.buffer_bytes)).unwrap_or(u32::MAX);
            let share = tokio::select! {
                biased;
                () = self.closing.cancelled() => break End::Shutdown,
                () = tx.closed() => break End::Client,
                share = tokio::time::timeout(self.stall, self.buffer.clone().acquire_many_owned(cost)) => match share {
                    Ok(Ok(share)) => share,
                    _ => break End::Slow,
                },
            };
            if message.event.is_some() {
                delivered += 1;
                events.inc();
            }
            if tx.send(Ok((message, share))).is_err() {
                break End::Client;
            }
        };
        (end, delivered)
    }

    /// PII, for a typed namespace: the event's payload as the caller may
    /// see it.
    fn reveal(&self, mut message: SubscribeResponse) -> Result<SubscribeResponse, ProxyError> {
        if let (Some(codec), Some(raw), Some(event)) = (&self.route.codec, self.raw, message.event.as_mut())
            && !event.payload.is_empty()
        {
            let shown = codec.read(&event.payload, raw).map_err(|e| ProxyError::pii(self.route.name(), e))?;
            replace(&mut event.payload, shown);
        }
        Ok(message)
    }
}
