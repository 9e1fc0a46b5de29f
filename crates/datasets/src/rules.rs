//! What a dataset name, a shard digest and a committed manifest must be. Pure checks, used
//! by the service before anything is stored.

use trainyard_data::shard::ShardLayout;
use trainyard_data::{ColumnType, Field, Manifest, ShardRef};

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
    trainyard_data::schema::check_schema(&manifest.schema).map_err(|p| {
        DatasetError::invalid(
            format!("manifest.schema[{}].{}", p.index, p.part),
            p.message,
        )
    })?;
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

/// Holds `manifest.shards[index]` (`shard`) to what the stored shard's header says
/// (`layout`, `size` bytes): the same rows, bytes and columns (names, types, order: readers
/// append shards to a table of the manifest's schema). A manifest is the client's word;
/// without this a version could promise rows or columns no read can deliver.
pub fn check_shard(
    index: usize,
    shard: &ShardRef,
    layout: &ShardLayout,
    size: u64,
    schema: &[Field],
) -> Result<(), DatasetError> {
    let at = |part: &str| format!("manifest.shards[{index}].{part}");
    if shard.rows != layout.rows {
        return Err(DatasetError::invalid(
            at("rows"),
            format!(
                "shard {} holds {} rows, the manifest says {}",
                shard.sha256, layout.rows, shard.rows
            ),
        ));
    }
    if shard.bytes != size {
        return Err(DatasetError::invalid(
            at("bytes"),
            format!(
                "shard {} is {size} bytes, the manifest says {}",
                shard.sha256, shard.bytes
            ),
        ));
    }
    for (i, (want, got)) in schema.iter().zip(&layout.schema).enumerate() {
        let (part, what) = if want.name != got.name {
            ("name", format!("`{}`", got.name))
        } else if want.dtype == got.dtype {
            continue;
        } else if matches!(
            (&want.dtype, &got.dtype),
            (ColumnType::Float32 { .. }, ColumnType::Float32 { .. })
        ) {
            ("shape", got.dtype.to_string())
        } else {
            ("type", got.dtype.to_string())
        };
        return Err(DatasetError::invalid(
            format!("manifest.schema[{i}].{part}"),
            format!(
                "column {i} of shard {} (manifest.shards[{index}]) is {what} ({}), the \
                 manifest says `{}` ({})",
                shard.sha256, got.name, want.name, want.dtype
            ),
        ));
    }
    if schema.len() != layout.schema.len() {
        return Err(DatasetError::invalid(
            "manifest.schema",
            format!(
                "shard {} (manifest.shards[{index}]) has {} columns ({}), the manifest {}",
                shard.sha256,
                layout.schema.len(),
                columns(&layout.schema),
                schema.len()
            ),
        ));
    }
    Ok(())
}

fn columns(schema: &[Field]) -> String {
    schema
        .iter()
        .map(|f| format!("{} {}", f.name, f.dtype))
        .collect::<Vec<_>>()
        .join(", ")
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

    fn field_of(e: Result<(), DatasetError>) -> String {
        match e {
            Err(DatasetError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_manifest_is_held_to_its_shards_header() {
        let schema = vec![
            Field::new("a", ColumnType::Int64),
            Field::new("x", ColumnType::Float32 { shape: vec![2] }),
        ];
        let layout = ShardLayout {
            rows: 3,
            schema: schema.clone(),
        };
        let shard = ShardRef {
            sha256: "ab".repeat(32),
            rows: 3,
            bytes: 100,
        };
        check_shard(2, &shard, &layout, 100, &schema).unwrap();
        let rows = ShardRef {
            rows: 1000,
            ..shard.clone()
        };
        assert_eq!(
            field_of(check_shard(2, &rows, &layout, 100, &schema)),
            "manifest.shards[2].rows"
        );
        assert_eq!(
            field_of(check_shard(2, &shard, &layout, 101, &schema)),
            "manifest.shards[2].bytes"
        );
        let mut renamed = schema.clone();
        renamed[1].name = "y".into();
        assert_eq!(
            field_of(check_shard(0, &shard, &layout, 100, &renamed)),
            "manifest.schema[1].name"
        );
        let mut retyped = schema.clone();
        retyped[0].dtype = ColumnType::String;
        assert_eq!(
            field_of(check_shard(0, &shard, &layout, 100, &retyped)),
            "manifest.schema[0].type"
        );
        let mut reshaped = schema.clone();
        reshaped[1].dtype = ColumnType::Float32 { shape: vec![1, 2] };
        assert_eq!(
            field_of(check_shard(0, &shard, &layout, 100, &reshaped)),
            "manifest.schema[1].shape"
        );
        let reordered = vec![schema[1].clone(), schema[0].clone()];
        assert_eq!(
            field_of(check_shard(0, &shard, &layout, 100, &reordered)),
            "manifest.schema[0].name"
        );
        for fewer_or_more in [
            schema[..1].to_vec(),
            [schema.clone(), vec![Field::new("z", ColumnType::Bytes)]].concat(),
        ] {
            assert_eq!(
                field_of(check_shard(0, &shard, &layout, 100, &fewer_or_more)),
                "manifest.schema"
            );
        }
    }

    #[test]
    fn a_declared_shape_that_overflows_is_refused_by_field() {
        let max = u32::MAX as usize;
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "format": 1,
            "schema": [{"name": "label", "type": "int64"},
                       {"name": "x", "type": "float32", "shape": [max, max, max]}],
            "rows": 0, "shards": [], "stats": {}, "lineage": {}
        }))
        .unwrap();
        assert_eq!(
            field_of(check_manifest(&manifest)),
            "manifest.schema[1].shape"
        );
    }
}
