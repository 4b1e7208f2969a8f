//! Helpers for backends that list keys in order.

/// The smallest string greater than every string that starts with
/// `prefix`, or `None` when no such bound exists (empty prefix, or a prefix
/// made only of `char::MAX`).
///
/// Keys compare bytewise as UTF-8, which is code point order, so bumping
/// the last code point gives the bound; a backend then scans
/// `prefix <= key < bound` on its index instead of filtering the tail of the
/// namespace. SQL backends must compare keys bytewise (`COLLATE "C"` in
/// PostgreSQL, the default `BINARY` collation in SQLite).
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            // Skip the surrogate gap, which holds no chars.
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("a"), Some("b".to_owned()));
        assert_eq!(prefix_upper_bound("user/"), Some("user0".to_owned()));
        assert_eq!(prefix_upper_bound("a\u{D7FF}"), Some("a\u{E000}".to_owned()));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    #[test]
    fn bound_orders_after_every_extension() {
        for prefix in ["a", "é", "key/", "z\u{FFFF}", "\u{10FFFE}"] {
            let bound = prefix_upper_bound(prefix).unwrap();
            for tail in ["", "\u{0}", "zzz", "\u{10FFFF}\u{10FFFF}", "é"] {
                let key = format!("{prefix}{tail}");
                assert!(key.as_bytes() < bound.as_bytes(), "{key:?} !< {bound:?}");
            }
            assert!(!bound.starts_with(prefix));
        }
    }
}
