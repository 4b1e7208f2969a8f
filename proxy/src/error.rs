//! The proxy's error type and its one mapping to gRPC status codes.
//!
//! Every failure on the request path becomes one of these variants, and
//! `From<ProxyError> for Status` is the only place that picks a code. Client
//! messages name the request's problem (the namespace, the limit, the
//! plugin), never backend internals.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::namespace::SpecError;
use crate::security::authn::AuthError;
use crate::security::jwt::JwtError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The caller did not prove who it is.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request names a namespace this proxy does not serve.
    #[error("namespace {0:?} not found")]
    NamespaceNotFound(String),
    /// The request names an item that does not exist (a graph vertex).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is over a limit (`limit` names it, for metrics); the
    /// client sees INVALID_ARGUMENT with the message.
    #[error("{message}")]
    OverLimit { limit: &'static str, message: String },
    /// A namespace document with problems, every one of them.
    #[error("the namespace document has {} error(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidSpec(Vec<SpecError>),
    /// A compare-and-set precondition failed; the caller should re-read.
    #[error("{0}")]
    Conflict(String),
    /// The namespace or plugin is not in a state to serve this call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The backend does not support what the call needs.
    #[error("{0}")]
    Unimplemented(String),
    /// Too many requests, or a backend limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A namespace's rate quota is spent (`limit` names it, for metrics):
    /// RESOURCE_EXHAUSTED with when a token is back, as a
    /// `google.rpc.RetryInfo` detail and gRPC's `grpc-retry-pushback-ms`.
    #[error("{message}")]
    QuotaExceeded { limit: &'static str, message: String, retry_after: std::time::Duration },
    /// A position the backend no longer holds (a subscription resuming
    /// past its retention).
    #[error("{0}")]
    OutOfRange(String),
    /// The request ran out of time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The plugin or its backend is down; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data that cannot be read back (an altered ciphertext).
    #[error("{0}")]
    DataLoss(String),
    /// A bug or an unexpected answer; details are logged, not returned.
    #[error("{0}")]
    Internal(String),
}

pub use prism_proto::error_chain;

impl From<ProxyError> for Status {
    fn from(err: ProxyError) -> Self {
        match &err {
            ProxyError::InvalidSpec(errors) => {
                // One field violation per error, so clients can show each
                // with its field; the message lists them too, for clients
                // that ignore details.
                let mut details = ErrorDetails::new();
                for e in errors {
                    let located = SpecError { path: String::new(), ..e.clone() };
                    details.add_bad_request_violation(e.path.clone(), located.to_string());
                }
                Status::with_error_details(Code::InvalidArgument, err.to_string(), details)
            }
            ProxyError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::internal("internal error")
            }
            ProxyError::QuotaExceeded { retry_after, .. } => {
                // Both hints: RetryInfo for clients that read details, and
                // the pushback gRPC's own retry policy honours (A6).
                let mut metadata = tonic::metadata::MetadataMap::new();
                if let Ok(ms) = retry_after.as_millis().to_string().parse() {
                    metadata.insert("grpc-retry-pushback-ms", ms);
                }
                Status::with_error_details_and_metadata(
                    Code::ResourceExhausted,
                    err.to_string(),
                    ErrorDetails::with_retry_info(Some(*retry_after)),
                    metadata,
                )
            }
            _ => Status::new(err.code(), err.to_string()),
        }
    }
}

impl ProxyError {
    /// The gRPC code the client gets: the one mapping of every variant.
    pub fn code(&self) -> Code {
        match self {
            ProxyError::Unauthenticated(_) => Code::Unauthenticated,
            ProxyError::PermissionDenied(_) => Code::PermissionDenied,
            ProxyError::NamespaceNotFound(_) | ProxyError::NotFound(_) => Code::NotFound,
            ProxyError::InvalidArgument(_) | ProxyError::OverLimit { .. } | ProxyError::InvalidSpec(_) => {
                Code::InvalidArgument
            }
            ProxyError::Conflict(_) => Code::Aborted,
            ProxyError::FailedPrecondition(_) => Code::FailedPrecondition,
            ProxyError::Unimplemented(_) => Code::Unimplemented,
            ProxyError::ResourceExhausted(_) | ProxyError::QuotaExceeded { .. } => Code::ResourceExhausted,
            ProxyError::OutOfRange(_) => Code::OutOfRange,
            ProxyError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ProxyError::Unavailable(_) => Code::Unavailable,
            ProxyError::DataLoss(_) => Code::DataLoss,
            ProxyError::Internal(_) => Code::Internal,
        }
    }

    /// A PII handling failure of namespace `namespace`. The codec's errors
    /// name the message type and field, never a value.
    pub fn pii(namespace: &str, err: prism_pii::CodecError) -> Self {
        use prism_pii::CodecError;
        use prism_pii::keyring::DecryptError;
        match err {
            CodecError::NotTheType { .. } => {
                Self::InvalidArgument(format!("namespace {namespace:?} stores typed values: {err}"))
            }
            CodecError::Unreadable { .. } | CodecError::Decrypt { error: DecryptError::UnknownKey(_), .. } => {
                Self::FailedPrecondition(format!("namespace {namespace:?}: {err}"))
            }
            CodecError::Decrypt { error: DecryptError::Corrupt, .. } => {
                Self::DataLoss(format!("namespace {namespace:?}: {err}"))
            }
            CodecError::Encrypt(e) => Self::Internal(format!("namespace {namespace:?}: {e}")),
        }
    }
}

impl ProxyError {
    /// The error as a whole gRPC response, for the layers in front of the
    /// services (they answer without a service).
    pub fn into_http(self) -> http::Response<tonic::body::Body> {
        Status::from(self).into_http()
    }

    /// Maps a status returned by plugin `plugin` to the proxy's error.
    ///
    /// Statuses the plugin SDK produces on purpose keep their meaning and
    /// message. Transport failures (the connection broke because the plugin
    /// died, or could not be opened) become UNAVAILABLE naming the plugin,
    /// so a client retries instead of seeing a raw transport error.
    pub fn from_plugin(plugin: &str, status: &Status) -> Self {
        if is_transport_failure(status) {
            // tonic's client gives up at the `grpc-timeout` it sent, with a
            // CANCELLED status whose source says so: that is the deadline,
            // not a lost connection.
            let timed_out = std::error::Error::source(status).is_some_and(|e| {
                e.is::<tonic::TimeoutExpired>()
                    || e.downcast_ref::<tonic::transport::Error>()
                        .and_then(std::error::Error::source)
                        .is_some_and(|inner| inner.is::<tonic::TimeoutExpired>())
            });
            return if timed_out || status.code() == Code::DeadlineExceeded {
                Self::DeadlineExceeded(format!("plugin {plugin} did not answer in time"))
            } else {
                Self::plugin_connection_lost(plugin)
            };
        }
        Self::from_plugin_reply(plugin, status.code() as i32, status.message())
    }

    /// Maps the error a plugin answered a call with (a unary call's status,
    /// or the `CallError` of a multiplexed one, which carries the same code
    /// and message) to the proxy's error.
    pub fn from_plugin_reply(plugin: &str, code: i32, message: &str) -> Self {
        let msg = message.to_owned();
        match Code::from_i32(code) {
            Code::InvalidArgument => Self::InvalidArgument(msg),
            Code::OutOfRange => Self::OutOfRange(msg),
            Code::Aborted => Self::Conflict(msg),
            Code::NotFound => Self::NotFound(msg),
            Code::FailedPrecondition | Code::AlreadyExists => Self::FailedPrecondition(msg),
            Code::Unimplemented => Self::Unimplemented(msg),
            Code::ResourceExhausted => Self::ResourceExhausted(msg),
            Code::DeadlineExceeded => Self::DeadlineExceeded(format!("plugin {plugin} did not answer in time")),
            Code::Unavailable => Self::Unavailable(format!("backend of plugin {plugin} is unavailable: {msg}")),
            // The stream was reset or cancelled on the wire: the plugin went away.
            Code::Unknown | Code::Cancelled => Self::plugin_connection_lost(plugin),
            code => Self::Internal(format!("plugin {plugin} answered {code:?}: {msg}")),
        }
    }

    /// The connection (or multiplexed stream) to a plugin broke under a
    /// call: the plugin died or is restarting.
    pub fn plugin_connection_lost(plugin: &str) -> Self {
        Self::Unavailable(format!("plugin {plugin} is unavailable (connection lost)"))
    }

    /// A call's deadline passed while it waited for `plugin`.
    pub fn plugin_deadline(plugin: &str, waited: std::time::Duration) -> Self {
        Self::DeadlineExceeded(format!("deadline exceeded after {} ms waiting for plugin {plugin}", waited.as_millis()))
    }
}

impl From<AuthError> for ProxyError {
    fn from(err: AuthError) -> Self {
        match &err {
            // The caller's token may be fine: the proxy cannot check it now.
            // A retry may work, so this is UNAVAILABLE, not UNAUTHENTICATED;
            // the cause (which URL, what failed) goes to the log only.
            AuthError::Token(JwtError::KeysUnavailable(cause)) => {
                tracing::warn!(error = %cause, "cannot check a bearer token: the issuer's signing keys are unavailable");
                Self::Unavailable(
                    "cannot check the bearer token: the issuer's signing keys could not be fetched; retry later"
                        .to_owned(),
                )
            }
            _ => Self::Unauthenticated(err.to_string()),
        }
    }
}

/// Whether tonic produced the status locally because the connection failed
/// (it then carries the transport error as its source); statuses sent by
/// the plugin arrive without a source.
fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_mapped_once() {
        let cases = [
            (ProxyError::NamespaceNotFound("x".into()), Code::NotFound),
            (ProxyError::InvalidArgument("x".into()), Code::InvalidArgument),
            (ProxyError::Conflict("x".into()), Code::Aborted),
            (ProxyError::Unavailable("x".into()), Code::Unavailable),
            (ProxyError::DeadlineExceeded("x".into()), Code::DeadlineExceeded),
            (ProxyError::ResourceExhausted("x".into()), Code::ResourceExhausted),
            (ProxyError::Unauthenticated("x".into()), Code::Unauthenticated),
            (ProxyError::PermissionDenied("x".into()), Code::PermissionDenied),
            (ProxyError::InvalidSpec(vec![]), Code::InvalidArgument),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }

    #[test]
    fn not_found_names_the_namespace() {
        let status = Status::from(ProxyError::NamespaceNotFound("orders".into()));
        assert_eq!(status.message(), "namespace \"orders\" not found");
    }

    #[test]
    fn spec_errors_travel_as_bad_request_details() {
        let errors = vec![
            SpecError { path: "spec.needs.ttl".into(), line: 7, column: 10, message: "bad".into() },
            SpecError { path: "metadata.name".into(), line: 3, column: 9, message: "worse".into() },
        ];
        let status = Status::from(ProxyError::InvalidSpec(errors));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("2 error(s)"), "{}", status.message());
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "spec.needs.ttl");
        assert_eq!(violations[0].description, "line 7 column 10: bad");
        assert_eq!(violations[1].field, "metadata.name");
    }

    #[test]
    fn internal_details_stay_inside() {
        let status = Status::from(ProxyError::Internal("SELECT * failed at row 3".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }

    #[test]
    fn plugin_statuses_keep_their_meaning() {
        let e = ProxyError::from_plugin("mem", &Status::aborted("version mismatch"));
        assert!(matches!(e, ProxyError::Conflict(m) if m == "version mismatch"));
        let e = ProxyError::from_plugin("mem", &Status::unavailable("redis down"));
        assert!(matches!(e, ProxyError::Unavailable(m) if m.contains("redis down") && m.contains("mem")));
        let e = ProxyError::from_plugin("mem", &Status::unknown("h2 protocol error"));
        assert!(matches!(e, ProxyError::Unavailable(m) if m.contains("plugin mem")));
        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timeout.code(), Code::Cancelled, "tonic's local timeout");
        let e = ProxyError::from_plugin("mem", &timeout);
        assert!(matches!(e, ProxyError::DeadlineExceeded(m) if m.contains("did not answer in time")), "a deadline");
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let e = ProxyError::from_plugin("mem", &Status::from_error(Box::new(io)));
        assert!(
            matches!(e, ProxyError::Unavailable(m) if m.contains("connection lost")),
            "transport failures of any code"
        );
    }
}
