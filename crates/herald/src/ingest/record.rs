//! What a Kafka record means: the event it carries, or why it carries none.
//!
//! Two formats, told apart by one header:
//!
//! - **Headers** (the record has a `herald-event-type` header): the tenant is the
//!   `herald-tenant` header, the idempotency key the optional `herald-idempotency-key`
//!   header, and the value is the payload, delivered byte for byte. Its content type is
//!   the record's `content-type` header if it has one, else `application/json` when the
//!   value is JSON and `application/octet-stream` when it is not.
//! - **Envelope** (no `herald-event-type` header): the value is the JSON object
//!   `{"tenant", "type", "payload", "idempotencyKey"}`, as the HTTP API's envelope plus
//!   the tenant (a `herald-tenant` header may name it instead). The `payload` member's
//!   exact bytes are delivered, as `application/json`.
//!
//! A record without an idempotency key gets `kafka:<topic>:<partition>:<offset>`, so a
//! record read twice (after a crash or a rebalance) is stored once either way.
//!
//! Nothing here touches Kafka or the store: the consumer hands in what it read.

use bytes::Bytes;
use herald_core::filter::EventType;
use herald_core::id::TenantId;
use herald_core::model::{ContentType, IdempotencyKey, NewEvent};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The header naming the event type; its presence selects the headers format.
pub const EVENT_TYPE_HEADER: &str = "herald-event-type";
/// The header naming the tenant (by id).
pub const TENANT_HEADER: &str = "herald-tenant";
/// The optional header carrying the idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "herald-idempotency-key";

/// The longest idempotency key Herald stores.
const MAX_KEY_LEN: usize = 255;

/// A record as read: where it sits in its topic, its headers and its value.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
    /// The record's timestamp in milliseconds, if it has one.
    pub timestamp: Option<i64>,
    /// The headers, in order (a header without a value has an empty one).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Whether the headers could be read (a header name that is not UTF-8 cannot).
    pub headers_readable: bool,
    /// The value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
}

impl RawRecord {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    fn text_header(&self, name: &str) -> Result<Option<String>, String> {
        self.header(name)
            .map(|value| {
                String::from_utf8(value.to_vec())
                    .map_err(|_| format!("the {name} header is not UTF-8"))
            })
            .transpose()
    }

    /// The key that deduplicates a record without one of its own: its position, and
    /// its timestamp, so a topic deleted and created again (offsets from 0 again) does
    /// not look like the old one.
    fn position_key(&self) -> String {
        let key = format!(
            "kafka:{}:{}:{}:{}",
            self.topic,
            self.partition,
            self.offset,
            self.timestamp.unwrap_or(-1)
        );
        if key.len() <= MAX_KEY_LEN {
            return key;
        }
        // A topic name long enough to push the key over the limit is shortened to a
        // fixed-size digest of itself.
        let digest = Sha256::digest(self.topic.as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!(
            "kafka:#{hex}:{}:{}:{}",
            self.partition,
            self.offset,
            self.timestamp.unwrap_or(-1)
        )
    }
}

/// The event a record carries, for its tenant.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Whose event it is (not yet checked to exist).
    pub tenant: TenantId,
    /// The event.
    pub event: NewEvent,
}

/// The envelope format's value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope<'a> {
    tenant: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    idempotency_key: Option<String>,
}

/// Reads `record`; the error says, for an operator, why it carries no event.
pub fn decode(record: &RawRecord, max_payload: usize) -> Result<Decoded, String> {
    if !record.headers_readable {
        return Err("a header name is not UTF-8".to_owned());
    }
    let value = record
        .value
        .as_deref()
        .ok_or("the record has no value (a tombstone)")?;
    if record.header(EVENT_TYPE_HEADER).is_some() {
        decode_headers(record, value, max_payload)
    } else {
        decode_envelope(record, value, max_payload)
    }
}

fn decode_headers(record: &RawRecord, value: &[u8], max_payload: usize) -> Result<Decoded, String> {
    let event_type = record.text_header(EVENT_TYPE_HEADER)?.unwrap_or_default();
    let tenant = record
        .text_header(TENANT_HEADER)?
        .ok_or(format!("the record has no {TENANT_HEADER} header"))?;
    let key = record.text_header(IDEMPOTENCY_KEY_HEADER)?;
    let content_type = match record.text_header("content-type")? {
        Some(given) => given,
        None if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() => {
            "application/json".to_owned()
        }
        None => "application/octet-stream".to_owned(),
    };
    event(
        record,
        Parts {
            tenant: &tenant,
            event_type: &event_type,
            payload: value,
            content_type: &content_type,
            key,
        },
        max_payload,
    )
}

fn decode_envelope(
    record: &RawRecord,
    value: &[u8],
    max_payload: usize,
) -> Result<Decoded, String> {
    let envelope: Envelope<'_> = serde_json::from_slice(value).map_err(|error| {
        format!(
            "the value is not a Herald envelope {{\"tenant\", \"type\", \"payload\", \"idempotencyKey\"}} \
             and the record has no {EVENT_TYPE_HEADER} header: {error}"
        )
    })?;
    let tenant = match envelope.tenant {
        Some(tenant) => tenant,
        None => record.text_header(TENANT_HEADER)?.ok_or(format!(
            "the envelope has no tenant and the record no {TENANT_HEADER} header"
        ))?,
    };
    event(
        record,
        Parts {
            tenant: &tenant,
            event_type: &envelope.event_type,
            payload: envelope.payload.get().as_bytes(),
            content_type: "application/json",
            key: envelope.idempotency_key,
        },
        max_payload,
    )
}

/// The fields of an event, from either format.
struct Parts<'a> {
    tenant: &'a str,
    event_type: &'a str,
    payload: &'a [u8],
    content_type: &'a str,
    key: Option<String>,
}

fn event(record: &RawRecord, parts: Parts<'_>, max_payload: usize) -> Result<Decoded, String> {
    let tenant =
        TenantId::parse(parts.tenant).ok_or(format!("{:?} is not a tenant id", parts.tenant))?;
    let event_type = EventType::parse(parts.event_type, "type").map_err(|e| e.to_string())?;
    if parts.payload.len() > max_payload {
        return Err(format!(
            "the payload is {} bytes, over the {max_payload}-byte limit",
            parts.payload.len()
        ));
    }
    let content_type =
        ContentType::parse(parts.content_type, "content-type").map_err(|e| e.to_string())?;
    let key = parts.key.unwrap_or_else(|| record.position_key());
    let idempotency_key =
        IdempotencyKey::parse(&key, "idempotencyKey").map_err(|e| e.to_string())?;
    Ok(Decoded {
        tenant,
        event: NewEvent {
            event_type,
            payload: Bytes::copy_from_slice(parts.payload),
            content_type,
            idempotency_key: Some(idempotency_key),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: &[(&str, &str)], value: Option<&str>) -> RawRecord {
        RawRecord {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
            timestamp: Some(1_700_000_000_000),
            headers_readable: true,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn tenant() -> String {
        TenantId::generate().to_string()
    }

    #[test]
    fn the_headers_format_delivers_the_value_byte_for_byte() {
        let tenant = tenant();
        let raw = "  {\"b\": 1,  \"a\": [2]}  ";
        let decoded = decode(
            &record(
                &[
                    (EVENT_TYPE_HEADER, "orders.created"),
                    (TENANT_HEADER, &tenant),
                    (IDEMPOTENCY_KEY_HEADER, "order-7"),
                ],
                Some(raw),
            ),
            1024,
        )
        .expect("decodes");
        assert_eq!(decoded.tenant.to_string(), tenant);
        assert_eq!(decoded.event.event_type.as_str(), "orders.created");
        assert_eq!(&decoded.event.payload[..], raw.as_bytes());
        assert_eq!(decoded.event.content_type.as_str(), "application/json");
        assert_eq!(
            decoded.event.idempotency_key.expect("a key").as_str(),
            "order-7"
        );
    }

    #[test]
    fn a_value_that_is_not_json_is_octets_unless_the_record_says() {
        let tenant = tenant();
        let headers = [(EVENT_TYPE_HEADER, "a.b"), (TENANT_HEADER, tenant.as_str())];
        let decoded = decode(&record(&headers, Some("<xml/>")), 1024).expect("decodes");
        assert_eq!(
            decoded.event.content_type.as_str(),
            "application/octet-stream"
        );
        let mut with_type = headers.to_vec();
        with_type.push(("content-type", "application/xml"));
        let decoded = decode(&record(&with_type, Some("<xml/>")), 1024).expect("decodes");
        assert_eq!(decoded.event.content_type.as_str(), "application/xml");
    }

    #[test]
    fn the_envelope_format_keeps_the_payload_bytes_and_takes_the_tenant_from_either_place() {
        let tenant = tenant();
        let value = format!(
            "{{\"tenant\":\"{tenant}\",\"type\":\"a.b\",\"payload\":{{\"x\": 1}},\"idempotencyKey\":\"k1\"}}"
        );
        let decoded = decode(&record(&[], Some(&value)), 1024).expect("decodes");
        assert_eq!(&decoded.event.payload[..], b"{\"x\": 1}");
        assert_eq!(decoded.event.idempotency_key.expect("a key").as_str(), "k1");
        let without_tenant = "{\"type\":\"a.b\",\"payload\":[1]}";
        let decoded = decode(
            &record(&[(TENANT_HEADER, &tenant)], Some(without_tenant)),
            1024,
        )
        .expect("the header names the tenant");
        assert_eq!(decoded.tenant.to_string(), tenant);
    }

    #[test]
    fn a_record_without_a_key_is_keyed_by_its_position() {
        let tenant = tenant();
        let value = format!("{{\"tenant\":\"{tenant}\",\"type\":\"a.b\",\"payload\":1}}");
        let decoded = decode(&record(&[], Some(&value)), 1024).expect("decodes");
        assert_eq!(
            decoded.event.idempotency_key.expect("a key").as_str(),
            "kafka:orders:3:42:1700000000000"
        );
        let mut long = record(&[], Some(&value));
        long.topic = "t".repeat(249);
        let decoded = decode(&long, 1024).expect("a long topic is no problem");
        let key = decoded.event.idempotency_key.expect("a key");
        assert!(key.as_str().starts_with("kafka:#") && key.as_str().len() <= 255);
    }

    #[test]
    fn bad_records_say_why() {
        let tenant = tenant();
        let cases: Vec<(RawRecord, &str)> = vec![
            (record(&[], Some("not json")), "not a Herald envelope"),
            (record(&[], None), "tombstone"),
            (
                RawRecord {
                    headers_readable: false,
                    ..record(&[], Some("{}"))
                },
                "header name is not UTF-8",
            ),
            (
                record(&[(EVENT_TYPE_HEADER, "a.b")], Some("{}")),
                "no herald-tenant header",
            ),
            (
                record(
                    &[(EVENT_TYPE_HEADER, "a..b"), (TENANT_HEADER, &tenant)],
                    Some("{}"),
                ),
                "type",
            ),
            (
                record(
                    &[(EVENT_TYPE_HEADER, "a.b"), (TENANT_HEADER, "acme")],
                    Some("{}"),
                ),
                "not a tenant id",
            ),
            (
                record(&[], Some("{\"type\":\"a.b\",\"payload\":1}")),
                "no tenant",
            ),
            (
                record(
                    &[(EVENT_TYPE_HEADER, "a.b"), (TENANT_HEADER, &tenant)],
                    Some(&"x".repeat(2000)),
                ),
                "over the 1024-byte limit",
            ),
        ];
        for (record, expected) in cases {
            let reason = decode(&record, 1024).expect_err("refused");
            assert!(
                reason.contains(expected),
                "{reason:?} should mention {expected:?}"
            );
        }
    }
}
