//! Standard Webhooks signatures.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is
//! `v1,<base64 of HMAC-SHA256(key, content)>`. While a rotated-out secret is still in its
//! grace period, the header carries one signature per secret, space-separated, so
//! receivers that know either secret verify the delivery.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::TargetSecret;

/// The `webhook-signature` value for one secret.
pub fn sign(secret: &TargetSecret, message_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail for a validated secret.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.key())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` value for every secret in force, space-separated.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a TargetSecret>,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|secret| sign(secret, message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether any `v1,` signature in `header` is valid for `secret` (for receivers and tests).
pub fn verify(
    secret: &TargetSecret,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let expected = sign(secret, message_id, timestamp, body);
    header
        .split(' ')
        .any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
