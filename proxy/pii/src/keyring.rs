//! The keys of field encryption and of the `hash` action, from the proxy
//! config's `pii.keyring`: a directory of key files `<id>.key` (or one such
//! file), each holding 32 random bytes in base64. New writes use the active
//! key (`pii.active_key`, else the highest id); every key decrypts, so values
//! written before a rotation stay readable.
//!
//! An encrypted string field holds `prism:enc:v1:<key id>:<base64url of
//! nonce ‖ ciphertext ‖ tag>` (AES-256-GCM from ring, a random 96-bit
//! nonce). The additional data binds it to its namespace and field number,
//! so a ciphertext copied into another namespace or field does not decrypt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The text every encrypted value starts with.
pub const PREFIX: &str = "prism:enc:v1:";
/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// Most keys a keyring may hold.
pub const MAX_KEYS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("reading the keyring {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("keyring {0} holds no key files (<id>.key)")]
    Empty(PathBuf),
    #[error("key file {path}: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("pii.{field} is {id}, which is not a key of the keyring (it has: {have})")]
    UnknownKey { field: &'static str, id: u32, have: String },
    #[error("keyring {0} holds more than {MAX_KEYS} keys")]
    TooMany(PathBuf),
}

/// The cipher or the random source failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("field encryption failed")]
pub struct EncryptError;

/// Why an encrypted value could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error("the value was encrypted with key {0}, which this proxy's keyring does not hold")]
    UnknownKey(u32),
    #[error("the encrypted value is malformed or was altered")]
    Corrupt,
}

struct Entry {
    aead: LessSafeKey,
    /// Kept for deriving the per-namespace hash keys.
    secret: [u8; KEY_BYTES],
}

pub struct Keyring {
    keys: BTreeMap<u32, Entry>,
    active: u32,
    hash_key: u32,
    rng: SystemRandom,
    source: PathBuf,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Keyring")
            .field("source", &self.source)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .field("hash_key", &self.hash_key)
            .finish()
    }
}

impl Keyring {
    /// Loads `path` (a directory of `<id>.key` files, or one such file).
    /// `active` is the key new values are encrypted with (default: the
    /// highest id); `hash_key` the one the `hash` action is derived from
    /// (default: the lowest, so hashes survive rotations).
    pub fn load(path: &Path, active: Option<u32>, hash_key: Option<u32>) -> Result<Self, KeyringError> {
        let read_err = |error| KeyringError::Read { path: path.to_owned(), error };
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "key"))
                .collect();
            files.sort();
            files
        } else {
            std::fs::metadata(path).map_err(read_err)?;
            vec![path.to_owned()]
        };
        if files.len() > MAX_KEYS {
            return Err(KeyringError::TooMany(path.to_owned()));
        }
        let mut keys = BTreeMap::new();
        for file in files {
            let bad = |why: String| KeyringError::BadKey { path: file.clone(), why };
            let id: u32 = file
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .filter(|id| *id > 0)
                .ok_or_else(|| bad("the file name must be <id>.key with a positive integer id".to_owned()))?;
            let text = std::fs::read_to_string(&file).map_err(|e| bad(e.to_string()))?;
            let bytes = STANDARD.decode(text.trim()).map_err(|e| bad(format!("not base64: {e}")))?;
            let secret: [u8; KEY_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
                bad(format!(
                    "a key is {KEY_BYTES} bytes, this one is {} (make one with: head -c 32 /dev/urandom | base64)",
                    b.len()
                ))
            })?;
            let aead =
                LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| bad("unusable key".to_owned()))?);
            keys.insert(id, Entry { aead, secret });
        }
        let (Some(lowest), Some(highest)) = (keys.keys().next().copied(), keys.keys().next_back().copied()) else {
            return Err(KeyringError::Empty(path.to_owned()));
        };
        let have = || keys.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        for (field, id) in [("active_key", active), ("hash_key", hash_key)] {
            if let Some(id) = id
                && !keys.contains_key(&id)
            {
                return Err(KeyringError::UnknownKey { field, id, have: have() });
            }
        }
        Ok(Self {
            active: active.unwrap_or(highest),
            hash_key: hash_key.unwrap_or(lowest),
            keys,
            rng: SystemRandom::new(),
            source: path.to_owned(),
        })
    }

    pub fn active(&self) -> u32 {
        self.active
    }

    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// The HMAC key of the `hash` action in `namespace`: derived (HKDF) from
    /// the hash key and the namespace name, so the same value hashes alike
    /// in one namespace and differently in another.
    pub fn hash_key(&self, namespace: &str) -> ring::hmac::Key {
        let secret = self.keys.get(&self.hash_key).map_or(&[0u8; KEY_BYTES][..], |e| &e.secret[..]);
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"prism pii hash v1").extract(secret);
        let info = [namespace.as_bytes()];
        match prk.expand(&info, ring::hmac::HMAC_SHA256) {
            Ok(okm) => ring::hmac::Key::from(okm),
            // Only fails for an output over 255 blocks; 32 bytes is one.
            Err(_) => ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// Encrypts `plain` for `namespace`'s field `field` with the active key.
    /// Fails only if the system's random source or the cipher does; the
    /// value is then refused, never stored in clear.
    pub fn encrypt(&self, namespace: &str, field: u32, plain: &[u8]) -> Result<String, EncryptError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| EncryptError)?;
        let entry = self.keys.get(&self.active).ok_or(EncryptError)?;
        let mut body = plain.to_vec();
        entry
            .aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(namespace, field)), &mut body)
            .map_err(|_| EncryptError)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + body.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(format!("{PREFIX}{}:{}", self.active, URL_SAFE_NO_PAD.encode(&sealed)))
    }

    /// Whether `value` is in the encrypted form (values written before
    /// encryption was turned on are not).
    pub fn is_encrypted(value: &[u8]) -> bool {
        value.starts_with(PREFIX.as_bytes())
    }

    /// Decrypts a value in the encrypted form.
    pub fn decrypt(&self, namespace: &str, field: u32, value: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let rest = value.strip_prefix(PREFIX.as_bytes()).ok_or(DecryptError::Corrupt)?;
        let text = std::str::from_utf8(rest).map_err(|_| DecryptError::Corrupt)?;
        let (id, body) = text.split_once(':').ok_or(DecryptError::Corrupt)?;
        let id: u32 = id.parse().map_err(|_| DecryptError::Corrupt)?;
        let entry = self.keys.get(&id).ok_or(DecryptError::UnknownKey(id))?;
        let mut buf = URL_SAFE_NO_PAD.decode(body).map_err(|_| DecryptError::Corrupt)?;
        if buf.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(DecryptError::Corrupt);
        }
        let mut sealed = buf.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&buf).map_err(|_| DecryptError::Corrupt)?;
        let plain = entry
            .aead
            .open_in_place(nonce, Aad::from(aad(namespace, field)), &mut sealed)
            .map_err(|_| DecryptError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

fn aad(namespace: &str, field: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(namespace.len() + 5);
    aad.extend_from_slice(namespace.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&field.to_be_bytes());
    aad
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn write_key(dir: &Path, id: u32, byte: u8) {
        std::fs::write(dir.join(format!("{id}.key")), format!("{}\n", STANDARD.encode([byte; KEY_BYTES]))).unwrap();
    }

    fn tempdir() -> PathBuf {
        tempfile::tempdir().unwrap().keep()
    }

    #[test]
    fn round_trip_and_rotation() {
        let dir = tempdir();
        write_key(&dir, 1, 1);
        let old = Keyring::load(&dir, None, None).unwrap();
        let sealed = old.encrypt("ns", 2, b"jane@example.com").unwrap();
        assert!(sealed.starts_with("prism:enc:v1:1:"), "{sealed}");
        assert!(!sealed.contains("jane"));
        write_key(&dir, 2, 2);
        let new = Keyring::load(&dir, None, None).unwrap();
        assert_eq!(new.active(), 2);
        assert_eq!(new.decrypt("ns", 2, sealed.as_bytes()).unwrap(), b"jane@example.com");
        assert!(new.encrypt("ns", 2, b"x").unwrap().starts_with("prism:enc:v1:2:"));
        // Bound to the namespace and the field.
        assert_eq!(new.decrypt("other", 2, sealed.as_bytes()), Err(DecryptError::Corrupt));
        assert_eq!(new.decrypt("ns", 3, sealed.as_bytes()), Err(DecryptError::Corrupt));
        // Two encryptions of one value differ (random nonces).
        assert_ne!(new.encrypt("ns", 2, b"x").unwrap(), new.encrypt("ns", 2, b"x").unwrap());
        // A key that is gone.
        std::fs::remove_file(dir.join("1.key")).unwrap();
        let only_new = Keyring::load(&dir, None, None).unwrap();
        assert_eq!(only_new.decrypt("ns", 2, sealed.as_bytes()), Err(DecryptError::UnknownKey(1)));
        // Pinned active key; hash key stays the lowest.
        write_key(&dir, 1, 1);
        let pinned = Keyring::load(&dir, Some(1), None).unwrap();
        assert_eq!(pinned.active(), 1);
        assert_eq!(
            ring::hmac::sign(&pinned.hash_key("ns"), b"v").as_ref(),
            ring::hmac::sign(&old.hash_key("ns"), b"v").as_ref()
        );
        assert_ne!(
            ring::hmac::sign(&pinned.hash_key("ns"), b"v").as_ref(),
            ring::hmac::sign(&pinned.hash_key("ns2"), b"v").as_ref()
        );
    }

    #[test]
    fn tampering_is_detected() {
        let dir = tempdir();
        write_key(&dir, 7, 9);
        let ring = Keyring::load(&dir, None, None).unwrap();
        let sealed = ring.encrypt("ns", 1, b"secret").unwrap();
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(ring.decrypt("ns", 1, &bytes), Err(DecryptError::Corrupt));
        for bad in
            ["prism:enc:v1:", "prism:enc:v1:7", "prism:enc:v1:x:AAAA", "prism:enc:v1:7:!!", "prism:enc:v1:7:AAAA"]
        {
            assert_eq!(ring.decrypt("ns", 1, bad.as_bytes()), Err(DecryptError::Corrupt), "{bad}");
        }
    }

    #[test]
    fn malformed_keyrings_are_refused() {
        let dir = tempdir();
        assert!(matches!(Keyring::load(&dir, None, None), Err(KeyringError::Empty(_))));
        assert!(matches!(Keyring::load(&dir.join("missing"), None, None), Err(KeyringError::Read { .. })));
        std::fs::write(dir.join("1.key"), "not base64!").unwrap();
        assert!(Keyring::load(&dir, None, None).unwrap_err().to_string().contains("not base64"));
        std::fs::write(dir.join("1.key"), STANDARD.encode([1u8; 16])).unwrap();
        assert!(Keyring::load(&dir, None, None).unwrap_err().to_string().contains("32 bytes, this one is 16"));
        std::fs::remove_file(dir.join("1.key")).unwrap();
        std::fs::write(dir.join("first.key"), STANDARD.encode([1u8; 32])).unwrap();
        assert!(Keyring::load(&dir, None, None).unwrap_err().to_string().contains("positive integer id"));
        std::fs::remove_file(dir.join("first.key")).unwrap();
        write_key(&dir, 3, 3);
        assert!(Keyring::load(&dir, Some(4), None).unwrap_err().to_string().contains("active_key is 4"));
        // One file works too.
        assert_eq!(Keyring::load(&dir.join("3.key"), None, None).unwrap().active(), 3);
    }
}
