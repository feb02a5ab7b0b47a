//! Typed, prefixed, time-ordered identifiers.
//!
//! Every id is a type prefix (`ten_`, `tgt_`, ...) followed by the 32 lowercase hex
//! digits of a UUIDv7. UUIDv7 starts with the creation time in milliseconds, so ids
//! sort by creation time as plain strings; cursor pagination relies on that order.

use std::fmt;

use uuid::Uuid;

/// Length of the hex part of every id.
const HEX_LEN: usize = 32;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new id, later in order than every id this process made before.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, Uuid::now_v7().simple()))
            }

            /// Reads an id from text, or `None` when the text cannot be such an id.
            pub fn parse(text: &str) -> Option<Self> {
                Self::is_one(text).then(|| Self(text.to_owned()))
            }

            /// Like [`Self::parse`], keeping `text`'s allocation (stored rows are read
            /// into owned strings); gives `text` back when it cannot be such an id.
            pub fn parse_owned(text: String) -> Result<Self, String> {
                if Self::is_one(&text) {
                    Ok(Self(text))
                } else {
                    Err(text)
                }
            }

            fn is_one(text: &str) -> bool {
                text.strip_prefix($prefix).is_some_and(is_lower_hex)
            }

            /// The id as text, prefix included.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn is_lower_hex(text: &str) -> bool {
    text.len() == HEX_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

define_id!(
    /// Identifies a [`Tenant`](crate::model::Tenant).
    TenantId, "ten_"
);
define_id!(
    /// Identifies one API key of a tenant (not the key itself).
    ApiKeyId, "key_"
);
define_id!(
    /// Identifies a [`Target`](crate::model::Target).
    TargetId, "tgt_"
);
define_id!(
    /// Identifies a [`Filter`](crate::model::Filter).
    FilterId, "flt_"
);
define_id!(
    /// Identifies a [`Subscription`](crate::model::Subscription).
    SubscriptionId, "sub_"
);

define_id!(
    /// Identifies an [`Event`](crate::model::Event); sent as `webhook-id`.
    EventId, "evt_"
);
define_id!(
    /// Identifies a [`Delivery`](crate::model::Delivery).
    DeliveryId, "dlv_"
);
define_id!(
    /// Identifies an [`Attempt`](crate::model::Attempt).
    AttemptId, "att_"
);
define_id!(
    /// Identifies a [`ParkedRecord`](crate::store::ParkedRecord).
    ParkedId, "pkd_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_sort_by_creation() {
        let first = TargetId::generate();
        let second = TargetId::generate();
        assert!(first.as_str().starts_with("tgt_"));
        assert_eq!(TargetId::parse(first.as_str()), Some(first.clone()));
        assert!(first < second);
    }

    #[test]
    fn parse_refuses_other_prefixes_and_malformed_hex() {
        let target = TargetId::generate();
        assert_eq!(FilterId::parse(target.as_str()), None);
        assert_eq!(TargetId::parse("tgt_"), None);
        assert_eq!(
            TargetId::parse("tgt_0123456789ABCDEF0123456789abcdef"),
            None
        );
        assert_eq!(TargetId::parse("tgt_0123456789abcdef0123456789abcde"), None);
    }

    #[test]
    fn parse_owned_agrees_with_parse_and_gives_bad_text_back() {
        let target = TargetId::generate();
        assert_eq!(
            TargetId::parse_owned(target.as_str().to_owned()),
            Ok(target.clone())
        );
        assert_eq!(
            FilterId::parse_owned(target.as_str().to_owned()),
            Err(target.as_str().to_owned())
        );
        assert_eq!(TargetId::parse_owned("tgt_".into()), Err("tgt_".into()));
    }
}
