//! The REST infer body: JSON tensors and the binary tensor extension (a JSON header of
//! `Inference-Header-Content-Length` bytes followed by raw tensor bytes), both directions.

use std::io::Read;

use serde::Deserialize;
use serde_json::{Map, Value};
use trainyard_serve::tensor::{bytes_elements, checked_element_count, Element};
use trainyard_serve::{DataType, ServeError, Tensor};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Reserved request parameters clients send that mean nothing for a model that answers
/// once per request (perf_analyzer always sends the first).
pub const IGNORED_TRITON_PARAMETERS: &[&str] = &["triton_enable_empty_final_response"];

/// A reserved parameter this server does not understand.
pub fn refused_parameter<'a>(mut keys: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    keys.find(|k| {
        (k.starts_with("triton_") && !IGNORED_TRITON_PARAMETERS.contains(&k.as_str()))
            || k.starts_with("sequence_")
    })
}

/// A decoded infer request.
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Names asked for, with whether each comes back binary.
    pub outputs: Option<Vec<(String, bool)>>,
    /// `binary_data_output`: the default for outputs not named.
    pub binary_outputs: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestJson {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

fn invalid(message: impl Into<String>) -> ServeError {
    ServeError::invalid(message)
}

/// Inflates a `gzip` or `deflate` body, refusing to grow past `limit` bytes.
pub fn decompress(
    encoding: Option<&str>,
    body: bytes::Bytes,
    limit: usize,
) -> Result<bytes::Bytes, ServeError> {
    let encoding = match encoding.map(|e| e.trim().to_ascii_lowercase()) {
        None => return Ok(body),
        Some(e) if e.is_empty() || e == "identity" => return Ok(body),
        Some(e) => e,
    };
    let mut out = Vec::new();
    let read = match encoding.as_str() {
        "gzip" => flate2::read::GzDecoder::new(&body[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(&body[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        other => {
            return Err(ServeError::Unsupported(format!(
                "Content-Encoding '{other}' is not supported (gzip and deflate are)"
            )))
        }
    };
    read.map_err(|e| invalid(format!("the {encoding} body does not inflate: {e}")))?;
    if out.len() > limit {
        return Err(ServeError::invalid(format!(
            "the inflated body is larger than the limit of {limit} bytes"
        )));
    }
    Ok(out.into())
}

fn param_bool(
    params: &Option<Map<String, Value>>,
    key: &str,
    at: &str,
) -> Result<Option<bool>, ServeError> {
    match params.as_ref().and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(format!(
            "{at} parameter '{key}' must be a boolean, got {other}"
        ))),
    }
}

/// Decodes a request body; `header_length` is the `Inference-Header-Content-Length` value.
pub fn decode(body: &[u8], header_length: Option<usize>) -> Result<InferRequest, ServeError> {
    let (json, mut tail) = match header_length {
        None => (body, &[][..]),
        Some(0) => {
            return Err(invalid(
                "raw binary requests (Inference-Header-Content-Length: 0) are not supported; send a JSON header",
            ))
        }
        Some(n) if n > body.len() => {
            return Err(invalid(format!(
                "Inference-Header-Content-Length is {n} but the body has {} bytes",
                body.len()
            )))
        }
        Some(n) => body.split_at(n),
    };
    let request: RequestJson = serde_json::from_slice(json)
        .map_err(|e| invalid(format!("failed to parse the request JSON: {e}")))?;
    if let Some(params) = &request.parameters {
        if let Some(k) = refused_parameter(params.keys()) {
            return Err(invalid(format!(
                "parameter '{k}' is reserved or needs sequence batching, which is not supported"
            )));
        }
    }
    let binary_outputs =
        param_bool(&request.parameters, "binary_data_output", "request")?.unwrap_or(false);
    let id = match request.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s).filter(|s| !s.is_empty()),
        Some(other) => return Err(invalid(format!("request id must be a string, got {other}"))),
    };
    if request.inputs.is_empty() {
        return Err(invalid("the request has no inputs"));
    }
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            invalid(format!(
                "input '{}': unknown datatype '{}'",
                input.name, input.datatype
            ))
        })?;
        let mut shape = Vec::with_capacity(input.shape.len());
        for d in &input.shape {
            let d = usize::try_from(*d).map_err(|_| {
                invalid(format!(
                    "input '{}': shape {:?} has a negative dimension",
                    input.name, input.shape
                ))
            })?;
            shape.push(d);
        }
        if let Some(p) = &input.parameters {
            if p.keys().any(|k| k.starts_with("shared_memory")) {
                return Err(ServeError::Unsupported(format!(
                    "input '{}': shared memory is not supported",
                    input.name
                )));
            }
        }
        let binary_size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                invalid(format!(
                    "input '{}': binary_data_size must be a non-negative integer",
                    input.name
                ))
            })? as usize),
        };
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(format!(
                "input '{}': must set exactly one of 'data' or the 'binary_data_size' parameter",
                input.name
            )))
            }
            (Some(n), None) => {
                if n > tail.len() {
                    return Err(invalid(format!(
                        "input '{}': binary_data_size is {n} but only {} binary bytes are left in the body",
                        input.name,
                        tail.len()
                    )));
                }
                let (mine, rest) = tail.split_at(n);
                tail = rest;
                mine.to_vec()
            }
            (None, Some(data)) => json_to_bytes(&input.name, datatype, &shape, &data)?,
        };
        let tensor = Tensor {
            name: input.name,
            datatype,
            shape,
            data,
        };
        tensor.check_size()?;
        inputs.push(tensor);
    }
    if !tail.is_empty() {
        return Err(invalid(format!(
            "{} bytes of binary data follow the inputs that no input claims",
            tail.len()
        )));
    }
    let outputs = match request.outputs {
        None => None,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for o in list {
                let at = format!("output '{}'", o.name);
                if o.parameters
                    .as_ref()
                    .is_some_and(|p| p.contains_key("classification"))
                {
                    return Err(ServeError::Unsupported(format!(
                        "{at}: the classification extension is not supported"
                    )));
                }
                let binary =
                    param_bool(&o.parameters, "binary_data", &at)?.unwrap_or(binary_outputs);
                out.push((o.name, binary));
            }
            Some(out)
        }
    };
    Ok(InferRequest {
        id,
        inputs,
        outputs,
        binary_outputs,
    })
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn json_to_bytes(
    name: &str,
    dt: DataType,
    shape: &[usize],
    data: &Value,
) -> Result<Vec<u8>, ServeError> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let want = checked_element_count(shape)
        .ok_or_else(|| invalid(format!("input '{name}': shape {shape:?} is too large")))?;
    if flat.len() != want {
        return Err(invalid(format!(
            "input '{name}': shape {shape:?} has {want} elements but 'data' has {}",
            flat.len()
        )));
    }
    let bad = |v: &Value| invalid(format!("input '{name}': {v} is not a valid {dt} value"));
    let mut out = Vec::with_capacity(want * dt.size().unwrap_or(8));
    fn put<T: Element>(out: &mut Vec<u8>, v: T) {
        v.write_le(out);
    }
    for v in flat {
        match dt {
            DataType::Bool => put(&mut out, v.as_bool().ok_or_else(|| bad(v))?),
            DataType::U8 => put(
                &mut out,
                v.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| bad(v))?,
            ),
            DataType::U16 => put(
                &mut out,
                v.as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| bad(v))?,
            ),
            DataType::U32 => put(
                &mut out,
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad(v))?,
            ),
            DataType::U64 => put(&mut out, v.as_u64().ok_or_else(|| bad(v))?),
            DataType::I8 => put(
                &mut out,
                v.as_i64()
                    .and_then(|n| i8::try_from(n).ok())
                    .ok_or_else(|| bad(v))?,
            ),
            DataType::I16 => put(
                &mut out,
                v.as_i64()
                    .and_then(|n| i16::try_from(n).ok())
                    .ok_or_else(|| bad(v))?,
            ),
            DataType::I32 => put(
                &mut out,
                v.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| bad(v))?,
            ),
            DataType::I64 => put(&mut out, v.as_i64().ok_or_else(|| bad(v))?),
            DataType::F32 => put(&mut out, v.as_f64().ok_or_else(|| bad(v))? as f32),
            DataType::F64 => put(&mut out, v.as_f64().ok_or_else(|| bad(v))?),
            DataType::Bytes => {
                let s = v.as_str().ok_or_else(|| bad(v))?;
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            DataType::F16 | DataType::BF16 => {
                return Err(invalid(format!(
                    "input '{name}': {dt} data cannot travel as JSON; use the binary data format"
                )))
            }
        }
    }
    Ok(out)
}

/// The tensor's elements as a JSON array (flat, row-major).
pub fn tensor_to_json(t: &Tensor) -> Result<Value, ServeError> {
    fn nums<T: Element + Into<Value>>(t: &Tensor) -> Value {
        Value::Array(t.to_vec::<T>().into_iter().map(Into::into).collect())
    }
    Ok(match t.datatype {
        DataType::Bool => nums::<bool>(t),
        DataType::U8 => nums::<u8>(t),
        DataType::U16 => nums::<u16>(t),
        DataType::U32 => nums::<u32>(t),
        DataType::U64 => nums::<u64>(t),
        DataType::I8 => nums::<i8>(t),
        DataType::I16 => nums::<i16>(t),
        DataType::I32 => nums::<i32>(t),
        DataType::I64 => nums::<i64>(t),
        DataType::F32 => nums::<f32>(t),
        DataType::F64 => nums::<f64>(t),
        DataType::Bytes => Value::Array(
            bytes_elements(&t.data)
                .into_iter()
                .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
                .collect(),
        ),
        DataType::F16 | DataType::BF16 => {
            return Err(invalid(format!(
                "output '{}' is {}, which only travels binary; ask for it with binary_data",
                t.name, t.datatype
            )))
        }
    })
}

/// Builds the response: the JSON header and the binary tail (empty when all JSON).
pub fn encode(
    model: &str,
    version: u64,
    id: Option<&str>,
    outputs: &[Tensor],
    binary: impl Fn(&str) -> bool,
) -> Result<(Vec<u8>, Vec<u8>), ServeError> {
    let mut tail = Vec::new();
    let mut list = Vec::with_capacity(outputs.len());
    for t in outputs {
        let mut o = Map::new();
        o.insert("name".into(), Value::String(t.name.clone()));
        o.insert("datatype".into(), Value::String(t.datatype.as_str().into()));
        o.insert(
            "shape".into(),
            Value::Array(t.shape.iter().map(|d| (*d as u64).into()).collect()),
        );
        if binary(&t.name) {
            // `parameters` only on binary outputs: C++ clients take any `parameters` to mean binary.
            o.insert(
                "parameters".into(),
                serde_json::json!({"binary_data_size": t.data.len()}),
            );
            tail.extend_from_slice(&t.data);
        } else {
            o.insert("data".into(), tensor_to_json(t)?);
        }
        list.push(Value::Object(o));
    }
    let mut body = Map::new();
    body.insert("model_name".into(), Value::String(model.to_string()));
    body.insert("model_version".into(), Value::String(version.to_string()));
    if let Some(id) = id {
        body.insert("id".into(), Value::String(id.to_string()));
    }
    body.insert("outputs".into(), Value::Array(list));
    let json = serde_json::to_vec(&Value::Object(body))
        .map_err(|e| ServeError::internal(e.to_string()))?;
    Ok((json, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flat_and_nested() {
        let body =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#;
        let r = decode(body, None).unwrap();
        assert_eq!(r.inputs[0].to_vec::<f32>(), vec![1.0, 2.0, 3.0, 4.5]);
        let body = br#"{"inputs":[{"name":"x","shape":[4],"datatype":"INT64","data":[1,2,3,4]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
        let r = decode(body, None).unwrap();
        assert_eq!(r.inputs[0].to_vec::<i64>(), vec![1, 2, 3, 4]);
        assert_eq!(r.outputs, Some(vec![("y".to_string(), true)]));
    }

    #[test]
    fn binary_tail_in_input_order() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"b","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":4}}]}"#;
        let mut body = json.to_vec();
        for v in [1.5f32, -2.0] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&7i32.to_le_bytes());
        let r = decode(&body, Some(json.len())).unwrap();
        assert_eq!(r.inputs[0].to_vec::<f32>(), vec![1.5, -2.0]);
        assert_eq!(r.inputs[1].to_vec::<i32>(), vec![7]);
        // A byte too many, or too few, is refused.
        let mut long = body.clone();
        long.push(0);
        assert!(decode(&long, Some(json.len())).is_err());
        assert!(decode(&body[..body.len() - 1], Some(json.len())).is_err());
    }

    #[test]
    fn bad_input_is_named() {
        let cases: [(&[u8], &str); 8] = [
            // Shapes whose element count overflows (an unchecked product panicked).
            (
                br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#,
                "'x': shape [4294967296, 4294967296] is too large",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[9223372036854775807,4],"datatype":"FP32","data":[1]}]}"#,
                "is too large",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
                "'x': shape [3] has 3 elements",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#,
                "unknown datatype 'FLOAT'",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
                "300 is not a valid UINT8",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
                "exactly one of",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]}"#,
                "failed to parse",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#,
                "binary data format",
            ),
        ];
        for (body, want) in cases {
            let err = decode(body, None).err().expect("must fail").to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn encode_puts_parameters_only_on_binary_outputs() {
        let a = Tensor::from_vec("a", vec![2], &[1.0f32, 2.0]);
        let b = Tensor::from_vec("b", vec![1], &[3i64]);
        let (json, tail) = encode("m", 1, Some("r1"), &[a, b], |n| n == "a").unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["id"], "r1");
        assert_eq!(v["model_version"], "1");
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(v["outputs"][1].get("parameters").is_none());
        assert_eq!(v["outputs"][1]["data"], serde_json::json!([3]));
        assert_eq!(tail.len(), 8);
    }

    #[test]
    fn gzip_bodies_inflate_within_a_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[b'x'; 1000]).unwrap();
        let gz: bytes::Bytes = enc.finish().unwrap().into();
        assert_eq!(
            decompress(Some("gzip"), gz.clone(), 1000).unwrap().len(),
            1000
        );
        assert!(decompress(Some("gzip"), gz, 999).is_err());
        assert!(decompress(Some("br"), bytes::Bytes::new(), 10).is_err());
    }
}
