//! The one error type a plugin returns, and its mapping to gRPC status.

use tonic::{Code, Status};

/// What went wrong in a plugin call, in terms the proxy can act on.
///
/// Messages of every variant except [`PluginError::Internal`] reach the
/// client, so they must describe the request, never backend internals.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The request is malformed or breaks a limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// A compare-and-set precondition (`if_version`) did not hold.
    #[error("{0}")]
    Conflict(String),
    /// The plugin is not in a state to serve the call (not initialized,
    /// namespace not prepared, configuration mismatch).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request names something that does not exist (a graph vertex).
    #[error("{0}")]
    NotFound(String),
    /// The call needs a capability the plugin does not declare.
    #[error("{0}")]
    Unimplemented(String),
    /// A backend limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A position the backend no longer holds (a subscription resuming
    /// from an event that retention has removed).
    #[error("{0}")]
    OutOfRange(String),
    /// The backend cannot be reached right now; the call may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// The call did not finish within the deadline the proxy sent.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Anything else. Logged in full by the SDK; the caller only learns that
    /// an internal error happened.
    #[error("{0}")]
    Internal(String),
}

impl PluginError {
    /// Shorthand for an internal error built from any displayable cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// Shorthand for an unavailable backend built from any displayable cause.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        Self::Unavailable(cause.to_string())
    }

    /// The compare-and-set conflict every backend reports the same way:
    /// `current` is the key's live version (0 when absent), `expected` the
    /// caller's `if_version`.
    pub fn version_conflict(key: &str, current: u64, expected: u64) -> Self {
        let state = if current == 0 { "does not exist".to_owned() } else { format!("is at version {current}") };
        Self::Conflict(format!("version mismatch: key {key:?} {state}, expected version {expected}"))
    }
}

impl From<PluginError> for Status {
    fn from(err: PluginError) -> Self {
        match err {
            PluginError::InvalidArgument(m) => Status::new(Code::InvalidArgument, m),
            PluginError::Conflict(m) => Status::new(Code::Aborted, m),
            PluginError::FailedPrecondition(m) => Status::new(Code::FailedPrecondition, m),
            PluginError::NotFound(m) => Status::new(Code::NotFound, m),
            PluginError::Unimplemented(m) => Status::new(Code::Unimplemented, m),
            PluginError::ResourceExhausted(m) => Status::new(Code::ResourceExhausted, m),
            PluginError::OutOfRange(m) => Status::new(Code::OutOfRange, m),
            PluginError::Unavailable(m) => Status::new(Code::Unavailable, m),
            PluginError::DeadlineExceeded(m) => Status::new(Code::DeadlineExceeded, m),
            PluginError::Internal(m) => {
                // The detail goes to the plugin's log, not over the wire.
                tracing::error!(error = %m, "internal plugin error");
                Status::new(Code::Internal, "internal plugin error")
            }
        }
    }
}

/// Result alias for plugin operations.
pub type PluginResult<T> = Result<T, PluginError>;
