//! The training loader: batches streamed from shards on background threads.
//!
//! Pipeline: a fetch thread reads and verifies one shard ahead (SHA-256 of the
//! bytes must equal the shard's name), a planner thread filters and orders
//! rows and cuts them into batch jobs, `workers` threads turn jobs into
//! batches (decoding and augmenting images), and the iterator re-orders
//! finished batches by index. A token channel of capacity `prefetch` bounds
//! the batches in flight, so memory is `prefetch` batches plus the shards
//! those batches reference and the one being fetched.
//!
//! Order is a pure function of `(seed, epoch)`: with `shuffle`, shards are
//! visited in a ChaCha-permuted order and rows are permuted within each shard;
//! augmentation draws from an RNG seeded by `(seed, epoch, row index)`. Hence
//! batch `k` of an epoch is the same whatever the worker count, and resuming
//! at batch `k` ([`batches_from`], [`BatchIter::skip_batches`]) reproduces the
//! rest of the epoch exactly. Without a filter, resuming skips whole shards
//! without reading them.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::schema::ColumnType;
use crate::shard::{decode, decode_columns, sha256_hex};
use crate::table::{Column, Table};
use crate::writer::ShardSource;
use crate::DataError;

/// How to turn encoded images into tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageOptions {
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Pixel values (0–255) are multiplied by this, e.g. `1.0 / 255.0`.
    pub scale: f32,
    /// Zero-pad by this many pixels, then crop back at a random offset (0 = off).
    pub random_crop_padding: usize,
    /// Mirror left-right with probability 1/2.
    pub horizontal_flip: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            channels: 3,
            height: 224,
            width: 224,
            scale: 1.0 / 255.0,
            random_crop_padding: 0,
            horizontal_flip: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderOptions {
    pub batch_size: usize,
    pub seed: u64,
    pub epoch: u64,
    pub shuffle: bool,
    pub drop_last: bool,
    /// Input column: Float32 (any shape), Int64 scalar, or Bytes (images).
    pub input: String,
    /// Int64 → [`Targets::Classes`]; Float32 → [`Targets::Values`].
    pub target: Option<String>,
    /// Keep only rows whose column (String or Int64) equals the value.
    pub filter: Option<(String, String)>,
    /// Batches in flight (default 4).
    pub prefetch: usize,
    /// Batch-building threads (default 1).
    pub workers: usize,
    /// Required when `input` is a Bytes column.
    pub image: Option<ImageOptions>,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 32,
            seed: 0,
            epoch: 0,
            shuffle: true,
            drop_last: false,
            input: "input".into(),
            target: None,
            filter: None,
            prefetch: 4,
            workers: 1,
            image: None,
        }
    }
}

/// One batch: `inputs` holds `rows` samples of `sample_shape`, row-major
/// (images are `[C, H, W]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: Vec<f32>,
    pub sample_shape: Vec<usize>,
    pub rows: usize,
    pub targets: Option<Targets>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    Classes(Vec<i64>),
    /// Flattened; `len / rows` values per row.
    Values(Vec<f32>),
}

// ------------------------------------------------------------ shard reading

/// Reads shard `index` of `manifest`, verifying its SHA-256, row count and
/// schema; `columns` restricts decoding to those columns.
pub fn read_shard(
    manifest: &Manifest,
    index: usize,
    source: &dyn ShardSource,
    columns: Option<&[&str]>,
) -> Result<Table, DataError> {
    let sref = manifest
        .shards
        .get(index)
        .ok_or_else(|| DataError::NotFound(format!("shard #{index}")))?;
    let bytes = source.get(&sref.sha256)?;
    let got = sha256_hex(&bytes);
    if got != sref.sha256 {
        return Err(DataError::Corrupt(format!(
            "shard {}: content hashes to {got}",
            sref.sha256
        )));
    }
    let table = match columns {
        None => decode(&bytes),
        Some(names) => decode_columns(&bytes, names),
    }
    .map_err(|e| DataError::Corrupt(format!("shard {}: {e}", sref.sha256)))?;
    if table.rows() as u64 != sref.rows && !table.columns.is_empty() {
        return Err(DataError::Corrupt(format!(
            "shard {}: {} rows, manifest says {}",
            sref.sha256,
            table.rows(),
            sref.rows
        )));
    }
    for f in &table.schema {
        if manifest.field(&f.name) != Some(f) {
            return Err(DataError::Corrupt(format!(
                "shard {}: column `{}` ({}) does not match the manifest schema",
                sref.sha256, f.name, f.dtype
            )));
        }
    }
    if columns.is_none() && table.schema.len() != manifest.schema.len() {
        return Err(DataError::Corrupt(format!(
            "shard {}: has {} columns, manifest {}",
            sref.sha256,
            table.schema.len(),
            manifest.schema.len()
        )));
    }
    Ok(table)
}

/// Reads a whole version into memory (shards verified).
pub fn read_table(manifest: &Manifest, source: &dyn ShardSource) -> Result<Table, DataError> {
    let mut out = Table::empty(&manifest.schema);
    for i in 0..manifest.shards.len() {
        let t = read_shard(manifest, i, source, None)?;
        let t = Table {
            columns: manifest
                .schema
                .iter()
                .map(|f| t.column(&f.name).cloned().expect("checked by read_shard"))
                .collect(),
            schema: manifest.schema.clone(),
        };
        out.append(&t)?;
    }
    Ok(out)
}

// ------------------------------------------------------------- validation

#[derive(Clone, Debug)]
enum FilterValue {
    Str(String),
    Int(i64),
}

struct Plan {
    manifest: Manifest,
    opts: LoaderOptions,
    /// Columns decoded from each shard.
    columns: Vec<String>,
    filter: Option<(String, FilterValue)>,
    /// Global index of each shard's first row, in manifest order.
    offsets: Vec<u64>,
    sample_shape: Vec<usize>,
}

fn column_list(m: &Manifest) -> String {
    m.schema
        .iter()
        .map(|f| format!("{} ({})", f.name, f.dtype))
        .collect::<Vec<_>>()
        .join(", ")
}

fn lookup<'a>(m: &'a Manifest, name: &str) -> Result<&'a ColumnType, DataError> {
    m.field(name).map(|f| &f.dtype).ok_or_else(|| {
        DataError::invalid(
            name,
            format!("no such column; available: {}", column_list(m)),
        )
    })
}

fn filter_value(
    m: &Manifest,
    opts: &LoaderOptions,
) -> Result<Option<(String, FilterValue)>, DataError> {
    let Some((col, value)) = &opts.filter else {
        return Ok(None);
    };
    let v = match lookup(m, col)? {
        ColumnType::String => FilterValue::Str(value.clone()),
        ColumnType::Int64 => FilterValue::Int(value.parse().map_err(|_| {
            DataError::invalid(
                col,
                format!("is int64; filter value {value:?} is not an integer"),
            )
        })?),
        t => {
            return Err(DataError::invalid(
                col,
                format!("has type {t}; a filter column must be string or int64"),
            ))
        }
    };
    Ok(Some((col.clone(), v)))
}

fn plan(manifest: &Manifest, opts: LoaderOptions) -> Result<Plan, DataError> {
    if opts.batch_size == 0 {
        return Err(DataError::invalid("batch_size", "must be at least 1"));
    }
    let sample_shape = match lookup(manifest, &opts.input)? {
        ColumnType::Float32 { shape } => shape.clone(),
        ColumnType::Int64 => Vec::new(),
        ColumnType::Bytes => {
            let img = opts.image.as_ref().ok_or_else(|| {
                DataError::invalid(
                    &opts.input,
                    "has type bytes (encoded images); set image options to decode it",
                )
            })?;
            if img.channels != 1 && img.channels != 3 {
                return Err(DataError::invalid("image.channels", "must be 1 or 3"));
            }
            if img.height == 0 || img.width == 0 {
                return Err(DataError::invalid(
                    "image",
                    "height and width must be positive",
                ));
            }
            vec![img.channels, img.height, img.width]
        }
        t => {
            return Err(DataError::invalid(
                &opts.input,
                format!("has type {t}; an input must be float32, int64 or bytes (images)"),
            ))
        }
    };
    // A batch holds `batch_size` samples of `sample_shape` (a manifest's shape or the image
    // options): refuse sizes that cannot be counted rather than wrap or panic on them.
    if crate::schema::shape_elements(&sample_shape)
        .and_then(|n| n.checked_mul(opts.batch_size))
        .and_then(|n| n.checked_mul(4))
        .is_none()
    {
        return Err(DataError::invalid(
            &opts.input,
            format!(
                "samples of shape {sample_shape:?} in batches of {} are too large",
                opts.batch_size
            ),
        ));
    }
    if let Some(t) = &opts.target {
        match lookup(manifest, t)? {
            ColumnType::Int64 | ColumnType::Float32 { .. } => {}
            other => {
                return Err(DataError::invalid(
                    t,
                    format!(
                        "has type {other}; a target must be int64 (classes) or float32 (values)"
                    ),
                ))
            }
        }
    }
    let filter = filter_value(manifest, &opts)?;
    let mut columns = vec![opts.input.clone()];
    columns.extend(opts.target.clone());
    columns.extend(filter.as_ref().map(|(c, _)| c.clone()));
    columns.dedup();
    columns.sort();
    columns.dedup();
    let mut offsets = Vec::with_capacity(manifest.shards.len());
    let mut acc = 0u64;
    for s in &manifest.shards {
        offsets.push(acc);
        acc = acc.checked_add(s.rows).ok_or_else(|| {
            DataError::Corrupt("manifest: the shards' row counts overflow".into())
        })?;
    }
    Ok(Plan {
        manifest: manifest.clone(),
        opts,
        columns,
        filter,
        offsets,
        sample_shape,
    })
}

fn matching_rows(table: &Table, filter: &Option<(String, FilterValue)>) -> Vec<usize> {
    match filter {
        None => (0..table.rows()).collect(),
        Some((col, v)) => match (table.column(col), v) {
            (Some(Column::String(vals)), FilterValue::Str(want)) => {
                (0..vals.len()).filter(|&i| &vals[i] == want).collect()
            }
            (Some(Column::Int64(vals)), FilterValue::Int(want)) => {
                (0..vals.len()).filter(|&i| vals[i] == *want).collect()
            }
            _ => Vec::new(),
        },
    }
}

/// Rows the loader will produce per epoch (after the filter). Uses the
/// manifest's histogram when it has one, otherwise reads the filter column.
pub fn count_rows(
    manifest: &Manifest,
    source: &dyn ShardSource,
    opts: &LoaderOptions,
) -> Result<u64, DataError> {
    let Some((col, value)) = filter_value(manifest, opts)? else {
        return Ok(manifest.rows);
    };
    if let Some(h) = manifest.stats.get(&col).and_then(|s| s.histogram.as_ref()) {
        let key = match &value {
            FilterValue::Str(s) => s.clone(),
            FilterValue::Int(i) => i.to_string(),
        };
        return Ok(h.get(&key).copied().unwrap_or(0));
    }
    count_by_reading(manifest, source, &col, &value)
}

fn count_by_reading(
    manifest: &Manifest,
    source: &dyn ShardSource,
    col: &str,
    value: &FilterValue,
) -> Result<u64, DataError> {
    let filter = Some((col.to_string(), value.clone()));
    let mut n = 0u64;
    for i in 0..manifest.shards.len() {
        let t = read_shard(manifest, i, source, Some(&[col]))?;
        n += matching_rows(&t, &filter).len() as u64;
    }
    Ok(n)
}

/// Batches per epoch for these options.
pub fn count_batches(
    manifest: &Manifest,
    source: &dyn ShardSource,
    opts: &LoaderOptions,
) -> Result<usize, DataError> {
    if opts.batch_size == 0 {
        return Err(DataError::invalid("batch_size", "must be at least 1"));
    }
    let rows = count_rows(manifest, source, opts)? as usize;
    Ok(if opts.drop_last {
        rows / opts.batch_size
    } else {
        rows.div_ceil(opts.batch_size)
    })
}

// ----------------------------------------------------------------- seeds

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mix(a: u64, b: u64) -> u64 {
    splitmix(splitmix(a) ^ b)
}

const SHARD_ORDER: u64 = 1;
const ROW_ORDER: u64 = 2;
const AUGMENT: u64 = 3;

fn rng(opts: &LoaderOptions, domain: u64, item: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(opts.seed, opts.epoch), domain), item))
}

// ------------------------------------------------------------- the pipeline

/// Rows of one shard that belong to one batch: (row in shard, global row index).
type Segment = (Arc<Table>, Vec<(usize, u64)>);

enum Fetched {
    Table(usize, Result<Table, DataError>),
    /// A shard wholly before the resume point: only its row count matters.
    Skipped(u64),
}

enum Job {
    Rows(usize, Vec<Segment>),
    Failed(usize, DataError),
    End(usize),
}

enum Out {
    Batch(Result<Batch, DataError>),
    End,
}

struct Running {
    out: Receiver<(usize, Out)>,
    tokens: Receiver<()>,
    pending: HashMap<usize, Out>,
    threads: Vec<JoinHandle<()>>,
}

/// Iterator over one epoch's batches. Dropping it stops the threads.
pub struct BatchIter {
    plan: Arc<Plan>,
    source: Arc<dyn ShardSource>,
    next: usize,
    running: Option<Running>,
    done: bool,
}

/// Validates the options against the manifest and returns the epoch's batches.
/// Nothing is read until the first `next()`.
pub fn batches(
    manifest: &Manifest,
    source: Arc<dyn ShardSource>,
    opts: LoaderOptions,
) -> Result<BatchIter, DataError> {
    batches_from(manifest, source, opts, 0)
}

/// Like [`batches`], starting at batch `start` of the epoch (exact resume).
pub fn batches_from(
    manifest: &Manifest,
    source: Arc<dyn ShardSource>,
    opts: LoaderOptions,
    start: usize,
) -> Result<BatchIter, DataError> {
    Ok(BatchIter {
        plan: Arc::new(plan(manifest, opts)?),
        source,
        next: start,
        running: None,
        done: false,
    })
}

impl BatchIter {
    /// Index (within the epoch) of the batch `next()` returns.
    pub fn position(&self) -> usize {
        self.next
    }

    /// Skips `n` batches. Before the first `next()` this costs nothing (no
    /// decoding, and without a filter no reading of skipped shards).
    pub fn skip_batches(&mut self, n: usize) {
        if self.running.is_none() {
            self.next += n;
        } else {
            for _ in 0..n {
                if self.next().is_none() {
                    break;
                }
            }
        }
    }

    /// The shape of one sample.
    pub fn sample_shape(&self) -> &[usize] {
        &self.plan.sample_shape
    }

    fn start(&mut self) -> Running {
        let plan = self.plan.clone();
        let start = self.next;
        let prefetch = plan.opts.prefetch.max(1);
        let (fetch_tx, fetch_rx) = bounded::<Fetched>(1);
        let (tok_tx, tok_rx) = bounded::<()>(prefetch);
        let (job_tx, job_rx) = unbounded::<Job>();
        let (out_tx, out_rx) = unbounded::<(usize, Out)>();
        let mut threads = Vec::new();

        let order = shard_order(&plan);
        let (p, src, ord) = (plan.clone(), self.source.clone(), order.clone());
        threads.push(std::thread::spawn(move || {
            fetch(&p, &*src, &ord, start, fetch_tx)
        }));
        let p = plan.clone();
        threads.push(std::thread::spawn(move || {
            cut_batches(&p, start, fetch_rx, tok_tx, job_tx)
        }));
        for _ in 0..plan.opts.workers.max(1) {
            let (p, rx, tx) = (plan.clone(), job_rx.clone(), out_tx.clone());
            threads.push(std::thread::spawn(move || work(&p, rx, tx)));
        }
        Running {
            out: out_rx,
            tokens: tok_rx,
            pending: HashMap::new(),
            threads,
        }
    }
}

impl Iterator for BatchIter {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.running.is_none() {
            self.running = Some(self.start());
        }
        let r = self.running.as_mut().unwrap();
        loop {
            if let Some(out) = r.pending.remove(&self.next) {
                let _ = r.tokens.try_recv();
                match out {
                    Out::End => {
                        self.done = true;
                        self.running = None;
                        return None;
                    }
                    Out::Batch(res) => {
                        self.next += 1;
                        if res.is_err() {
                            self.done = true;
                            self.running = None;
                        }
                        return Some(res);
                    }
                }
            }
            match r.out.recv() {
                Ok((i, out)) => {
                    r.pending.insert(i, out);
                }
                Err(_) => {
                    // All senders gone without an end marker: a thread panicked.
                    self.done = true;
                    let r = self.running.take().unwrap();
                    for t in r.threads {
                        if let Err(p) = t.join() {
                            std::panic::resume_unwind(p);
                        }
                    }
                    return None;
                }
            }
        }
    }
}

fn shard_order(plan: &Plan) -> Vec<usize> {
    let mut order: Vec<usize> = (0..plan.manifest.shards.len()).collect();
    if plan.opts.shuffle {
        order.shuffle(&mut rng(&plan.opts, SHARD_ORDER, 0));
    }
    order
}

/// Fetch thread: reads, verifies and decodes shards in visiting order.
fn fetch(
    plan: &Plan,
    source: &dyn ShardSource,
    order: &[usize],
    start: usize,
    tx: Sender<Fetched>,
) {
    let skip_rows = (start as u64).saturating_mul(plan.opts.batch_size as u64);
    let names: Vec<&str> = plan.columns.iter().map(String::as_str).collect();
    let mut stream = 0u64;
    for &s in order {
        let rows = plan.manifest.shards[s].rows;
        let msg = if plan.filter.is_none() && stream + rows <= skip_rows {
            Fetched::Skipped(rows)
        } else {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                read_shard(&plan.manifest, s, source, Some(&names))
            }))
            .unwrap_or_else(|_| {
                Err(DataError::Corrupt(format!(
                    "shard {}: reading panicked",
                    plan.manifest.shards[s].sha256
                )))
            });
            Fetched::Table(s, res)
        };
        stream += rows;
        let failed = matches!(msg, Fetched::Table(_, Err(_)));
        if tx.send(msg).is_err() || failed {
            return;
        }
    }
}

/// Planner thread: filters and orders rows, cuts batches, emits jobs for
/// batches at or after `start`, one token per job.
fn cut_batches(
    plan: &Plan,
    start: usize,
    rx: Receiver<Fetched>,
    tokens: Sender<()>,
    jobs: Sender<Job>,
) {
    let bs = plan.opts.batch_size;
    let mut pos = 0usize; // rows of the filtered stream so far
    let mut cur: Vec<Segment> = Vec::new();
    let emit = |job: Job| tokens.send(()).is_ok() && jobs.send(job).is_ok();
    for msg in rx {
        match msg {
            Fetched::Skipped(rows) => pos += rows as usize,
            Fetched::Table(_, Err(e)) => {
                let _ = emit(Job::Failed((pos / bs).max(start), e));
                return;
            }
            Fetched::Table(s, Ok(table)) => {
                let mut rows = matching_rows(&table, &plan.filter);
                if plan.opts.shuffle {
                    rows.shuffle(&mut rng(&plan.opts, ROW_ORDER, s as u64));
                }
                let table = Arc::new(table);
                let base = plan.offsets[s];
                for r in rows {
                    if pos / bs >= start {
                        match cur.last_mut() {
                            Some((t, items)) if Arc::ptr_eq(t, &table) => {
                                items.push((r, base + r as u64))
                            }
                            _ => cur.push((table.clone(), vec![(r, base + r as u64)])),
                        }
                    }
                    pos += 1;
                    if pos.is_multiple_of(bs) {
                        let index = pos / bs - 1;
                        let segs = std::mem::take(&mut cur);
                        if index >= start && !emit(Job::Rows(index, segs)) {
                            return;
                        }
                    }
                }
            }
        }
    }
    let mut end = pos / bs;
    if !pos.is_multiple_of(bs) && !plan.opts.drop_last {
        if end >= start && !emit(Job::Rows(end, std::mem::take(&mut cur))) {
            return;
        }
        end += 1;
    }
    let _ = jobs.send(Job::End(end.max(start)));
}

/// Worker thread: builds batches.
fn work(plan: &Plan, rx: Receiver<Job>, tx: Sender<(usize, Out)>) {
    for job in rx {
        let msg = match job {
            Job::Rows(i, segs) => {
                // A panic (e.g. inside an image decoder) must not leave the
                // consumer waiting for this batch forever.
                let res =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(plan, &segs)))
                        .unwrap_or_else(|p| {
                            let msg = p
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            Err(DataError::Corrupt(format!(
                                "batch {i}: decoding panicked: {msg}"
                            )))
                        });
                (i, Out::Batch(res))
            }
            Job::Failed(i, e) => (i, Out::Batch(Err(e))),
            Job::End(i) => (i, Out::End),
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

fn build(plan: &Plan, segs: &[Segment]) -> Result<Batch, DataError> {
    let opts = &plan.opts;
    let rows: usize = segs.iter().map(|(_, items)| items.len()).sum();
    let per: usize = plan.sample_shape.iter().product();
    let mut inputs = Vec::with_capacity(rows * per);
    let mut targets = match opts.target.as_ref().map(|t| plan.manifest.field(t)) {
        Some(Some(f)) if f.dtype == ColumnType::Int64 => Some(Targets::Classes(Vec::new())),
        Some(_) => Some(Targets::Values(Vec::new())),
        None => None,
    };
    for (table, items) in segs {
        let input = table.column(&opts.input).expect("projected");
        let target = opts
            .target
            .as_ref()
            .map(|t| table.column(t).expect("projected"));
        for &(r, global) in items {
            match input {
                Column::Float32 { values, .. } => {
                    inputs.extend_from_slice(&values[r * per..(r + 1) * per])
                }
                Column::Int64(v) => inputs.push(v[r] as f32),
                Column::Bytes(v) => {
                    let img = opts.image.as_ref().expect("validated");
                    let mut rng = rng(opts, AUGMENT, global);
                    decode_image(&v[r], img, &mut rng, &mut inputs).map_err(|e| {
                        DataError::Corrupt(format!("column `{}`, row {global}: {e}", opts.input))
                    })?;
                }
                Column::String(_) => unreachable!("validated"),
            }
            match (&mut targets, target) {
                (Some(Targets::Classes(out)), Some(Column::Int64(v))) => out.push(v[r]),
                (Some(Targets::Values(out)), Some(Column::Float32 { shape, values })) => {
                    let n: usize = shape.iter().product();
                    out.extend_from_slice(&values[r * n..(r + 1) * n]);
                }
                (None, None) => {}
                _ => unreachable!("validated"),
            }
        }
    }
    Ok(Batch {
        inputs,
        sample_shape: plan.sample_shape.clone(),
        rows,
        targets,
    })
}

/// Decodes, resizes, scales and augments one image, appending `[C, H, W]`.
fn decode_image(
    bytes: &[u8],
    o: &ImageOptions,
    rng: &mut ChaCha8Rng,
    out: &mut Vec<f32>,
) -> Result<(), String> {
    use image::imageops::{resize, FilterType};
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let (w, h, c) = (o.width, o.height, o.channels);
    let raw = if c == 1 {
        let mut g = img.to_luma8();
        if g.dimensions() != (w as u32, h as u32) {
            g = resize(&g, w as u32, h as u32, FilterType::Triangle);
        }
        g.into_raw()
    } else {
        let mut g = img.to_rgb8();
        if g.dimensions() != (w as u32, h as u32) {
            g = resize(&g, w as u32, h as u32, FilterType::Triangle);
        }
        g.into_raw()
    };
    let p = o.random_crop_padding as isize;
    let (dx, dy) = if p > 0 {
        (rng.gen_range(-p..=p), rng.gen_range(-p..=p))
    } else {
        (0, 0)
    };
    let flip = o.horizontal_flip && rng.gen_bool(0.5);
    let base = out.len();
    out.resize(base + c * h * w, 0.0);
    for y in 0..h {
        let sy = y as isize + dy;
        if sy < 0 || sy >= h as isize {
            continue;
        }
        for x in 0..w {
            let cx = if flip { w - 1 - x } else { x };
            let sx = cx as isize + dx;
            if sx < 0 || sx >= w as isize {
                continue;
            }
            let src = (sy as usize * w + sx as usize) * c;
            for ch in 0..c {
                out[base + (ch * h + y) * w + x] = raw[src + ch] as f32 * o.scale;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Lineage;
    use crate::schema::Field;
    use crate::writer::{MemStore, VersionWriter};

    const N: usize = 1000;

    /// id (int64), x = [id, -id] (float32[2]), split ("test" when id % 5 == 0).
    fn dataset() -> (Manifest, Arc<MemStore>) {
        let schema = vec![
            Field::new("id", ColumnType::Int64),
            Field::new("x", ColumnType::Float32 { shape: vec![2] }),
            Field::new("split", ColumnType::String),
            Field::new("name", ColumnType::String),
        ];
        let t = Table::new(
            schema.clone(),
            vec![
                Column::Int64((0..N as i64).collect()),
                Column::Float32 {
                    shape: vec![2],
                    values: (0..N).flat_map(|i| [i as f32, -(i as f32)]).collect(),
                },
                Column::String(
                    (0..N)
                        .map(|i| if i % 5 == 0 { "test" } else { "train" }.to_string())
                        .collect(),
                ),
                Column::String((0..N).map(|i| format!("n{i}")).collect()),
            ],
        )
        .unwrap();
        let mut store = MemStore::new();
        let mut w = VersionWriter::new(schema, 64);
        w.push(t, &mut store).unwrap();
        let m = w.finish(Lineage::default(), &mut store).unwrap();
        (m, Arc::new(store))
    }

    fn opts() -> LoaderOptions {
        LoaderOptions {
            batch_size: 32,
            seed: 42,
            epoch: 0,
            input: "id".into(),
            ..Default::default()
        }
    }

    fn ids(m: &Manifest, s: &Arc<MemStore>, o: LoaderOptions, start: usize) -> Vec<Vec<i64>> {
        batches_from(m, s.clone(), o, start)
            .unwrap()
            .map(|b| b.unwrap().inputs.iter().map(|v| *v as i64).collect())
            .collect()
    }

    #[test]
    fn every_row_once_deterministic_and_epoch_dependent() {
        let (m, s) = dataset();
        let e0 = ids(&m, &s, opts(), 0);
        assert_eq!(e0.len(), count_batches(&m, &*s, &opts()).unwrap());
        assert_eq!(e0.len(), N.div_ceil(32));
        let mut all: Vec<i64> = e0.concat();
        let order = all.clone();
        all.sort();
        assert_eq!(all, (0..N as i64).collect::<Vec<_>>());
        assert_ne!(order, all, "shuffled");

        let many_workers = LoaderOptions {
            workers: 3,
            prefetch: 2,
            ..opts()
        };
        assert_eq!(ids(&m, &s, many_workers, 0), e0, "same (seed, epoch)");
        let e1 = ids(&m, &s, LoaderOptions { epoch: 1, ..opts() }, 0);
        assert_ne!(e1, e0, "another epoch, another order");
        let s1 = ids(&m, &s, LoaderOptions { seed: 1, ..opts() }, 0);
        assert_ne!(s1, e0);

        let plain = ids(
            &m,
            &s,
            LoaderOptions {
                shuffle: false,
                ..opts()
            },
            0,
        );
        assert_eq!(plain.concat(), (0..N as i64).collect::<Vec<_>>());
        let dropped = ids(
            &m,
            &s,
            LoaderOptions {
                drop_last: true,
                ..opts()
            },
            0,
        );
        assert_eq!(dropped.len(), N / 32);
        assert!(dropped.iter().all(|b| b.len() == 32));
    }

    #[test]
    fn filter_by_split() {
        let (m, s) = dataset();
        let o = LoaderOptions {
            filter: Some(("split".into(), "test".into())),
            batch_size: 30,
            ..opts()
        };
        let got: Vec<i64> = ids(&m, &s, o.clone(), 0).concat();
        assert_eq!(got.len(), N / 5);
        assert!(got.iter().all(|i| i % 5 == 0));
        assert_eq!(count_rows(&m, &*s, &o).unwrap(), (N / 5) as u64);
        assert_eq!(
            count_by_reading(&m, &*s, "split", &FilterValue::Str("test".into())).unwrap(),
            (N / 5) as u64
        );
        assert_eq!(count_batches(&m, &*s, &o).unwrap(), 7);
        // Filter on an int64 column.
        let o = LoaderOptions {
            filter: Some(("id".into(), "7".into())),
            ..opts()
        };
        assert_eq!(ids(&m, &s, o, 0), vec![vec![7]]);
    }

    #[test]
    fn resume_gives_the_same_tail() {
        let (m, s) = dataset();
        for o in [
            opts(),
            LoaderOptions {
                filter: Some(("split".into(), "train".into())),
                workers: 2,
                ..opts()
            },
        ] {
            let full = ids(&m, &s, o.clone(), 0);
            for k in [0, 1, 5, 7, 24, full.len() - 1, full.len(), full.len() + 3] {
                assert_eq!(
                    ids(&m, &s, o.clone(), k),
                    full[k.min(full.len())..],
                    "k={k}"
                );
            }
            let mut it = batches(&m, s.clone(), o.clone()).unwrap();
            it.skip_batches(3);
            assert_eq!(it.position(), 3);
            let first = it.next().unwrap().unwrap();
            assert_eq!(
                first.inputs.iter().map(|v| *v as i64).collect::<Vec<_>>(),
                full[3]
            );
            it.skip_batches(2);
            let b = it.next().unwrap().unwrap();
            assert_eq!(
                b.inputs.iter().map(|v| *v as i64).collect::<Vec<_>>(),
                full[6]
            );
        }
    }

    /// A manifest is input: a shape or row counts that overflow are refused, not wrapped.
    #[test]
    fn overflowing_manifests_are_refused_not_wrapped() {
        let (m, s) = dataset();
        let mut huge = m.clone();
        huge.schema[1].dtype = ColumnType::Float32 {
            shape: vec![u32::MAX as usize; 3],
        };
        let x = LoaderOptions {
            input: "x".into(),
            ..opts()
        };
        let err = batches(&huge, s.clone(), x).err().unwrap();
        assert!(
            matches!(err, DataError::Invalid { ref field, .. } if field == "x"),
            "{err}"
        );
        let mut rows = m;
        rows.shards[1].rows = u64::MAX;
        let err = batches(&rows, s, opts()).err().unwrap();
        assert!(matches!(err, DataError::Corrupt(_)), "{err}");
    }

    #[test]
    fn tensor_input_with_targets() {
        let (m, s) = dataset();
        let o = LoaderOptions {
            input: "x".into(),
            target: Some("id".into()),
            batch_size: 100,
            ..opts()
        };
        let mut it = batches(&m, s.clone(), o).unwrap();
        assert_eq!(it.sample_shape(), &[2]);
        let b = it.next().unwrap().unwrap();
        assert_eq!(b.rows, 100);
        assert_eq!(b.sample_shape, vec![2]);
        let Some(Targets::Classes(c)) = &b.targets else {
            panic!()
        };
        for (i, id) in c.iter().enumerate() {
            assert_eq!(b.inputs[2 * i], *id as f32);
            assert_eq!(b.inputs[2 * i + 1], -(*id as f32));
        }
        let o = LoaderOptions {
            input: "id".into(),
            target: Some("x".into()),
            ..opts()
        };
        let b = batches(&m, s, o).unwrap().next().unwrap().unwrap();
        let Some(Targets::Values(v)) = &b.targets else {
            panic!()
        };
        assert_eq!(v.len(), 2 * b.rows);
    }

    #[test]
    fn bad_options_are_rejected_up_front() {
        let (m, s) = dataset();
        let err = batches(
            &m,
            s.clone(),
            LoaderOptions {
                input: "pixels".into(),
                ..opts()
            },
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(
            matches!(&err, DataError::Invalid { field, .. } if field == "pixels"),
            "{msg}"
        );
        assert!(
            msg.contains("no such column") && msg.contains("id (int64)"),
            "{msg}"
        );
        let err = batches(
            &m,
            s.clone(),
            LoaderOptions {
                input: "name".into(),
                ..opts()
            },
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("`name`") && err.to_string().contains("string"),
            "{err}"
        );
        let err = batches(
            &m,
            s.clone(),
            LoaderOptions {
                target: Some("split".into()),
                ..opts()
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("`split`"), "{err}");
        let err = batches(
            &m,
            s,
            LoaderOptions {
                filter: Some(("nope".into(), "x".into())),
                ..opts()
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("`nope`"), "{err}");
    }

    #[test]
    fn corrupt_shard_is_reported() {
        let (m, s) = dataset();
        let victim = &m.shards[3].sha256;
        let mut bytes = s.get(victim).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        s.replace(victim, bytes);
        let results: Vec<_> = batches(
            &m,
            s.clone(),
            LoaderOptions {
                shuffle: false,
                ..opts()
            },
        )
        .unwrap()
        .collect();
        let err = results.last().unwrap().as_ref().unwrap_err();
        assert!(matches!(err, DataError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains(victim.as_str()));
        assert_eq!(
            results.len(),
            7,
            "the 6 batches before shard 3, then the error"
        );
        assert!(read_table(&m, &*s).is_err());
    }

    #[test]
    fn csv_to_dir_store_to_batches_and_early_drop() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        let mut text = String::from("a,b,y\n");
        for i in 0..300 {
            text.push_str(&format!("{i},{}.5,{}\n", i * 2, i % 3));
        }
        std::fs::write(&csv, text).unwrap();
        let mut store = crate::writer::DirStore::new(dir.path().join("shards"));
        let opts = crate::import::ImportOptions {
            shard_rows: 50,
            ..Default::default()
        };
        let m = crate::import::import(&csv, &opts, &mut store).unwrap();
        let steps = [crate::steps::Step::Stack {
            columns: crate::steps::ColumnSelection::List(vec!["a".into(), "b".into()]),
            into: "x".into(),
            shape: None,
        }];
        let m2 =
            crate::steps::apply(&steps, &m, &m.version_id(), &store, &mut store.clone()).unwrap();
        let src: Arc<dyn ShardSource> = Arc::new(store);
        let o = LoaderOptions {
            input: "x".into(),
            target: Some("y".into()),
            batch_size: 16,
            workers: 2,
            ..Default::default()
        };
        let total: usize = batches(&m2, src.clone(), o.clone())
            .unwrap()
            .map(|b| b.unwrap().rows)
            .sum();
        assert_eq!(total, 300);
        // Dropping an iterator mid-epoch must not hang or leak a blocked consumer.
        let mut it = batches(&m2, src, o).unwrap();
        assert!(it.next().is_some());
        drop(it);
    }

    fn image_dataset() -> (Manifest, Arc<MemStore>) {
        let mut bytes = Vec::new();
        for i in 0..10u8 {
            let img = image::RgbImage::from_fn(6, 4, |x, y| {
                image::Rgb([i * 20, (x * 40) as u8, (y * 60) as u8])
            });
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
            bytes.push(buf.into_inner());
        }
        let schema = vec![
            Field::new("image", ColumnType::Bytes),
            Field::new("label", ColumnType::Int64),
        ];
        let t = Table::new(
            schema.clone(),
            vec![Column::Bytes(bytes), Column::Int64((0..10).collect())],
        )
        .unwrap();
        let mut store = MemStore::new();
        let mut w = VersionWriter::new(schema, 4);
        w.push(t, &mut store).unwrap();
        (
            w.finish(Lineage::default(), &mut store).unwrap(),
            Arc::new(store),
        )
    }

    #[test]
    fn images_decode_resize_and_augment() {
        let (m, s) = image_dataset();
        let base = LoaderOptions {
            input: "image".into(),
            target: Some("label".into()),
            batch_size: 4,
            ..opts()
        };
        let err = batches(&m, s.clone(), base.clone()).err().unwrap();
        assert!(err.to_string().contains("image options"), "{err}");

        // No augmentation, native size: exact pixel values, CHW layout.
        let plain = LoaderOptions {
            image: Some(ImageOptions {
                channels: 3,
                height: 4,
                width: 6,
                scale: 1.0,
                random_crop_padding: 0,
                horizontal_flip: false,
            }),
            shuffle: false,
            ..base.clone()
        };
        let b = batches(&m, s.clone(), plain)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(b.sample_shape, vec![3, 4, 6]);
        assert_eq!(b.inputs.len(), 4 * 3 * 4 * 6);
        let sample = 1; // label 1: red = 20
        let px = |c: usize, y: usize, x: usize| b.inputs[sample * 72 + (c * 4 + y) * 6 + x];
        assert_eq!(px(0, 2, 3), 20.0);
        assert_eq!(px(1, 2, 3), 120.0);
        assert_eq!(px(2, 2, 3), 120.0);

        // Grayscale, resized, augmented: shapes, range, determinism.
        let aug = LoaderOptions {
            image: Some(ImageOptions {
                channels: 1,
                height: 8,
                width: 8,
                scale: 1.0 / 255.0,
                random_crop_padding: 2,
                horizontal_flip: true,
            }),
            workers: 2,
            ..base
        };
        let run = |o: LoaderOptions| -> Vec<Batch> {
            batches(&m, s.clone(), o)
                .unwrap()
                .map(|b| b.unwrap())
                .collect()
        };
        let a = run(aug.clone());
        assert_eq!(a.iter().map(|b| b.rows).sum::<usize>(), 10);
        for b in &a {
            assert_eq!(b.sample_shape, vec![1, 8, 8]);
            assert_eq!(b.inputs.len(), b.rows * 64);
            assert!(b.inputs.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        assert_eq!(run(aug.clone()), a, "augmentation is deterministic");
        assert_ne!(run(LoaderOptions { epoch: 3, ..aug }), a);
    }
}
