//! Parquet import through the `parquet` crate's Arrow reader: record batches of
//! `shard_rows` rows become tables, so a file larger than memory imports in bounded memory.
//! Integers and booleans become `int64`, floats `float32`, strings `string`, binary
//! `bytes`, and fixed-length lists of numbers (every row the same length) `float32[n]`.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::schema::{ColumnType, Field};
use crate::table::{Column, Table};
use crate::writer::{ShardSink, VersionWriter, DEFAULT_SHARD_ROWS};
use crate::{DataError, Lineage, Manifest};

pub(crate) fn import_parquet(
    path: &Path,
    shard_rows: usize,
    sink: &mut dyn ShardSink,
) -> Result<Manifest, DataError> {
    let bad = |message: String| DataError::Parse {
        path: path.to_path_buf(),
        line: 0,
        message,
    };
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let shard_rows = if shard_rows == 0 {
        DEFAULT_SHARD_ROWS
    } else {
        shard_rows
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?
        .with_batch_size(shard_rows)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut schema: Option<Vec<Field>> = None;
    let mut writer: Option<VersionWriter> = None;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| bad(format!("after row {row}: {e}")))?;
        let fields = match &schema {
            Some(s) => s.clone(),
            None => {
                let s = fields_of(&batch).map_err(bad)?;
                schema = Some(s.clone());
                writer = Some(VersionWriter::new(s.clone(), shard_rows));
                s
            }
        };
        let columns = batch
            .columns()
            .iter()
            .zip(&fields)
            .map(|(array, field)| column(array, field, row))
            .collect::<Result<Vec<_>, String>>()
            .map_err(bad)?;
        row += batch.num_rows() as u64;
        let table = Table::new(fields, columns)?;
        writer
            .as_mut()
            .expect("set with the schema")
            .push(table, sink)?;
    }
    let writer = match writer {
        Some(w) => w,
        // An empty file still has a schema.
        None => {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
            let empty = RecordBatch::new_empty(builder.schema().clone());
            VersionWriter::new(fields_of(&empty).map_err(bad)?, shard_rows)
        }
    };
    writer.finish(
        Lineage {
            parent: None,
            source: Some(format!(
                "parquet:{}",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )),
            steps: Vec::new(),
        },
        sink,
    )
}

fn fields_of(batch: &RecordBatch) -> Result<Vec<Field>, String> {
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, array)| {
            let dtype = match f.data_type() {
                t if is_integer(t) || *t == DataType::Boolean => ColumnType::Int64,
                DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::f32_scalar(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ColumnType::Bytes,
                DataType::FixedSizeList(inner, n) if is_number(inner.data_type()) => {
                    ColumnType::Float32 { shape: vec![*n as usize] }
                }
                DataType::List(inner) | DataType::LargeList(inner) if is_number(inner.data_type()) => {
                    // Variable-length lists must all have one length: take the first row's.
                    let n = list_len(array, 0).unwrap_or(0);
                    ColumnType::Float32 { shape: vec![n] }
                }
                other => {
                    return Err(format!(
                        "column `{}` has Parquet/Arrow type {other}, which is not imported (numbers, booleans, strings, binary and lists of numbers are)",
                        f.name()
                    ))
                }
            };
            Ok(Field::new(f.name().clone(), dtype))
        })
        .collect()
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

fn is_number(t: &DataType) -> bool {
    is_integer(t) || matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn list_len(array: &ArrayRef, row: usize) -> Option<usize> {
    match array.data_type() {
        DataType::List(_) => Some(array.as_list::<i32>().value(row).len()),
        DataType::LargeList(_) => Some(array.as_list::<i64>().value(row).len()),
        _ => None,
    }
}

/// Numbers of any width as f64, nulls as NaN.
fn numbers(array: &dyn Array) -> Result<Vec<f64>, String> {
    macro_rules! prim {
        ($t:ty) => {
            array
                .as_primitive::<$t>()
                .iter()
                .map(|v| v.map_or(f64::NAN, |x| x as f64))
                .collect()
        };
    }
    Ok(match array.data_type() {
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Float16 => array
            .as_primitive::<Float16Type>()
            .iter()
            .map(|v| v.map_or(f64::NAN, |x| x.to_f64()))
            .collect(),
        other => return Err(format!("expected numbers, found {other}")),
    })
}

fn column(array: &ArrayRef, field: &Field, first_row: u64) -> Result<Column, String> {
    let name = &field.name;
    let null_at = |array: &dyn Array| {
        (0..array.len())
            .find(|&i| array.is_null(i))
            .map(|i| first_row + i as u64)
    };
    match &field.dtype {
        ColumnType::Int64 => {
            if let Some(r) = null_at(array.as_ref()) {
                return Err(format!(
                    "column `{name}` is null at row {r}; an int64 column cannot hold nulls (fill or cast them in the source)"
                ));
            }
            if array.data_type() == &DataType::Boolean {
                return Ok(Column::Int64(
                    array
                        .as_boolean()
                        .iter()
                        .map(|v| i64::from(v == Some(true)))
                        .collect(),
                ));
            }
            if array.data_type() == &DataType::UInt64 {
                let values = array.as_primitive::<UInt64Type>();
                return values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        i64::try_from(v.unwrap_or(0)).map_err(|_| {
                            format!(
                                "column `{name}` row {}: too large for int64",
                                first_row + i as u64
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Column::Int64);
            }
            Ok(Column::Int64(
                numbers(array.as_ref())?
                    .into_iter()
                    .map(|v| v as i64)
                    .collect(),
            ))
        }
        ColumnType::Float32 { shape } if shape.is_empty() => Ok(Column::Float32 {
            shape: vec![],
            values: numbers(array.as_ref())?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        }),
        ColumnType::Float32 { shape } => {
            let n = shape[0];
            let mut values = Vec::with_capacity(array.len() * n);
            for row in 0..array.len() {
                if array.is_null(row) {
                    return Err(format!(
                        "column `{name}` is null at row {}",
                        first_row + row as u64
                    ));
                }
                let item: ArrayRef = match array.data_type() {
                    DataType::FixedSizeList(..) => array.as_fixed_size_list().value(row),
                    DataType::List(_) => array.as_list::<i32>().value(row),
                    _ => array.as_list::<i64>().value(row),
                };
                if item.len() != n {
                    return Err(format!(
                        "column `{name}` row {}: a list of {} numbers, earlier rows have {n}",
                        first_row + row as u64,
                        item.len()
                    ));
                }
                values.extend(numbers(item.as_ref())?.into_iter().map(|v| v as f32));
            }
            Ok(Column::Float32 {
                shape: shape.clone(),
                values,
            })
        }
        ColumnType::String => {
            let strings: Vec<String> = match array.data_type() {
                DataType::Utf8 => array
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or("").to_string())
                    .collect(),
                DataType::LargeUtf8 => array
                    .as_string::<i64>()
                    .iter()
                    .map(|v| v.unwrap_or("").to_string())
                    .collect(),
                _ => array
                    .as_string_view()
                    .iter()
                    .map(|v| v.unwrap_or("").to_string())
                    .collect(),
            };
            Ok(Column::String(strings))
        }
        ColumnType::Bytes => {
            let bytes: Vec<Vec<u8>> = match array.data_type() {
                DataType::Binary => array
                    .as_binary::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or(&[]).to_vec())
                    .collect(),
                DataType::LargeBinary => array
                    .as_binary::<i64>()
                    .iter()
                    .map(|v| v.unwrap_or(&[]).to_vec())
                    .collect(),
                _ => array
                    .as_binary_view()
                    .iter()
                    .map(|v| v.unwrap_or(&[]).to_vec())
                    .collect(),
            };
            Ok(Column::Bytes(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::MemStore;
    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::{BooleanArray, Float64Array, Int32Array, StringArray};
    use parquet::arrow::ArrowWriter;
    use std::sync::Arc;

    fn write(path: &Path, batch: RecordBatch) {
        let file = File::create(path).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn types_map_and_values_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut list = FixedSizeListBuilder::new(Float32Builder::new(), 2);
        for i in 0..3 {
            list.values().append_value(i as f32);
            list.values().append_value(i as f32 + 0.5);
            list.append(true);
        }
        let batch = RecordBatch::try_from_iter([
            (
                "label",
                Arc::new(Int32Array::from(vec![1, 0, 2])) as ArrayRef,
            ),
            (
                "x",
                Arc::new(Float64Array::from(vec![0.5, f64::NAN, 2.0])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            (
                "ok",
                Arc::new(BooleanArray::from(vec![true, false, true])) as ArrayRef,
            ),
            ("v", Arc::new(list.finish()) as ArrayRef),
        ])
        .unwrap();
        write(&path, batch);
        let mut store = MemStore::new();
        let m = import_parquet(&path, 2, &mut store).unwrap();
        assert_eq!(m.rows, 3);
        assert_eq!(m.shards.len(), 2);
        let types: Vec<_> = m
            .schema
            .iter()
            .map(|f| (f.name.as_str(), f.dtype.clone()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("label", ColumnType::Int64),
                ("x", ColumnType::f32_scalar()),
                ("name", ColumnType::String),
                ("ok", ColumnType::Int64),
                ("v", ColumnType::Float32 { shape: vec![2] }),
            ]
        );
        let table = crate::read_table(&m, &store).unwrap();
        assert_eq!(table.column("label"), Some(&Column::Int64(vec![1, 0, 2])));
        assert_eq!(table.column("ok"), Some(&Column::Int64(vec![1, 0, 1])));
        match table.column("v").unwrap() {
            Column::Float32 { values, .. } => {
                assert_eq!(values, &vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.lineage.source.as_deref(), Some("parquet:t.parquet"));
    }

    #[test]
    fn nulls_in_integers_and_garbage_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.parquet");
        let batch = RecordBatch::try_from_iter([(
            "count",
            Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
        )])
        .unwrap();
        write(&path, batch);
        let err = import_parquet(&path, 0, &mut MemStore::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `count` is null at row 1"), "{err}");

        let junk = dir.path().join("junk.parquet");
        std::fs::write(&junk, b"not parquet at all").unwrap();
        let err = import_parquet(&junk, 0, &mut MemStore::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a readable Parquet file"), "{err}");
    }
}
