//! The data plane: the KeyValue, TimeSeries and Graph services. Every one
//! of their calls goes through [`DataPlane::forward`]; each RPC only says,
//! through [`DataCall`], what it needs (pattern, right, keys), how it is
//! validated and which plugin call carries it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::Limits;
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::metrics::{CallRecord, Method, Metrics};
use crate::namespace::PatternKind;
use crate::plugin::{CallOptions, Plugin};
use crate::quota::Fairness;
use crate::routes::{Route, Routes};
use crate::security::Right;
use crate::security::audit::{PiiReturned, key_hash};
use crate::shadow::{self, Shadow};
use prism_pii::{Codec, CodecError};

/// What the data plane needs from the proxy: the route table, the request
/// limits and the metrics. Cheap to clone; every pattern service holds one.
#[derive(Clone)]
pub struct DataPlane {
    routes: Arc<Routes>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    /// Fair concurrency between namespaces (`crate::quota`).
    fairness: Arc<Fairness>,
}

/// One data RPC, as [`DataPlane::forward`] drives it. Implemented by each
/// request message of the public pattern APIs.
pub trait DataCall: prost::Message + Clone + Sized + 'static {
    type Reply: prost::Message + Clone + Send + 'static;
    /// The pattern whose namespaces this call may use.
    const PATTERN: PatternKind;
    /// The method, for metrics and spans.
    const METHOD: Method;
    /// The right the caller needs on the namespace.
    const RIGHT: Right;

    fn namespace(&self) -> &str;

    /// The first key (or series, or vertex) the call touches and how many
    /// it touches, for the audit record (which keeps only a hash).
    fn keys(&self) -> (Option<&str>, usize);

    /// Checks the request against the namespace's and the proxy's limits
    /// and fills in defaults (a page size, the namespace's TTL). May answer
    /// without a plugin call (an empty batch).
    fn validate(&mut self, route: &Route, limits: &Limits) -> Result<Option<Self::Reply>, ProxyError>;

    /// PII, for a typed namespace: checks that the values the call writes
    /// are the namespace's message, and encrypts their tagged fields when
    /// the namespace asks. Calls that write no values have nothing to do.
    fn seal(&mut self, _codec: &Codec) -> Result<(), CodecError> {
        Ok(())
    }

    /// PII, for a typed namespace: turns the values of a reply into what
    /// the caller may see (decrypted; masked unless `raw`). Returns whether
    /// the reply carried any value.
    fn reveal(_reply: &mut Self::Reply, _codec: &Codec, _raw: bool) -> Result<bool, CodecError> {
        Ok(false)
    }

    /// Shadow traffic: the write as replayed on the shadow. Preconditions
    /// (`if_version`) are dropped: the primary decided them, and the
    /// shadow's versions are its own.
    fn for_shadow(&mut self) {}

    /// Shadow traffic: the keys a KeyValue write changes, so that the
    /// shadow can name the keys whose copy it lost (a migration repairs
    /// them before it switches primaries).
    fn written_keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// Shadow traffic: whether this read is compared with the shadow's
    /// answer (reads that continue a page of the primary's are not: page
    /// tokens belong to a backend).
    fn compared(&self) -> bool {
        false
    }

    /// Shadow traffic: how the shadow's answer differs from the primary's,
    /// or `None` when they agree. Backend version numbers are not compared.
    /// Names values by length and hash only (`shadow::describe_values`).
    fn compare(&self, _primary: &Self::Reply, _shadow: &Self::Reply) -> Option<String> {
        None
    }

    /// The plugin call that carries the request.
    fn send(
        self,
        plugin: &Plugin,
        options: &CallOptions,
    ) -> impl Future<Output = Result<Self::Reply, ProxyError>> + Send;
}

/// Implements [`DataCall`] for a request message: the reply, pattern and
/// right, the keys the audit record names, the plugin call, and the
/// validation (which returns `Ok(None)` to go on to the plugin).
macro_rules! data_call {
    (
        $request:ty => $reply:ty, $pattern:ident, $method:ident, $right:ident,
        keys($k:ident) $keys:expr,
        send($s:ident, $plugin:ident, $options:ident) $send:expr,
        validate($this:ident, $route:ident, $limits:ident) $validate:block
        $(, seal($sealing:ident, $seal_codec:ident) $seal:block)?
        $(, reveal($reply_ident:ident, $reveal_codec:ident, $raw:ident) $reveal:block)?
        $(, shadow($shadowing:ident) $shadow:block)?
        $(, written($writing:ident) $written:expr)?
        $(, compare($comparing:ident, $primary:ident, $theirs:ident) when $when:expr => $compare:block)?
    ) => {
        impl $crate::api::DataCall for $request {
            type Reply = $reply;
            const PATTERN: $crate::namespace::PatternKind = $crate::namespace::PatternKind::$pattern;
            const METHOD: $crate::metrics::Method = $crate::metrics::Method::$method;
            const RIGHT: $crate::security::Right = $crate::security::Right::$right;

            fn namespace(&self) -> &str {
                &self.namespace
            }

            fn keys(&self) -> (Option<&str>, usize) {
                let $k = self;
                $keys
            }

            #[allow(unused_variables)]
            fn validate(
                &mut self,
                $route: &$crate::routes::Route,
                $limits: &$crate::config::Limits,
            ) -> Result<Option<$reply>, $crate::error::ProxyError> {
                let $this = self;
                $validate
            }

            async fn send(
                self,
                $plugin: &$crate::plugin::Plugin,
                $options: &$crate::plugin::CallOptions,
            ) -> Result<$reply, $crate::error::ProxyError> {
                let $s = self;
                $send
            }

            $(
                fn seal(&mut self, $seal_codec: &prism_pii::Codec) -> Result<(), prism_pii::CodecError> {
                    let $sealing = self;
                    $seal
                }
            )?

            $(
                fn reveal(
                    $reply_ident: &mut $reply,
                    $reveal_codec: &prism_pii::Codec,
                    $raw: bool,
                ) -> Result<bool, prism_pii::CodecError> {
                    $reveal
                }
            )?

            $(
                fn for_shadow(&mut self) {
                    let $shadowing = self;
                    $shadow
                }
            )?

            $(
                fn written_keys(&self) -> Vec<String> {
                    let $writing = self;
                    $written
                }
            )?

            $(
                #[allow(unused_variables)]
                fn compared(&self) -> bool {
                    let $comparing = self;
                    $when
                }

                #[allow(unused_variables)]
                fn compare(&self, $primary: &$reply, $theirs: &$reply) -> Option<String> {
                    let $comparing = self;
                    $compare
                }
            )?
        }
    };
}

/// Replaces `value` by what the codec made of it, if it changed anything.
pub(crate) fn replace(value: &mut bytes::Bytes, changed: Option<bytes::Bytes>) {
    if let Some(changed) = changed {
        *value = changed;
    }
}

// After the macro, so that they can use it.
pub mod graph;
pub mod keyvalue;
pub mod subscribe;
pub mod timeseries;

impl DataPlane {
    pub fn new(routes: Arc<Routes>, limits: Limits, metrics: Arc<Metrics>) -> Self {
        let fairness = Arc::new(Fairness::new(&limits));
        Self { routes, limits: Arc::new(limits), metrics, fairness }
    }

    /// Serves one data call: **authorize → validate → PII (writes) → call
    /// the plugin → PII (reads) → map errors**, and records it in the
    /// metrics.
    ///
    /// 1. *Authorize*: the namespace's route, if the caller holds the
    ///    call's right on it (noting the namespace, right and key hash for
    ///    the audit record); then *admit* it: a token of the namespace's
    ///    quota and a place in its fair share (`crate::quota`).
    /// 2. *Validate* against the limits, before any plugin sees the call.
    /// 3. *PII, writes*: in a typed namespace, the values must be its
    ///    message; tagged fields are encrypted when it asks.
    /// 4. *Call the plugin* under the request's deadline, in its own span,
    ///    with the call options (deadline, request id, the span's trace
    ///    context) the plugin honours on both transports.
    /// 5. *PII, reads*: in a typed namespace, the values of the reply are
    ///    decrypted and, unless the caller holds `pii`, masked by the
    ///    namespace's policy; the audit record notes which classes went out
    ///    and how.
    /// 6. *Map errors*: every failure is a `ProxyError`, turned into a gRPC
    ///    status in one place (`crate::error`).
    ///
    /// Untyped namespaces skip steps 3 and 5 at the cost of one branch.
    /// The shadow tee plugs in here too: it hands the acknowledged write
    /// (or a sampled read and its answer) to the namespace's shadow queue
    /// after step 4, never waiting on it; its metrics join the route's.
    pub async fn forward<C: DataCall>(&self, mut request: Request<C>) -> Result<Response<C::Reply>, Status> {
        let ctx = RequestContext::take(&mut request)?;
        let call = request.into_inner();
        let request_bytes = call.encoded_len();
        let (route, _entered) = loop {
            let route = match self.routes.authorize(&ctx, call.namespace(), C::PATTERN, C::RIGHT, call.keys()) {
                Ok(route) => route,
                Err(refused) => {
                    let namespace = refused.route.as_deref().map(Route::name);
                    self.metrics.unrouted(namespace, C::PATTERN.as_str(), C::METHOD, refused.error.code());
                    return Err(refused.error.into());
                }
            };
            // A migration switching this namespace's primary holds writes
            // (shadowed namespaces only); once the fence opens, the write
            // looks its route up again and goes to the new primary.
            let Some(shadow) = route.shadow.as_ref().filter(|_| C::RIGHT == Right::Write) else { break (route, None) };
            match shadow.enter_write() {
                Ok(entered) => break (route, Some(entered)),
                Err(mut fence) => {
                    let opened = tokio::time::timeout_at(ctx.deadline, fence.wait_for(|closed| !closed)).await;
                    if opened.is_err() {
                        let error = ProxyError::DeadlineExceeded(format!(
                            "namespace {}: writes were held while a migration switched its primary, past the call's deadline",
                            route.name()
                        ));
                        self.metrics.unrouted(Some(route.name()), C::PATTERN.as_str(), C::METHOD, error.code());
                        return Err(error.into());
                    }
                }
            }
        };
        // Isolation between namespaces: the quota's token, then a fair
        // share of the proxy's concurrency, held until the call answers.
        let admitted = route
            .quotas
            .admit(route.name(), C::RIGHT)
            .and_then(|()| self.fairness.enter(route.name(), &route.in_flight));
        let _slot = match admitted {
            Ok(slot) => slot,
            Err(error) => return Err(self.refuse(&route, C::METHOD, C::PATTERN, error)),
        };
        let mut plugin_time = None;
        let result = self.call(&ctx, &route, call, &mut plugin_time).await;
        route.metrics.record(&CallRecord {
            method: C::METHOD,
            code: result.as_ref().map_or_else(ProxyError::code, |_| tonic::Code::Ok),
            elapsed: ctx.started.elapsed(),
            plugin: plugin_time,
            request_bytes,
            response_bytes: result.as_ref().map_or(0, prost::Message::encoded_len),
        });
        match result {
            Ok(reply) => Ok(Response::new(reply)),
            Err(error) => {
                if let ProxyError::OverLimit { limit, .. } = &error {
                    route.metrics.limit_hit(limit);
                }
                Err(error.into())
            }
        }
    }

    /// A call of `route` refused before it reached the plugin (a quota or
    /// the namespace's fair share), counted as such.
    fn refuse(&self, route: &Route, method: Method, pattern: PatternKind, error: ProxyError) -> Status {
        let limit = match &error {
            ProxyError::QuotaExceeded { limit, .. } => limit,
            _ => "namespace_concurrency",
        };
        route.metrics.limit_hit(limit);
        self.metrics.unrouted(Some(route.name()), pattern.as_str(), method, error.code());
        error.into()
    }

    /// Steps 2 to 5 of [`DataPlane::forward`]; `plugin_time` is how long
    /// the plugin took, when the call reached it.
    async fn call<C: DataCall>(
        &self,
        ctx: &RequestContext,
        route: &Route,
        mut call: C,
        plugin_time: &mut Option<Duration>,
    ) -> Result<C::Reply, ProxyError> {
        if let Some(reply) = call.validate(route, &self.limits)? {
            return Ok(reply);
        }
        if let Some(codec) = &route.codec {
            call.seal(codec).map_err(|e| ProxyError::pii(route.name(), e))?;
        }
        // The copy is taken after sealing, so the shadow stores the same
        // bytes as the primary (encrypted fields included).
        let copy = route.shadow.as_ref().and_then(|shadow| {
            let kind = if C::RIGHT == Right::Write { shadow::Kind::Write } else { shadow::Kind::Read };
            let eligible = kind == shadow::Kind::Write || call.compared();
            (eligible && shadow.wants(kind)).then(|| (shadow.clone(), kind, call.clone()))
        });
        let span = if ctx.traced { plugin_span(route, C::METHOD) } else { tracing::Span::none() };
        let mut options = ctx.call_options();
        if let Some((traceparent, tracestate)) = prism_telemetry::inject(&span) {
            options.traceparent = Some(traceparent);
            options.tracestate = tracestate;
        }
        let started = Instant::now();
        let reply = tokio::time::timeout_at(ctx.deadline, call.send(&route.plugin, &options).instrument(span)).await;
        *plugin_time = Some(started.elapsed());
        let reply =
            reply.map_err(|_| ProxyError::plugin_deadline(route.plugin.name(), ctx.started.elapsed())).and_then(|r| r);
        let mut reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // A write that failed may still have been applied by the
                // primary: its keys are noted so that a migration copies
                // them again. A refused precondition changed nothing.
                if let Some((shadow, shadow::Kind::Write, copy)) = &copy
                    && !matches!(
                        e,
                        ProxyError::Conflict(_) | ProxyError::InvalidArgument(_) | ProxyError::OverLimit { .. }
                    )
                {
                    shadow.uncertain(copy.written_keys());
                }
                return Err(e);
            }
        };
        if let Some((shadow, kind, copy)) = copy {
            tee(&shadow, kind, copy, &reply);
        }
        if let Some(codec) = &route.codec {
            let raw = ctx.principal.may(route.doc.spec.access.as_ref(), Right::Pii);
            if C::reveal(&mut reply, codec, raw).map_err(|e| ProxyError::pii(route.name(), e))?
                && !codec.plan().classes().is_empty()
            {
                ctx.note(|facts| {
                    facts.pii = Some(PiiReturned {
                        returned: if raw { "raw" } else { "masked" },
                        classes: codec.plan().classes().iter().map(|c| c.as_str()).collect(),
                    });
                });
            }
        }
        Ok(reply)
    }
}

/// Hands the shadow a copy of an acknowledged call: a write to replay, or a
/// read with the primary's answer to compare (before PII masking: both
/// backends hold the same stored bytes).
fn tee<C: DataCall>(shadow: &Shadow, kind: shadow::Kind, mut copy: C, reply: &C::Reply) {
    let key_hash = copy.keys().0.map(key_hash).unwrap_or_default();
    let keys = if kind == shadow::Kind::Write { copy.written_keys() } else { Vec::new() };
    let replay: shadow::Replay = match kind {
        shadow::Kind::Write => {
            copy.for_shadow();
            Box::new(move |plugin, options| Box::pin(async move { copy.send(&plugin, &options).await.map(|_| None) }))
        }
        shadow::Kind::Read => {
            let primary = reply.clone();
            Box::new(move |plugin, options| {
                Box::pin(async move {
                    let request = copy.clone();
                    let theirs = copy.send(&plugin, &options).await?;
                    Ok(request.compare(&primary, &theirs))
                })
            })
        }
    };
    shadow.offer(kind, C::METHOD.as_str(), key_hash, keys, replay);
}

/// The span of the plugin hop of a traced call, a child of the request's:
/// its context travels to the plugin, whose spans become its children.
fn plugin_span(route: &Route, method: Method) -> tracing::Span {
    tracing::info_span!(
        "plugin call",
        otel.name = %format_args!("prism.plugin.v1/{}", method.as_str()),
        otel.kind = "client",
        rpc.system = "grpc",
        plugin = route.plugin.name(),
        namespace = route.name(),
    )
}

/// Checks a required name (a key, a series, an event id, a vertex id or an
/// edge label) against the proxy's key limit.
pub(crate) fn check_name(route: &Route, what: &str, name: &str) -> Result<(), ProxyError> {
    if name.is_empty() {
        return Err(ProxyError::InvalidArgument(format!("{what} must not be empty")));
    }
    if name.len() > route.max_key_bytes {
        return Err(ProxyError::OverLimit {
            limit: "max_key_bytes",
            message: format!("{what} is {} bytes, over the limit of {} bytes", name.len(), route.max_key_bytes),
        });
    }
    Ok(())
}

/// A page size the client left at 0 gets the default; a larger one than
/// the proxy serves is lowered to its limit.
pub(crate) fn page_size(asked: u32, limits: &Limits) -> u32 {
    match asked {
        0 => limits.default_page_size,
        n => n.min(limits.max_page_size),
    }
}

/// Prefixes an item's position to a validation error of a batch.
pub(crate) fn at_item(i: usize, err: ProxyError, what: &str) -> ProxyError {
    match err {
        ProxyError::InvalidArgument(m) => ProxyError::InvalidArgument(format!("{what}[{i}]: {m}")),
        ProxyError::OverLimit { limit, message } => {
            ProxyError::OverLimit { limit, message: format!("{what}[{i}]: {message}") }
        }
        other => other,
    }
}
