//! Property tests of what a plugin or the proxy decodes from the other side:
//! every message of the plugin protocol (`prism.plugin.v1` and the pattern
//! messages its services carry) and the `grpc-timeout` header.
//! `PROPTEST_CASES=100000 cargo test -p prism-proto proptests` runs them
//! longer.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::prelude::*;
use prost::Message;

use crate::graph::v1 as graph;
use crate::keyvalue::v1 as kv;
use crate::plugin::v1 as plugin;
use crate::timeseries::v1 as ts;
use crate::wire::parse_grpc_timeout;

/// Whether `m` equals itself: not when it holds a NaN.
#[allow(clippy::eq_op)]
fn reflexive<M: PartialEq>(m: &M) -> bool {
    m == m
}

/// Decodes `bytes` as `M`; what decodes re-encodes to the same message
/// (unknown fields dropped). Encodings are not compared: map fields are
/// hash maps, encoded in no fixed order.
fn decodes_stably<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(message) = M::decode(bytes) {
        let encoded = message.encode_to_vec();
        let again = M::decode(encoded.as_slice());
        prop_assert!(again.is_ok(), "{} does not decode its own encoding", std::any::type_name::<M>());
        let again = again.unwrap();
        prop_assert!(again == message || !reflexive(&message), "{again:?} != {message:?}");
    }
    Ok(())
}

/// Every message a plugin or the proxy decodes off the wire.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    macro_rules! each {
        ($($m:ty),* $(,)?) => { $( decodes_stably::<$m>(bytes)?; )* };
    }
    each!(
        plugin::InitializeRequest,
        plugin::InitializeResponse,
        plugin::Capabilities,
        plugin::HealthRequest,
        plugin::HealthResponse,
        plugin::DrainRequest,
        plugin::DrainResponse,
        plugin::NamespaceSettings,
        plugin::PrepareNamespaceRequest,
        plugin::PrepareNamespaceResponse,
        plugin::DropNamespaceRequest,
        plugin::DropNamespaceResponse,
        plugin::DescribeNamespaceRequest,
        plugin::DescribeNamespaceResponse,
        plugin::ScanCursor,
        plugin::KeyValueCall,
        plugin::CallOptions,
        plugin::KeyValueReply,
        plugin::CallError,
        plugin::TimeSeriesCursor,
        plugin::NeighborsCursor,
        kv::PutRequest,
        kv::PutResponse,
        kv::GetRequest,
        kv::GetResponse,
        kv::DeleteRequest,
        kv::DeleteResponse,
        kv::BatchGetRequest,
        kv::BatchGetResponse,
        kv::BatchPutRequest,
        kv::BatchPutResponse,
        kv::ScanRequest,
        kv::ScanResponse,
        ts::AppendRequest,
        ts::AppendResponse,
        ts::QueryRequest,
        ts::QueryResponse,
        ts::AggregateRequest,
        ts::AggregateResponse,
        graph::PutVertexRequest,
        graph::PutVertexResponse,
        graph::GetVertexRequest,
        graph::GetVertexResponse,
        graph::DeleteVertexRequest,
        graph::DeleteVertexResponse,
        graph::PutEdgeRequest,
        graph::PutEdgeResponse,
        graph::DeleteEdgeRequest,
        graph::DeleteEdgeResponse,
        graph::NeighborsRequest,
        graph::NeighborsResponse,
        graph::TraverseRequest,
        graph::TraverseResponse,
    );
    Ok(())
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// One protobuf field: a small field number, a wire type and a payload
/// that is sometimes itself a message, so decoding goes deep.
#[derive(Debug, Clone)]
enum Field {
    Varint(u32, u64),
    Fixed64(u32, [u8; 8]),
    Fixed32(u32, [u8; 4]),
    Bytes(u32, Vec<u8>),
    Message(u32, Vec<Field>),
    /// A tag with a wire type of its own (groups, invalid types).
    Raw(u32, u8),
}

fn encode_fields(fields: &[Field], out: &mut Vec<u8>) {
    for field in fields {
        let tag = |n: u32, wire: u64, out: &mut Vec<u8>| varint((u64::from(n) << 3) | wire, out);
        match field {
            Field::Varint(n, v) => {
                tag(*n, 0, out);
                varint(*v, out);
            }
            Field::Fixed64(n, b) => {
                tag(*n, 1, out);
                out.extend_from_slice(b);
            }
            Field::Bytes(n, b) => {
                tag(*n, 2, out);
                varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
            Field::Message(n, inner) => {
                let mut body = Vec::new();
                encode_fields(inner, &mut body);
                tag(*n, 2, out);
                varint(body.len() as u64, out);
                out.extend_from_slice(&body);
            }
            Field::Fixed32(n, b) => {
                tag(*n, 5, out);
                out.extend_from_slice(b);
            }
            Field::Raw(n, wire) => tag(*n, u64::from(*wire & 7), out),
        }
    }
}

fn field_number() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1u32..12, 1 => any::<u32>().prop_map(|n| n & 0x1fff_ffff)]
}

fn fields() -> impl Strategy<Value = Vec<Field>> {
    let leaf = prop_oneof![
        (field_number(), prop_oneof![0u64..4, any::<u64>()]).prop_map(|(n, v)| Field::Varint(n, v)),
        (field_number(), any::<[u8; 8]>()).prop_map(|(n, b)| Field::Fixed64(n, b)),
        (field_number(), any::<[u8; 4]>()).prop_map(|(n, b)| Field::Fixed32(n, b)),
        (field_number(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(n, b)| Field::Bytes(n, b)),
        (field_number(), "[a-z/:*]{0,12}").prop_map(|(n, s)| Field::Bytes(n, s.into_bytes())),
        (field_number(), 0u8..8).prop_map(|(n, w)| Field::Raw(n, w)),
    ];
    let field = leaf.prop_recursive(4, 64, 6, |inner| {
        (field_number(), prop::collection::vec(inner, 0..6)).prop_map(|(n, f)| Field::Message(n, f))
    });
    prop::collection::vec(field, 0..8)
}

const UNITS: &[(char, u64)] =
    &[('H', 3_600_000_000_000), ('M', 60_000_000_000), ('S', 1_000_000_000), ('m', 1_000_000), ('u', 1_000), ('n', 1)];

proptest! {
    #[test]
    fn plugin_messages_decode_any_bytes_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&bytes)?;
    }

    #[test]
    fn plugin_messages_decode_protobuf_shaped_bytes(fields in fields(), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        encode_fields(&fields, &mut bytes);
        decode_all(&bytes)?;
        // And the same message cut short, as a broken stream delivers it.
        let cut = cut.index(bytes.len() + 1);
        decode_all(&bytes[..cut])?;
    }

    #[test]
    fn grpc_timeout_never_panics(text in any::<String>()) {
        let parsed = parse_grpc_timeout(&text);
        prop_assert!(parsed.is_none() || (2..=9).contains(&text.len()), "{text:?}: {parsed:?}");
    }

    #[test]
    fn grpc_timeout_reads_its_number_and_unit(n in 0u64..100_000_000, unit in prop::sample::select(UNITS)) {
        let nanos = u128::from(n) * u128::from(unit.1);
        let expected = Duration::new(
            u64::try_from(nanos / 1_000_000_000).unwrap(),
            u32::try_from(nanos % 1_000_000_000).unwrap(),
        );
        prop_assert_eq!(parse_grpc_timeout(&format!("{n}{}", unit.0)), Some(expected));
    }
}
