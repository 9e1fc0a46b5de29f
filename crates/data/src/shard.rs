//! Binary shard encoding.
//!
//! Layout: magic `b"TYSHARD1"`, a little-endian `u32` header length, a JSON
//! header `{"rows": N, "columns": [{"name", "dtype", "offset", "len"}]}`, then
//! the column buffers back to back (offsets are relative to the end of the
//! header). Float32/Int64 buffers are raw little-endian values; String/Bytes
//! buffers are `rows + 1` little-endian `u64` offsets followed by the data.
//!
//! Why not Parquet/Arrow IPC: the format is tiny, dependency-free, easy to
//! verify byte for byte, and a column can be decoded on its own (the loader
//! only decodes the columns it needs). Encoding is deterministic, so equal
//! tables give equal shards and equal content addresses. Decoding treats its
//! input as untrusted: every length is checked before use and any damage is
//! reported as [`DataError::Corrupt`], never a panic.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schema::{ColumnType, Field};
use crate::table::{Column, Table};
use crate::DataError;

/// The first eight bytes of every shard.
pub const MAGIC: &[u8; 8] = b"TYSHARD1";

#[derive(Serialize, Deserialize)]
struct Header {
    rows: u64,
    columns: Vec<ColumnHeader>,
}

#[derive(Serialize, Deserialize)]
struct ColumnHeader {
    name: String,
    dtype: ColumnType,
    offset: u64,
    len: u64,
}

impl ColumnHeader {
    /// Where this column's buffer ends: it must start where the previous one ended and lie
    /// within the `data_len` bytes after the header.
    fn buffer_end(&self, expected_offset: u64, data_len: u64) -> Result<u64, DataError> {
        if self.offset != expected_offset {
            return Err(corrupt(format!("column `{}`: misplaced buffer", self.name)));
        }
        self.offset
            .checked_add(self.len)
            .filter(|&e| e <= data_len)
            .ok_or_else(|| corrupt(format!("column `{}`: buffer out of bounds", self.name)))
    }
}

/// Lowercase hex SHA-256 of `bytes`: the content address of a shard.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn encode_var<'a>(items: impl Iterator<Item = &'a [u8]> + Clone, out: &mut Vec<u8>) {
    let mut off = 0u64;
    out.extend_from_slice(&off.to_le_bytes());
    for it in items.clone() {
        off += it.len() as u64;
        out.extend_from_slice(&off.to_le_bytes());
    }
    for it in items {
        out.extend_from_slice(it);
    }
}

/// Encodes a table. The table is assumed valid (see [`Table::validate`]).
pub fn encode(table: &Table) -> Vec<u8> {
    let mut data = Vec::new();
    let mut cols = Vec::with_capacity(table.columns.len());
    for (field, col) in table.schema.iter().zip(&table.columns) {
        let start = data.len();
        match col {
            Column::Float32 { values, .. } => {
                data.reserve(values.len() * 4);
                for v in values {
                    data.extend_from_slice(&v.to_le_bytes());
                }
            }
            Column::Int64(values) => {
                data.reserve(values.len() * 8);
                for v in values {
                    data.extend_from_slice(&v.to_le_bytes());
                }
            }
            Column::String(values) => encode_var(values.iter().map(|s| s.as_bytes()), &mut data),
            Column::Bytes(values) => encode_var(values.iter().map(|b| b.as_slice()), &mut data),
        }
        cols.push(ColumnHeader {
            name: field.name.clone(),
            dtype: field.dtype.clone(),
            offset: start as u64,
            len: (data.len() - start) as u64,
        });
    }
    let header = serde_json::to_vec(&Header {
        rows: table.rows() as u64,
        columns: cols,
    })
    .expect("shard header serializes");
    let mut out = Vec::with_capacity(12 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

/// Decodes a whole shard.
pub fn decode(bytes: &[u8]) -> Result<Table, DataError> {
    decode_inner(bytes, None)
}

/// Decodes only the named columns (in shard order). The whole header is still
/// validated; unknown names are an error.
pub fn decode_columns(bytes: &[u8], names: &[&str]) -> Result<Table, DataError> {
    decode_inner(bytes, Some(names))
}

fn corrupt(msg: impl Into<String>) -> DataError {
    DataError::Corrupt(format!("shard: {}", msg.into()))
}

/// Largest header [`check_layout`] reads: a shard's header is a few hundred bytes per column.
pub const MAX_HEADER_BYTES: usize = 16 << 20;

/// Bytes of a shard's start that [`check_layout`] needs: the magic, the header length and
/// the header. `None` until `start` holds the first 12 bytes.
pub fn layout_prefix_len(start: &[u8]) -> Option<usize> {
    let hlen = u32::from_le_bytes(start.get(8..12)?.try_into().ok()?) as usize;
    Some(12 + hlen.min(MAX_HEADER_BYTES))
}

/// What a shard's header says it holds, once [`check_layout`] found it consistent.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardLayout {
    pub rows: u64,
    /// Its columns, in their order (a valid schema).
    pub schema: Vec<Field>,
}

/// Checks a shard's layout from its first bytes and total length, without the column data:
/// the magic, the header (a valid schema), every column buffer in place and of the length
/// its type and the row count give (variable-length columns: at least their offsets),
/// nothing trailing. What an upload can check while streaming, and what a commit reads to
/// hold a manifest to its shards; values are checked where shards are decoded.
pub fn check_layout(start: &[u8], total_len: u64) -> Result<ShardLayout, DataError> {
    if total_len < 12 || start.len() < 12 {
        return Err(corrupt(format!("too short ({total_len} bytes)")));
    }
    if &start[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let hlen = u32::from_le_bytes(start[8..12].try_into().unwrap()) as usize;
    if hlen > MAX_HEADER_BYTES {
        return Err(corrupt(format!(
            "header of {hlen} bytes is over the limit of {MAX_HEADER_BYTES}"
        )));
    }
    let header_end = 12u64 + hlen as u64;
    if header_end > total_len || start.len() < 12 + hlen {
        return Err(corrupt(format!(
            "header length {hlen} exceeds remaining {} bytes",
            total_len - 12
        )));
    }
    let header: Header = serde_json::from_slice(&start[12..12 + hlen])
        .map_err(|e| corrupt(format!("header: {e}")))?;
    let data_len = total_len - header_end;
    if header.columns.is_empty() && header.rows != 0 {
        return Err(corrupt("rows without columns"));
    }
    let mut expected_offset = 0u64;
    for ch in &header.columns {
        expected_offset = ch.buffer_end(expected_offset, data_len)?;
        let bad_len = || {
            corrupt(format!(
                "column `{}`: wrong buffer length {}",
                ch.name, ch.len
            ))
        };
        match &ch.dtype {
            ColumnType::Float32 { shape } => {
                let per = shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                    .filter(|&p| p > 0)
                    .ok_or_else(|| corrupt(format!("column `{}`: bad shape {shape:?}", ch.name)))?;
                let want = header.rows.checked_mul(per).and_then(|n| n.checked_mul(4));
                if want != Some(ch.len) {
                    return Err(bad_len());
                }
            }
            ColumnType::Int64 => {
                if header.rows.checked_mul(8) != Some(ch.len) {
                    return Err(bad_len());
                }
            }
            ColumnType::String | ColumnType::Bytes => {
                let offsets = header.rows.checked_add(1).and_then(|n| n.checked_mul(8));
                if offsets.is_none_or(|o| o > ch.len) {
                    return Err(bad_len());
                }
            }
        }
    }
    if expected_offset != data_len {
        return Err(corrupt(format!(
            "{} trailing bytes",
            data_len - expected_offset
        )));
    }
    let schema: Vec<Field> = header
        .columns
        .into_iter()
        .map(|c| Field::new(c.name, c.dtype))
        .collect();
    // What decoding checks too (`Table::validate`): names present and distinct.
    crate::schema::validate_schema(&schema).map_err(|e| corrupt(e.to_string()))?;
    Ok(ShardLayout {
        rows: header.rows,
        schema,
    })
}

fn decode_inner(bytes: &[u8], only: Option<&[&str]>) -> Result<Table, DataError> {
    if bytes.len() < 12 {
        return Err(corrupt(format!("too short ({} bytes)", bytes.len())));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let hlen = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let rest = &bytes[12..];
    if hlen > rest.len() {
        return Err(corrupt(format!(
            "header length {hlen} exceeds remaining {} bytes",
            rest.len()
        )));
    }
    let header: Header =
        serde_json::from_slice(&rest[..hlen]).map_err(|e| corrupt(format!("header: {e}")))?;
    let data = &rest[hlen..];
    let rows = usize::try_from(header.rows).map_err(|_| corrupt("row count too large"))?;
    if header.columns.is_empty() && rows != 0 {
        return Err(corrupt("rows without columns"));
    }
    if let Some(names) = only {
        for n in names {
            if !header.columns.iter().any(|c| c.name == *n) {
                return Err(DataError::NotFound(format!("column `{n}` in shard")));
            }
        }
    }
    let mut expected_offset = 0u64;
    let mut schema = Vec::new();
    let mut columns = Vec::new();
    for ch in &header.columns {
        let end = ch.buffer_end(expected_offset, data.len() as u64)?;
        expected_offset = end;
        let buf = &data[ch.offset as usize..end as usize];
        let want = only.is_none_or(|names| names.contains(&ch.name.as_str()));
        let col = decode_column(&ch.name, &ch.dtype, rows, buf, want)?;
        if let Some(col) = col {
            schema.push(Field::new(ch.name.clone(), ch.dtype.clone()));
            columns.push(col);
        }
    }
    if expected_offset != data.len() as u64 {
        return Err(corrupt(format!(
            "{} trailing bytes",
            data.len() as u64 - expected_offset
        )));
    }
    let table = Table { schema, columns };
    table.validate().map_err(|e| corrupt(e.to_string()))?;
    Ok(table)
}

/// Validates one column buffer and, if `want`, converts it.
fn decode_column(
    name: &str,
    dtype: &ColumnType,
    rows: usize,
    buf: &[u8],
    want: bool,
) -> Result<Option<Column>, DataError> {
    let bad_len = || {
        corrupt(format!(
            "column `{name}`: wrong buffer length {}",
            buf.len()
        ))
    };
    match dtype {
        ColumnType::Float32 { shape } => {
            let per = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&p| p > 0)
                .ok_or_else(|| corrupt(format!("column `{name}`: bad shape {shape:?}")))?;
            let n = rows
                .checked_mul(per)
                .and_then(|n| n.checked_mul(4))
                .ok_or_else(bad_len)?;
            if n != buf.len() {
                return Err(bad_len());
            }
            Ok(want.then(|| Column::Float32 {
                shape: shape.clone(),
                values: buf
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            }))
        }
        ColumnType::Int64 => {
            if rows.checked_mul(8) != Some(buf.len()) {
                return Err(bad_len());
            }
            Ok(want.then(|| {
                Column::Int64(
                    buf.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                )
            }))
        }
        ColumnType::String | ColumnType::Bytes => {
            let olen = rows
                .checked_add(1)
                .and_then(|n| n.checked_mul(8))
                .filter(|&n| n <= buf.len())
                .ok_or_else(bad_len)?;
            let (offs, body) = buf.split_at(olen);
            let offs: Vec<u64> = offs
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            if offs[0] != 0
                || offs[rows] != body.len() as u64
                || offs.windows(2).any(|w| w[0] > w[1])
            {
                return Err(corrupt(format!("column `{name}`: bad offsets")));
            }
            if !want {
                if matches!(dtype, ColumnType::String) && std::str::from_utf8(body).is_err() {
                    return Err(corrupt(format!("column `{name}`: invalid UTF-8")));
                }
                return Ok(None);
            }
            let items = offs.windows(2).map(|w| &body[w[0] as usize..w[1] as usize]);
            if matches!(dtype, ColumnType::String) {
                let mut out = Vec::with_capacity(rows);
                for (i, it) in items.enumerate() {
                    let s = std::str::from_utf8(it)
                        .map_err(|_| corrupt(format!("column `{name}`, row {i}: invalid UTF-8")))?;
                    out.push(s.to_owned());
                }
                Ok(Some(Column::String(out)))
            } else {
                Ok(Some(Column::Bytes(items.map(<[u8]>::to_vec).collect())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table::new(
            vec![
                Field::new("x", ColumnType::Float32 { shape: vec![2, 2] }),
                Field::new("y", ColumnType::Int64),
                Field::new("s", ColumnType::String),
                Field::new("b", ColumnType::Bytes),
            ],
            vec![
                Column::Float32 {
                    shape: vec![2, 2],
                    values: (0..8).map(|v| v as f32 * 0.5).collect(),
                },
                Column::Int64(vec![-1, i64::MAX]),
                Column::String(vec!["héllo".into(), String::new()]),
                Column::Bytes(vec![vec![0, 1, 2], vec![255]]),
            ],
        )
        .unwrap()
    }

    #[test]
    fn layout_check_agrees_with_decode_on_structure() {
        let bytes = encode(&sample());
        let prefix = layout_prefix_len(&bytes).unwrap();
        let layout = check_layout(&bytes[..prefix], bytes.len() as u64).unwrap();
        assert_eq!(layout.rows, 2);
        assert_eq!(layout.schema, sample().schema);
        // Cut short, grown, or with a wrong magic: refused, as decode refuses them.
        for len in [
            0,
            11,
            prefix as u64,
            bytes.len() as u64 - 1,
            bytes.len() as u64 + 1,
        ] {
            assert!(
                check_layout(&bytes[..prefix.min(len as usize)], len).is_err(),
                "{len}"
            );
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(check_layout(&bad[..prefix], bad.len() as u64).is_err());
        // A header length past the limit is refused before anything is read.
        let mut huge = bytes[..12].to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(layout_prefix_len(&huge), Some(12 + MAX_HEADER_BYTES));
        assert!(check_layout(&huge, u64::MAX).is_err());
        assert!(check_layout(b"garbage garbage", 15).is_err());
    }

    /// A shard with a hand-written header and `data` after it.
    fn raw_shard(header: serde_json::Value, data: &[u8]) -> Vec<u8> {
        let header = serde_json::to_vec(&header).unwrap();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn layout_check_refuses_overflowing_shapes_and_repeated_columns() {
        let max = u32::MAX as u64;
        for (rows, shape) in [(0, vec![max, max, max]), (1, vec![max, max]), (0, vec![0])] {
            let bytes = raw_shard(
                serde_json::json!({"rows": rows, "columns": [
                    {"name": "x", "dtype": {"type": "float32", "shape": shape}, "offset": 0, "len": 0}]}),
                &[],
            );
            let err = check_layout(&bytes, bytes.len() as u64).unwrap_err();
            assert!(err.to_string().contains("column `x`"), "{shape:?}: {err}");
            assert!(decode(&bytes).is_err(), "{shape:?}");
        }
        let twice = raw_shard(
            serde_json::json!({"rows": 1, "columns": [
                {"name": "a", "dtype": {"type": "int64"}, "offset": 0, "len": 8},
                {"name": "a", "dtype": {"type": "int64"}, "offset": 8, "len": 8}]}),
            &[0; 16],
        );
        let err = check_layout(&twice, twice.len() as u64).unwrap_err();
        assert!(err.to_string().contains("duplicate column"), "{err}");
        assert!(decode(&twice).is_err());
    }

    #[test]
    fn round_trip_and_projection() {
        let t = sample();
        let bytes = encode(&t);
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(decode(&bytes).unwrap(), t);
        assert_eq!(encode(&t), bytes, "encoding is deterministic");
        let p = decode_columns(&bytes, &["s", "y"]).unwrap();
        assert_eq!(p.schema.len(), 2);
        assert_eq!(p.column("y"), t.column("y"));
        assert_eq!(p.column("s"), t.column("s"));
        assert!(decode_columns(&bytes, &["nope"]).is_err());
        let empty = Table::empty(&t.schema);
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
        assert_eq!(sha256_hex(b"abc").len(), 64);
    }

    #[test]
    fn truncated_or_corrupt_is_rejected() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..n]), Err(DataError::Corrupt(_))),
                "truncated to {n} accepted"
            );
        }
        // Flip every byte in turn: must never panic; damage to the header,
        // lengths or offsets must be an error.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xA5;
            let _ = decode(&b);
        }
        let mut b = bytes.clone();
        b[0] = b'X';
        assert!(decode(&b).is_err());
        let mut b = bytes.clone();
        b.push(0);
        assert!(decode(&b).is_err(), "trailing bytes accepted");
        let mut b = bytes;
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&b).is_err());
    }
}
