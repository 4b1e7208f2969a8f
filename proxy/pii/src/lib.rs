//! PII handling: what a namespace with `spec.schema` does to its values.
//!
//! Teams tag fields of their own messages with `(prism.pii) = "email"` (or
//! the standard `debug_redact = true`) and register the files
//! ([`registry`]). For each message type a [`TypePlan`] is computed once: the
//! paths from the message to every tagged field. A namespace's [`Codec`]
//! applies it: writes must decode as the type and have their tagged fields
//! encrypted (`spec.pii.encrypt`, [`keyring`]); reads get them decrypted and,
//! for a caller without the `pii` right, transformed by the namespace's
//! policy ([`transform`]).

pub mod codec;
pub mod compat;
pub mod keyring;
pub mod plan;
pub mod registry;
pub mod transform;

pub use codec::{Codec, CodecError};
pub use keyring::{Keyring, KeyringError};
pub use plan::TypePlan;
pub use prism_namespace::{PiiAction, PiiClass, PiiSpec};
pub use registry::{SchemaError, SchemaPool, SchemaVersion};

/// The full name of the field option, as a team writes it: `(prism.pii)`.
pub const PII_EXTENSION: &str = "prism.pii";
