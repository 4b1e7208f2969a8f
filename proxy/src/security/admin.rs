//! Who may administer what: the proxy-wide administrators (`auth.admins`)
//! and each namespace's `access.admin`. The Admin API asks here; the
//! decisions are recorded for the audit log by the caller.

use crate::config::AuthConfig;
use crate::namespace::Access;
use crate::security::{Principal, Right};

#[derive(Debug, Clone, Default)]
pub struct AdminPolicy {
    /// Selectors of the proxy's administrators.
    admins: Vec<String>,
}

impl AdminPolicy {
    pub fn new(auth: Option<&AuthConfig>) -> Self {
        Self { admins: auth.map(|a| a.admins.clone()).unwrap_or_default() }
    }

    /// Whether the caller administers the whole proxy: it may create
    /// namespaces, list plugins and administer every namespace.
    pub fn is_proxy_admin(&self, principal: &Principal) -> bool {
        principal.dev || principal.matches_any(&self.admins)
    }

    /// Whether the caller may change or delete a namespace with `access`: a
    /// proxy admin, or named in its `access.admin`.
    pub fn may_administer(&self, principal: &Principal, access: Option<&Access>) -> bool {
        self.is_proxy_admin(principal) || principal.may(access, Right::Admin)
    }

    /// Whether the caller may see a namespace's document and status: its
    /// administrators and its readers.
    pub fn may_see(&self, principal: &Principal, access: Option<&Access>) -> bool {
        self.may_administer(principal, access) || principal.may(access, Right::Read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(read: &[&str], admin: &[&str]) -> Access {
        Access {
            read: read.iter().map(ToString::to_string).collect(),
            admin: admin.iter().map(ToString::to_string).collect(),
            ..Default::default()
        }
    }

    fn user(name: &str) -> Principal {
        Principal { subject: Some(name.to_owned()), jwt: true, ..Default::default() }
    }

    #[test]
    fn proxy_admins_namespace_admins_and_readers() {
        let policy = AdminPolicy { admins: vec!["user:root".into()] };
        let ns = access(&["user:reader"], &["user:owner"]);
        assert!(policy.is_proxy_admin(&user("root")));
        assert!(!policy.is_proxy_admin(&user("owner")));
        assert!(policy.may_administer(&user("root"), Some(&ns)));
        assert!(policy.may_administer(&user("owner"), Some(&ns)));
        assert!(!policy.may_administer(&user("reader"), Some(&ns)));
        assert!(policy.may_see(&user("reader"), Some(&ns)));
        assert!(!policy.may_see(&user("stranger"), Some(&ns)));
        // No access block: only proxy admins.
        assert!(!policy.may_administer(&user("owner"), None));
        assert!(policy.may_administer(&user("root"), None));
        // Dev mode may do everything.
        assert!(AdminPolicy::default().is_proxy_admin(&Principal::dev()));
    }
}
