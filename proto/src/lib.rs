//! Generated protobuf and gRPC code for Prism.
//!
//! The `.proto` files under `proto/prism/` are the source of truth; this crate
//! compiles them at build time. `FILE_DESCRIPTOR_SET` carries every message
//! with its options, for gRPC server reflection.

#![allow(missing_docs)]

/// Encoded `FileDescriptorSet` of every Prism proto (with imports and options).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/prism_descriptor.bin"));

/// An error and its causes on one line (`a: b: c`). Transport errors (tonic,
/// hyper, io) hide the useful part, such as "connection refused", in their
/// sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub mod wire;

pub mod keyvalue {
    pub mod v1 {
        tonic::include_proto!("prism.keyvalue.v1");
    }
}

pub mod timeseries {
    pub mod v1 {
        tonic::include_proto!("prism.timeseries.v1");
    }
}

pub mod graph {
    pub mod v1 {
        tonic::include_proto!("prism.graph.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("prism.admin.v1");
    }
}

pub mod plugin {
    pub mod v1 {
        tonic::include_proto!("prism.plugin.v1");
    }
}

/// The source of `prism/options/v1/pii.proto`, the `(prism.pii)` field
/// option, for tools that compile a team's files (`prismctl schema push`)
/// without it on their include path.
pub const PII_OPTIONS_PROTO: &str = include_str!("../prism/options/v1/pii.proto");
/// Its import path.
pub const PII_OPTIONS_PATH: &str = "prism/options/v1/pii.proto";
