//! Target signing secrets in the Standard Webhooks form `whsec_<base64>`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

use crate::validation::ValidationError;

/// The text every signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest key bytes a secret may carry.
pub const MIN_SECRET_BYTES: usize = 24;
/// Most key bytes a secret may carry.
pub const MAX_SECRET_BYTES: usize = 64;
/// Key bytes in a secret Herald generates.
const GENERATED_SECRET_BYTES: usize = 32;

/// A target's HMAC key, kept with the text it was given as.
///
/// `Debug` never shows the key: secrets must not reach logs.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetSecret {
    text: String,
    key: Vec<u8>,
}

impl TargetSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_SECRET_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self {
            text: format!("{SECRET_PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// Validates `text` as `whsec_` followed by the base64 of 24 to 64 bytes.
    pub fn parse(text: &str, field: &str) -> Result<Self, ValidationError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            ValidationError::new(field, format!("a secret must start with `{SECRET_PREFIX}`"))
        })?;
        let key = STANDARD.decode(encoded).map_err(|_| {
            ValidationError::new(
                field,
                format!("the part after `{SECRET_PREFIX}` is not valid base64"),
            )
        })?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(ValidationError::new(
                field,
                format!(
                    "a secret must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, this one encodes {}",
                    key.len()
                ),
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The secret as the user sees it (`whsec_...`).
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The raw HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for TargetSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TargetSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_round_trip() {
        let secret = TargetSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(
            TargetSecret::parse(secret.expose(), "secret"),
            Ok(secret.clone())
        );
        assert_eq!(secret.key().len(), 32);
        assert_ne!(secret, TargetSecret::generate());
    }

    #[test]
    fn malformed_secrets_are_refused() {
        let short = format!("whsec_{}", STANDARD.encode([0u8; 23]));
        let long = format!("whsec_{}", STANDARD.encode([0u8; 65]));
        for bad in [
            "",
            "secret",
            "whsec_",
            "whsec_!!!",
            short.as_str(),
            long.as_str(),
        ] {
            assert!(
                TargetSecret::parse(bad, "secret").is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let secret = TargetSecret::generate();
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }
}
