//! Cursor pagination on the wire: `?limit=&cursor=` in, `{"data", "nextCursor"}` out.
//!
//! A cursor is the URL-safe base64 of the last id of the previous page. Clients treat
//! it as opaque; Herald checks that it decodes to an id of the listed kind.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::store::{Page, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// Items per page when `limit` is absent.
const DEFAULT_LIMIT: u32 = 50;
/// Most items per page.
const MAX_LIMIT: u32 = 250;

/// The query parameters of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 250 (default 50).
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

impl ListParams {
    /// The page to read; `is_id` checks that the cursor names an id of the listed kind.
    pub fn page(&self, is_id: fn(&str) -> bool) -> Result<PageRequest, ApiError> {
        page_request(self.limit, self.cursor.as_deref(), is_id)
    }
}

/// The page asked for by `limit` and `cursor`; `is_id` checks the cursor's id kind.
pub fn page_request(
    limit: Option<u32>,
    cursor: Option<&str>,
    is_id: fn(&str) -> bool,
) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let after = cursor.map(|cursor| decode(cursor, is_id)).transpose()?;
    Ok(PageRequest { limit, after })
}

fn decode(cursor: &str, is_id: fn(&str) -> bool) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| is_id(id))
        .ok_or_else(|| {
            ApiError::InvalidQuery("cursor is not a cursor Herald issued for this list".into())
        })
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListOf<T> {
    /// The items, oldest first.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListOf<T> {
    /// Converts a store page, mapping each item to its wire form.
    pub fn from_page<M>(page: Page<M>, to_wire: impl Fn(M) -> T) -> Self {
        Self {
            data: page.items.into_iter().map(to_wire).collect(),
            next_cursor: page.next_after.map(|id| URL_SAFE_NO_PAD.encode(id)),
        }
    }
}
