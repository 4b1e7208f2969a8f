//! Who is calling and what they may do: client TLS, bearer tokens, the
//! principal they add up to, per-namespace authorization and the audit log.
//!
//! Authentication happens once per call in the authentication layer
//! (`crate::layer::authn`, through [`authn::Authenticator`]), which puts the
//! [`Principal`] into the request context; authorization of data calls
//! happens where the namespace is known, in `crate::routes::Routes::authorize`,
//! and of admin calls by the [`admin::AdminPolicy`]; the audit layer writes
//! the record when the call ends.

pub mod admin;
pub mod audit;
pub mod authn;
pub mod jwt;
pub mod tls;

use std::fmt;

use crate::namespace::Access;

/// What a call does to a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    Read,
    Write,
    Admin,
    /// Reading tagged fields of a typed namespace raw, not masked.
    Pii,
}

impl Right {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
            Self::Pii => "pii",
        }
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Dev mode: nothing was checked.
    None,
    Mtls,
    Jwt,
    MtlsAndJwt,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Mtls => "mtls",
            Self::Jwt => "jwt",
            Self::MtlsAndJwt => "mtls+jwt",
        }
    }
}

/// An authenticated caller: the union of what its client certificate and
/// its token say.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    /// Token subject (`user:` selectors).
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// URI SANs of the client certificate that are SPIFFE ids.
    pub spiffe_ids: Vec<String>,
    /// DNS SANs of the client certificate.
    pub dns_names: Vec<String>,
    /// Dev mode: every right, nothing checked.
    pub dev: bool,
    pub mtls: bool,
    pub jwt: bool,
}

impl Principal {
    /// The caller in dev mode.
    pub fn dev() -> Self {
        Self { dev: true, ..Self::default() }
    }

    pub fn method(&self) -> Method {
        match (self.mtls, self.jwt) {
            (true, true) => Method::MtlsAndJwt,
            (true, false) => Method::Mtls,
            (false, true) => Method::Jwt,
            (false, false) => Method::None,
        }
    }

    /// Whether `selector` (see `namespace::validate::check_selector`)
    /// names this principal.
    pub fn matches(&self, selector: &str) -> bool {
        if selector == "*" {
            return self.mtls || self.jwt;
        }
        if selector.starts_with("spiffe://") {
            return match selector.strip_suffix("/*") {
                Some(prefix) => {
                    self.spiffe_ids.iter().any(|id| id.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')))
                }
                None => self.spiffe_ids.iter().any(|id| id == selector),
            };
        }
        match selector.split_once(':') {
            Some(("user", id)) => self.subject.as_deref() == Some(id),
            Some(("group", g)) => self.groups.iter().any(|x| x == g),
            Some(("scope", s)) => self.scopes.iter().any(|x| x == s),
            Some(("dns", name)) => match name.strip_prefix("*.") {
                // One label, as in certificate wildcards.
                Some(domain) => self.dns_names.iter().any(|n| {
                    n.split_once('.')
                        .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(domain))
                }),
                None => self.dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)),
            },
            _ => false,
        }
    }

    pub fn matches_any(&self, selectors: &[String]) -> bool {
        self.dev || selectors.iter().any(|s| self.matches(s))
    }

    /// Whether the namespace's `access` block grants `right`. No block
    /// grants nothing (deny by default), except in dev mode.
    pub fn may(&self, access: Option<&Access>, right: Right) -> bool {
        let Some(access) = access else { return self.dev };
        let list = match right {
            Right::Read => &access.read,
            Right::Write => &access.write,
            Right::Admin => &access.admin,
            Right::Pii => &access.pii,
        };
        self.matches_any(list)
    }
}

impl fmt::Display for Principal {
    /// A short name for messages and audit records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dev {
            return f.write_str("anonymous (dev mode)");
        }
        if let Some(s) = &self.subject {
            return write!(f, "user:{s}");
        }
        if let Some(id) = self.spiffe_ids.first() {
            return f.write_str(id);
        }
        if let Some(n) = self.dns_names.first() {
            return write!(f, "dns:{n}");
        }
        f.write_str("unknown")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Principal {
        Principal {
            subject: Some("alice".into()),
            groups: vec!["eng".into()],
            scopes: vec!["orders.read".into()],
            spiffe_ids: vec!["spiffe://prod.example/ns/shop/sa/api".into()],
            dns_names: vec!["api.shop.example".into()],
            jwt: true,
            mtls: true,
            dev: false,
        }
    }

    #[test]
    fn selectors_match() {
        let p = p();
        for yes in [
            "*",
            "user:alice",
            "group:eng",
            "scope:orders.read",
            "spiffe://prod.example/ns/shop/sa/api",
            "spiffe://prod.example/ns/*",
            "dns:api.shop.example",
            "dns:*.shop.example",
        ] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in [
            "user:bob",
            "user:alic",
            "group:en",
            "scope:orders.write",
            "spiffe://prod.example/ns/sho/*",
            "spiffe://prod.example/ns/shop",
            "spiffe://other/ns/shop/sa/api",
            "dns:shop.example",
            "dns:*.example",
            "bogus",
        ] {
            assert!(!p.matches(no), "{no}");
        }
    }

    #[test]
    fn nobody_matches_the_wildcard_unauthenticated() {
        assert!(!Principal::default().matches("*"));
        assert!(Principal::dev().matches_any(&[]));
    }
}
