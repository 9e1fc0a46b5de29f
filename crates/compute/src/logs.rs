//! Reading a job's log: the shipped part from the blob store, the rest (of a running job)
//! straight from the executor's spool file. Memory stays bounded by the piece size asked for.

use bytes::{Bytes, BytesMut};

use trainyard_store::LogChunk;

use crate::executor::{read_piece, LocalExecutor};
use crate::ComputeError;

#[derive(Clone)]
pub struct JobLogs {
    executor: LocalExecutor,
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
    pub fn new(executor: LocalExecutor) -> Self {
        Self { executor }
    }

    /// Up to `max` bytes of the log from `offset`.
    pub async fn read(
        &self,
        job_id: &str,
        offset: u64,
        max: u64,
    ) -> Result<LogPiece, ComputeError> {
        self.reader(job_id).read(offset, max).await
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
        let spool_len = std::fs::metadata(self.executor.spool_path(job_id))
            .map(|m| m.len())
            .unwrap_or(0);
        let shipped = match self.executor.shipped(job_id) {
            Some(shipped) => shipped,
            None => {
                let chunks = self.executor.blobs().log_chunks(job_id).await?;
                chunks.last().map(|c| c.end()).unwrap_or(0)
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
            let piece = reader.read(start, end - start).await?;
            for (i, b) in piece.data.iter().enumerate().rev() {
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
        let path = self.executor.spool_path(job_id);
        match read_piece(&path, offset, max).await {
            Ok(data) => {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
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
        let executor = &self.logs.executor;
        let job_id = self.job_id.as_str();
        // Fast path for an active job: beyond what is shipped, the spool is the truth.
        if let Some(shipped) = executor.shipped(job_id) {
            if offset >= shipped {
                if let Some(piece) = self.logs.read_spool(job_id, offset, max).await? {
                    return Ok(piece);
                }
            }
        }
        if offset >= self.chunks.last().map(|c| c.end()).unwrap_or(0) {
            self.chunks = executor.blobs().log_chunks(job_id).await?;
        }
        let shipped_end = self.chunks.last().map(|c| c.end()).unwrap_or(0);
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
        for chunk in self.chunks.iter().filter(|c| c.end() > offset) {
            if out.len() as u64 >= max {
                break;
            }
            let start = at - chunk.offset;
            let want = (max - out.len() as u64).min(chunk.size - start);
            let data = executor
                .blobs()
                .read_log_chunk(chunk, start..start + want)
                .await?;
            at += data.len() as u64;
            out.extend_from_slice(&data);
        }
        let spool_len = std::fs::metadata(executor.spool_path(job_id))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(LogPiece {
            data: out.freeze(),
            next_offset: at,
            size: shipped_end.max(spool_len),
        })
    }
}
