//! Keyset pagination over time-ordered ids.

use uuid::Uuid;

/// The most items one page may hold.
pub const MAX_PAGE: u32 = 200;
/// The page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 50;

/// Which page to read: up to `limit` items after (older than) `cursor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// 1 to [`MAX_PAGE`].
    pub limit: u32,
    /// The id of the last item of the previous page.
    pub cursor: Option<Uuid>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_PAGE,
            cursor: None,
        }
    }
}

impl PageRequest {
    /// The first page of `limit` items (clamped to 1..=[`MAX_PAGE`]).
    pub fn first(limit: u32) -> Self {
        Self {
            limit: limit.clamp(1, MAX_PAGE),
            cursor: None,
        }
    }

    /// How many rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, MAX_PAGE)) + 1
    }
}

/// One page of items and the cursor of the next, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` to read the next page; `None` on the last page.
    pub next_cursor: Option<Uuid>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows, keyed by `id`.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest, id: impl Fn(&T) -> Uuid) -> Self {
        let limit = request.limit.clamp(1, MAX_PAGE) as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(&id)
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    /// The same page with every item mapped.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}
