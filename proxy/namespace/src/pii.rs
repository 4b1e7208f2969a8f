//! The vocabulary of PII handling: the closed set of classes a field can be
//! tagged with (`(prism.pii) = "email"`) and what a namespace's policy does
//! to each class for a reader without the `pii` right.

use std::fmt;

use serde::Deserialize;

/// A class of personal data. The set is closed so that policies can name
/// every class and a typo in a `.proto` file is refused at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiClass {
    Email,
    Phone,
    Name,
    Address,
    Ssn,
    CreditCard,
    IpAddress,
    DateOfBirth,
    FreeText,
    Other,
}

impl PiiClass {
    pub const ALL: [Self; 10] = [
        Self::Email,
        Self::Phone,
        Self::Name,
        Self::Address,
        Self::Ssn,
        Self::CreditCard,
        Self::IpAddress,
        Self::DateOfBirth,
        Self::FreeText,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Name => "name",
            Self::Address => "address",
            Self::Ssn => "ssn",
            Self::CreditCard => "credit_card",
            Self::IpAddress => "ip_address",
            Self::DateOfBirth => "date_of_birth",
            Self::FreeText => "free_text",
            Self::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The class names, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for PiiClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reader without the `pii` right gets of a tagged field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// Keeps the shape, hides the content: `j***@example.com`, `J*** S****`.
    Mask,
    /// Every letter and digit but the last four becomes `*`.
    Last4,
    /// Each word becomes its initial: `John Smith` → `J. S.`.
    Initial,
    /// The field is cleared (absent from the message).
    Redact,
    /// A keyed HMAC-SHA-256, stable per namespace: equal values stay
    /// joinable without being readable.
    Hash,
}

impl PiiAction {
    pub const ALL: [Self; 5] = [Self::Mask, Self::Last4, Self::Initial, Self::Redact, Self::Hash];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mask => "mask",
            Self::Last4 => "last4",
            Self::Initial => "initial",
            Self::Redact => "redact",
            Self::Hash => "hash",
        }
    }
}
