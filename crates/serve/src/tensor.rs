//! Tensors as the protocol carries them: a data type, a shape and row-major little-endian
//! bytes. Keeping the wire layout means binary requests reach a runtime without a copy per
//! element, and batching is byte concatenation.

use crate::ServeError;

/// The Open Inference Protocol's data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
    /// Variable-length byte strings, each prefixed by its 4-byte little-endian length.
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::BF16,
        DataType::F32,
        DataType::F64,
        DataType::Bytes,
    ];

    /// The protocol name (`FP32`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::BF16 => "BF16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// The model-config name (`TYPE_FP32`); BYTES is `TYPE_STRING` there.
    pub fn config_name(self) -> String {
        match self {
            DataType::Bytes => "TYPE_STRING".to_string(),
            other => format!("TYPE_{}", other.as_str()),
        }
    }

    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Accepts `TYPE_FP32` (and `TYPE_STRING`) as written in model configs.
    pub fn parse_config(name: &str) -> Option<DataType> {
        match name.strip_prefix("TYPE_")? {
            "STRING" => Some(DataType::Bytes),
            rest => DataType::parse(rest),
        }
    }

    /// Bytes per element; `None` for BYTES.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 | DataType::BF16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    /// Row-major, little-endian; BYTES elements length-prefixed.
    pub data: Vec<u8>,
}

impl Tensor {
    /// Checks that the bytes hold exactly the elements the shape promises.
    pub fn check_size(&self) -> Result<(), ServeError> {
        let count = checked_element_count(&self.shape).ok_or_else(|| {
            ServeError::invalid(format!(
                "input '{}': shape {:?} is too large",
                self.name, self.shape
            ))
        })?;
        match self.datatype.size() {
            Some(size) => {
                let want = count.saturating_mul(size);
                if self.data.len() != want {
                    return Err(ServeError::invalid(format!(
                        "input '{}': shape {:?} of {} needs {want} bytes, got {}",
                        self.name,
                        self.shape,
                        self.datatype,
                        self.data.len()
                    )));
                }
            }
            None => {
                let found = count_bytes_elements(&self.data).ok_or_else(|| {
                    ServeError::invalid(format!(
                        "input '{}': BYTES data is not a sequence of 4-byte-length-prefixed elements",
                        self.name
                    ))
                })?;
                if found != count {
                    return Err(ServeError::invalid(format!(
                        "input '{}': shape {:?} has {count} elements, the data has {found}",
                        self.name, self.shape
                    )));
                }
            }
        }
        Ok(())
    }

    /// Typed elements of a fixed-size type (copied out of the little-endian bytes).
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        self.data.chunks_exact(T::SIZE).map(T::from_le).collect()
    }

    pub fn from_vec<T: Element>(name: &str, shape: Vec<usize>, values: &[T]) -> Tensor {
        let mut data = Vec::with_capacity(values.len() * T::SIZE);
        for v in values {
            v.write_le(&mut data);
        }
        Tensor {
            name: name.to_string(),
            datatype: T::DATATYPE,
            shape,
            data,
        }
    }
}

/// Elements of a tensor of `shape`; `None` when the count does not fit a `usize` (a
/// client's shape is untrusted).
pub fn checked_element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))
}

/// Number of length-prefixed elements in BYTES data, if it parses exactly.
pub fn count_bytes_elements(mut data: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !data.is_empty() {
        let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
        data = data.get(4..)?.get(len..)?;
        n += 1;
    }
    Some(n)
}

/// Splits BYTES data into its elements.
pub fn bytes_elements(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        let end = (4 + len).min(data.len());
        out.push(&data[4..end]);
        data = &data[end..];
    }
    out
}

/// A fixed-size element type with its little-endian encoding.
pub trait Element: Copy + Send + 'static {
    const SIZE: usize;
    const DATATYPE: DataType;
    fn from_le(bytes: &[u8]) -> Self;
    fn write_le(&self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $dt:expr) => {
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const DATATYPE: DataType = $dt;
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().unwrap())
            }
            fn write_le(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}

element!(u8, DataType::U8);
element!(u16, DataType::U16);
element!(u32, DataType::U32);
element!(u64, DataType::U64);
element!(i8, DataType::I8);
element!(i16, DataType::I16);
element!(i32, DataType::I32);
element!(i64, DataType::I64);
element!(f32, DataType::F32);
element!(f64, DataType::F64);

impl Element for bool {
    const SIZE: usize = 1;
    const DATATYPE: DataType = DataType::Bool;
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write_le(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
            assert_eq!(DataType::parse_config(&dt.config_name()), Some(dt));
        }
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn size_checks_name_the_tensor() {
        let t = Tensor::from_vec("x", vec![2, 2], &[1.0f32, 2.0, 3.0, 4.0]);
        t.check_size().unwrap();
        assert_eq!(t.to_vec::<f32>(), vec![1.0, 2.0, 3.0, 4.0]);
        let short = Tensor {
            shape: vec![2, 3],
            ..t
        };
        let err = short.check_size().unwrap_err().to_string();
        assert!(err.contains("'x'") && err.contains("24 bytes"), "{err}");
    }

    #[test]
    fn bytes_elements_are_length_prefixed() {
        let mut data = Vec::new();
        for s in ["ab", "", "xyz"] {
            data.extend_from_slice(&(s.len() as u32).to_le_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        assert_eq!(count_bytes_elements(&data), Some(3));
        assert_eq!(bytes_elements(&data), vec![&b"ab"[..], b"", b"xyz"]);
        assert_eq!(count_bytes_elements(&data[..data.len() - 1]), None);
    }
}
