//! Durations in config files, written the human way: `250ms`, `10s`, `24h`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserializes a duration such as `500ms`, `10s`, `1h 30m` or `30d`.
pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Same as [`deserialize`] for an optional field.
pub fn deserialize_opt<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(de)?.map(|t| parse(&t).map_err(serde::de::Error::custom)).transpose()
}

/// Parses a human duration, with the accepted forms in the error.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write it like 250ms, 10s, 5m, 24h or 30d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["", "10", "ten seconds", "-5s", "5 parsecs"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("write it like"), "{bad}: {err}");
        }
    }
}
