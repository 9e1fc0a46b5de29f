//! Writing versions: shard stores and the streaming version writer.
//!
//! Storage is abstracted as a put/get of whole shards by SHA-256 so the same
//! code writes to a local directory, memory (tests) or an object store
//! implemented elsewhere. The writer takes tables of any size, cuts them into
//! fixed-size shards as rows arrive and keeps only running statistics, so
//! importing a file much larger than memory works.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::manifest::{Lineage, Manifest, ShardRef, StatsBuilder, FORMAT};
use crate::schema::{validate_schema, Field};
use crate::shard::{encode, sha256_hex};
use crate::table::{describe, Table};
use crate::DataError;

/// Rows per shard unless told otherwise.
pub const DEFAULT_SHARD_ROWS: usize = 16_384;

/// Where encoded shards go. Putting a shard that already exists is a no-op.
pub trait ShardSink {
    fn put(&mut self, sha256: &str, bytes: Vec<u8>) -> Result<(), DataError>;
}

/// Where shards come from. Implementors verify nothing; readers in this crate
/// check the SHA-256 of whatever they get.
pub trait ShardSource: Send + Sync {
    fn get(&self, sha256: &str) -> Result<Vec<u8>, DataError>;
}

fn check_name(sha256: &str) -> Result<(), DataError> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(DataError::invalid(
            "sha256",
            format!("`{sha256}` is not a hex SHA-256"),
        ))
    }
}

/// Shards as files `DIR/<sha256>`. Writes go to a temporary name in the same
/// directory and are renamed into place, so a reader never sees half a shard.
#[derive(Clone, Debug)]
pub struct DirStore(pub PathBuf);

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirStore(dir.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, sha256: &str) -> Result<PathBuf, DataError> {
        check_name(sha256)?;
        Ok(self.0.join(sha256))
    }
}

impl ShardSink for DirStore {
    fn put(&mut self, sha256: &str, bytes: Vec<u8>) -> Result<(), DataError> {
        let dest = self.file(sha256)?;
        if dest.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.0).map_err(|e| DataError::io(&self.0, e))?;
        let tmp = self.0.join(format!(
            ".{sha256}.tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(DataError::io(&tmp, e));
        }
        std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            DataError::io(&dest, e)
        })
    }
}

impl ShardSource for DirStore {
    fn get(&self, sha256: &str) -> Result<Vec<u8>, DataError> {
        let path = self.file(sha256)?;
        std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::NotFound(format!("shard {sha256} in {}", self.0.display()))
            } else {
                DataError::io(&path, e)
            }
        })
    }
}

/// Shards in memory; for tests and small pipelines.
#[derive(Debug, Default)]
pub struct MemStore {
    shards: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.shards.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites a shard's bytes without checking (for corruption tests).
    pub fn replace(&self, sha256: &str, bytes: Vec<u8>) {
        self.shards
            .lock()
            .unwrap()
            .insert(sha256.to_string(), bytes);
    }
}

impl ShardSink for MemStore {
    fn put(&mut self, sha256: &str, bytes: Vec<u8>) -> Result<(), DataError> {
        self.shards
            .lock()
            .unwrap()
            .entry(sha256.to_string())
            .or_insert(bytes);
        Ok(())
    }
}

impl ShardSource for MemStore {
    fn get(&self, sha256: &str) -> Result<Vec<u8>, DataError> {
        self.shards
            .lock()
            .unwrap()
            .get(sha256)
            .cloned()
            .ok_or_else(|| DataError::NotFound(format!("shard {sha256}")))
    }
}

/// Builds one version from a stream of tables.
///
/// Memory: one partial shard plus the statistics accumulators.
pub struct VersionWriter {
    schema: Vec<Field>,
    shard_rows: usize,
    pending: Table,
    shards: Vec<ShardRef>,
    rows: u64,
    stats: Vec<StatsBuilder>,
}

impl VersionWriter {
    /// `shard_rows == 0` means [`DEFAULT_SHARD_ROWS`]. The schema is checked on
    /// the first `push`/`finish`.
    pub fn new(schema: Vec<Field>, shard_rows: usize) -> Self {
        let shard_rows = if shard_rows == 0 {
            DEFAULT_SHARD_ROWS
        } else {
            shard_rows
        };
        VersionWriter {
            pending: Table::empty(&schema),
            stats: schema.iter().map(StatsBuilder::new).collect(),
            schema,
            shard_rows,
            shards: Vec::new(),
            rows: 0,
        }
    }

    pub fn schema(&self) -> &[Field] {
        &self.schema
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds rows; writes every full shard to `sink`.
    pub fn push(&mut self, table: Table, sink: &mut dyn ShardSink) -> Result<(), DataError> {
        validate_schema(&self.schema)?;
        if table.schema != self.schema {
            return Err(DataError::Schema(format!(
                "table ({}) does not match the version schema ({})",
                describe(&table.schema),
                describe(&self.schema)
            )));
        }
        table.validate()?;
        if table.rows() == 0 {
            return Ok(());
        }
        for (s, c) in self.stats.iter_mut().zip(&table.columns) {
            s.update(c);
        }
        self.rows += table.rows() as u64;
        if self.pending.rows() == 0 {
            self.pending = table;
        } else {
            self.pending.append(&table)?;
        }
        while self.pending.rows() >= self.shard_rows {
            let shard = self.pending.slice(0, self.shard_rows);
            self.pending = self.pending.slice(self.shard_rows, self.pending.rows());
            self.write(&shard, sink)?;
        }
        Ok(())
    }

    fn write(&mut self, shard: &Table, sink: &mut dyn ShardSink) -> Result<(), DataError> {
        let bytes = encode(shard);
        let sha = sha256_hex(&bytes);
        let len = bytes.len() as u64;
        sink.put(&sha, bytes)?;
        self.shards.push(ShardRef {
            sha256: sha,
            rows: shard.rows() as u64,
            bytes: len,
        });
        Ok(())
    }

    /// Writes the last partial shard and returns the manifest.
    pub fn finish(
        mut self,
        lineage: Lineage,
        sink: &mut dyn ShardSink,
    ) -> Result<Manifest, DataError> {
        validate_schema(&self.schema)?;
        if self.pending.rows() > 0 {
            let last = std::mem::replace(&mut self.pending, Table::empty(&self.schema));
            self.write(&last, sink)?;
        }
        let stats = self
            .schema
            .iter()
            .zip(self.stats)
            .map(|(f, s)| (f.name.clone(), s.finish()))
            .collect();
        Ok(Manifest {
            format: FORMAT,
            schema: self.schema,
            rows: self.rows,
            shards: self.shards,
            stats,
            lineage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnType;
    use crate::table::Column;

    fn ints(v: Vec<i64>) -> Table {
        Table::new(
            vec![Field::new("a", ColumnType::Int64)],
            vec![Column::Int64(v)],
        )
        .unwrap()
    }

    #[test]
    fn cuts_shards_and_writes_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = DirStore::new(dir.path().join("shards"));
        let mut w = VersionWriter::new(vec![Field::new("a", ColumnType::Int64)], 4);
        w.push(ints((0..3).collect()), &mut store).unwrap();
        w.push(ints((3..10).collect()), &mut store).unwrap();
        let m = w.finish(Lineage::default(), &mut store).unwrap();
        assert_eq!(m.rows, 10);
        assert_eq!(
            m.shards.iter().map(|s| s.rows).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        let names: Vec<String> = std::fs::read_dir(store.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "no temp files left: {names:?}");
        for s in &m.shards {
            let bytes = store.get(&s.sha256).unwrap();
            assert_eq!(sha256_hex(&bytes), s.sha256);
            assert_eq!(bytes.len() as u64, s.bytes);
        }
        assert_eq!(m.stats["a"].mean, Some(4.5));
        assert!(matches!(
            store.get(&"0".repeat(64)),
            Err(DataError::NotFound(_))
        ));
        assert!(store.get("../etc/passwd").is_err());
    }

    /// Shards are content-addressed, so repeated content gives the same shard twice: a
    /// manifest may name one shard at several positions, and that is a valid version.
    #[test]
    fn repeated_content_names_one_shard_twice() {
        let mut store = MemStore::new();
        let mut w = VersionWriter::new(vec![Field::new("a", ColumnType::Int64)], 4);
        w.push(ints(vec![7; 10]), &mut store).unwrap();
        let m = w.finish(Lineage::default(), &mut store).unwrap();
        assert_eq!(m.shards.len(), 3);
        assert_eq!(m.shards[0], m.shards[1]);
        assert_ne!(m.shards[1].sha256, m.shards[2].sha256);
        assert_eq!(store.len(), 2, "stored once");
    }

    #[test]
    fn rejects_mismatched_tables() {
        let mut store = MemStore::new();
        let mut w = VersionWriter::new(vec![Field::new("a", ColumnType::Int64)], 4);
        let t = Table::new(
            vec![Field::new("b", ColumnType::Int64)],
            vec![Column::Int64(vec![1])],
        )
        .unwrap();
        assert!(matches!(w.push(t, &mut store), Err(DataError::Schema(_))));
    }
}
