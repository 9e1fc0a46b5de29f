//! Importers: CSV, JSONL, IDX (MNIST) and image folders into a new version.
//!
//! Every importer streams rows into a [`VersionWriter`] in chunks so memory
//! stays bounded by a shard, whatever the file size. Text formats are read
//! twice: once to infer column types, once to convert (cheaper and simpler
//! than buffering or guessing from a prefix, and exact). Gzip is detected from
//! the file's magic bytes, so `.csv.gz`, `.jsonl.gz` and `*-ubyte.gz` work.
//!
//! Skipped image files (with [`OnBad::Skip`]) are reported through
//! [`import_with_report`]; [`import`] drops that report. The manifest's
//! lineage records only the source (`"csv:digits.csv.gz"`, `"image_folder:pets"`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::{Lineage, Manifest};
use crate::schema::{validate_schema, ColumnType, Field};
use crate::table::{Column, Table};
use crate::writer::{ShardSink, VersionWriter, DEFAULT_SHARD_ROWS};
use crate::DataError;

/// Input file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Jsonl,
    Parquet,
    Idx,
    ImageFolder,
}

/// What to do with an image file that does not decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBad {
    #[default]
    Fail,
    Skip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportOptions {
    /// None: from the path (extension, or directory contents).
    pub format: Option<Format>,
    /// CSV only. None: the first row is a header if one of its fields is not a number.
    pub header: Option<bool>,
    pub on_bad_file: OnBad,
    /// Rows per shard (0 = [`DEFAULT_SHARD_ROWS`]).
    pub shard_rows: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            format: None,
            header: None,
            on_bad_file: OnBad::Fail,
            shard_rows: DEFAULT_SHARD_ROWS,
        }
    }
}

/// Side information from an import.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Image files skipped as undecodable, relative to the folder, `/`-separated.
    pub skipped: Vec<String>,
}

/// Imports `path` into a new version whose shards go to `sink`.
pub fn import(
    path: &Path,
    opts: &ImportOptions,
    sink: &mut dyn ShardSink,
) -> Result<Manifest, DataError> {
    import_with_report(path, opts, sink).map(|(m, _)| m)
}

/// Like [`import`], also returning which files were skipped.
pub fn import_with_report(
    path: &Path,
    opts: &ImportOptions,
    sink: &mut dyn ShardSink,
) -> Result<(Manifest, ImportReport), DataError> {
    if !path.exists() {
        return Err(DataError::NotFound(path.display().to_string()));
    }
    let format = match opts.format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    let none = ImportReport::default();
    match format {
        Format::Csv => import_csv(path, opts, sink).map(|m| (m, none)),
        Format::Jsonl => import_jsonl(path, opts, sink).map(|m| (m, none)),
        Format::Parquet => {
            crate::parquet_import::import_parquet(path, opts.shard_rows, sink).map(|m| (m, none))
        }
        Format::Idx if path.is_dir() => {
            let (images, labels) = find_idx_pair(path)?;
            let m = import_idx_pair(&images, &labels, opts, sink)?;
            Ok((with_source(m, "idx", path), none))
        }
        Format::Idx => import_idx_file(path, opts, sink).map(|m| (m, none)),
        Format::ImageFolder => import_image_folder(path, opts, sink),
    }
}

/// Guesses the format from a file name (`.csv[.gz]`, `.tsv`, `.jsonl`,
/// `.ndjson`, `*-ubyte[.gz]`, `.idx`) or a directory's contents (IDX files,
/// otherwise an image folder).
pub fn detect_format(path: &Path) -> Result<Format, DataError> {
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| DataError::io(path, e))?;
        for e in entries {
            let e = e.map_err(|e| DataError::io(path, e))?;
            if e.file_name().to_string_lossy().contains("idx3-ubyte") {
                return Ok(Format::Idx);
            }
        }
        return Ok(Format::ImageFolder);
    }
    let name = base_name(path).to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".csv") || name.ends_with(".tsv") {
        Ok(Format::Csv)
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Ok(Format::Jsonl)
    } else if name.ends_with(".parquet") || name.ends_with(".pq") {
        Ok(Format::Parquet)
    } else if name.ends_with("-ubyte") || name.ends_with(".idx") {
        Ok(Format::Idx)
    } else {
        Err(DataError::invalid(
            "format",
            format!(
                "cannot tell the format of {}; set it explicitly",
                path.display()
            ),
        ))
    }
}

fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn with_source(mut m: Manifest, kind: &str, path: &Path) -> Manifest {
    m.lineage.source = Some(format!("{kind}:{}", base_name(path)));
    m
}

fn lineage(kind: &str, path: &Path) -> Lineage {
    Lineage {
        parent: None,
        source: Some(format!("{kind}:{}", base_name(path))),
        steps: Vec::new(),
    }
}

/// Opens a file, transparently gunzipping it if it starts with the gzip magic.
fn open(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 2];
    let mut n = 0;
    while n < 2 {
        match f
            .read(&mut magic[n..])
            .map_err(|e| DataError::io(path, e))?
        {
            0 => break,
            k => n += k,
        }
    }
    f.seek(SeekFrom::Start(0))
        .map_err(|e| DataError::io(path, e))?;
    let f = BufReader::new(f);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            f,
        ))))
    } else {
        Ok(Box::new(f))
    }
}

/// Like [`open`], skipping a UTF-8 byte order mark (CSV/JSONL).
fn open_text(path: &Path) -> Result<Box<dyn BufRead>, DataError> {
    let mut r = BufReader::new(open(path)?);
    let buf = r.fill_buf().map_err(|e| DataError::io(path, e))?;
    if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
        r.consume(3);
    }
    Ok(Box::new(r))
}

// ---------------------------------------------------------------- builders

/// Accumulates rows of one column before they become a `Column`.
enum Builder {
    F(Vec<usize>, Vec<f32>),
    I(Vec<i64>),
    S(Vec<String>),
    B(Vec<Vec<u8>>),
}

impl Builder {
    fn new(dtype: &ColumnType) -> Builder {
        match dtype {
            ColumnType::Float32 { shape } => Builder::F(shape.clone(), Vec::new()),
            ColumnType::Int64 => Builder::I(Vec::new()),
            ColumnType::String => Builder::S(Vec::new()),
            ColumnType::Bytes => Builder::B(Vec::new()),
        }
    }

    fn take(&mut self) -> Column {
        match self {
            Builder::F(shape, v) => Column::Float32 {
                shape: shape.clone(),
                values: std::mem::take(v),
            },
            Builder::I(v) => Column::Int64(std::mem::take(v)),
            Builder::S(v) => Column::String(std::mem::take(v)),
            Builder::B(v) => Column::Bytes(std::mem::take(v)),
        }
    }
}

/// Streams rows into a writer in chunks.
struct Rows {
    schema: Vec<Field>,
    builders: Vec<Builder>,
    n: usize,
    chunk: usize,
    writer: VersionWriter,
}

impl Rows {
    fn new(schema: Vec<Field>, opts: &ImportOptions, chunk: usize) -> Result<Rows, DataError> {
        validate_schema(&schema)?;
        let shard_rows = if opts.shard_rows == 0 {
            DEFAULT_SHARD_ROWS
        } else {
            opts.shard_rows
        };
        Ok(Rows {
            builders: schema.iter().map(|f| Builder::new(&f.dtype)).collect(),
            writer: VersionWriter::new(schema.clone(), shard_rows),
            schema,
            n: 0,
            chunk: if chunk == 0 {
                shard_rows
            } else {
                chunk.min(shard_rows)
            },
        })
    }

    /// Call after pushing one value into every builder.
    fn row_done(&mut self, sink: &mut dyn ShardSink) -> Result<(), DataError> {
        self.n += 1;
        if self.n >= self.chunk {
            self.flush(sink)?;
        }
        Ok(())
    }

    fn flush(&mut self, sink: &mut dyn ShardSink) -> Result<(), DataError> {
        if self.n == 0 {
            return Ok(());
        }
        let columns = self.builders.iter_mut().map(Builder::take).collect();
        self.n = 0;
        let table = Table::new(self.schema.clone(), columns)?;
        self.writer.push(table, sink)
    }

    fn finish(mut self, lineage: Lineage, sink: &mut dyn ShardSink) -> Result<Manifest, DataError> {
        self.flush(sink)?;
        self.writer.finish(lineage, sink)
    }
}

// --------------------------------------------------------------------- CSV

#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum Kind {
    Unknown,
    Int,
    Float,
    Str,
}

#[derive(Clone, Copy)]
struct Infer {
    kind: Kind,
    missing: bool,
}

impl Infer {
    fn observe(&mut self, s: &str) {
        if s.is_empty() {
            self.missing = true;
            return;
        }
        if self.kind == Kind::Str {
            return;
        }
        let k = if s.parse::<i64>().is_ok() {
            Kind::Int
        } else if s.parse::<f64>().is_ok() {
            Kind::Float
        } else {
            Kind::Str
        };
        if k > self.kind {
            self.kind = k;
        }
    }

    /// All integers → Int64; numbers (or integers with blanks) → Float32
    /// (blanks become NaN); anything else, or all blank → String.
    fn dtype(self) -> ColumnType {
        match (self.kind, self.missing) {
            (Kind::Int, false) => ColumnType::Int64,
            (Kind::Int, true) | (Kind::Float, _) => ColumnType::f32_scalar(),
            _ => ColumnType::String,
        }
    }
}

fn csv_err(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => DataError::io(path, io),
        _ => DataError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        },
    }
}

fn csv_reader(path: &Path) -> Result<csv::Reader<Box<dyn BufRead>>, DataError> {
    let name = base_name(path).to_ascii_lowercase();
    let delim = if name.ends_with(".tsv") || name.ends_with(".tsv.gz") {
        b'\t'
    } else {
        b','
    };
    Ok(csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delim)
        .trim(csv::Trim::All)
        .from_reader(open_text(path)?))
}

fn import_csv(
    path: &Path,
    opts: &ImportOptions,
    sink: &mut dyn ShardSink,
) -> Result<Manifest, DataError> {
    // Pass 1: infer types.
    let mut rdr = csv_reader(path)?;
    let mut rec = csv::StringRecord::new();
    let mut first: Option<Vec<String>> = None;
    let mut infer = Vec::new();
    while rdr.read_record(&mut rec).map_err(|e| csv_err(path, e))? {
        match first {
            None => {
                first = Some(rec.iter().map(str::to_owned).collect());
                infer = vec![
                    Infer {
                        kind: Kind::Unknown,
                        missing: false
                    };
                    rec.len()
                ];
            }
            Some(_) => rec.iter().zip(&mut infer).for_each(|(f, i)| i.observe(f)),
        }
    }
    let first = first.ok_or_else(|| DataError::Parse {
        path: path.to_path_buf(),
        line: 1,
        message: "empty file".into(),
    })?;
    let header = opts.header.unwrap_or_else(|| {
        first
            .iter()
            .any(|f| !f.is_empty() && f.parse::<f64>().is_err())
    });
    if !header {
        first.iter().zip(&mut infer).for_each(|(f, i)| i.observe(f));
    }
    let schema: Vec<Field> = infer
        .iter()
        .enumerate()
        .map(|(i, inf)| {
            let name = match &first[i] {
                n if header && !n.is_empty() => n.clone(),
                _ => format!("c{i}"),
            };
            Field::new(name, inf.dtype())
        })
        .collect();
    validate_schema(&schema).map_err(|e| DataError::Parse {
        path: path.to_path_buf(),
        line: 1,
        message: e.to_string(),
    })?;

    // Pass 2: convert and stream into the writer.
    let mut rows = Rows::new(schema, opts, opts.shard_rows)?;
    let mut rdr = csv_reader(path)?;
    let mut skip_header = header;
    while rdr.read_record(&mut rec).map_err(|e| csv_err(path, e))? {
        if std::mem::take(&mut skip_header) {
            continue;
        }
        let line = rec.position().map_or(0, |p| p.line());
        for (i, f) in rec.iter().enumerate() {
            let bad = |what: &str| DataError::Parse {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "column `{}`: cannot parse {f:?} as {what}",
                    rows.schema[i].name
                ),
            };
            match &mut rows.builders[i] {
                Builder::F(_, v) if f.is_empty() => v.push(f32::NAN),
                Builder::F(_, v) => v.push(f.parse::<f64>().map_err(|_| bad("float32"))? as f32),
                Builder::I(v) => v.push(f.parse().map_err(|_| bad("int64"))?),
                Builder::S(v) => v.push(f.to_owned()),
                Builder::B(_) => unreachable!("CSV has no bytes columns"),
            }
        }
        rows.row_done(sink)?;
    }
    rows.finish(lineage("csv", path), sink)
}

// ------------------------------------------------------------------- JSONL

/// A JSON object with its keys in file order (independent of serde_json features).
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry::<String, serde_json::Value>()? {
                    out.push(kv);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum JKind {
    Int,
    Float,
    Str,
    Tensor(Vec<usize>),
}

impl std::fmt::Display for JKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JKind::Int | JKind::Float => write!(f, "a number"),
            JKind::Str => write!(f, "a string"),
            JKind::Tensor(s) => write!(f, "an array of numbers of shape {s:?}"),
        }
    }
}

fn tensor_shape(v: &serde_json::Value) -> Option<Vec<usize>> {
    match v {
        serde_json::Value::Number(_) => Some(Vec::new()),
        serde_json::Value::Array(items) => {
            let inner = tensor_shape(items.first()?)?;
            for it in &items[1..] {
                if tensor_shape(it)? != inner {
                    return None;
                }
            }
            let mut s = vec![items.len()];
            s.extend(inner);
            Some(s)
        }
        _ => None,
    }
}

fn jkind(v: &serde_json::Value) -> Result<JKind, String> {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_i64() => Ok(JKind::Int),
        Value::Number(_) => Ok(JKind::Float),
        Value::String(_) => Ok(JKind::Str),
        Value::Array(_) => tensor_shape(v)
            .filter(|s| !s.contains(&0))
            .map(JKind::Tensor)
            .ok_or_else(|| "arrays must be non-empty, rectangular and hold only numbers".into()),
        Value::Null => Err("null values are not supported".into()),
        Value::Bool(_) => Err("booleans are not supported".into()),
        Value::Object(_) => Err("nested objects are not supported".into()),
    }
}

fn flatten_numbers(v: &serde_json::Value, out: &mut Vec<f32>) {
    match v {
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN) as f32),
        serde_json::Value::Array(items) => items.iter().for_each(|i| flatten_numbers(i, out)),
        _ => {}
    }
}

/// Calls `f(line_number, object)` for each non-blank line.
fn for_each_object(
    path: &Path,
    mut f: impl FnMut(u64, Ordered) -> Result<(), DataError>,
) -> Result<(), DataError> {
    for (i, line) in open_text(path)?.lines().enumerate() {
        let line_no = i as u64 + 1;
        let parse_err = |message: String| DataError::Parse {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        let line = match line {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(parse_err("invalid UTF-8".into()))
            }
            Err(e) => return Err(DataError::io(path, e)),
        };
        if line.trim().is_empty() {
            continue;
        }
        let obj: Ordered = serde_json::from_str(&line).map_err(|e| parse_err(e.to_string()))?;
        f(line_no, obj)?;
    }
    Ok(())
}

fn import_jsonl(
    path: &Path,
    opts: &ImportOptions,
    sink: &mut dyn ShardSink,
) -> Result<Manifest, DataError> {
    let perr = |line: u64, message: String| DataError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    // Pass 1: keys (in first-line order) and types.
    let mut keys: Vec<(String, JKind)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut first = true;
    for_each_object(path, |line, obj| {
        if std::mem::take(&mut first) {
            for (k, v) in obj.0 {
                let kind = jkind(&v).map_err(|m| perr(line, format!("key `{k}`: {m}")))?;
                if index.insert(k.clone(), keys.len()).is_some() {
                    return Err(perr(line, format!("duplicate key `{k}`")));
                }
                keys.push((k, kind));
            }
            return Ok(());
        }
        let mut seen = vec![false; keys.len()];
        for (k, v) in obj.0 {
            let &i = index.get(&k).ok_or_else(|| {
                perr(
                    line,
                    format!("unexpected key `{k}` (not in the first line)"),
                )
            })?;
            seen[i] = true;
            let found = jkind(&v).map_err(|m| perr(line, format!("key `{k}`: {m}")))?;
            let expected = &mut keys[i].1;
            match (&*expected, &found) {
                (a, b) if a == b => {}
                (JKind::Int, JKind::Float) => *expected = JKind::Float,
                (JKind::Float, JKind::Int) => {}
                _ => {
                    return Err(perr(
                        line,
                        format!("key `{k}`: expected {expected}, found {found}"),
                    ))
                }
            }
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(perr(line, format!("missing key `{}`", keys[i].0)));
        }
        Ok(())
    })?;
    if first {
        return Err(perr(1, "no JSON objects in file".into()));
    }
    let schema: Vec<Field> = keys
        .iter()
        .map(|(k, kind)| {
            let dtype = match kind {
                JKind::Int => ColumnType::Int64,
                JKind::Float => ColumnType::f32_scalar(),
                JKind::Str => ColumnType::String,
                JKind::Tensor(s) => ColumnType::Float32 { shape: s.clone() },
            };
            Field::new(k.clone(), dtype)
        })
        .collect();

    // Pass 2: convert.
    let mut rows = Rows::new(schema, opts, opts.shard_rows)?;
    for_each_object(path, |_line, obj| {
        for (k, v) in obj.0 {
            let i = index[&k];
            match (&mut rows.builders[i], v) {
                (Builder::I(out), serde_json::Value::Number(n)) => {
                    out.push(n.as_i64().expect("checked in pass 1"))
                }
                (Builder::S(out), serde_json::Value::String(s)) => out.push(s),
                (Builder::F(_, out), v) => flatten_numbers(&v, out),
                _ => unreachable!("types checked in pass 1"),
            }
        }
        rows.row_done(sink)
    })?;
    rows.finish(lineage("jsonl", path), sink)
}

// --------------------------------------------------------------------- IDX

/// A reader over an IDX file (optionally gzipped): magic `00 00 <type> <ndims>`,
/// `ndims` big-endian `u32` dimensions, then big-endian values.
struct Idx {
    r: Box<dyn Read>,
    path: PathBuf,
    dtype: u8,
    dims: Vec<usize>,
    per: usize,
}

impl Idx {
    fn open(path: &Path) -> Result<Idx, DataError> {
        let mut r = open(path)?;
        let corrupt = |m: &str| DataError::Corrupt(format!("{}: {m}", path.display()));
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)
            .map_err(|_| corrupt("truncated IDX header"))?;
        let (dtype, nd) = (magic[2], magic[3] as usize);
        if magic[0] != 0 || magic[1] != 0 || elem_size(dtype).is_none() || nd == 0 {
            return Err(corrupt("not an IDX file (bad magic)"));
        }
        let mut dims = Vec::with_capacity(nd);
        for _ in 0..nd {
            let mut d = [0u8; 4];
            r.read_exact(&mut d)
                .map_err(|_| corrupt("truncated IDX header"))?;
            dims.push(u32::from_be_bytes(d) as usize);
        }
        let per = dims[1..]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&p| p > 0)
            .ok_or_else(|| corrupt("bad IDX dimensions"))?;
        Ok(Idx {
            r,
            path: path.to_path_buf(),
            dtype,
            dims,
            per,
        })
    }

    fn items(&self) -> usize {
        self.dims[0]
    }

    fn integer(&self) -> bool {
        matches!(self.dtype, 0x08 | 0x09 | 0x0B | 0x0C)
    }

    /// Reads `n` items as raw bytes.
    fn read(&mut self, n: usize) -> Result<Vec<u8>, DataError> {
        let size = elem_size(self.dtype).unwrap();
        let mut buf = vec![0u8; n * self.per * size];
        self.r.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                DataError::Corrupt(format!(
                    "{}: truncated IDX file (header says {} items)",
                    self.path.display(),
                    self.items()
                ))
            } else {
                DataError::io(&self.path, e)
            }
        })?;
        Ok(buf)
    }

    fn values<'a>(&self, raw: &'a [u8]) -> impl Iterator<Item = f64> + 'a {
        let size = elem_size(self.dtype).unwrap();
        let dtype = self.dtype;
        raw.chunks_exact(size).map(move |c| match dtype {
            0x08 => c[0] as f64,
            0x09 => c[0] as i8 as f64,
            0x0B => i16::from_be_bytes([c[0], c[1]]) as f64,
            0x0C => i32::from_be_bytes(c.try_into().unwrap()) as f64,
            0x0D => f32::from_be_bytes(c.try_into().unwrap()) as f64,
            _ => f64::from_be_bytes(c.try_into().unwrap()),
        })
    }

    /// The column this file becomes: 1-D files are labels, others images.
    fn field(&self, label_name: &str, image_name: &str) -> Field {
        if self.dims.len() == 1 {
            let dtype = if self.integer() {
                ColumnType::Int64
            } else {
                ColumnType::f32_scalar()
            };
            Field::new(label_name, dtype)
        } else {
            Field::new(
                image_name,
                ColumnType::Float32 {
                    shape: self.dims[1..].to_vec(),
                },
            )
        }
    }

    fn read_into(&mut self, n: usize, b: &mut Builder) -> Result<(), DataError> {
        let raw = self.read(n)?;
        match b {
            Builder::I(out) => out.extend(self.values(&raw).map(|v| v as i64)),
            Builder::F(_, out) => out.extend(self.values(&raw).map(|v| v as f32)),
            _ => unreachable!("IDX columns are numeric"),
        }
        Ok(())
    }
}

fn elem_size(dtype: u8) -> Option<usize> {
    match dtype {
        0x08 | 0x09 => Some(1),
        0x0B => Some(2),
        0x0C | 0x0D => Some(4),
        0x0E => Some(8),
        _ => None,
    }
}

fn import_idx_readers(
    mut files: Vec<(Idx, Field)>,
    opts: &ImportOptions,
    sink: &mut dyn ShardSink,
    lineage: Lineage,
) -> Result<Manifest, DataError> {
    let total = files[0].0.items();
    let schema = files.iter().map(|(_, f)| f.clone()).collect();
    let mut rows = Rows::new(schema, opts, opts.shard_rows)?;
    let chunk = rows.chunk;
    let mut done = 0;
    while done < total {
        let n = chunk.min(total - done);
        for (i, (idx, _)) in files.iter_mut().enumerate() {
            idx.read_into(n, &mut rows.builders[i])?;
        }
        rows.n = n;
        rows.flush(sink)?;
        done += n;
    }
    rows.finish(lineage, sink)
}

/// One IDX file: 1-D → column `label`, otherwise `image` (Float32, raw values).
fn import_idx_file(
    path: &Path,
    opts: &ImportOptions,
    sink: &mut dyn ShardSink,
) -> Result<Manifest, DataError> {
    let idx = Idx::open(path)?;
    let field = idx.field("label", "image");
    import_idx_readers(vec![(idx, field)], opts, sink, lineage("idx", path))
}

/// An images file and a labels file → columns `image` and `label`. Use this
/// directly when a directory holds several pairs (e.g. MNIST train and t10k).
pub fn import_idx_pair(
    images: &Path,
    labels: &Path,
    opts: &ImportOptions,
    sink: &mut dyn ShardSink,
) -> Result<Manifest, DataError> {
    let img = Idx::open(images)?;
    let lab = Idx::open(labels)?;
    if img.dims.len() < 2 {
        return Err(DataError::Schema(format!(
            "{}: expected an images file (at least 2 dimensions)",
            images.display()
        )));
    }
    if lab.dims.len() != 1 {
        return Err(DataError::Schema(format!(
            "{}: expected a labels file (1 dimension)",
            labels.display()
        )));
    }
    if img.items() != lab.items() {
        return Err(DataError::Schema(format!(
            "row counts differ: {} has {} images, {} has {} labels",
            images.display(),
            img.items(),
            labels.display(),
            lab.items()
        )));
    }
    let fi = img.field("label", "image");
    let fl = lab.field("label", "image");
    import_idx_readers(
        vec![(img, fi), (lab, fl)],
        opts,
        sink,
        lineage("idx", images),
    )
}

/// Finds the single `X-images-idx3-ubyte[.gz]` / `X-labels-idx1-ubyte[.gz]`
/// pair in a directory.
fn find_idx_pair(dir: &Path) -> Result<(PathBuf, PathBuf), DataError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut pairs = Vec::new();
    for n in &names {
        let base = n.strip_suffix(".gz").unwrap_or(n);
        if !(base.ends_with("idx3-ubyte") && base.contains("images")) {
            continue;
        }
        let lbase = base.replace("images", "labels").replace("idx3", "idx1");
        if let Some(l) = [lbase.clone(), format!("{lbase}.gz")]
            .into_iter()
            .find(|l| names.contains(l))
        {
            pairs.push((dir.join(n), dir.join(l)));
        }
    }
    match pairs.len() {
        1 => Ok(pairs.pop().unwrap()),
        0 => Err(DataError::NotFound(format!(
            "{}: no *-images-idx3-ubyte[.gz] with a matching *-labels-idx1-ubyte[.gz]",
            dir.display()
        ))),
        _ => Err(DataError::invalid(
            "path",
            format!(
                "{} holds several IDX pairs ({}); import one with import_idx_pair",
                dir.display(),
                pairs
                    .iter()
                    .map(|(i, _)| base_name(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

// ------------------------------------------------------------ image folder

fn list_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for p in list_sorted(dir)? {
        if p.is_dir() {
            walk_images(&p, out)?;
        } else {
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// One subfolder per class (sorted; label = index), images found recursively.
/// Columns: `image` (original bytes), `label`, `class`, `path`.
fn import_image_folder(
    dir: &Path,
    opts: &ImportOptions,
    sink: &mut dyn ShardSink,
) -> Result<(Manifest, ImportReport), DataError> {
    let classes: Vec<PathBuf> = list_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(DataError::NotFound(format!(
            "{}: no class subfolders",
            dir.display()
        )));
    }
    let schema = vec![
        Field::new("image", ColumnType::Bytes),
        Field::new("label", ColumnType::Int64),
        Field::new("class", ColumnType::String),
        Field::new("path", ColumnType::String),
    ];
    // Images can be large: hand them to the writer in small chunks.
    let mut rows = Rows::new(schema, opts, 256)?;
    let mut report = ImportReport::default();
    let mut found = 0usize;
    for (label, class_dir) in classes.iter().enumerate() {
        let class = base_name(class_dir);
        let mut files = Vec::new();
        walk_images(class_dir, &mut files)?;
        for file in files {
            found += 1;
            let rel = file
                .strip_prefix(dir)
                .unwrap_or(&file)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, e))?;
            if let Err(e) = image::load_from_memory(&bytes) {
                match opts.on_bad_file {
                    OnBad::Fail => {
                        return Err(DataError::Corrupt(format!("{}: {e}", file.display())))
                    }
                    OnBad::Skip => {
                        report.skipped.push(rel);
                        continue;
                    }
                }
            }
            let [Builder::B(img), Builder::I(lab), Builder::S(cls), Builder::S(path)] =
                &mut rows.builders[..]
            else {
                unreachable!("fixed schema")
            };
            img.push(bytes);
            lab.push(label as i64);
            cls.push(class.clone());
            path.push(rel);
            rows.row_done(sink)?;
        }
    }
    if found == 0 {
        return Err(DataError::NotFound(format!(
            "{}: no .png/.jpg/.jpeg files in the class subfolders",
            dir.display()
        )));
    }
    let m = rows.finish(lineage("image_folder", dir), sink)?;
    Ok((m, report))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::loader::read_table;
    use crate::writer::MemStore;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn run(path: &Path, opts: &ImportOptions) -> (Manifest, Table) {
        let mut store = MemStore::new();
        let m = import(path, opts, &mut store).unwrap();
        let t = read_table(&m, &store).unwrap();
        (m, t)
    }

    #[test]
    fn csv_with_header_and_inference() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "\u{feff}id,x,name,mixed\n1,0.5,a,1\n2,1,b,x\n3,,c,2\n").unwrap();
        let opts = ImportOptions {
            shard_rows: 2,
            ..Default::default()
        };
        let (m, t) = run(&p, &opts);
        assert_eq!(m.rows, 3);
        assert_eq!(m.shards.len(), 2);
        assert_eq!(m.lineage.source.as_deref(), Some("csv:d.csv"));
        assert_eq!(t.column("id"), Some(&Column::Int64(vec![1, 2, 3])));
        let Some(Column::Float32 { shape, values }) = t.column("x") else {
            panic!("x should be float")
        };
        assert!(shape.is_empty());
        assert_eq!(&values[..2], &[0.5, 1.0]);
        assert!(values[2].is_nan());
        assert_eq!(m.field("name").unwrap().dtype, ColumnType::String);
        assert_eq!(m.field("mixed").unwrap().dtype, ColumnType::String);
        assert_eq!(m.stats["id"].histogram.as_ref().unwrap().len(), 3);
    }

    #[test]
    fn csv_without_header_and_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("digits.csv.gz");
        std::fs::write(&p, gz(b"1,2.5,3\n4,5,6\n")).unwrap();
        let (m, t) = run(&p, &ImportOptions::default());
        assert_eq!(m.lineage.source.as_deref(), Some("csv:digits.csv.gz"));
        let names: Vec<&str> = m.schema.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["c0", "c1", "c2"]);
        assert_eq!(t.column("c0"), Some(&Column::Int64(vec![1, 4])));
        assert_eq!(m.field("c1").unwrap().dtype, ColumnType::f32_scalar());
        // Forcing a header on numeric data.
        let (m, t) = run(
            &p,
            &ImportOptions {
                header: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(m.schema[0].name, "1");
        assert_eq!(t.rows(), 1);
    }

    #[test]
    fn csv_ragged_row_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "a,b\n1,2\n3\n").unwrap();
        let err = import(&p, &ImportOptions::default(), &mut MemStore::new()).unwrap_err();
        assert!(matches!(err, DataError::Parse { line: 3, .. }), "{err}");
    }

    #[test]
    fn jsonl_import_and_type_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"z\": 1, \"v\": [1, 2], \"s\": \"a\", \"f\": 1}\n\n{\"s\": \"b\", \"z\": 2, \"v\": [3, 4.5], \"f\": 2.5}\n",
        )
        .unwrap();
        let (m, t) = run(&p, &ImportOptions::default());
        let names: Vec<&str> = m.schema.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["z", "v", "s", "f"], "first-line key order");
        assert_eq!(t.column("z"), Some(&Column::Int64(vec![1, 2])));
        assert_eq!(
            t.column("v"),
            Some(&Column::Float32 {
                shape: vec![2],
                values: vec![1., 2., 3., 4.5]
            })
        );
        assert_eq!(
            t.column("f"),
            Some(&Column::Float32 {
                shape: vec![],
                values: vec![1., 2.5]
            })
        );

        std::fs::write(
            &p,
            "{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"b\": \"y\"}\n{\"a\": \"oops\", \"b\": \"z\"}\n",
        )
        .unwrap();
        let err = import(&p, &ImportOptions::default(), &mut MemStore::new()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Parse { line: 3, .. }), "{msg}");
        assert!(msg.contains("`a`") && msg.contains(":3:"), "{msg}");

        std::fs::write(&p, "{\"v\": [1, 2]}\n{\"v\": [1, 2, 3]}\n").unwrap();
        let err = import(&p, &ImportOptions::default(), &mut MemStore::new()).unwrap_err();
        assert!(matches!(err, DataError::Parse { line: 2, .. }), "{err}");
    }

    fn idx_bytes(dtype: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, dtype, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn idx_pair_and_single_files() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..3 * 2 * 2).map(|v| v as u8 * 20).collect();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte.gz"),
            gz(&idx_bytes(8, &[3, 2, 2], &pixels)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            idx_bytes(8, &[3], &[7, 0, 9]),
        )
        .unwrap();
        let (m, t) = run(dir.path(), &ImportOptions::default());
        assert_eq!(m.rows, 3);
        assert_eq!(
            m.field("image").unwrap().dtype,
            ColumnType::Float32 { shape: vec![2, 2] }
        );
        assert_eq!(t.column("label"), Some(&Column::Int64(vec![7, 0, 9])));
        let Some(Column::Float32 { values, .. }) = t.column("image") else {
            panic!()
        };
        assert_eq!(values[5], 100.0);

        let (_, t) = run(
            &dir.path().join("train-labels-idx1-ubyte"),
            &ImportOptions::default(),
        );
        assert_eq!(t.schema.len(), 1);
        assert_eq!(t.column("label"), Some(&Column::Int64(vec![7, 0, 9])));

        // Mismatched counts.
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            idx_bytes(8, &[2], &[7, 0]),
        )
        .unwrap();
        let err = import(dir.path(), &ImportOptions::default(), &mut MemStore::new()).unwrap_err();
        assert!(matches!(err, DataError::Schema(_)), "{err}");
        // Truncated file.
        let p = dir.path().join("x-images-idx3-ubyte");
        std::fs::write(&p, idx_bytes(8, &[3, 2, 2], &pixels[..7])).unwrap();
        let err = import(&p, &ImportOptions::default(), &mut MemStore::new()).unwrap_err();
        assert!(matches!(err, DataError::Corrupt(_)), "{err}");
    }

    pub(crate) fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([seed, (x * 10) as u8, (y * 10) as u8])
        });
        img.save(path).unwrap();
    }

    #[test]
    fn image_folder_fail_and_skip() {
        let dir = tempfile::tempdir().unwrap();
        for (c, n) in [("cat", 2), ("dog", 3)] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
            for i in 0..n {
                write_png(&dir.path().join(c).join(format!("{i}.png")), 4, 3, i);
            }
        }
        std::fs::write(dir.path().join("dog").join("notes.txt"), "ignored").unwrap();
        let (m, t) = run(dir.path(), &ImportOptions::default());
        assert_eq!(m.rows, 5);
        assert_eq!(
            m.lineage.source.as_deref().unwrap().split(':').next(),
            Some("image_folder")
        );
        assert_eq!(t.column("label"), Some(&Column::Int64(vec![0, 0, 1, 1, 1])));
        let Some(Column::String(paths)) = t.column("path") else {
            panic!()
        };
        assert_eq!(paths[2], "dog/0.png");
        let Some(Column::Bytes(imgs)) = t.column("image") else {
            panic!()
        };
        assert_eq!(
            imgs[0],
            std::fs::read(dir.path().join("cat/0.png")).unwrap()
        );

        std::fs::write(
            dir.path().join("cat").join("broken.png"),
            b"\x89PNG garbage",
        )
        .unwrap();
        let err = import(dir.path(), &ImportOptions::default(), &mut MemStore::new()).unwrap_err();
        assert!(matches!(err, DataError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("broken.png"), "{err}");

        let opts = ImportOptions {
            on_bad_file: OnBad::Skip,
            ..Default::default()
        };
        let mut store = MemStore::new();
        let (m, report) = import_with_report(dir.path(), &opts, &mut store).unwrap();
        assert_eq!(m.rows, 5);
        assert_eq!(report.skipped, vec!["cat/broken.png".to_string()]);
    }

    #[test]
    fn unknown_format_and_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        std::fs::write(&p, "x").unwrap();
        let mut s = MemStore::new();
        assert!(matches!(
            import(&p, &ImportOptions::default(), &mut s),
            Err(DataError::Invalid { .. })
        ));
        assert!(matches!(
            import(
                &dir.path().join("nope.csv"),
                &ImportOptions::default(),
                &mut s
            ),
            Err(DataError::NotFound(_))
        ));
    }
}
