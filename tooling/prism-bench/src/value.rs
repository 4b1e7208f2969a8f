//! The values that puts and the preload write.
//!
//! `raw` values are filler bytes, the same for every key. `profile` values
//! are encoded `bench.v1.Profile` messages (`proto/profile.proto`) for
//! typed namespaces: the proxy decodes, masks or encrypts them, and each
//! key gets one of [`PROFILES`] distinct people, so that masking and
//! encryption work on varied text rather than on one value the caches
//! learn.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::args::ValueKind;

/// Encoded size of every profile value.
pub const PROFILE_SIZE: usize = 1024;

/// Distinct profiles; key `i` gets profile `i % PROFILES`. Enough to vary
/// the text, few enough to encode them all once before the run.
pub const PROFILES: u64 = 64;

/// `bench.v1.Profile` of `proto/profile.proto`, field for field. A prost
/// struct rather than generated code: the bench needs only to encode it,
/// and a build script would need the options file of another crate.
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// Tagged `email`.
    #[prost(string, tag = "2")]
    pub email: String,
    /// Tagged `name`.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Tagged `phone`.
    #[prost(string, tag = "4")]
    pub phone: String,
    /// Tagged `ssn`.
    #[prost(string, tag = "5")]
    pub ssn: String,
    /// Tagged `address`.
    #[prost(string, tag = "6")]
    pub street: String,
    #[prost(string, tag = "7")]
    pub city: String,
    #[prost(string, tag = "8")]
    pub country: String,
    #[prost(string, tag = "9")]
    pub locale: String,
    #[prost(string, tag = "10")]
    pub plan: String,
    #[prost(int64, tag = "11")]
    pub created_at: i64,
    #[prost(int64, tag = "12")]
    pub updated_at: i64,
    #[prost(uint32, tag = "13")]
    pub logins: u32,
    #[prost(bool, tag = "14")]
    pub verified: bool,
    #[prost(string, repeated, tag = "15")]
    pub tags: Vec<String>,
    /// Untagged filler that brings the message to [`PROFILE_SIZE`].
    #[prost(string, tag = "16")]
    pub bio: String,
}

const FIRST: [&str; 8] = ["Jane", "John", "Amelia", "Bo", "Carlos", "Dominique", "Eve", "Fatima"];
const LAST: [&str; 8] = ["Doe", "Smith", "Okonkwo-Baptiste", "Li", "Fernández", "Nguyen", "Müller", "Andersson"];
const STREETS: [&str; 4] = ["Main Street", "Rue de la République", "Elm Avenue", "Harbour Road"];
const CITIES: [&str; 4] = ["Springfield", "Lyon", "Portland", "Wellington"];
const TAGS: [&str; 10] =
    ["beta", "newsletter", "mobile", "premium", "eu", "us", "support-tier-2", "dark-mode", "sso", "mfa"];
const LOREM: &str = "Enjoys long walks, reliable systems and well-documented APIs. Has opinions about tabs. ";

impl Profile {
    /// Person number `i`: every field depends on `i`, the tagged ones vary
    /// in length as real names and addresses do.
    pub fn person(i: u64) -> Self {
        let pick = |list: &[&'static str], salt: u64| list[((i / salt) % list.len() as u64) as usize];
        let first = pick(&FIRST, 1);
        let last = pick(&LAST, 3);
        let mut p = Self {
            user_id: format!("user-{i:010}"),
            email: format!("{}.{}{i}@example.com", first.to_lowercase(), last.to_lowercase()),
            name: format!("{first} {last}"),
            phone: format!("+1 555-{:03}-{:04}", i % 1000, (i * 7919) % 10_000),
            ssn: format!("{:03}-{:02}-{:04}", 100 + i % 800, 10 + i % 90, (i * 31) % 10_000),
            street: format!("{} {}", 1 + i % 400, pick(&STREETS, 2)),
            city: pick(&CITIES, 5).to_owned(),
            country: if i.is_multiple_of(2) { "US" } else { "FR" }.to_owned(),
            locale: if i.is_multiple_of(2) { "en-US" } else { "fr-FR" }.to_owned(),
            plan: if i.is_multiple_of(3) { "free" } else { "team" }.to_owned(),
            created_at: 1_700_000_000 + i as i64 * 86_400,
            updated_at: 1_750_000_000 + i as i64 * 3_600,
            logins: (i * 37 % 5_000) as u32,
            verified: !i.is_multiple_of(4),
            tags: (0..6).map(|t| TAGS[((i + t * 3) % TAGS.len() as u64) as usize].to_owned()).collect(),
            bio: String::new(),
        };
        // Field 16's key and a two-byte length take 4 bytes; the text, all
        // ASCII, takes the rest. The test checks every person's size.
        let fill = PROFILE_SIZE.saturating_sub(p.encoded_len() + 4);
        p.bio = LOREM.chars().cycle().skip((i % 7) as usize).take(fill).collect();
        p
    }
}

/// The value of each key.
#[derive(Debug, Clone)]
pub struct Values(Arc<[Bytes]>);

impl Values {
    pub fn new(kind: ValueKind, size: usize) -> Self {
        match kind {
            ValueKind::Raw => Self(Arc::new([Bytes::from(vec![b'x'; size])])),
            ValueKind::Profile => {
                Self((0..PROFILES).map(|i| Bytes::from(Profile::person(i).encode_to_vec())).collect())
            }
        }
    }

    /// The value key `i` is written with.
    pub fn of(&self, i: u64) -> &Bytes {
        // `new` makes at least one value, so the modulus is never zero.
        &self.0[(i % self.0.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use prost_reflect::{DynamicMessage, Value};

    use super::*;

    fn pool() -> prost_reflect::DescriptorPool {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut compiler = protox::Compiler::new([here.join("proto"), here.join("../../proto")]).unwrap();
        compiler.include_imports(true).open_file("profile.proto").unwrap();
        compiler.descriptor_pool()
    }

    #[test]
    fn every_profile_is_one_kib() {
        let values = Values::new(ValueKind::Profile, 0);
        for i in 0..PROFILES {
            assert_eq!(values.of(i).len(), PROFILE_SIZE, "person {i}");
            assert_eq!(values.of(i), values.of(i + PROFILES));
        }
        assert_ne!(values.of(0), values.of(1));
        // A much larger index still fits (longer numbers, less filler).
        assert_eq!(Profile::person(u64::from(u32::MAX)).encode_to_vec().len(), PROFILE_SIZE);
    }

    #[test]
    fn raw_values_are_filler_of_the_size() {
        let values = Values::new(ValueKind::Raw, 100);
        assert_eq!(values.of(0).as_ref(), [b'x'; 100]);
        assert_eq!(values.of(0), values.of(12_345));
    }

    /// The struct and the .proto that is pushed to the proxy agree: the
    /// value decodes as `bench.v1.Profile` with nothing unknown, every
    /// field where the struct put it, and five tagged fields.
    #[test]
    fn profiles_decode_as_the_pushed_message() {
        let pool = pool();
        let desc = pool.get_message_by_name("bench.v1.Profile").unwrap();
        let person = Profile::person(42);
        let msg = DynamicMessage::decode(desc.clone(), person.encode_to_vec().as_slice()).unwrap();
        assert_eq!(msg.unknown_fields().count(), 0);
        let text = |name: &str| msg.get_field_by_name(name).unwrap().as_str().unwrap().to_owned();
        assert_eq!(text("user_id"), person.user_id);
        assert_eq!(text("email"), person.email);
        assert_eq!(text("name"), person.name);
        assert_eq!(text("phone"), person.phone);
        assert_eq!(text("ssn"), person.ssn);
        assert_eq!(text("street"), person.street);
        assert_eq!(text("city"), person.city);
        assert_eq!(text("bio"), person.bio);
        assert_eq!(msg.get_field_by_name("created_at").unwrap().as_i64(), Some(person.created_at));
        assert_eq!(msg.get_field_by_name("logins").unwrap().as_u32(), Some(person.logins));
        let tags = msg.get_field_by_name("tags").unwrap().into_owned();
        let tags: Vec<&str> = tags.as_list().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(tags, person.tags);

        let pii = pool.get_extension_by_name("prism.pii").unwrap();
        let mut tagged: Vec<(String, String)> = desc
            .fields()
            .filter(|f| f.options().has_extension(&pii))
            .map(|f| (f.name().to_owned(), f.options().get_extension(&pii).as_str().unwrap().to_owned()))
            .collect();
        tagged.sort();
        let expected =
            [("email", "email"), ("name", "name"), ("phone", "phone"), ("ssn", "ssn"), ("street", "address")];
        assert_eq!(tagged, expected.map(|(f, c)| (f.to_owned(), c.to_owned())));
    }
}
