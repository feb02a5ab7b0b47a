//! Herald's signatures against the Standard Webhooks reference test vectors
//! (`shared/test-vectors/standard-webhooks.json`, beside the repository).

use herald_core::secret::TargetSecret;
use herald_core::signing::{sign, verify};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/test-vectors/standard-webhooks.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    serde_json::from_str(&text).expect("valid JSON")
}

fn field<'a>(case: &'a Value, name: &str) -> &'a str {
    case[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {case}"))
}

#[test]
fn signatures_match_the_reference_vectors() {
    let vectors = vectors();
    let cases = vectors["sign"].as_array().expect("sign cases");
    assert!(!cases.is_empty());
    for case in cases {
        let secret = TargetSecret::parse(field(case, "secret"), "secret").expect("valid secret");
        let timestamp = case["timestamp"].as_i64().expect("timestamp");
        let body = field(case, "payload").as_bytes();
        let signature = sign(&secret, field(case, "id"), timestamp, body);
        assert_eq!(signature, field(case, "signature"), "{case}");
        assert!(verify(
            &secret,
            field(case, "id"),
            timestamp,
            body,
            &signature
        ));
    }
}

#[test]
fn the_tampered_vector_does_not_verify() {
    let vectors = vectors();
    let cases = vectors["must_not_verify"]
        .as_array()
        .expect("must_not_verify cases");
    assert!(!cases.is_empty());
    for case in cases {
        let secret = TargetSecret::parse(field(case, "secret"), "secret").expect("valid secret");
        let timestamp = case["timestamp"].as_i64().expect("timestamp");
        let body = field(case, "payload").as_bytes();
        assert!(
            !verify(
                &secret,
                field(case, "id"),
                timestamp,
                body,
                field(case, "signature")
            ),
            "{case}"
        );
        assert_ne!(
            sign(&secret, field(case, "id"), timestamp, body),
            field(case, "signature")
        );
    }
}

#[test]
fn a_rotated_header_verifies_with_either_secret() {
    let old = TargetSecret::generate();
    let new = TargetSecret::generate();
    let header =
        herald_core::signing::signature_header([&new, &old], "evt_1", 1_700_000_000, b"{}");
    assert_eq!(header.split(' ').count(), 2);
    assert!(verify(&old, "evt_1", 1_700_000_000, b"{}", &header));
    assert!(verify(&new, "evt_1", 1_700_000_000, b"{}", &header));
    assert!(!verify(
        &TargetSecret::generate(),
        "evt_1",
        1_700_000_000,
        b"{}",
        &header
    ));
    assert!(
        !verify(&new, "evt_1", 1_700_000_001, b"{}", &header),
        "the timestamp is signed"
    );
}
