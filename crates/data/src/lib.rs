//! Trainyard datasets.
//!
//! A dataset version is immutable and content-addressed: a [`Manifest`]
//! (schema, statistics, lineage) listing columnar shards by SHA-256. Importers
//! turn files into versions, [`steps`] derive new versions with recorded
//! lineage, and the [`loader`] streams batches for training with background
//! prefetch and deterministic shuffling. Pure library: no I/O besides files
//! and the [`ShardSink`]/[`ShardSource`] traits, no async.

pub mod error;
pub mod import;
pub mod loader;
pub mod manifest;
mod parquet_import;
pub mod schema;
pub mod shard;
pub mod steps;
pub mod table;
pub mod writer;

pub use error::DataError;
pub use import::{
    detect_format, import, import_idx_pair, import_with_report, Format, ImportOptions,
    ImportReport, OnBad,
};
pub use loader::{
    batches, batches_from, count_batches, count_rows, read_shard, read_table, Batch, BatchIter,
    ImageOptions, LoaderOptions, Targets,
};
pub use manifest::{ColumnStats, Lineage, Manifest, ShardRef};
pub use schema::{ColumnType, Field};
pub use shard::{decode, encode, sha256_hex};
pub use steps::{apply, apply_table, CastTo, ColumnSelection, Step};
pub use table::{Column, Table};
pub use writer::{DirStore, MemStore, ShardSink, ShardSource, VersionWriter, DEFAULT_SHARD_ROWS};
