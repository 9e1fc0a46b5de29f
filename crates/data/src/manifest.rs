//! Manifests: the description of one immutable dataset version.
//!
//! A version is its manifest: schema, the ordered list of content-addressed
//! shards, per-column statistics and lineage. The version id is the SHA-256
//! of the manifest's canonical JSON, so identical content always gets the same
//! id and any change (a shard, a stat, a lineage step) gets a new one.
//! Canonical means object keys sorted at every level, independent of how
//! serde_json was built (e.g. with `preserve_order`) or of field order.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::schema::Field;
use crate::shard::sha256_hex;
use crate::table::Column;

/// Current manifest format.
pub const FORMAT: u32 = 1;

/// One shard of a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardRef {
    /// SHA-256 of the encoded shard; also its name in a store.
    pub sha256: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Where a version came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Version id of the input this version was derived from.
    #[serde(default)]
    pub parent: Option<String>,
    /// Original import, e.g. `"csv:digits.csv.gz"`.
    #[serde(default)]
    pub source: Option<String>,
    /// Processing steps applied to `parent`, as JSON, with fitted parameters.
    #[serde(default)]
    pub steps: Vec<serde_json::Value>,
}

/// Per-column statistics, computed while writing.
///
/// `count` is the number of rows. `min`/`max`/`mean`/`std` (population) are
/// set for numeric columns and ignore non-finite values; for Float32 tensors
/// they are over all elements. `distinct` is exact for Int64/String columns
/// up to 100 000 distinct values (None beyond, or for other types).
/// `histogram` maps value to count for Int64/String columns with at most 1000
/// distinct values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    pub count: u64,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub mean: Option<f64>,
    #[serde(default)]
    pub std: Option<f64>,
    #[serde(default)]
    pub distinct: Option<u64>,
    #[serde(default)]
    pub histogram: Option<BTreeMap<String, u64>>,
}

/// A dataset version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`] (1).
    pub format: u32,
    pub schema: Vec<Field>,
    pub rows: u64,
    pub shards: Vec<ShardRef>,
    pub stats: BTreeMap<String, ColumnStats>,
    pub lineage: Lineage,
}

impl Manifest {
    /// SHA-256 hex of the canonical JSON serialization.
    pub fn version_id(&self) -> String {
        let v = serde_json::to_value(self).expect("manifest serializes");
        let mut s = String::new();
        canonical_json(&v, &mut s);
        sha256_hex(s.as_bytes())
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.schema.iter().find(|f| f.name == name)
    }

    /// Pretty JSON for storage/display (the id does not depend on formatting).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serializes")
    }

    pub fn from_json(s: &str) -> Result<Manifest, crate::DataError> {
        serde_json::from_str(s).map_err(|e| crate::DataError::Corrupt(format!("manifest: {e}")))
    }
}

/// Writes JSON with object keys sorted at every level and no whitespace.
pub fn canonical_json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string serializes"));
                out.push(':');
                canonical_json(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(it, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).expect("scalar serializes")),
    }
}

const DISTINCT_CAP: usize = 100_000;
const HISTOGRAM_CAP: usize = 1000;

/// Streaming numeric moments (Welford/Chan), min and max.
#[derive(Clone, Debug, Default)]
pub(crate) struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.n == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn std(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.m2 / self.n as f64).max(0.0).sqrt()
        }
    }
}

/// 64-bit FNV-1a, for counting distinct values in bounded memory.
fn fnv(tag: u8, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ tag as u64;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Accumulates [`ColumnStats`] chunk by chunk with bounded memory.
#[derive(Debug, Default)]
pub(crate) struct StatsBuilder {
    count: u64,
    numeric: bool,
    moments: Moments,
    distinct: Option<HashSet<u64>>,
    histogram: Option<BTreeMap<String, u64>>,
}

impl StatsBuilder {
    pub fn new(field: &Field) -> Self {
        use crate::schema::ColumnType;
        let categorical = matches!(field.dtype, ColumnType::Int64 | ColumnType::String);
        StatsBuilder {
            numeric: matches!(field.dtype, ColumnType::Int64 | ColumnType::Float32 { .. }),
            distinct: categorical.then(HashSet::new),
            histogram: categorical.then(BTreeMap::new),
            ..Default::default()
        }
    }

    fn category(&mut self, hash: u64, key: impl FnOnce() -> String) {
        if let Some(set) = &mut self.distinct {
            set.insert(hash);
            if set.len() > DISTINCT_CAP {
                self.distinct = None;
            }
        }
        if let Some(h) = &mut self.histogram {
            *h.entry(key()).or_insert(0) += 1;
            if h.len() > HISTOGRAM_CAP {
                self.histogram = None;
            }
        }
    }

    pub fn update(&mut self, col: &Column) {
        self.count += col.len() as u64;
        match col {
            Column::Float32 { values, .. } => {
                for v in values {
                    self.moments.push(*v as f64);
                }
            }
            Column::Int64(values) => {
                for v in values {
                    self.moments.push(*v as f64);
                    self.category(fnv(0, &v.to_le_bytes()), || v.to_string());
                }
            }
            Column::String(values) => {
                for v in values {
                    self.category(fnv(1, v.as_bytes()), || v.clone());
                }
            }
            Column::Bytes(_) => {}
        }
    }

    pub fn finish(self) -> ColumnStats {
        let has = self.numeric && self.moments.n > 0;
        ColumnStats {
            count: self.count,
            min: has.then_some(self.moments.min),
            max: has.then_some(self.moments.max),
            mean: has.then_some(self.moments.mean),
            std: has.then(|| self.moments.std()),
            distinct: self.distinct.map(|s| s.len() as u64),
            histogram: self.histogram,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnType;

    fn manifest() -> Manifest {
        let f = Field::new("y", ColumnType::Int64);
        let mut sb = StatsBuilder::new(&f);
        sb.update(&Column::Int64(vec![1, 2, 2, 3]));
        let mut stats = BTreeMap::new();
        stats.insert("y".to_string(), sb.finish());
        Manifest {
            format: FORMAT,
            schema: vec![f],
            rows: 4,
            shards: vec![ShardRef {
                sha256: "ab".repeat(32),
                rows: 4,
                bytes: 100,
            }],
            stats,
            lineage: Lineage {
                parent: None,
                source: Some("csv:x.csv".into()),
                steps: vec![serde_json::json!({"op": "shuffle", "seed": 1, "a": {"z": 1, "b": 2}})],
            },
        }
    }

    #[test]
    fn version_id_is_stable_and_content_sensitive() {
        let m = manifest();
        let id = m.version_id();
        assert_eq!(id.len(), 64);
        assert_eq!(m.clone().version_id(), id);
        let back = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back.version_id(), id, "survives a JSON round trip");
        let mut m2 = m.clone();
        m2.shards[0].rows = 5;
        assert_ne!(m2.version_id(), id);
        let mut m3 = m.clone();
        m3.lineage.source = Some("csv:y.csv".into());
        assert_ne!(m3.version_id(), id);
        // Key order inside lineage JSON does not matter.
        let mut m4 = m;
        m4.lineage.steps =
            vec![serde_json::from_str(r#"{"a":{"b":2,"z":1},"seed":1,"op":"shuffle"}"#).unwrap()];
        assert_eq!(m4.version_id(), id);
    }

    #[test]
    fn version_id_survives_json_for_awkward_floats() {
        // Means/stds are arbitrary f64s; the id must not change when the
        // manifest is stored as JSON and parsed back (needs exact float parsing).
        let mut m = manifest();
        let mut x = 0.123_456_789_012_345_67f64;
        for i in 0..2000 {
            x = (x * 7.123_456_789 + 0.314_159).fract() * 10f64.powi(i % 40 - 20);
            m.stats.get_mut("y").unwrap().mean = Some(x);
            let back = Manifest::from_json(&m.to_json()).unwrap();
            assert_eq!(back.version_id(), m.version_id(), "{x:e}");
        }
    }

    #[test]
    fn stats_for_int_column() {
        let s = &manifest().stats["y"];
        assert_eq!(s.count, 4);
        assert_eq!(s.min, Some(1.0));
        assert_eq!(s.max, Some(3.0));
        assert_eq!(s.mean, Some(2.0));
        assert!((s.std.unwrap() - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.distinct, Some(3));
        assert_eq!(s.histogram.as_ref().unwrap()["2"], 2);
    }
}
