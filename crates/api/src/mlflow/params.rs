//! MLflow requests carry their fields in the query string (GET) or a JSON body (others);
//! both become one [`Params`] map read through typed accessors that accept what the MLflow
//! client sends (numbers as strings, `"NaN"`, enum names) and name the field when not.

use axum::extract::{FromRequest, Request};
use axum::http::{header, Method};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::MlflowError;

#[derive(Debug, Default, Clone)]
pub struct Params {
    map: Map<String, Value>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn wrong_type(name: &str, v: &Value) -> MlflowError {
    MlflowError::invalid(format!(
        "Invalid value {} for parameter '{name}' supplied:  Hint: Value was of type '{}'. See \
         the API docs for more information about request parameters.",
        serde_json::to_string(v).unwrap_or_default(),
        type_name(v)
    ))
}

pub fn missing(name: &str) -> MlflowError {
    MlflowError::invalid(format!(
        "Missing value for required parameter '{name}'. See the API docs for more information \
         about request parameters."
    ))
}

impl Params {
    #[cfg(test)]
    pub fn from_object(map: Map<String, Value>) -> Self {
        Self { map }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            // A repeated query key arrives as a list; singular fields take the first.
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => a.first(),
            Some(v) => Some(v),
        }
    }

    pub fn str(&self, name: &str) -> Result<Option<String>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => {
                if s.contains('\0') {
                    return Err(MlflowError::invalid(format!(
                        "Invalid value for parameter '{name}' supplied: NUL bytes are not allowed"
                    )));
                }
                Ok(Some(s.clone()))
            }
            Some(v) => Err(wrong_type(name, v)),
        }
    }

    pub fn req_str(&self, name: &str) -> Result<String, MlflowError> {
        self.str(name)?.ok_or_else(|| missing(name))
    }

    /// A required string that may be empty (tag and param values).
    pub fn req_str_or_empty(&self, name: &str) -> Result<String, MlflowError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Err(missing(name)),
            _ => Ok(self.str(name)?.unwrap_or_default()),
        }
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Some(f as i64)),
                    _ => Err(wrong_type(name, &Value::Number(n.clone()))),
                },
            },
            Some(v @ Value::String(s)) => {
                s.trim().parse().map(Some).map_err(|_| wrong_type(name, v))
            }
            Some(v) => Err(wrong_type(name, v)),
        }
    }

    pub fn f64(&self, name: &str) -> Result<Option<f64>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v @ Value::String(s)) => match s.as_str() {
                "NaN" | "nan" => Ok(Some(f64::NAN)),
                "Infinity" | "inf" => Ok(Some(f64::INFINITY)),
                "-Infinity" | "-inf" => Ok(Some(f64::NEG_INFINITY)),
                other => other
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| wrong_type(name, v)),
            },
            Some(v) => Err(wrong_type(name, v)),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(wrong_type(name, v)),
        }
    }

    /// A repeated string field: a list, or one value.
    pub fn strs(&self, name: &str) -> Result<Vec<String>, MlflowError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(wrong_type(name, other)),
                })
                .collect(),
            Some(v) => Err(wrong_type(name, v)),
        }
    }

    /// A repeated message field.
    pub fn objects(&self, name: &str) -> Result<Vec<Params>, MlflowError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(Params { map: m.clone() }),
                    other => Err(wrong_type(name, other)),
                })
                .collect(),
            Some(v) => Err(wrong_type(name, v)),
        }
    }

    /// Like [`Params::objects`], moving the items out instead of copying them (large
    /// batches).
    pub fn take_objects(&mut self, name: &str) -> Result<Vec<Params>, MlflowError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::Object(map) => Ok(Params { map }),
                    other => Err(wrong_type(name, &other)),
                })
                .collect(),
            Some(v) => Err(wrong_type(name, &v)),
        }
    }

    pub fn object(&self, name: &str) -> Result<Option<Params>, MlflowError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Params { map: m.clone() })),
            Some(v) => Err(wrong_type(name, v)),
        }
    }

    /// Whether any string anywhere in the request holds a NUL byte (no database takes one).
    fn has_nul(&self) -> bool {
        fn walk(v: &Value) -> bool {
            match v {
                Value::String(s) => s.contains('\0'),
                Value::Array(a) => a.iter().any(walk),
                Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || walk(v)),
                _ => false,
            }
        }
        self.map.iter().any(|(k, v)| k.contains('\0') || walk(v))
    }

    /// A repeated `{key, value}` field (tags, params); a missing value is empty.
    pub fn key_values(&self, name: &str) -> Result<Vec<trainyard_tracking::KeyValue>, MlflowError> {
        self.objects(name)?
            .iter()
            .map(|t| {
                Ok(trainyard_tracking::KeyValue::new(
                    t.req_str("key")?,
                    t.str("value")?.unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// `max_results` checked as MLflow checks it on each endpoint: past `schema_max` the
    /// request schema refuses it (with the raw value and its JSON type), and below 1 the
    /// endpoint's own `below_one` message. Absent: `default`.
    pub fn max_results(
        &self,
        schema_max: Option<i64>,
        below_one: Option<&str>,
        default: i64,
    ) -> Result<i64, MlflowError> {
        let Some(n) = self.i64("max_results")? else {
            return Ok(default);
        };
        if schema_max.is_some_and(|max| n > max) {
            let raw = self.get("max_results").cloned().unwrap_or_default();
            return Err(wrong_type("max_results", &raw));
        }
        if n < 1 {
            if let Some(message) = below_one {
                return Err(MlflowError::invalid(message.replace("{n}", &n.to_string())));
            }
        }
        Ok(n)
    }

    /// `run_id`, or the legacy `run_uuid`.
    pub fn run_id(&self) -> Result<String, MlflowError> {
        match self.str("run_id")?.filter(|s| !s.is_empty()) {
            Some(id) => Ok(id),
            None => self
                .str("run_uuid")?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| missing("run_id")),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = MlflowError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut map = Map::new();
        if let Some(query) = req.uri().query() {
            for (k, v) in url_pairs(query) {
                match map.get_mut(&k) {
                    Some(Value::Array(list)) => list.push(Value::String(v)),
                    Some(existing) => {
                        let first = existing.take();
                        *existing = Value::Array(vec![first, Value::String(v)]);
                    }
                    None => {
                        map.insert(k, Value::String(v));
                    }
                }
            }
        }
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                MlflowError::too_large()
            } else {
                MlflowError::bad_request(format!("cannot read the body: {e}"))
            }
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            let params = Params { map };
            if params.has_nul() {
                return Err(MlflowError::invalid(
                    "Invalid request: NUL bytes are not allowed in any field",
                ));
            }
            return Ok(params);
        }
        if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
            match content_type.as_deref() {
                None => {
                    return Err(MlflowError::invalid(
                        "Bad Request. Content-Type header is missing.",
                    ))
                }
                Some(ct) if !ct.starts_with("application/json") => {
                    return Err(MlflowError::invalid(
                        "Bad Request. Content-Type must be one of ['application/json'].",
                    ))
                }
                _ => {}
            }
        }
        let mut value: Value = serde_json::from_slice(&body)
            .map_err(|e| MlflowError::bad_request(format!("Malformed JSON body: {e}")))?;
        // Old clients send a JSON string holding the JSON object.
        if let Value::String(inner) = &value {
            value = serde_json::from_str(inner)
                .map_err(|e| MlflowError::bad_request(format!("Malformed JSON body: {e}")))?;
        }
        match value {
            Value::Object(body) => {
                map.extend(body);
                let params = Params { map };
                if params.has_nul() {
                    return Err(MlflowError::invalid(
                        "Invalid request: NUL bytes are not allowed in any field",
                    ));
                }
                Ok(params)
            }
            _ => Err(MlflowError::bad_request("The JSON body must be an object")),
        }
    }
}

/// `a=1&b=x%20y` → pairs, percent- and plus-decoded.
pub fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode() {
        assert_eq!(
            url_pairs("a=1&b=x%20y+z&c=%2"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "%2".into())
            ]
        );
    }

    #[test]
    fn typed_accessors_accept_client_encodings() {
        let p = Params::from_object(
            serde_json::json!({"n": "5", "f": "NaN", "b": "true", "l": "x", "bad": [1]})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(p.i64("n").unwrap(), Some(5));
        assert!(p.f64("f").unwrap().unwrap().is_nan());
        assert_eq!(p.bool("b").unwrap(), Some(true));
        assert_eq!(p.strs("l").unwrap(), vec!["x".to_string()]);
        let e = p.str("bad").unwrap_err();
        assert!(
            e.message.contains("Hint: Value was of type 'list'"),
            "{}",
            e.message
        );
        assert!(p
            .req_str("nope")
            .unwrap_err()
            .message
            .contains("Missing value"));
    }
}
