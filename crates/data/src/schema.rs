//! Column types and fields: the schema shared by tables, shards and manifests.
//!
//! Types are deliberately few. Training needs dense `f32` tensors, integer
//! labels, strings for categories/splits/paths, and encoded images kept as
//! their original bytes (decoding is deferred to the loader, where resizing
//! and augmentation happen anyway).

use serde::{Deserialize, Serialize};

/// The type of one column. Serialized as `{"type": "float32", "shape": [..]}` etc.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnType {
    /// A per-row tensor of `f32`; `shape == []` means a scalar.
    Float32 {
        shape: Vec<usize>,
    },
    Int64,
    String,
    /// Opaque bytes: encoded image files (PNG/JPEG).
    Bytes,
}

impl ColumnType {
    /// Scalar float32.
    pub fn f32_scalar() -> Self {
        ColumnType::Float32 { shape: Vec::new() }
    }

    /// Number of f32 elements per row (1 for scalars); None for non-float types.
    pub fn elements(&self) -> Option<usize> {
        match self {
            ColumnType::Float32 { shape } => Some(shape.iter().product()),
            _ => None,
        }
    }

    /// True for Float32 scalars and Int64.
    pub fn is_numeric_scalar(&self) -> bool {
        match self {
            ColumnType::Float32 { shape } => shape.is_empty(),
            ColumnType::Int64 => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnType::Float32 { shape } if shape.is_empty() => write!(f, "float32"),
            ColumnType::Float32 { shape } => write!(f, "float32{shape:?}"),
            ColumnType::Int64 => write!(f, "int64"),
            ColumnType::String => write!(f, "string"),
            ColumnType::Bytes => write!(f, "bytes"),
        }
    }
}

/// A named column. Serialized flat: `{"name": "x", "type": "float32", "shape": [3]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(flatten)]
    pub dtype: ColumnType,
}

impl Field {
    pub fn new(name: impl Into<String>, dtype: ColumnType) -> Self {
        Field {
            name: name.into(),
            dtype,
        }
    }
}

/// Checks a schema on its own: non-empty unique names, tensor shapes with at
/// least one element.
pub fn validate_schema(schema: &[Field]) -> Result<(), crate::DataError> {
    let mut seen = std::collections::HashSet::new();
    for f in schema {
        if f.name.is_empty() {
            return Err(crate::DataError::Schema("empty column name".into()));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(crate::DataError::Schema(format!(
                "duplicate column `{}`",
                f.name
            )));
        }
        if f.dtype.elements() == Some(0) {
            return Err(crate::DataError::Schema(format!(
                "column `{}` has a shape with zero elements: {}",
                f.name, f.dtype
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_serializes_flat() {
        let f = Field::new("x", ColumnType::Float32 { shape: vec![2, 3] });
        let j = serde_json::to_value(&f).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"name": "x", "type": "float32", "shape": [2, 3]})
        );
        let back: Field = serde_json::from_value(j).unwrap();
        assert_eq!(back, f);
        let l: Field = serde_json::from_str(r#"{"name":"label","type":"int64"}"#).unwrap();
        assert_eq!(l.dtype, ColumnType::Int64);
    }
}
