//! Small helpers for reading rows and binding lists, shared by the tracking tables.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::entities::KeyValue;
use crate::TrackingError;

pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &str) -> Result<T, TrackingError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    Ok(row.try_get(column)?)
}

/// `$from, $from+1, …` for `n` values (for `IN (…)` lists).
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn key_values(rows: &[AnyRow]) -> Result<Vec<KeyValue>, TrackingError> {
    rows.iter()
        .map(|r| {
            Ok(KeyValue::new(
                get::<String>(r, "key")?,
                get::<String>(r, "value")?,
            ))
        })
        .collect()
}

/// Largest number of values bound in one `IN (…)` list (SQLite allows 32766 variables).
pub(crate) const IN_CHUNK: usize = 500;
