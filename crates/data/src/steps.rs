//! Processing steps: derive a new version from an existing one.
//!
//! Steps are data (`{op = "stack", ...}` in TOML or JSON) so pipelines can be
//! stored, shown and replayed. [`apply`] records each step in the new
//! version's lineage together with the parameters it fitted (means, min/max,
//! label classes, split sizes), which is what serving needs to preprocess
//! inputs the same way and what a reader needs to trust a dataset.
//!
//! Limit: [`apply`] loads the whole input version into memory (shuffle and
//! split need every row anyway); it is meant for datasets that fit in RAM.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::loader::read_table;
use crate::manifest::{Lineage, Manifest, Moments};
use crate::table::{Column, Table};
use crate::writer::{ShardSink, ShardSource, VersionWriter, DEFAULT_SHARD_ROWS};
use crate::DataError;

/// A list of column names, or an inclusive range `"c0..c63"` (same prefix).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnSelection {
    List(Vec<String>),
    Range(String),
}

impl ColumnSelection {
    /// The column names, in order.
    pub fn resolve(&self) -> Result<Vec<String>, DataError> {
        match self {
            ColumnSelection::List(v) => Ok(v.clone()),
            ColumnSelection::Range(r) => {
                let bad = |m: &str| DataError::invalid("columns", format!("range {r:?}: {m}"));
                let (a, b) = r
                    .split_once("..")
                    .ok_or_else(|| bad("expected `prefixN..prefixM`"))?;
                let split = |s: &str| {
                    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
                    let (p, n) = s.split_at(s.len() - digits);
                    n.parse::<usize>().ok().map(|n| (p.to_string(), n))
                };
                let (pa, na) = split(a.trim()).ok_or_else(|| bad("start has no number"))?;
                let (pb, nb) = split(b.trim()).ok_or_else(|| bad("end has no number"))?;
                if pa != pb {
                    return Err(bad("both ends need the same prefix"));
                }
                if na > nb || nb - na >= 1_000_000 {
                    return Err(bad("bad bounds"));
                }
                Ok((na..=nb).map(|i| format!("{pa}{i}")).collect())
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CastTo {
    Float32,
    Int64,
}

fn default_split_column() -> String {
    "split".into()
}

/// One processing step. Serialized with an `op` tag, e.g.
/// `{"op": "split", "ratios": {"train": 0.8, "test": 0.2}, "seed": 1}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Scalar numeric columns → one Float32 tensor column (sources removed,
    /// the new column takes the first source's place). `shape` defaults to
    /// `[number of columns]`; its product must equal the number of columns.
    Stack {
        columns: ColumnSelection,
        into: String,
        #[serde(default)]
        shape: Option<Vec<usize>>,
    },
    Rename {
        from: String,
        to: String,
    },
    Drop {
        columns: Vec<String>,
    },
    /// float32 → int64 truncates toward zero (non-finite values are an error);
    /// strings are parsed.
    Cast {
        column: String,
        to: CastTo,
    },
    /// Adds (or replaces) a String column naming each row's split. With
    /// `stratify`, every class is split in the same proportions (each split's
    /// size within 1 of exact). Deterministic given `seed`.
    Split {
        ratios: BTreeMap<String, f64>,
        #[serde(default)]
        stratify: Option<String>,
        #[serde(default)]
        seed: u64,
        #[serde(default = "default_split_column")]
        column: String,
    },
    Shuffle {
        #[serde(default)]
        seed: u64,
    },
    /// `(x - mean) / std` per column, per element for tensors (std 0 → 1),
    /// fitted on rows where `split_column == fit_on` (all rows if None).
    Standardize {
        columns: Vec<String>,
        #[serde(default)]
        fit_on: Option<String>,
        #[serde(default = "default_split_column")]
        split_column: String,
    },
    /// `(x - min) / (max - min)`, fitted like `standardize` (range 0 → 1).
    Normalize {
        columns: Vec<String>,
        #[serde(default)]
        fit_on: Option<String>,
        #[serde(default = "default_split_column")]
        split_column: String,
    },
    /// String column → Int64 codes, classes in sorted order. Replaces the
    /// column unless `into` names a new one.
    LabelEncode {
        column: String,
        #[serde(default)]
        into: Option<String>,
    },
    /// Keeps the rows whose `column` is within `min..=max` (a scalar numeric column) or
    /// one of `values` (a string column), in their order.
    Filter {
        column: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        values: Option<Vec<String>>,
    },
    /// Bytes image column → PNG of exactly `width × height`.
    Resize {
        column: String,
        width: u32,
        height: u32,
    },
}

/// Applies `steps` to version `input` (id `input_id`), writes the result to
/// `sink` and returns its manifest. Shard size follows the input's.
pub fn apply(
    steps: &[Step],
    input: &Manifest,
    input_id: &str,
    source: &dyn ShardSource,
    sink: &mut dyn ShardSink,
) -> Result<Manifest, DataError> {
    let mut table = read_table(input, source)?;
    let recorded = apply_table(steps, &mut table)?;
    let shard_rows = input
        .shards
        .iter()
        .map(|s| s.rows as usize)
        .max()
        .unwrap_or(DEFAULT_SHARD_ROWS);
    let mut w = VersionWriter::new(table.schema.clone(), shard_rows);
    w.push(table, sink)?;
    w.finish(
        Lineage {
            parent: Some(input_id.to_string()),
            source: input.lineage.source.clone(),
            steps: recorded,
        },
        sink,
    )
}

/// Applies steps in memory; returns each step as JSON with a `fitted` entry
/// where the step learned parameters.
pub fn apply_table(steps: &[Step], table: &mut Table) -> Result<Vec<Value>, DataError> {
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let fitted = apply_step(step, table)?;
        let mut v = serde_json::to_value(step).expect("step serializes");
        if let (Some(f), Value::Object(map)) = (fitted, &mut v) {
            map.insert("fitted".into(), f);
        }
        out.push(v);
    }
    Ok(out)
}

fn missing(name: &str) -> DataError {
    DataError::invalid(name, "no such column")
}

fn apply_step(step: &Step, t: &mut Table) -> Result<Option<Value>, DataError> {
    match step {
        Step::Stack {
            columns,
            into,
            shape,
        } => stack(t, &columns.resolve()?, into, shape.as_deref()),
        Step::Rename { from, to } => {
            let i = t.index_of(from).ok_or_else(|| missing(from))?;
            if t.index_of(to).is_some() {
                return Err(DataError::invalid(to, "already exists"));
            }
            t.schema[i].name = to.clone();
            Ok(None)
        }
        Step::Drop { columns } => {
            for c in columns {
                t.remove_column(c).ok_or_else(|| missing(c))?;
            }
            Ok(None)
        }
        Step::Cast { column, to } => cast(t, column, *to).map(|_| None),
        Step::Split {
            ratios,
            stratify,
            seed,
            column,
        } => split(t, ratios, stratify.as_deref(), *seed, column),
        Step::Shuffle { seed } => {
            let mut perm: Vec<usize> = (0..t.rows()).collect();
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(*seed));
            *t = t.take(&perm);
            Ok(None)
        }
        Step::Standardize {
            columns,
            fit_on,
            split_column,
        } => rescale(t, columns, fit_on.as_deref(), split_column, true),
        Step::Normalize {
            columns,
            fit_on,
            split_column,
        } => rescale(t, columns, fit_on.as_deref(), split_column, false),
        Step::LabelEncode { column, into } => label_encode(t, column, into.as_deref()),
        Step::Resize {
            column,
            width,
            height,
        } => resize(t, column, *width, *height).map(|_| None),
        Step::Filter {
            column,
            min,
            max,
            values,
        } => filter(t, column, *min, *max, values.as_deref()).map(|_| None),
    }
}

fn filter(
    t: &mut Table,
    name: &str,
    min: Option<f64>,
    max: Option<f64>,
    values: Option<&[String]>,
) -> Result<(), DataError> {
    let column = t.column(name).ok_or_else(|| missing(name))?;
    let in_range = |v: f64| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m);
    let keep: Vec<usize> = match (column, values) {
        (_, _) if min.is_none() && max.is_none() && values.is_none() => {
            return Err(DataError::invalid(
                name,
                "filter needs `min`, `max` or `values`",
            ))
        }
        (Column::Int64(v), None) => (0..v.len()).filter(|&i| in_range(v[i] as f64)).collect(),
        (Column::Float32 { shape, values }, None) if shape.is_empty() => (0..values.len())
            .filter(|&i| in_range(f64::from(values[i])))
            .collect(),
        (Column::String(v), Some(wanted)) if min.is_none() && max.is_none() => (0..v.len())
            .filter(|&i| wanted.contains(&v[i]))
            .collect(),
        (other, _) => {
            return Err(DataError::invalid(
                name,
                format!(
                    "filter takes `min`/`max` on a scalar number column or `values` on a string column; this column is {:?}",
                    other.dtype()
                ),
            ))
        }
    };
    if keep.is_empty() {
        return Err(DataError::invalid(name, "the filter keeps no rows"));
    }
    *t = t.take(&keep);
    Ok(())
}

fn stack(
    t: &mut Table,
    names: &[String],
    into: &str,
    shape: Option<&[usize]>,
) -> Result<Option<Value>, DataError> {
    let k = names.len();
    if k == 0 {
        return Err(DataError::invalid("columns", "nothing to stack"));
    }
    let shape = shape.map_or_else(|| vec![k], <[usize]>::to_vec);
    if crate::schema::shape_elements(&shape) != Some(k) {
        return Err(DataError::invalid(
            "shape",
            format!("{shape:?} does not hold the {k} stacked columns"),
        ));
    }
    if names.iter().collect::<BTreeSet<_>>().len() != k {
        return Err(DataError::invalid("columns", "a column is listed twice"));
    }
    if t.index_of(into).is_some() && !names.iter().any(|n| n == into) {
        return Err(DataError::invalid(into, "already exists"));
    }
    let rows = t.rows();
    let mut values = vec![0f32; rows * k];
    let mut at = usize::MAX;
    for (j, name) in names.iter().enumerate() {
        at = at.min(t.index_of(name).ok_or_else(|| missing(name))?);
        match t.column(name).unwrap() {
            Column::Float32 { shape, values: v } if shape.is_empty() => v
                .iter()
                .enumerate()
                .for_each(|(i, x)| values[i * k + j] = *x),
            Column::Int64(v) => v
                .iter()
                .enumerate()
                .for_each(|(i, x)| values[i * k + j] = *x as f32),
            c => {
                return Err(DataError::invalid(
                    name,
                    format!(
                        "has type {}; only scalar float32/int64 columns can be stacked",
                        c.dtype()
                    ),
                ))
            }
        }
    }
    for n in names {
        t.remove_column(n);
    }
    t.insert_column(at, into, Column::Float32 { shape, values })?;
    Ok(None)
}

fn cast(t: &mut Table, name: &str, to: CastTo) -> Result<(), DataError> {
    let col = t.column(name).ok_or_else(|| missing(name))?;
    let bad_row = |i: usize, m: String| DataError::invalid(name, format!("row {i}: {m}"));
    let new = match (col, to) {
        (Column::Int64(_), CastTo::Int64) => return Ok(()),
        (Column::Float32 { shape, .. }, CastTo::Float32) if shape.is_empty() => return Ok(()),
        (Column::Int64(v), CastTo::Float32) => Column::Float32 {
            shape: Vec::new(),
            values: v.iter().map(|x| *x as f32).collect(),
        },
        (Column::Float32 { shape, values }, CastTo::Int64) if shape.is_empty() => {
            let mut out = Vec::with_capacity(values.len());
            for (i, x) in values.iter().enumerate() {
                if !x.is_finite() {
                    return Err(bad_row(i, format!("{x} is not a finite number")));
                }
                out.push(*x as i64);
            }
            Column::Int64(out)
        }
        (Column::String(v), CastTo::Int64) => Column::Int64(
            v.iter()
                .enumerate()
                .map(|(i, s)| {
                    s.trim()
                        .parse()
                        .map_err(|_| bad_row(i, format!("{s:?} is not an integer")))
                })
                .collect::<Result<_, _>>()?,
        ),
        (Column::String(v), CastTo::Float32) => Column::Float32 {
            shape: Vec::new(),
            values: v
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.trim()
                        .parse()
                        .map_err(|_| bad_row(i, format!("{s:?} is not a number")))
                })
                .collect::<Result<_, _>>()?,
        },
        (c, _) => {
            return Err(DataError::invalid(
                name,
                format!("cannot cast {} to {to:?}", c.dtype()),
            ))
        }
    };
    t.replace_column(name, new)
}

/// Largest-remainder apportionment of `n` items by `weights`.
fn apportion(n: usize, weights: &[f64]) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let quotas: Vec<f64> = weights.iter().map(|w| n as f64 * w / total).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut left = n - counts.iter().sum::<usize>().min(n);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = quotas[a] - quotas[a].floor();
        let fb = quotas[b] - quotas[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        if weights[i] > 0.0 {
            counts[i] += 1;
            left -= 1;
        }
    }
    counts
}

fn split(
    t: &mut Table,
    ratios: &BTreeMap<String, f64>,
    stratify: Option<&str>,
    seed: u64,
    column: &str,
) -> Result<Option<Value>, DataError> {
    if ratios.is_empty()
        || ratios.values().any(|r| !r.is_finite() || *r < 0.0)
        || ratios.values().sum::<f64>() <= 0.0
    {
        return Err(DataError::invalid(
            "ratios",
            "need at least one split, non-negative ratios with a positive sum",
        ));
    }
    let names: Vec<&String> = ratios.keys().collect();
    let weights: Vec<f64> = ratios.values().copied().collect();
    let n = t.rows();
    let groups: Vec<Vec<usize>> = match stratify {
        None => vec![(0..n).collect()],
        Some(col) => match t.column(col).ok_or_else(|| missing(col))? {
            Column::Int64(v) => {
                let mut g: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
                v.iter()
                    .enumerate()
                    .for_each(|(i, x)| g.entry(*x).or_default().push(i));
                g.into_values().collect()
            }
            Column::String(v) => {
                let mut g: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                v.iter()
                    .enumerate()
                    .for_each(|(i, x)| g.entry(x.as_str()).or_default().push(i));
                g.into_values().collect()
            }
            c => {
                return Err(DataError::invalid(
                    col,
                    format!("has type {}; stratify needs int64 or string", c.dtype()),
                ))
            }
        },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut assign = vec![0usize; n];
    let mut totals = vec![0u64; names.len()];
    for mut g in groups {
        g.shuffle(&mut rng);
        let mut i = 0;
        for (s, c) in apportion(g.len(), &weights).into_iter().enumerate() {
            for &r in &g[i..i + c] {
                assign[r] = s;
            }
            i += c;
            totals[s] += c as u64;
        }
    }
    let col = Column::String(assign.iter().map(|&s| names[s].clone()).collect());
    if t.index_of(column).is_some() {
        t.replace_column(column, col)?;
    } else {
        t.insert_column(usize::MAX, column, col)?;
    }
    let counts: BTreeMap<&String, u64> = names.iter().copied().zip(totals).collect();
    Ok(Some(json!({ "counts": counts })))
}

/// Standardize (`true`) or min-max normalize (`false`) the given columns.
fn rescale(
    t: &mut Table,
    columns: &[String],
    fit_on: Option<&str>,
    split_column: &str,
    standardize: bool,
) -> Result<Option<Value>, DataError> {
    let fit_rows: Vec<usize> = match fit_on {
        None => (0..t.rows()).collect(),
        Some(want) => match t
            .column(split_column)
            .ok_or_else(|| missing(split_column))?
        {
            Column::String(v) => (0..v.len()).filter(|&i| v[i] == want).collect(),
            c => {
                return Err(DataError::invalid(
                    split_column,
                    format!("has type {}; a split column must be string", c.dtype()),
                ))
            }
        },
    };
    if fit_rows.is_empty() {
        return Err(DataError::invalid(
            "fit_on",
            format!("no rows with {split_column} == {fit_on:?}"),
        ));
    }
    let mut fitted = serde_json::Map::new();
    for name in columns {
        let (shape, mut values) = match t.column(name).ok_or_else(|| missing(name))? {
            Column::Float32 { shape, values } => (shape.clone(), values.clone()),
            Column::Int64(v) => (Vec::new(), v.iter().map(|x| *x as f32).collect()),
            c => {
                return Err(DataError::invalid(
                    name,
                    format!(
                        "has type {}; only numeric columns can be rescaled",
                        c.dtype()
                    ),
                ))
            }
        };
        let per: usize = shape.iter().product();
        let mut moments = vec![Moments::default(); per];
        for &r in &fit_rows {
            for (j, m) in moments.iter_mut().enumerate() {
                m.push(values[r * per + j] as f64);
            }
        }
        // offset and divisor per element position
        let (offset, div): (Vec<f64>, Vec<f64>) = moments
            .iter()
            .map(|m| {
                let (o, d) = match (standardize, m.n) {
                    (_, 0) => (0.0, 1.0),
                    (true, _) => (m.mean, m.std()),
                    (false, _) => (m.min, m.max - m.min),
                };
                (o, if d > 0.0 && d.is_finite() { d } else { 1.0 })
            })
            .unzip();
        for (i, v) in values.iter_mut().enumerate() {
            let j = i % per;
            *v = ((*v as f64 - offset[j]) / div[j]) as f32;
        }
        t.replace_column(name, Column::Float32 { shape, values })?;
        let entry = if standardize {
            json!({ "mean": offset, "std": div })
        } else {
            let max: Vec<f64> = offset.iter().zip(&div).map(|(o, d)| o + d).collect();
            json!({ "min": offset, "max": max })
        };
        fitted.insert(name.clone(), entry);
    }
    Ok(Some(Value::Object(fitted)))
}

fn label_encode(
    t: &mut Table,
    column: &str,
    into: Option<&str>,
) -> Result<Option<Value>, DataError> {
    let Column::String(v) = t.column(column).ok_or_else(|| missing(column))? else {
        return Err(DataError::invalid(
            column,
            format!(
                "has type {}; label_encode needs a string column",
                t.column(column).unwrap().dtype()
            ),
        ));
    };
    let classes: Vec<&String> = v.iter().collect::<BTreeSet<_>>().into_iter().collect();
    let code: BTreeMap<&String, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i as i64))
        .collect();
    let codes = Column::Int64(v.iter().map(|s| code[s]).collect());
    let fitted = json!({ "classes": classes });
    match into {
        None => t.replace_column(column, codes)?,
        Some(name) if name == column => t.replace_column(column, codes)?,
        Some(name) => {
            let at = t.index_of(column).unwrap() + 1;
            t.insert_column(at, name, codes)
                .map_err(|_| DataError::invalid(name, "already exists"))?
        }
    }
    Ok(Some(fitted))
}

fn resize(t: &mut Table, column: &str, width: u32, height: u32) -> Result<(), DataError> {
    use image::{ColorType, DynamicImage, ImageFormat};
    if width == 0 || height == 0 {
        return Err(DataError::invalid("width/height", "must be positive"));
    }
    let Column::Bytes(v) = t.column(column).ok_or_else(|| missing(column))? else {
        return Err(DataError::invalid(
            column,
            "resize needs a bytes (image) column",
        ));
    };
    let mut out = Vec::with_capacity(v.len());
    for (i, bytes) in v.iter().enumerate() {
        let bad =
            |e: image::ImageError| DataError::Corrupt(format!("column `{column}`, row {i}: {e}"));
        let img = image::load_from_memory(bytes).map_err(bad)?;
        let img = img.resize_exact(width, height, image::imageops::FilterType::Triangle);
        let img = match img.color() {
            ColorType::L8 | ColorType::L16 => DynamicImage::ImageLuma8(img.to_luma8()),
            ColorType::La8 | ColorType::La16 => DynamicImage::ImageLumaA8(img.to_luma_alpha8()),
            c if c.has_alpha() => DynamicImage::ImageRgba8(img.to_rgba8()),
            _ => DynamicImage::ImageRgb8(img.to_rgb8()),
        };
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Png).map_err(bad)?;
        out.push(buf.into_inner());
    }
    t.replace_column(column, Column::Bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnType, Field};
    use crate::writer::MemStore;

    /// 101 rows: c0..c3 (float), label (int64, classes of 50/30/21), name (string).
    fn dataset(store: &mut MemStore) -> Manifest {
        let n = 101;
        let label: Vec<i64> = (0..n)
            .map(|i| {
                if i < 50 {
                    0
                } else if i < 80 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let mut schema = Vec::new();
        let mut columns = Vec::new();
        for c in 0..4 {
            schema.push(Field::new(format!("c{c}"), ColumnType::f32_scalar()));
            columns.push(Column::Float32 {
                shape: vec![],
                values: (0..n).map(|i| (i * (c + 1)) as f32 + 3.0).collect(),
            });
        }
        schema.push(Field::new("label", ColumnType::Int64));
        columns.push(Column::Int64(label.clone()));
        schema.push(Field::new("name", ColumnType::String));
        columns.push(Column::String(
            label
                .iter()
                .map(|l| ["zebra", "ant", "moose"][*l as usize].to_string())
                .collect(),
        ));
        let mut w = VersionWriter::new(schema.clone(), 16);
        w.push(Table::new(schema, columns).unwrap(), store).unwrap();
        w.finish(Lineage::default(), store).unwrap()
    }

    fn pipeline() -> Vec<Step> {
        #[derive(Deserialize)]
        struct P {
            steps: Vec<Step>,
        }
        let p: P = toml::from_str(
            r#"
            [[steps]]
            op = "stack"
            columns = "c0..c3"
            into = "x"
            shape = [2, 2]

            [[steps]]
            op = "split"
            ratios = { train = 0.8, test = 0.2 }
            stratify = "label"
            seed = 7

            [[steps]]
            op = "standardize"
            columns = ["x"]
            fit_on = "train"

            [[steps]]
            op = "label_encode"
            column = "name"
            into = "name_id"
            "#,
        )
        .unwrap();
        p.steps
    }

    #[test]
    fn pipeline_from_toml_with_lineage() {
        let mut store = MemStore::new();
        let input = dataset(&mut store);
        let id = input.version_id();
        let steps = pipeline();
        let out = apply(&steps, &input, &id, &store, &mut MemStore::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sink = MemStore::new();
        let out2 = apply(&steps, &input, &id, &store, &mut sink).unwrap();
        assert_eq!(out.version_id(), out2.version_id(), "deterministic");
        assert_eq!(out.lineage.parent.as_deref(), Some(id.as_str()));
        assert_eq!(out.lineage.steps.len(), 4);
        assert_eq!(out.lineage.steps[0]["op"], "stack");
        assert!(out.lineage.steps[2]["fitted"]["x"]["mean"].is_array());
        assert_eq!(
            out.lineage.steps[3]["fitted"]["classes"],
            json!(["ant", "moose", "zebra"])
        );
        let names: Vec<&str> = out.schema.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["x", "label", "name", "name_id", "split"]);
        assert_eq!(
            out.field("x").unwrap().dtype,
            ColumnType::Float32 { shape: vec![2, 2] }
        );

        let t = read_table(&out, &sink).unwrap();
        let Some(Column::Int64(label)) = t.column("label") else {
            panic!()
        };
        let Some(Column::String(split)) = t.column("split") else {
            panic!()
        };
        // Stratified: per class, train share within 1 of 80%.
        for (class, size) in [(0, 50.0), (1, 30.0), (2, 21.0)] {
            let train = (0..t.rows())
                .filter(|&i| label[i] == class && split[i] == "train")
                .count();
            assert!(
                (train as f64 - 0.8 * size).abs() <= 1.0,
                "class {class}: {train}"
            );
        }
        // Standardized on train: each feature has mean ~0, std ~1 over train rows.
        let Some(Column::Float32 { values, .. }) = t.column("x") else {
            panic!()
        };
        for j in 0..4 {
            let v: Vec<f64> = (0..t.rows())
                .filter(|&i| split[i] == "train")
                .map(|i| values[i * 4 + j] as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            assert!(
                mean.abs() < 1e-4 && (std - 1.0).abs() < 1e-4,
                "{mean} {std}"
            );
        }
        let Some(Column::Int64(codes)) = t.column("name_id") else {
            panic!()
        };
        assert_eq!(codes[0], 2, "zebra sorts last");
        assert_eq!(codes[60], 0, "ant sorts first");
    }

    #[test]
    fn split_same_seed_same_result_other_seed_differs() {
        let mut store = MemStore::new();
        let input = dataset(&mut store);
        let mut t = read_table(&input, &store).unwrap();
        let step = |seed| Step::Split {
            ratios: BTreeMap::from([("a".into(), 0.5), ("b".into(), 0.25), ("c".into(), 0.25)]),
            stratify: None,
            seed,
            column: "split".into(),
        };
        let f1 = apply_table(&[step(1)], &mut t).unwrap();
        let s1 = t.column("split").unwrap().clone();
        apply_table(&[step(1)], &mut t).unwrap();
        assert_eq!(t.column("split").unwrap(), &s1);
        apply_table(&[step(2)], &mut t).unwrap();
        assert_ne!(t.column("split").unwrap(), &s1);
        assert_eq!(
            f1[0]["fitted"]["counts"],
            json!({"a": 51, "b": 25, "c": 25})
        );
    }

    #[test]
    fn other_steps_and_errors() {
        let mut store = MemStore::new();
        let input = dataset(&mut store);
        let mut t = read_table(&input, &store).unwrap();
        let steps: Vec<Step> = serde_json::from_str(
            r#"[{"op":"rename","from":"c0","to":"a"},
                {"op":"drop","columns":["c1"]},
                {"op":"cast","column":"label","to":"float32"},
                {"op":"normalize","columns":["a"]},
                {"op":"shuffle","seed":3}]"#,
        )
        .unwrap();
        let rec = apply_table(&steps, &mut t).unwrap();
        assert!(t.column("c1").is_none());
        assert_eq!(t.schema[0].name, "a");
        assert_eq!(t.column("label").unwrap().dtype(), ColumnType::f32_scalar());
        let Some(Column::Float32 { values, .. }) = t.column("a") else {
            panic!()
        };
        let (lo, hi) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        assert_eq!((lo, hi), (0.0, 1.0));
        assert_eq!(rec[3]["fitted"]["a"]["min"], json!([3.0]));
        assert_ne!(values[0], 0.0, "shuffled");

        let err = apply_table(
            &[Step::Stack {
                columns: ColumnSelection::Range("c2..c3".into()),
                into: "x".into(),
                shape: Some(vec![3]),
            }],
            &mut t,
        )
        .unwrap_err();
        assert!(
            matches!(err, DataError::Invalid { ref field, .. } if field == "shape"),
            "{err}"
        );
        // 2 × (2⁶³ + 1) wraps to 2, the number of columns: refused, not a panic or a lie.
        let err = apply_table(
            &[Step::Stack {
                columns: ColumnSelection::Range("c2..c3".into()),
                into: "x".into(),
                shape: Some(vec![2, (1usize << 63) + 1]),
            }],
            &mut t,
        )
        .unwrap_err();
        assert!(
            matches!(err, DataError::Invalid { ref field, .. } if field == "shape"),
            "{err}"
        );
        let err = apply_table(
            &[Step::Drop {
                columns: vec!["zz".into()],
            }],
            &mut t,
        )
        .unwrap_err();
        assert!(err.to_string().contains("zz"));
        assert_eq!(
            ColumnSelection::Range("f8..f10".into()).resolve().unwrap(),
            ["f8", "f9", "f10"]
        );
        assert!(ColumnSelection::Range("a1..b3".into()).resolve().is_err());
    }

    #[test]
    fn filter_keeps_matching_rows_in_order() {
        let mut t = Table::new(
            vec![
                Field::new("y", ColumnType::Int64),
                Field::new("s", ColumnType::String),
            ],
            vec![
                Column::Int64(vec![3, 7, 5, 9, 0]),
                Column::String(["a", "b", "a", "c", "b"].map(String::from).to_vec()),
            ],
        )
        .unwrap();
        let step = |text: &str| -> Step { serde_json::from_str(text).unwrap() };
        let mut by_range = t.clone();
        apply_table(
            &[step(
                r#"{"op": "filter", "column": "y", "min": 4, "max": 8}"#,
            )],
            &mut by_range,
        )
        .unwrap();
        assert_eq!(by_range.column("y"), Some(&Column::Int64(vec![7, 5])));
        apply_table(
            &[step(
                r#"{"op": "filter", "column": "s", "values": ["b", "c"]}"#,
            )],
            &mut t,
        )
        .unwrap();
        assert_eq!(t.column("y"), Some(&Column::Int64(vec![7, 9, 0])));
        for (bad, says) in [
            (
                r#"{"op": "filter", "column": "y"}"#,
                "needs `min`, `max` or `values`",
            ),
            (
                r#"{"op": "filter", "column": "y", "min": 100}"#,
                "keeps no rows",
            ),
            (
                r#"{"op": "filter", "column": "s", "min": 1}"#,
                "this column is String",
            ),
            (
                r#"{"op": "filter", "column": "nope", "max": 1}"#,
                "no such column",
            ),
        ] {
            let err = apply_table(&[step(bad)], &mut t.clone())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn resize_images() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        crate::import::tests::write_png(&p, 5, 3, 9);
        let bytes = std::fs::read(&p).unwrap();
        let mut t = Table::new(
            vec![Field::new("img", ColumnType::Bytes)],
            vec![Column::Bytes(vec![bytes])],
        )
        .unwrap();
        apply_table(
            &[Step::Resize {
                column: "img".into(),
                width: 2,
                height: 4,
            }],
            &mut t,
        )
        .unwrap();
        let Some(Column::Bytes(v)) = t.column("img") else {
            panic!()
        };
        let img = image::load_from_memory(&v[0]).unwrap();
        assert_eq!((img.width(), img.height()), (2, 4));
    }
}
