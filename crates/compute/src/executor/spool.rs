//! A job's output on its way to the blob store, shared by every executor: each attempt's
//! output lands in one spool file per job (the supervisor's output file locally, the Slurm
//! job's output file on shared storage, the log the Ray executor pulls), and this ships it
//! to blobs in bounded pieces while the job runs and scans it for the job's declared
//! metrics. Readers get the shipped part from blobs and the tail from the spool.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use trainyard_core::Job;
use trainyard_store::{log_end, Blobs};
use trainyard_tracking::Tracking;

use crate::job_metrics::MetricScanner;

/// Largest piece of log read into memory and uploaded at once.
pub(crate) const SHIP_CHUNK: u64 = 4 << 20;
/// Upload at least this often while output is pending, so blobs lag the process little…
const SHIP_INTERVAL: Duration = Duration::from_secs(2);
/// …but for attempts running longer than `SHIP_SETTLE`, only this often, so a long job
/// that prints slowly leaves thousands, not tens of thousands, of chunks a day. Live
/// readers lose nothing: they read the unshipped tail from the spool.
const SHIP_INTERVAL_LONG: Duration = Duration::from_secs(30);
const SHIP_SETTLE: Duration = Duration::from_secs(60);

/// Ships spool files of active jobs to the blob store; one per executor.
pub(crate) struct Spools {
    blobs: Blobs,
    tracking: Tracking,
    /// Where job `id`'s spool file is.
    path_of: Box<dyn Fn(&str) -> PathBuf + Send + Sync>,
    /// Bytes of each active job's log already in the blob store.
    shipped: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Jobs whose output is scanned for metrics.
    scanners: Mutex<HashMap<String, Arc<tokio::sync::Mutex<MetricScanner>>>>,
}

/// The shipping state of one attempt being watched.
pub(crate) struct Shipping {
    shipped: Arc<AtomicU64>,
    started: Instant,
    last: Instant,
}

impl Spools {
    pub(crate) fn new(
        blobs: Blobs,
        tracking: Tracking,
        path_of: impl Fn(&str) -> PathBuf + Send + Sync + 'static,
    ) -> Self {
        Self {
            blobs,
            tracking,
            path_of: Box::new(path_of),
            shipped: Mutex::new(HashMap::new()),
            scanners: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn path(&self, job_id: &str) -> PathBuf {
        (self.path_of)(job_id)
    }

    /// Bytes in the job's spool (0 when it has none).
    pub(crate) fn len(&self, job_id: &str) -> u64 {
        spool_len(&self.path(job_id))
    }

    /// Starts watching an attempt of `job`: from what is already shipped (after a restart,
    /// the blob store says), scanning for its declared metrics from there.
    pub(crate) async fn begin(&self, job: &Job) -> Shipping {
        let shipped = self.shipped_counter(&job.id).await;
        if let Some(scanner) = MetricScanner::for_job(job, shipped.load(Ordering::Acquire)) {
            self.scanners
                .lock()
                .insert(job.id.clone(), Arc::new(tokio::sync::Mutex::new(scanner)));
        }
        Shipping {
            shipped,
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    /// An attempt that never started: nothing to scan.
    pub(crate) fn abandon(&self, job_id: &str) {
        self.scanners.lock().remove(job_id);
    }

    /// Called often while the attempt runs: scans new output, ships when a piece is due.
    pub(crate) async fn tick(&self, job_id: &str, shipping: &mut Shipping) {
        self.scan_metrics(job_id, false).await;
        let interval = if shipping.started.elapsed() < SHIP_SETTLE {
            SHIP_INTERVAL
        } else {
            SHIP_INTERVAL_LONG
        };
        let pending = self
            .len(job_id)
            .saturating_sub(shipping.shipped.load(Ordering::Acquire));
        if pending >= SHIP_CHUNK || (pending > 0 && shipping.last.elapsed() >= interval) {
            self.ship_all(job_id, &shipping.shipped).await;
            shipping.last = Instant::now();
        }
    }

    /// The attempt ended: the last metrics and the rest of its output.
    pub(crate) async fn end(&self, job_id: &str, shipping: &Shipping) {
        self.scan_metrics(job_id, true).await;
        if !self.ship_rest(job_id, &shipping.shipped).await {
            tracing::error!(
                job = job_id,
                "the end of this job's log could not be shipped; it stays in the spool"
            );
        }
    }

    /// Forgets a finished job, but only once every byte of its log is in the blob store:
    /// until then the spool is the only copy, and readers keep using it. True when the
    /// caller may delete the spool.
    pub(crate) async fn forget(&self, job_id: &str) -> bool {
        let shipped = self.shipped_counter(job_id).await;
        if !self.ship_rest(job_id, &shipped).await {
            tracing::error!(
                job = job_id,
                "keeping the spool of a finished job: the blob store does not take it"
            );
            return false;
        }
        self.shipped.lock().remove(job_id);
        true
    }

    /// Bytes of `job_id`'s log already shipped, when the job is active here.
    pub(crate) fn shipped(&self, job_id: &str) -> Option<u64> {
        self.shipped
            .lock()
            .get(job_id)
            .map(|c| c.load(Ordering::Acquire))
    }

    async fn scan_metrics(&self, job_id: &str, finished: bool) {
        let scanner = self.scanners.lock().get(job_id).cloned();
        if let Some(scanner) = scanner {
            let len = self.len(job_id);
            let spool = self.path(job_id);
            scanner
                .lock()
                .await
                .scan(&spool, len, finished, &self.tracking)
                .await;
            if finished {
                self.scanners.lock().remove(job_id);
            }
        }
    }

    async fn shipped_counter(&self, job_id: &str) -> Arc<AtomicU64> {
        if let Some(c) = self.shipped.lock().get(job_id) {
            return c.clone();
        }
        // After a restart the blob store is the truth about what was shipped. If it cannot
        // be listed, shipping again from 0 is safe: chunks hold the same bytes at the same
        // offsets, and readers accept overlapping chunks.
        let mut end = None;
        for attempt in 0..3 {
            match self.blobs.log_chunks(job_id).await {
                Ok(chunks) => {
                    end = Some(log_end(&chunks));
                    break;
                }
                Err(e) => {
                    tracing::warn!(job = job_id, error = %e, attempt, "cannot list shipped log");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let end = end.unwrap_or(0);
        self.shipped
            .lock()
            .entry(job_id.to_string())
            .or_insert_with(|| Arc::new(AtomicU64::new(end)))
            .clone()
    }

    /// Uploads everything in the spool beyond what was shipped, one bounded piece at a
    /// time; true when nothing is left to ship.
    async fn ship_all(&self, job_id: &str, shipped: &AtomicU64) -> bool {
        let path = self.path(job_id);
        loop {
            let from = shipped.load(Ordering::Acquire);
            if self.len(job_id) <= from {
                return true; // nothing new (or no spool at all): no need to open it
            }
            let piece = match read_piece(&path, from, SHIP_CHUNK).await {
                Ok(piece) if !piece.is_empty() => piece,
                Ok(_) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
                Err(e) => {
                    tracing::warn!(job = job_id, error = %e, "cannot read job output");
                    return false;
                }
            };
            let n = piece.len() as u64;
            if let Err(e) = self.blobs.put_log_chunk(job_id, from, piece).await {
                tracing::warn!(job = job_id, error = %e, "cannot ship log chunk; will retry");
                return false;
            }
            shipped.store(from + n, Ordering::Release);
        }
    }

    /// Ships the rest of a finished attempt's output, retrying a blob store that fails
    /// for a while (about a minute) before giving up; false when some is still unshipped.
    async fn ship_rest(&self, job_id: &str, shipped: &AtomicU64) -> bool {
        let mut pause = Duration::from_millis(250);
        for _ in 0..10 {
            if self.ship_all(job_id, shipped).await {
                return true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(15));
        }
        false
    }
}

/// Bytes in the spool at `path`: 0 unless it is a plain file. A job can write where its
/// spool lives (a Slurm job's output folder on shared storage) and could put a link there
/// to a file only the server may read; a link is never measured, read or shipped.
pub(crate) fn spool_len(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Reads at most `max` bytes of `path` from `offset` on a blocking thread; a symbolic link
/// is refused (`ELOOP`), for the reason `spool_len` gives.
pub(crate) async fn read_piece(path: &Path, offset: u64, max: u64) -> std::io::Result<Bytes> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(max).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that swaps its output file for a link to a file it may not read (the server
    /// may) gets nothing of that file into its log.
    #[tokio::test]
    async fn a_spool_replaced_by_a_link_is_neither_measured_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "the server's secret").unwrap();
        let spool = dir.path().join("output");
        std::os::unix::fs::symlink(&secret, &spool).unwrap();
        assert_eq!(spool_len(&spool), 0);
        assert!(read_piece(&spool, 0, 1024).await.is_err());
        std::fs::remove_file(&spool).unwrap();
        std::fs::write(&spool, "job output\n").unwrap();
        assert_eq!(spool_len(&spool), 11);
        assert_eq!(
            &read_piece(&spool, 0, 1024).await.unwrap()[..],
            b"job output\n"
        );
    }
}
