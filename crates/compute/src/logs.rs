//! Reading a job's log: the shipped part from the blob store, the rest (of a running job)
//! straight from the executor's spool file. Memory stays bounded by the piece size asked for.

use bytes::{Bytes, BytesMut};

use std::sync::Arc;

use trainyard_store::{log_end, Blobs, LogChunk};

use crate::executor::spool::read_piece;
use crate::executor::Executor;
use crate::ComputeError;

/// A job's whole log: what the executor has shipped to the blob store, then the tail it
/// still holds (`Executor::log_spool`).
#[derive(Clone)]
pub struct JobLogs {
    blobs: Blobs,
    /// The executors of every pool; a job's spool is with the one running it.
    executors: Arc<[Arc<dyn Executor>]>,
}

/// A piece of a log and where the log currently ends.
#[derive(Debug, Clone)]
pub struct LogPiece {
    pub data: Bytes,
    /// Offset just past `data`.
    pub next_offset: u64,
    /// Bytes known to exist so far (the log may still grow while the job runs).
    pub size: u64,
}

impl JobLogs {
    pub fn new(blobs: Blobs, executors: Vec<Arc<dyn Executor>>) -> Self {
        Self {
            blobs,
            executors: executors.into(),
        }
    }

    /// Bytes of an active job's log already shipped, from the executor running it.
    fn log_shipped(&self, job_id: &str) -> Option<u64> {
        self.executors.iter().find_map(|e| e.log_shipped(job_id))
    }

    /// The spool holding the unshipped tail of a job's log: the active executor's, else
    /// (a job that ended, whose spool waits for the blob store) the first that exists.
    fn log_spool(&self, job_id: &str) -> Option<std::path::PathBuf> {
        if let Some(active) = self
            .executors
            .iter()
            .find(|e| e.log_shipped(job_id).is_some())
        {
            return active.log_spool(job_id);
        }
        self.executors
            .iter()
            .filter_map(|e| e.log_spool(job_id))
            .find(|p| p.exists())
    }

    fn spool_len(&self, job_id: &str) -> u64 {
        self.log_spool(job_id)
            .map(|p| crate::executor::spool::spool_len(&p))
            .unwrap_or(0)
    }

    /// A reader for many reads of one log (a download, a follow, a tail).
    pub fn reader(&self, job_id: &str) -> LogReader {
        LogReader {
            logs: self.clone(),
            job_id: job_id.to_string(),
            chunks: Vec::new(),
        }
    }

    /// Current size of the log.
    pub async fn size(&self, job_id: &str) -> Result<u64, ComputeError> {
        let spool_len = self.spool_len(job_id);
        let shipped = match self.log_shipped(job_id) {
            Some(shipped) => shipped,
            None => {
                let chunks = self.blobs.log_chunks(job_id).await?;
                log_end(&chunks)
            }
        };
        Ok(shipped.max(spool_len))
    }

    /// The offset where the last `lines` lines start, reading backwards in bounded windows.
    pub async fn tail_offset(&self, job_id: &str, lines: u64) -> Result<u64, ComputeError> {
        let mut reader = self.reader(job_id);
        const WINDOW: u64 = 64 * 1024;
        let size = self.size(job_id).await?;
        if lines == 0 {
            return Ok(size);
        }
        let mut end = size;
        let mut newlines = 0u64;
        while end > 0 {
            let start = end.saturating_sub(WINDOW);
            // A window may span the shipped part and the spool: read until it is whole.
            let mut window = BytesMut::new();
            while (start + window.len() as u64) < end {
                let at = start + window.len() as u64;
                let piece = reader.read(at, end - at).await?;
                if piece.data.is_empty() {
                    break;
                }
                window.extend_from_slice(&piece.data);
            }
            for (i, b) in window.iter().enumerate().rev() {
                let pos = start + i as u64;
                // A newline that ends the log does not start a new line.
                if *b == b'\n' && pos + 1 != size {
                    newlines += 1;
                    if newlines == lines {
                        return Ok(pos + 1);
                    }
                }
            }
            end = start;
        }
        Ok(0)
    }

    async fn read_spool(
        &self,
        job_id: &str,
        offset: u64,
        max: u64,
    ) -> Result<Option<LogPiece>, ComputeError> {
        let Some(path) = self.log_spool(job_id) else {
            return Ok(None);
        };
        match read_piece(&path, offset, max).await {
            Ok(data) => {
                let size = self.spool_len(job_id);
                Ok(Some(LogPiece {
                    next_offset: offset + data.len() as u64,
                    size: size.max(offset + data.len() as u64),
                    data,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads one job's log piece by piece. Shipped chunks never change and only grow at the
/// end, so one listing of the blob store serves every offset below its end: a 200 MB
/// download lists once, not once per piece (which matters on S3).
pub struct LogReader {
    logs: JobLogs,
    job_id: String,
    chunks: Vec<LogChunk>,
}

impl LogReader {
    /// Up to `max` bytes of the log from `offset`.
    pub async fn read(&mut self, offset: u64, max: u64) -> Result<LogPiece, ComputeError> {
        let logs = &self.logs;
        let job_id = self.job_id.as_str();
        // Fast path for an active job: beyond what is shipped, the spool is the truth.
        if let Some(shipped) = logs.log_shipped(job_id) {
            if offset >= shipped {
                if let Some(piece) = self.logs.read_spool(job_id, offset, max).await? {
                    return Ok(piece);
                }
            }
        }
        if offset >= log_end(&self.chunks) {
            self.chunks = logs.blobs.log_chunks(job_id).await?;
        }
        let shipped_end = log_end(&self.chunks);
        if offset >= shipped_end {
            if let Some(piece) = self.logs.read_spool(job_id, offset, max).await? {
                return Ok(piece);
            }
            return Ok(LogPiece {
                data: Bytes::new(),
                next_offset: offset,
                size: shipped_end,
            });
        }
        let mut out = BytesMut::new();
        let mut at = offset;
        // Chunks are sorted by offset; after a re-ship they may overlap (same bytes), so
        // take, at each position, the first chunk that covers it.
        for chunk in &self.chunks {
            if out.len() as u64 >= max || chunk.offset > at {
                break;
            }
            if chunk.end() <= at {
                continue;
            }
            let start = at - chunk.offset;
            let want = (max - out.len() as u64).min(chunk.size - start);
            let data = logs
                .blobs
                .read_log_chunk(chunk, start..start + want)
                .await?;
            at += data.len() as u64;
            out.extend_from_slice(&data);
        }
        let spool_len = logs.spool_len(job_id);
        Ok(LogPiece {
            data: out.freeze(),
            next_offset: at,
            size: shipped_end.max(spool_len),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use trainyard_store::Blobs;

    use super::*;

    #[tokio::test]
    async fn overlapping_chunks_from_a_reship_read_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&format!("file://{}", dir.path().join("blobs").display()))
            .await
            .unwrap();
        // First shipped as "hello " + "wor", then (after a failed listing) again from 0.
        for (offset, data) in [(0, "hello "), (6, "wor"), (0, "hello world!")] {
            blobs
                .put_log_chunk("j", offset, Bytes::from(data))
                .await
                .unwrap();
        }
        let db = trainyard_store::Db::connect(&trainyard_store::Db::sqlite_url(
            &dir.path().join("meta.db"),
        ))
        .await
        .unwrap();
        let executor = crate::LocalExecutor::new(
            crate::LocalOptions {
                root: dir.path().join("executor"),
                program: "/bin/false".into(),
                kill_grace: Duration::from_secs(1),
                job_user: crate::JobUser::current().unwrap(),
                capacity: trainyard_core::Capacity {
                    cpus_milli: 1000,
                    memory_mb: 100,
                    gpus: Vec::new(),
                },
            },
            blobs.clone(),
            trainyard_tracking::Tracking::new(db, blobs.clone()),
        )
        .unwrap();
        let logs = JobLogs::new(blobs, vec![Arc::new(executor)]);
        let mut reader = logs.reader("j");
        let mut text = Vec::new();
        let mut at = 0;
        loop {
            let piece = reader.read(at, 4).await.unwrap();
            if piece.data.is_empty() {
                break;
            }
            text.extend_from_slice(&piece.data);
            at = piece.next_offset;
        }
        assert_eq!(String::from_utf8(text).unwrap(), "hello world!");
        assert_eq!(logs.size("j").await.unwrap(), 12);
        assert_eq!(logs.tail_offset("j", 1).await.unwrap(), 0);
    }
}
