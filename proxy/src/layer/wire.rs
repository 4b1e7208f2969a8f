//! The codes of requests that fail before a service sees them. tonic's
//! codec answers a message that does not decode (garbage bytes, invalid
//! UTF-8 in a string field) with INTERNAL, which Prism's docs reserve for
//! its own bugs, and a message over the size limit with OUT_OF_RANGE and
//! the library's words. The gRPC spec and Prism's error table say otherwise:
//! the client sent a bad request (INVALID_ARGUMENT, naming the message and
//! why) or too large a one (RESOURCE_EXHAUSTED, naming the limit and its
//! setting). This layer rewrites those two answers and nothing else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::error::ProxyError;

/// What prost's decode errors start with, as tonic passes them on.
const DECODE_FAILED: &str = "failed to decode Protobuf message";
/// What tonic says when a message is over `max_decoding_message_size`.
const TOO_LARGE: &str = "decoded message length too large";

#[derive(Clone)]
pub struct WireStatusLayer {
    max_message_bytes: usize,
}

impl WireStatusLayer {
    pub fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes }
    }
}

impl<S> Layer<S> for WireStatusLayer {
    type Service = WireStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WireStatus { inner, max_message_bytes: self.max_message_bytes }
    }
}

#[derive(Clone)]
pub struct WireStatus<S> {
    inner: S,
    max_message_bytes: usize,
}

impl<S, B> Service<Request<B>> for WireStatus<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WireFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The method, for the message: `prism.keyvalue.v1.KeyValueService/Put`.
        let method = request.uri().path().trim_start_matches('/').to_owned();
        WireFuture { inner: self.inner.call(request), method, max: self.max_message_bytes }
    }
}

pin_project! {
    pub struct WireFuture<F> {
        #[pin]
        inner: F,
        method: String,
        max: usize,
    }
}

impl<F, E> Future for WireFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            other => return other,
        };
        let code = super::grpc_status(&response);
        if !matches!(code, tonic::Code::Internal | tonic::Code::OutOfRange) {
            return Poll::Ready(Ok(response));
        }
        let message = grpc_message(&response);
        let replaced = rewrite(code, &message, this.method, *this.max);
        Poll::Ready(Ok(replaced.map_or(response, ProxyError::into_http)))
    }
}

/// The error that replaces the codec's answer `(code, message)` to a call
/// of `method`, if it is one of the two this layer corrects.
fn rewrite(code: tonic::Code, message: &str, method: &str, max: usize) -> Option<ProxyError> {
    match code {
        tonic::Code::Internal => {
            let why = message.strip_prefix(DECODE_FAILED)?;
            let why = why.trim_start_matches(':').trim();
            Some(ProxyError::InvalidArgument(format!(
                "the request is not a valid {method} request message: {}",
                if why.is_empty() { "it does not decode" } else { why }
            )))
        }
        tonic::Code::OutOfRange if message.contains(TOO_LARGE) => {
            let found = message
                .split("found ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            Some(ProxyError::ResourceExhausted(match found {
                Some(found) => format!(
                    "the request message is {found} bytes, over the proxy's limit of {max} bytes (limits.max_message_bytes)"
                ),
                None => {
                    format!("the request message is over the proxy's limit of {max} bytes (limits.max_message_bytes)")
                }
            }))
        }
        _ => None,
    }
}

/// The `grpc-message` of a trailers-only response, percent-decoded.
fn grpc_message<B>(response: &Response<B>) -> String {
    response
        .headers()
        .get("grpc-message")
        .map(|v| percent_encoding::percent_decode(v.as_bytes()).decode_utf8_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PUT: &str = "prism.keyvalue.v1.KeyValueService/Put";

    #[test]
    fn decode_failures_are_invalid_argument_with_the_reason() {
        let e = rewrite(
            tonic::Code::Internal,
            "failed to decode Protobuf message: PutRequest.key: invalid string value: data is not UTF-8 encoded",
            PUT,
            100,
        )
        .unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let text = e.to_string();
        assert!(text.contains(PUT) && text.contains("not UTF-8 encoded"), "{text}");
    }

    #[test]
    fn oversized_messages_are_resource_exhausted_naming_the_limit() {
        let e = rewrite(
            tonic::Code::OutOfRange,
            "Error, decoded message length too large: found 2000000 bytes, the limit is: 1048576 bytes",
            PUT,
            1_048_576,
        )
        .unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            e.to_string(),
            "the request message is 2000000 bytes, over the proxy's limit of 1048576 bytes (limits.max_message_bytes)"
        );
    }

    #[test]
    fn other_answers_are_left_alone() {
        assert!(rewrite(tonic::Code::Internal, "internal error", PUT, 1).is_none());
        assert!(rewrite(tonic::Code::OutOfRange, "page past the end", PUT, 1).is_none());
        assert!(rewrite(tonic::Code::InvalidArgument, DECODE_FAILED, PUT, 1).is_none());
    }
}
