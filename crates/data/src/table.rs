//! In-memory columnar chunks of rows.
//!
//! A `Table` is the unit everything else passes around: importers produce
//! them, the writer cuts them into shards, steps transform them and the loader
//! reads rows out of them. Columns are plain `Vec`s so that shard encoding is a
//! straight copy and per-column operations stay simple.

use crate::schema::{validate_schema, ColumnType, Field};
use crate::DataError;

/// One column's values. `Float32` stores rows back to back, each of
/// `shape.iter().product()` elements.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    Float32 { shape: Vec<usize>, values: Vec<f32> },
    Int64(Vec<i64>),
    String(Vec<String>),
    Bytes(Vec<Vec<u8>>),
}

impl Column {
    /// An empty column of the given type.
    pub fn empty(dtype: &ColumnType) -> Column {
        match dtype {
            ColumnType::Float32 { shape } => Column::Float32 {
                shape: shape.clone(),
                values: Vec::new(),
            },
            ColumnType::Int64 => Column::Int64(Vec::new()),
            ColumnType::String => Column::String(Vec::new()),
            ColumnType::Bytes => Column::Bytes(Vec::new()),
        }
    }

    pub fn dtype(&self) -> ColumnType {
        match self {
            Column::Float32 { shape, .. } => ColumnType::Float32 {
                shape: shape.clone(),
            },
            Column::Int64(_) => ColumnType::Int64,
            Column::String(_) => ColumnType::String,
            Column::Bytes(_) => ColumnType::Bytes,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Float32 { shape, values } => crate::schema::shape_elements(shape)
                .and_then(|per| values.len().checked_div(per))
                .unwrap_or(0),
            Column::Int64(v) => v.len(),
            Column::String(v) => v.len(),
            Column::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `start..end`. Panics if out of range, like slice indexing.
    pub fn slice(&self, start: usize, end: usize) -> Column {
        match self {
            Column::Float32 { shape, values } => {
                let per: usize = shape.iter().product();
                Column::Float32 {
                    shape: shape.clone(),
                    values: values[start * per..end * per].to_vec(),
                }
            }
            Column::Int64(v) => Column::Int64(v[start..end].to_vec()),
            Column::String(v) => Column::String(v[start..end].to_vec()),
            Column::Bytes(v) => Column::Bytes(v[start..end].to_vec()),
        }
    }

    /// The given rows, in the given order (repeats allowed). Panics if an
    /// index is out of range.
    pub fn take(&self, indices: &[usize]) -> Column {
        match self {
            Column::Float32 { shape, values } => {
                let per: usize = shape.iter().product();
                let mut out = Vec::with_capacity(indices.len() * per);
                for &i in indices {
                    out.extend_from_slice(&values[i * per..(i + 1) * per]);
                }
                Column::Float32 {
                    shape: shape.clone(),
                    values: out,
                }
            }
            Column::Int64(v) => Column::Int64(indices.iter().map(|&i| v[i]).collect()),
            Column::String(v) => Column::String(indices.iter().map(|&i| v[i].clone()).collect()),
            Column::Bytes(v) => Column::Bytes(indices.iter().map(|&i| v[i].clone()).collect()),
        }
    }

    /// Appends `other`'s rows; both must have the same type.
    pub fn append(&mut self, other: &Column) -> Result<(), DataError> {
        match (self, other) {
            (
                Column::Float32 { shape, values },
                Column::Float32 {
                    shape: s2,
                    values: v2,
                },
            ) if shape == s2 => values.extend_from_slice(v2),
            (Column::Int64(a), Column::Int64(b)) => a.extend_from_slice(b),
            (Column::String(a), Column::String(b)) => a.extend_from_slice(b),
            (Column::Bytes(a), Column::Bytes(b)) => a.extend_from_slice(b),
            (a, b) => {
                return Err(DataError::Schema(format!(
                    "cannot append a {} column to a {} column",
                    b.dtype(),
                    a.dtype()
                )))
            }
        }
        Ok(())
    }
}

/// A chunk of rows: `schema[i]` describes `columns[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub schema: Vec<Field>,
    pub columns: Vec<Column>,
}

impl Table {
    /// Builds and validates a table.
    pub fn new(schema: Vec<Field>, columns: Vec<Column>) -> Result<Table, DataError> {
        let t = Table { schema, columns };
        t.validate()?;
        Ok(t)
    }

    /// A table with the schema and no rows.
    pub fn empty(schema: &[Field]) -> Table {
        Table {
            schema: schema.to_vec(),
            columns: schema.iter().map(|f| Column::empty(&f.dtype)).collect(),
        }
    }

    /// Checks names, that each column matches its field, that float buffers
    /// hold whole rows and that all columns have the same number of rows.
    pub fn validate(&self) -> Result<(), DataError> {
        validate_schema(&self.schema)?;
        if self.schema.len() != self.columns.len() {
            return Err(DataError::Schema(format!(
                "{} fields but {} columns",
                self.schema.len(),
                self.columns.len()
            )));
        }
        let mut rows = None;
        for (f, c) in self.schema.iter().zip(&self.columns) {
            if c.dtype() != f.dtype {
                return Err(DataError::Schema(format!(
                    "column `{}` is declared {} but holds {}",
                    f.name,
                    f.dtype,
                    c.dtype()
                )));
            }
            if let Column::Float32 { shape, values } = c {
                let per: usize = shape.iter().product();
                if values.len() % per != 0 {
                    return Err(DataError::Schema(format!(
                        "column `{}`: {} values is not a whole number of rows of {}",
                        f.name,
                        values.len(),
                        f.dtype
                    )));
                }
            }
            let n = c.len();
            match rows {
                None => rows = Some(n),
                Some(r) if r != n => {
                    return Err(DataError::Schema(format!(
                        "column `{}` has {n} rows, expected {r}",
                        f.name
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Number of rows (0 for a table without columns).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Column::len)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.schema.iter().position(|f| f.name == name)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.index_of(name).map(|i| &self.columns[i])
    }

    pub fn column_mut(&mut self, name: &str) -> Option<&mut Column> {
        self.index_of(name).map(move |i| &mut self.columns[i])
    }

    /// Rows `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Table {
        Table {
            schema: self.schema.clone(),
            columns: self.columns.iter().map(|c| c.slice(start, end)).collect(),
        }
    }

    /// The given rows in the given order.
    pub fn take(&self, indices: &[usize]) -> Table {
        Table {
            schema: self.schema.clone(),
            columns: self.columns.iter().map(|c| c.take(indices)).collect(),
        }
    }

    /// Appends the rows of a table with the same schema.
    pub fn append(&mut self, other: &Table) -> Result<(), DataError> {
        if self.schema != other.schema {
            return Err(DataError::Schema(format!(
                "schemas differ: {} vs {}",
                describe(&self.schema),
                describe(&other.schema)
            )));
        }
        for (a, b) in self.columns.iter_mut().zip(&other.columns) {
            a.append(b)?;
        }
        Ok(())
    }

    /// Concatenates tables with identical schemas; needs at least one table.
    pub fn concat(tables: &[Table]) -> Result<Table, DataError> {
        let (first, rest) = tables
            .split_first()
            .ok_or_else(|| DataError::Schema("concat of zero tables".into()))?;
        let mut out = first.clone();
        for t in rest {
            out.append(t)?;
        }
        Ok(out)
    }

    /// Inserts a column at position `at` (clamped to the end).
    pub fn insert_column(
        &mut self,
        at: usize,
        name: &str,
        column: Column,
    ) -> Result<(), DataError> {
        if self.index_of(name).is_some() {
            return Err(DataError::Schema(format!("column `{name}` already exists")));
        }
        if !self.columns.is_empty() && column.len() != self.rows() {
            return Err(DataError::Schema(format!(
                "column `{name}` has {} rows, table has {}",
                column.len(),
                self.rows()
            )));
        }
        let at = at.min(self.columns.len());
        self.schema.insert(at, Field::new(name, column.dtype()));
        self.columns.insert(at, column);
        Ok(())
    }

    /// Replaces a column's values (and type) in place, keeping its position.
    pub fn replace_column(&mut self, name: &str, column: Column) -> Result<(), DataError> {
        let i = self
            .index_of(name)
            .ok_or_else(|| DataError::Schema(format!("no column `{name}`")))?;
        if column.len() != self.rows() {
            return Err(DataError::Schema(format!(
                "column `{name}` has {} rows, table has {}",
                column.len(),
                self.rows()
            )));
        }
        self.schema[i].dtype = column.dtype();
        self.columns[i] = column;
        Ok(())
    }

    /// Removes a column, returning its position and values.
    pub fn remove_column(&mut self, name: &str) -> Option<(usize, Column)> {
        let i = self.index_of(name)?;
        self.schema.remove(i);
        Some((i, self.columns.remove(i)))
    }
}

/// `a: int64, b: float32[3]` — for error messages.
pub(crate) fn describe(schema: &[Field]) -> String {
    schema
        .iter()
        .map(|f| format!("{}: {}", f.name, f.dtype))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table::new(
            vec![
                Field::new("x", ColumnType::Float32 { shape: vec![2] }),
                Field::new("y", ColumnType::Int64),
                Field::new("s", ColumnType::String),
            ],
            vec![
                Column::Float32 {
                    shape: vec![2],
                    values: vec![0., 1., 2., 3., 4., 5.],
                },
                Column::Int64(vec![10, 11, 12]),
                Column::String(vec!["a".into(), "b".into(), "c".into()]),
            ],
        )
        .unwrap()
    }

    #[test]
    fn slice_take_concat() {
        let t = sample();
        assert_eq!(t.rows(), 3);
        let s = t.slice(1, 3);
        assert_eq!(s.column("y"), Some(&Column::Int64(vec![11, 12])));
        let k = t.take(&[2, 0]);
        assert_eq!(
            k.column("x"),
            Some(&Column::Float32 {
                shape: vec![2],
                values: vec![4., 5., 0., 1.]
            })
        );
        let c = Table::concat(&[t.slice(0, 1), t.slice(1, 3)]).unwrap();
        assert_eq!(c, t);
    }

    #[test]
    fn validation_catches_mismatches() {
        let bad = Table::new(
            vec![
                Field::new("a", ColumnType::Int64),
                Field::new("b", ColumnType::Int64),
            ],
            vec![Column::Int64(vec![1]), Column::Int64(vec![1, 2])],
        );
        assert!(matches!(bad, Err(DataError::Schema(_))));
        let bad = Table::new(
            vec![Field::new("a", ColumnType::Float32 { shape: vec![2] })],
            vec![Column::Float32 {
                shape: vec![2],
                values: vec![1.0],
            }],
        );
        assert!(bad.is_err());
        let mut t = sample();
        assert!(t
            .append(&Table::empty(&[Field::new("q", ColumnType::Int64)]))
            .is_err());
    }
}
