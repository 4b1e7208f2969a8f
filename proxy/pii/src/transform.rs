//! The policy actions on one string value. Each keeps the value valid UTF-8
//! and, except `initial`, its shape: a reader can still tell an email from
//! a phone number, and the same value always gives the same result.

/// `mask`: an email keeps the first character of its local part and its
/// domain (`j***@example.com`); anything else keeps the first letter or
/// digit of each word, and every other letter or digit becomes `*`
/// (`John Smith` → `J*** S****`, `+1 555-0100` → `+1 5**-****`).
pub fn mask(value: &str) -> String {
    if let Some((local, domain)) = value.rsplit_once('@')
        && !domain.is_empty()
    {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let mut out = String::with_capacity(value.len());
    let mut word_started = false;
    for c in value.chars() {
        if c.is_whitespace() {
            word_started = false;
            out.push(c);
        } else if c.is_alphanumeric() {
            out.push(if word_started { '*' } else { c });
            word_started = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// `last4`: every letter or digit but the last four becomes `*`; separators
/// stay (`4111 1111 1111 1234` → `**** **** **** 1234`).
pub fn last4(value: &str) -> String {
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    let hide = total.saturating_sub(4);
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen <= hide { '*' } else { c }
            } else {
                c
            }
        })
        .collect()
}

/// `initial`: each word becomes its first character and a dot
/// (`John Ronald Smith` → `J. R. S.`).
pub fn initial(value: &str) -> String {
    value
        .split_whitespace()
        .filter_map(|word| word.chars().next())
        .map(|c| format!("{c}."))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `hash` of a string field: `hmac:` and the first 16 bytes of the keyed
/// HMAC-SHA-256, in hex. Equal values give equal text within a namespace.
pub fn hash_text(key: &ring::hmac::Key, value: &[u8]) -> String {
    let tag = ring::hmac::sign(key, value);
    let mut out = String::with_capacity(5 + 32);
    out.push_str("hmac:");
    for b in &tag.as_ref()[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_the_shape() {
        assert_eq!(mask("jane.doe@example.com"), "j***@example.com");
        assert_eq!(mask("John Smith"), "J*** S****");
        assert_eq!(mask("+1 555-0100"), "+1 5**-****");
        assert_eq!(mask(""), "");
        assert_eq!(mask("@"), "@");
        assert_eq!(mask("Zoë Ångström"), "Z** Å*******");
    }

    #[test]
    fn last4_keeps_four() {
        assert_eq!(last4("4111 1111 1111 1234"), "**** **** **** 1234");
        assert_eq!(last4("+1 (555) 010-0199"), "+* (***) ***-0199");
        assert_eq!(last4("123"), "123");
        assert_eq!(last4("123-45-6789"), "***-**-6789");
    }

    #[test]
    fn initial_of_each_word() {
        assert_eq!(initial("John Ronald Smith"), "J. R. S.");
        assert_eq!(initial("  Émile  "), "É.");
        assert_eq!(initial(""), "");
    }

    #[test]
    fn hash_is_keyed_and_stable() {
        let a = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"a");
        let b = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"b");
        assert_eq!(hash_text(&a, b"x"), hash_text(&a, b"x"));
        assert_ne!(hash_text(&a, b"x"), hash_text(&b, b"x"));
        assert_ne!(hash_text(&a, b"x"), hash_text(&a, b"y"));
        assert_eq!(hash_text(&a, b"x").len(), 37);
    }
}
