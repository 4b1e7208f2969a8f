//! Opaque, resumable scan page tokens.
//!
//! A token is the base64url encoding of a `ScanCursor` message: the
//! namespace and prefix of the scan and the last key returned. Resuming
//! strictly after that key makes a token stay valid across concurrent writes
//! and plugin restarts, and lets it work on any backend that can list keys
//! in order. The namespace and prefix are checked so that a token is never
//! silently applied to a different scan.
//!
//! TimeSeries and Graph page tokens follow the same scheme with their own
//! cursor messages: the position to resume after, and the request fields
//! the token is only valid for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prism_proto::plugin::v1::{NeighborsCursor, ScanCursor, SubscriptionPosition, TimeSeriesCursor};
use prost::Message;

use crate::error::PluginError;

/// Longest page token accepted, in bytes. A token holds one key and one
/// prefix, so this is far above any valid token.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Encodes the token that resumes a scan after `after_key`.
pub fn encode(namespace: &str, prefix: &str, after_key: &str) -> String {
    let cursor =
        ScanCursor { namespace: namespace.to_owned(), prefix: prefix.to_owned(), after_key: after_key.to_owned() };
    URL_SAFE_NO_PAD.encode(cursor.encode_to_vec())
}

/// Decodes a page token into the key the scan resumes after; `None` for an
/// empty token (a new scan).
pub fn decode(namespace: &str, prefix: &str, token: &str) -> Result<Option<String>, PluginError> {
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(PluginError::InvalidArgument(format!(
            "page_token is {} bytes, longer than the limit of {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    let invalid = || PluginError::InvalidArgument("page_token is not a token returned by Scan".to_owned());
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let cursor = ScanCursor::decode(raw.as_slice()).map_err(|_| invalid())?;
    if cursor.namespace != namespace || cursor.prefix != prefix {
        return Err(PluginError::InvalidArgument(
            "page_token belongs to a scan of another namespace or prefix".to_owned(),
        ));
    }
    if !cursor.after_key.starts_with(prefix) {
        return Err(invalid());
    }
    Ok(Some(cursor.after_key))
}

fn encode_message(message: &impl Message) -> String {
    URL_SAFE_NO_PAD.encode(message.encode_to_vec())
}

/// Decodes a non-empty token into `M`; `call` names the RPC in errors.
fn decode_message<M: Message + Default>(token: &str, call: &str) -> Result<M, PluginError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(PluginError::InvalidArgument(format!(
            "page_token is {} bytes, longer than the limit of {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    let invalid = || PluginError::InvalidArgument(format!("page_token is not a token returned by {call}"));
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    M::decode(raw.as_slice()).map_err(|_| invalid())
}

fn foreign(call: &str) -> PluginError {
    PluginError::InvalidArgument(format!("page_token belongs to another {call} request"))
}

/// Encodes the token that resumes a TimeSeries query.
pub fn encode_query(cursor: &TimeSeriesCursor) -> String {
    encode_message(cursor)
}

/// Decodes a TimeSeries query token into the `(timestamp, event_id)` to
/// resume after; the token must carry `expected`'s namespace, series, range
/// and order.
pub fn decode_query(expected: &TimeSeriesCursor, token: &str) -> Result<Option<(i64, String)>, PluginError> {
    if token.is_empty() {
        return Ok(None);
    }
    let c: TimeSeriesCursor = decode_message(token, "Query")?;
    if (c.namespace.as_str(), c.series.as_str(), c.start, c.end, c.descending)
        != (expected.namespace.as_str(), expected.series.as_str(), expected.start, expected.end, expected.descending)
    {
        return Err(foreign("Query"));
    }
    Ok(Some((c.after_timestamp, c.after_event_id)))
}

/// Encodes the token that resumes a Neighbors listing.
pub fn encode_neighbors(cursor: &NeighborsCursor) -> String {
    encode_message(cursor)
}

/// Decodes a Neighbors token into `(incoming, label, other)` to resume
/// after; the token must carry `expected`'s namespace, vertex, direction
/// and label filter.
pub fn decode_neighbors(
    expected: &NeighborsCursor,
    token: &str,
) -> Result<Option<(bool, String, String)>, PluginError> {
    if token.is_empty() {
        return Ok(None);
    }
    let c: NeighborsCursor = decode_message(token, "Neighbors")?;
    if (c.namespace.as_str(), c.id.as_str(), c.direction, c.label.as_str())
        != (expected.namespace.as_str(), expected.id.as_str(), expected.direction, expected.label.as_str())
    {
        return Err(foreign("Neighbors"));
    }
    Ok(Some((c.incoming, c.after_label, c.after_other)))
}

/// Encodes a Subscribe position of `series` in `namespace`.
pub fn encode_position(namespace: &str, series: &str, epoch: u64, sequence: u64) -> String {
    encode_message(&SubscriptionPosition {
        namespace: namespace.to_owned(),
        series: series.to_owned(),
        epoch,
        sequence,
    })
}

/// Decodes a Subscribe `from_position` into `(epoch, sequence)`; it must
/// have been issued for the same namespace and series.
pub fn decode_position(namespace: &str, series: &str, position: &str) -> Result<(u64, u64), PluginError> {
    if position.len() > MAX_TOKEN_BYTES {
        return Err(PluginError::InvalidArgument(format!(
            "from_position is {} bytes, longer than the limit of {MAX_TOKEN_BYTES}",
            position.len()
        )));
    }
    let invalid = || PluginError::InvalidArgument("from_position is not a position returned by Subscribe".to_owned());
    let raw = URL_SAFE_NO_PAD.decode(position).map_err(|_| invalid())?;
    let p = SubscriptionPosition::decode(raw.as_slice()).map_err(|_| invalid())?;
    if p.namespace != namespace || p.series != series {
        return Err(PluginError::InvalidArgument(
            "from_position belongs to a subscription of another namespace or series".to_owned(),
        ));
    }
    Ok((p.epoch, p.sequence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let token = encode("ns", "user/", "user/42");
        assert_eq!(decode("ns", "user/", &token).unwrap().as_deref(), Some("user/42"));
    }

    #[test]
    fn empty_token_starts_a_scan() {
        assert_eq!(decode("ns", "", "").unwrap(), None);
    }

    #[test]
    fn rejects_other_scan() {
        let token = encode("ns", "a", "a1");
        assert!(matches!(decode("other", "a", &token), Err(PluginError::InvalidArgument(_))));
        assert!(matches!(decode("ns", "b", &token), Err(PluginError::InvalidArgument(_))));
    }

    #[test]
    fn rejects_garbage_and_oversize() {
        for bad in ["!!!", "AAAA", "%%", "ZZZZZZZZZZZZZZZZZ"] {
            assert!(decode("ns", "", bad).is_err(), "{bad}");
        }
        let long = "A".repeat(MAX_TOKEN_BYTES + 1);
        let err = decode("ns", "", &long).unwrap_err();
        assert!(err.to_string().contains("16384"), "{err}");
    }

    #[test]
    fn query_tokens_belong_to_their_query() {
        let base =
            TimeSeriesCursor { namespace: "ns".into(), series: "cpu".into(), start: 0, end: 10, ..Default::default() };
        let token = encode_query(&TimeSeriesCursor { after_timestamp: 5, after_event_id: "e".into(), ..base.clone() });
        assert_eq!(decode_query(&base, &token).unwrap(), Some((5, "e".to_owned())));
        let other = TimeSeriesCursor { end: 11, ..base.clone() };
        assert!(decode_query(&other, &token).is_err());
        assert!(decode_query(&base, "!!").is_err());
    }

    #[test]
    fn neighbors_tokens_belong_to_their_listing() {
        let base = NeighborsCursor { namespace: "ns".into(), id: "a".into(), direction: 3, ..Default::default() };
        let token = encode_neighbors(&NeighborsCursor { incoming: true, after_other: "b".into(), ..base.clone() });
        assert_eq!(decode_neighbors(&base, &token).unwrap(), Some((true, String::new(), "b".to_owned())));
        let other = NeighborsCursor { id: "z".into(), ..base };
        assert!(decode_neighbors(&other, &token).is_err());
    }

    #[test]
    fn positions_belong_to_their_series() {
        let position = encode_position("ns", "cpu", 7, 42);
        assert_eq!(decode_position("ns", "cpu", &position).unwrap(), (7, 42));
        assert!(decode_position("ns", "mem", &position).unwrap_err().to_string().contains("another"));
        assert!(decode_position("other", "cpu", &position).is_err());
        for bad in ["", "!!!", "%%", "ZZZZZZZZZZZZZZZZZ"] {
            let err = decode_position("ns", "cpu", bad);
            // The empty position decodes to an empty message: another series.
            assert!(err.is_err(), "{bad}");
        }
        assert!(decode_position("ns", "cpu", &"A".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    #[test]
    fn rejects_key_outside_prefix() {
        let forged = URL_SAFE_NO_PAD
            .encode(ScanCursor { namespace: "ns".into(), prefix: "a".into(), after_key: "b".into() }.encode_to_vec());
        assert!(decode("ns", "a", &forged).is_err());
    }
}
