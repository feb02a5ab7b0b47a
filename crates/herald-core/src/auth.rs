//! API keys and the admin token: how they are made, shown once, and stored hashed.
//!
//! Keys are 32 random bytes, so a single SHA-256 is enough to store them safely: there
//! is nothing to brute-force that a slow password hash would protect. Lookups are by
//! hash, so the plaintext never needs to be kept.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::id::{ApiKeyId, TenantId};
use crate::time::Timestamp;

/// The text every tenant API key starts with.
pub const API_KEY_PREFIX: &str = "hrk_";
/// The text every generated admin token starts with.
pub const ADMIN_TOKEN_PREFIX: &str = "hra_";
/// How many leading characters of a key are kept to recognise it in listings.
const VISIBLE_PREFIX_LEN: usize = 12;

/// The SHA-256 of a bearer credential; what the store keeps instead of the credential.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes a presented credential.
    pub fn of(credential: &str) -> Self {
        Self(Sha256::digest(credential.as_bytes()).into())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

/// A freshly generated credential: the plaintext, shown once, and its hash.
pub struct NewCredential {
    /// The credential to hand to its owner; never stored.
    pub plaintext: String,
    /// What is stored and looked up.
    pub hash: KeyHash,
}

impl NewCredential {
    /// A random credential starting with `prefix`.
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let plaintext = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = KeyHash::of(&plaintext);
        Self { plaintext, hash }
    }
}

/// A tenant's API key as stored: its hash and enough of its start to recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Names this key (for listing and revoking), not the key itself.
    pub id: ApiKeyId,
    /// The tenant every call with this key acts as.
    pub tenant_id: TenantId,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// The key's first characters, e.g. `hrk_AbCdEfGh`.
    pub visible_prefix: String,
    /// When the key was made.
    pub created_at: Timestamp,
}

impl ApiKey {
    /// Makes a new key for `tenant_id`: the record to store and the plaintext to show once.
    pub fn generate(tenant_id: TenantId, now: Timestamp) -> (Self, String) {
        let credential = NewCredential::generate(API_KEY_PREFIX);
        let key = Self {
            id: ApiKeyId::generate(),
            tenant_id,
            hash: credential.hash,
            visible_prefix: credential
                .plaintext
                .chars()
                .take(VISIBLE_PREFIX_LEN)
                .collect(),
            created_at: now,
        };
        (key, credential.plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_found_by_the_hash_of_its_plaintext() {
        let (key, plaintext) = ApiKey::generate(TenantId::generate(), Timestamp::now());
        assert!(plaintext.starts_with(API_KEY_PREFIX));
        assert_eq!(KeyHash::of(&plaintext), key.hash);
        assert!(plaintext.starts_with(&key.visible_prefix));
        assert_ne!(KeyHash::of(&format!("{plaintext}x")), key.hash);
    }
}
