//! Property tests of the page tokens clients hand back: whatever a client
//! sends as `page_token` is a token of its own request or refused with
//! INVALID_ARGUMENT, and a token the SDK made resumes where it says.
//! `PROPTEST_CASES=100000 cargo test -p prism-plugin-sdk proptests` runs
//! them longer.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prism_proto::plugin::v1::{NeighborsCursor, TimeSeriesCursor};
use proptest::prelude::*;

use crate::PluginError;
use crate::cursor;

/// A token as clients may send it: any text, base64 of any bytes, or a
/// real token of some scan, sometimes with a character changed.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,64}",
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        (".{0,8}", ".{0,8}", ".{0,8}").prop_map(|(ns, p, k)| cursor::encode(&ns, &p, &k)),
        (".{0,8}", any::<prop::sample::Index>(), "[A-Za-z0-9_!-]").prop_map(|(key, at, c)| {
            let mut token = cursor::encode("ns", "p", &format!("p{key}"));
            let at = at.index(token.len());
            token.replace_range(at..=at, &c);
            token
        }),
    ]
}

fn refused(result: &Result<impl std::fmt::Debug, PluginError>) -> Result<(), TestCaseError> {
    match result {
        Err(PluginError::InvalidArgument(message)) => {
            prop_assert!(message.contains("page_token"), "{message}");
        }
        other => prop_assert!(false, "expected INVALID_ARGUMENT, got {other:?}"),
    }
    Ok(())
}

fn query_cursor() -> impl Strategy<Value = TimeSeriesCursor> {
    (".{0,8}", ".{0,8}", any::<i64>(), any::<i64>(), any::<bool>(), any::<i64>(), ".{0,8}").prop_map(
        |(namespace, series, start, end, descending, after_timestamp, after_event_id)| TimeSeriesCursor {
            namespace,
            series,
            start,
            end,
            descending,
            after_timestamp,
            after_event_id,
        },
    )
}

fn neighbors_cursor() -> impl Strategy<Value = NeighborsCursor> {
    (".{0,8}", ".{0,8}", 0i32..4, ".{0,8}", any::<bool>(), ".{0,8}", ".{0,8}").prop_map(
        |(namespace, id, direction, label, incoming, after_label, after_other)| NeighborsCursor {
            namespace,
            id,
            direction,
            label,
            incoming,
            after_label,
            after_other,
        },
    )
}

proptest! {
    #[test]
    fn scan_tokens_are_theirs_or_refused(token in token()) {
        match cursor::decode("ns", "p", &token) {
            Ok(None) => prop_assert!(token.is_empty()),
            // Only a token of this very scan resumes it, after a key it holds.
            Ok(Some(key)) => prop_assert!(key.starts_with('p'), "{token:?} resumes after {key:?}"),
            err => refused(&err)?,
        }
    }

    #[test]
    fn scan_tokens_round_trip(ns in ".{0,16}", prefix in ".{0,16}", rest in ".{0,32}", other in ".{1,4}") {
        let key = format!("{prefix}{rest}");
        let token = cursor::encode(&ns, &prefix, &key);
        prop_assert_eq!(cursor::decode(&ns, &prefix, &token).unwrap(), Some(key));
        refused(&cursor::decode(&format!("{ns}{other}"), &prefix, &token))?;
        refused(&cursor::decode(&ns, &format!("{prefix}{other}"), &token))?;
    }

    #[test]
    fn query_tokens_are_theirs_or_refused(token in token(), expected in query_cursor()) {
        match cursor::decode_query(&expected, &token) {
            Ok(None) => prop_assert!(token.is_empty()),
            Ok(Some(_)) => {}
            err => refused(&err)?,
        }
    }

    #[test]
    fn query_tokens_round_trip(c in query_cursor(), end in any::<i64>()) {
        let token = cursor::encode_query(&c);
        let resumed = cursor::decode_query(&c, &token).unwrap();
        prop_assert_eq!(resumed, Some((c.after_timestamp, c.after_event_id.clone())));
        if end != c.end {
            refused(&cursor::decode_query(&TimeSeriesCursor { end, ..c }, &token))?;
        }
    }

    #[test]
    fn neighbors_tokens_are_theirs_or_refused(token in token(), expected in neighbors_cursor()) {
        match cursor::decode_neighbors(&expected, &token) {
            Ok(None) => prop_assert!(token.is_empty()),
            Ok(Some(_)) => {}
            err => refused(&err)?,
        }
    }

    #[test]
    fn neighbors_tokens_round_trip(c in neighbors_cursor(), id in ".{0,8}") {
        let token = cursor::encode_neighbors(&c);
        let resumed = cursor::decode_neighbors(&c, &token).unwrap();
        prop_assert_eq!(resumed, Some((c.incoming, c.after_label.clone(), c.after_other.clone())));
        if id != c.id {
            refused(&cursor::decode_neighbors(&NeighborsCursor { id, ..c }, &token))?;
        }
    }
}
