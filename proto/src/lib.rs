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
        let said = cause.to_string();
        // Many errors print their cause themselves, or wrap one that says
        // the same ("tcp connect error: tcp connect error: ..."): say it once.
        if !said.is_empty() && !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_cause_that_repeats_is_said_once() {
        let refused = E("Connection refused (os error 111)", None);
        let inner = E("tcp connect error", Some(Box::new(refused)));
        let outer = E("tcp connect error", Some(Box::new(inner)));
        let top = E("transport error", Some(Box::new(outer)));
        assert_eq!(error_chain(&top), "transport error: tcp connect error: Connection refused (os error 111)");
        // A cause the error already printed is not printed again.
        let io = E("disk full", None);
        let write = E("writing x: disk full", Some(Box::new(io)));
        assert_eq!(error_chain(&write), "writing x: disk full");
    }
}

pub mod balance;
#[cfg(test)]
mod proptests;
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
