//! What a plugin call carries besides its message: the deadline, the
//! client's request id and the trace context. The request path builds one
//! from its context; the plugin layer knows nothing of the inbound request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prism_proto::plugin::v1 as proto;
use prism_proto::wire::metadata;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;

#[derive(Debug, Clone)]
pub struct CallOptions {
    /// When the caller stops waiting; the plugin gets the time left.
    pub deadline: Instant,
    /// The client's request id, which the plugin logs.
    pub request_id: Arc<str>,
    /// W3C trace context of the proxy's span for the call, when traced.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl CallOptions {
    pub fn new(deadline: Instant, request_id: Arc<str>) -> Self {
        Self { deadline, request_id, traceparent: None, tracestate: None }
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// A unary request: the time left as `grpc-timeout`, the request id and
    /// the trace context as metadata.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.stream_request(message);
        request.set_timeout(self.remaining());
        request
    }

    /// A request that opens a long-lived stream: the request id and the
    /// trace context, but no `grpc-timeout` (the deadline bounds only the
    /// opening, which the caller enforces).
    pub fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let meta = request.metadata_mut();
        for (key, value) in [
            (&metadata::REQUEST_ID, Some(&*self.request_id)),
            (&prism_telemetry::TRACEPARENT, self.traceparent.as_deref()),
            (&prism_telemetry::TRACESTATE, self.tracestate.as_deref()),
        ] {
            // Values were checked when they entered the proxy; one that is
            // not a valid header is dropped rather than failing the call.
            if let Some(value) = value.and_then(|v| MetadataValue::try_from(v).ok()) {
                meta.insert(key.as_str(), value);
            }
        }
        request
    }

    /// The same facts for a multiplexed call.
    pub fn to_proto(&self) -> proto::CallOptions {
        let bytes = |text: Option<&str>| text.map_or_else(Bytes::new, |t| Bytes::copy_from_slice(t.as_bytes()));
        proto::CallOptions {
            timeout_micros: u64::try_from(self.remaining().as_micros()).unwrap_or(u64::MAX).max(1),
            request_id: bytes(Some(&self.request_id)),
            traceparent: bytes(self.traceparent.as_deref()),
            tracestate: bytes(self.tracestate.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_transports_carry_the_same_facts() {
        let options = CallOptions::new(Instant::now() + Duration::from_secs(2), Arc::from("req-42"));
        let request = options.request(());
        assert_eq!(request.metadata().get(metadata::REQUEST_ID.as_str()).unwrap(), "req-42");
        let timeout = request.metadata().get("grpc-timeout").unwrap().to_str().unwrap();
        let timeout = prism_proto::wire::parse_grpc_timeout(timeout).unwrap();
        assert!(timeout <= Duration::from_secs(2) && timeout > Duration::from_secs(1), "{timeout:?}");
        let proto = options.to_proto();
        assert_eq!(&proto.request_id[..], b"req-42");
        assert!(proto.timeout_micros <= 2_000_000 && proto.timeout_micros > 1_000_000);
    }

    #[test]
    fn a_passed_deadline_still_says_so() {
        // 0 would mean "no deadline" to the plugin.
        let options = CallOptions::new(Instant::now(), Arc::from("late"));
        assert_eq!(options.to_proto().timeout_micros, 1);
    }
}
