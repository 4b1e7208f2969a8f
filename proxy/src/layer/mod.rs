//! The layers in front of the gRPC services, one concern each. `server.rs`
//! stacks them, outermost first:
//!
//! 1. [`limit`]: the concurrency limit, which refuses a call at once when
//!    the proxy serves its limit;
//! 2. [`context`]: the request id and the deadline, in a `RequestContext`
//!    every later stage reads;
//! 3. [`audit`]: the audit record, written when the call ends;
//! 4. [`authn`]: who is calling (client certificate, bearer token);
//! 5. [`wire`]: the codes of requests the codec refuses (a message that
//!    does not decode, or is over the size limit).
//!
//! Each layer's future is a concrete type, not a box: a call pays for the
//! layers it passes, not for an allocation per layer.

pub mod audit;
pub mod authn;
pub mod context;
pub mod limit;
pub mod wire;

/// The gRPC status of a unary response: errors travel as trailers-only
/// responses, with `grpc-status` in the headers; success has none there.
fn grpc_status<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get(&prism_proto::wire::metadata::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}
