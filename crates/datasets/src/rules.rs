//! What a dataset name, a shard digest and a committed manifest must be. Pure checks, used
//! by the service before anything is stored.

use trainyard_data::Manifest;

use crate::DatasetError;

/// Dataset names: letters, digits, `-`, `_`, `.`; up to 128 characters, not starting with
/// `.` (names become parts of paths in caches and exports).
pub fn check_name(name: &str) -> Result<(), DatasetError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(DatasetError::invalid(
            "name",
            "a dataset name is 1-128 letters, digits, '-', '_' or '.', not starting with '.'",
        ))
    }
}

/// A shard is named by the 64 lower-case hex digits of its SHA-256.
pub fn is_sha256(sha: &str) -> bool {
    sha.len() == 64
        && sha
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

pub fn check_sha(sha: &str) -> Result<(), DatasetError> {
    if is_sha256(sha) {
        Ok(())
    } else {
        Err(DatasetError::invalid(
            "sha256",
            "a shard is named by the 64 lower-case hex digits of its SHA-256",
        ))
    }
}

/// What a committed manifest must hold together: a known format, a valid schema,
/// statistics only for its columns, shard row counts that add up, and shard digests.
pub fn check_manifest(manifest: &Manifest) -> Result<(), DatasetError> {
    if manifest.format != trainyard_data::manifest::FORMAT {
        return Err(DatasetError::invalid(
            "manifest.format",
            format!(
                "this server reads format {}",
                trainyard_data::manifest::FORMAT
            ),
        ));
    }
    trainyard_data::schema::validate_schema(&manifest.schema)
        .map_err(|e| DatasetError::invalid("manifest.schema", e.to_string()))?;
    let shard_rows = manifest
        .shards
        .iter()
        .try_fold(0u64, |sum, s| sum.checked_add(s.rows));
    if shard_rows != Some(manifest.rows) {
        return Err(DatasetError::invalid(
            "manifest.rows",
            match shard_rows {
                Some(rows) => format!(
                    "the shards hold {rows} rows, the manifest says {}",
                    manifest.rows
                ),
                None => "the shards' row counts overflow".to_string(),
            },
        ));
    }
    if manifest
        .shards
        .iter()
        .try_fold(0u64, |sum, s| sum.checked_add(s.bytes))
        .is_none_or(|b| b > i64::MAX as u64)
    {
        return Err(DatasetError::invalid(
            "manifest.shards",
            "the shards' byte counts overflow",
        ));
    }
    if manifest.rows > i64::MAX as u64 {
        return Err(DatasetError::invalid("manifest.rows", "too many rows"));
    }
    if let Some(name) = manifest.stats.keys().find(|k| manifest.field(k).is_none()) {
        return Err(DatasetError::invalid(
            format!("manifest.stats.{name}"),
            "statistics for a column the schema does not have",
        ));
    }
    if let Some(i) = manifest.shards.iter().position(|s| !is_sha256(&s.sha256)) {
        return Err(DatasetError::invalid(
            format!("manifest.shards[{i}].sha256"),
            "not a SHA-256 hex digest",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_digests() {
        for good in ["digits", "a.b-c_9", "x"] {
            check_name(good).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(matches!(
                check_name(bad),
                Err(DatasetError::Invalid { ref field, .. }) if field == "name"
            ));
        }
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"A".repeat(64)));
        assert!(!is_sha256(&"a".repeat(63)));
        assert!(!is_sha256(&format!("{}/", "a".repeat(63))));
    }
}
