//! List pagination on the wire: `?limit=&cursor=` in, `{items, nextCursor}` out.

use flowline_store::page::{DEFAULT_PAGE, MAX_PAGE, Page, PageRequest};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageBody<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> From<Page<T>> for PageBody<T> {
    fn from(page: Page<T>) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        }
    }
}

/// Checks `limit` (1 to 200, default 50) and `cursor` (a previous page's `nextCursor`).
pub fn page_request(limit: Option<u32>, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let cursor = cursor
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "cursor must be a nextCursor this API returned",
                )
            })
        })
        .transpose()?;
    Ok(PageRequest { limit, cursor })
}

/// Pagination of a list with no other filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// A previous page's `nextCursor`.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        page_request(self.limit, self.cursor.as_deref())
    }
}
