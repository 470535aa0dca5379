//! Cursor pagination shared by every list endpoint: `{items, next_cursor}`.
//!
//! A cursor names the last row of a page by its sort key `(timestamp, id)`, so the next page
//! starts right after it however many rows were inserted meanwhile (offsets would shift).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::problem::ApiError;

/// Page size when the client names none.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 100;

/// The times a cursor may name, in Unix microseconds: 1970-01-01 up to 9999-12-31.
const CURSOR_MICROS: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999_999;

/// A position in a list sorted by `(at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The sort timestamp of the last row returned.
    pub at: DateTime<Utc>,
    /// Its id, breaking ties between equal timestamps.
    pub id: Uuid,
}

impl Cursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.at.timestamp_micros(), self.id))
    }

    /// Parses a cursor a client sent back.
    ///
    /// # Errors
    /// 400 when the text is not a cursor this API issued.
    pub fn decode(raw: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::bad_request("`cursor` is not a cursor from a previous page");
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (micros, id) = text.split_once('|').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        // Rows are stamped by PostgreSQL's clock, so a real cursor lies in the Unix era;
        // outside it PostgreSQL may not even hold the time (before 4713 BC) and would fail the
        // query.
        if !CURSOR_MICROS.contains(&micros) {
            return Err(invalid());
        }
        Ok(Self {
            at: DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
            id: id.parse().map_err(|_| invalid())?,
        })
    }
}

/// Checks a requested page size, applying the default.
///
/// # Errors
/// 400 when outside `1..=MAX_LIMIT`.
pub fn limit(requested: Option<u32>) -> Result<i64, ApiError> {
    match requested.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(i64::from(n)),
        _ => Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only signals that another page
    /// exists, and `key` gives the cursor of the last row kept.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|row| key(row).encode())
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let cursor = Cursor {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for raw in [
            "",
            "!!!",
            "bm90IGEgY3Vyc29y",
            &URL_SAFE_NO_PAD.encode("12|not-a-uuid"),
            // Times chrono can hold but PostgreSQL cannot (before 4713 BC): a 400, not a 500
            // from the query.
            &URL_SAFE_NO_PAD.encode(format!(
                "{}|{}",
                -8_000_000_000_000_000_000_i64,
                Uuid::nil()
            )),
            &URL_SAFE_NO_PAD.encode(format!("{}|{}", 8_000_000_000_000_000_000_i64, Uuid::nil())),
        ] {
            assert!(Cursor::decode(raw).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn limits_default_and_stay_in_bounds() {
        assert_eq!(limit(None).unwrap(), 20);
        assert_eq!(limit(Some(100)).unwrap(), 100);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(101)).is_err());
    }

    #[test]
    fn a_page_knows_whether_more_rows_follow() {
        let at = Utc::now();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let page = Page::from_rows(ids.clone(), 2, |id| Cursor { at, id: *id });
        assert_eq!(page.items, ids[..2]);
        assert_eq!(
            Cursor::decode(page.next_cursor.as_deref().unwrap())
                .unwrap()
                .id,
            ids[1]
        );
        let last = Page::from_rows(ids[..2].to_vec(), 2, |id| Cursor { at, id: *id });
        assert!(last.next_cursor.is_none());
    }
}
