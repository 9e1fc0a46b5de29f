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

    /// Number of f32 elements per row (1 for scalars); None for non-float types, and for a
    /// shape whose element count overflows `usize` (shapes come from untrusted manifests
    /// and shard headers; [`validate_schema`] refuses those).
    pub fn elements(&self) -> Option<usize> {
        match self {
            ColumnType::Float32 { shape } => shape_elements(shape),
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

/// Elements of a tensor of `shape` (1 for `[]`), or None when the count overflows `usize`.
/// Every product of dimensions that came from outside goes through this.
pub fn shape_elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// What is wrong with one field of a schema: `index` and `part` (`"name"` or `"shape"`) say
/// where, so a caller can name the field (`schema[1].shape`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaProblem {
    pub index: usize,
    pub part: &'static str,
    pub message: String,
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks a schema on its own, saying which field breaks which rule: non-empty unique
/// names, tensor shapes with at least one element and whose per-row size in bytes can be
/// counted (a declared `[4294967295, 4294967295, 4294967295]` cannot).
pub fn check_schema(schema: &[Field]) -> Result<(), SchemaProblem> {
    let mut seen = std::collections::HashSet::new();
    for (index, f) in schema.iter().enumerate() {
        let problem = |part, message| SchemaProblem {
            index,
            part,
            message,
        };
        if f.name.is_empty() {
            return Err(problem("name", "empty column name".into()));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(problem("name", format!("duplicate column `{}`", f.name)));
        }
        if let ColumnType::Float32 { shape } = &f.dtype {
            // Bytes per row as well as elements: buffers are `rows * elements * 4` long.
            match shape_elements(shape).filter(|n| n.checked_mul(4).is_some()) {
                Some(0) => {
                    return Err(problem(
                        "shape",
                        format!(
                            "column `{}` has a shape with zero elements: {}",
                            f.name, f.dtype
                        ),
                    ))
                }
                None => {
                    return Err(problem(
                        "shape",
                        format!(
                            "column `{}` has a shape {shape:?} whose size overflows",
                            f.name
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// [`check_schema`] as this crate's error.
pub fn validate_schema(schema: &[Field]) -> Result<(), crate::DataError> {
    check_schema(schema).map_err(|p| crate::DataError::Schema(p.message))
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

    /// A declared shape whose product overflows is refused by field, never a panic (debug)
    /// or a silently wrapped count (release).
    #[test]
    fn overflowing_shapes_are_refused_naming_the_field() {
        let max = u32::MAX as usize;
        let huge = ColumnType::Float32 {
            shape: vec![max, max, max],
        };
        assert_eq!(huge.elements(), None);
        assert_eq!(shape_elements(&[]), Some(1));
        assert_eq!(shape_elements(&[usize::MAX, 0]), Some(0));
        assert_eq!(shape_elements(&[usize::MAX, 2]), None);
        let schema = vec![
            Field::new("label", ColumnType::Int64),
            Field::new("x", huge),
        ];
        let p = check_schema(&schema).unwrap_err();
        assert_eq!((p.index, p.part), (1, "shape"), "{p}");
        assert!(validate_schema(&schema).is_err());
        // Elements that fit but whose bytes (4 each) do not.
        let wide = vec![Field::new(
            "x",
            ColumnType::Float32 {
                shape: vec![usize::MAX / 2],
            },
        )];
        assert_eq!(check_schema(&wide).unwrap_err().part, "shape");
        let zero = vec![Field::new("x", ColumnType::Float32 { shape: vec![3, 0] })];
        assert_eq!(check_schema(&zero).unwrap_err().part, "shape");
        let twice = vec![
            Field::new("a", ColumnType::Int64),
            Field::new("a", ColumnType::String),
        ];
        let p = check_schema(&twice).unwrap_err();
        assert_eq!((p.index, p.part), (1, "name"));
        check_schema(&[Field::new(
            "x",
            ColumnType::Float32 {
                shape: vec![1, 28, 28],
            },
        )])
        .unwrap();
    }
}
