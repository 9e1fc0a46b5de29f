//! Cursor pages over listings whose ids sort by time (UUIDv7): the `cursor` and `limit`
//! query fields checked the same way everywhere, and the next cursor cut from one row more
//! than the page.

use crate::ApiError;

/// The page size asked for (`default` when absent), or a 400 naming `limit`.
pub fn limit(asked: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = asked.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// A cursor must be an id a previous page gave (no odd bytes reach the database).
pub fn check_cursor(cursor: Option<&str>) -> Result<(), ApiError> {
    match cursor {
        Some(c) if !trainyard_core::id::is_valid_id(c) => Err(ApiError::invalid_field(
            "cursor",
            "use the `next_cursor` of a previous page",
        )),
        _ => Ok(()),
    }
}

/// Cuts `rows` (fetched as `limit + 1`) to the page; the next cursor is the id of its last
/// row when there was more.
pub fn cut<T>(rows: &mut Vec<T>, limit: u32, id: impl Fn(&T) -> &str) -> Option<String> {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| id(r).to_string())
    } else {
        None
    }
}
