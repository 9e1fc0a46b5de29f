//! Metrics read from a job's output as it runs: the spool file is scanned line by line
//! from where the last scan stopped, and values of the job's declared metrics are logged
//! into its run (the run id is the job id).

use std::path::Path;

use trainyard_core::time::now_ms;
use trainyard_core::Job;
use trainyard_tracking::stdout_metrics::MetricCollector;
use trainyard_tracking::{BatchInput, MetricPoint, Tracking, TrackingError};

use crate::executor::spool::read_piece;

/// Largest piece of output scanned at once; a longer line is cut there.
const SCAN_PIECE: u64 = 1 << 20;
/// Most points kept for a retry while the store refuses writes.
const MAX_PENDING: usize = 100_000;

pub(crate) struct MetricScanner {
    job_id: String,
    collector: MetricCollector,
    offset: u64,
    carry: Vec<u8>,
    pending: Vec<MetricPoint>,
}

impl MetricScanner {
    /// A scanner for `job` starting at byte `offset` of its output, when it declared metrics.
    pub(crate) fn for_job(job: &Job, offset: u64) -> Option<Self> {
        let t = &job.tracking;
        if t.metrics.is_empty() && t.metric_regex.is_none() {
            return None;
        }
        match MetricCollector::new(t.metrics.clone(), t.metric_regex.as_deref()) {
            Ok(collector) => Some(Self {
                job_id: job.id.clone(),
                collector,
                offset,
                carry: Vec::new(),
                pending: Vec::new(),
            }),
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "not collecting metrics");
                None
            }
        }
    }

    /// Scans output from the last offset to `spool_len`; at the end (`finished`) the last
    /// line counts even without a newline.
    pub(crate) async fn scan(
        &mut self,
        spool: &Path,
        spool_len: u64,
        finished: bool,
        tracking: &Tracking,
    ) {
        let mut points = Vec::new();
        while self.offset < spool_len {
            let piece = match read_piece(spool, self.offset, SCAN_PIECE).await {
                Ok(p) if !p.is_empty() => p,
                _ => break,
            };
            self.offset += piece.len() as u64;
            self.carry.extend_from_slice(&piece);
            let cut = match self.carry.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if self.carry.len() as u64 >= SCAN_PIECE => self.carry.len(),
                None => 0,
            };
            let complete: Vec<u8> = self.carry.drain(..cut).collect();
            self.collect(&complete, &mut points);
        }
        if finished && !self.carry.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            self.collect(&rest, &mut points);
        }
        // Points the store could not take last time go first; they wait for the next scan.
        let mut queue = std::mem::take(&mut self.pending);
        queue.extend(points);
        for chunk in queue.chunks(1000) {
            let batch = BatchInput {
                metrics: chunk.to_vec(),
                ..BatchInput::default()
            };
            match tracking.log_batch(&self.job_id, batch).await {
                Ok(()) => {}
                Err(TrackingError::Store(e)) if self.pending.len() < MAX_PENDING => {
                    tracing::warn!(job = %self.job_id, error = %e, "metrics from output wait for the store");
                    self.pending.extend_from_slice(chunk);
                }
                Err(e) => {
                    tracing::warn!(job = %self.job_id, error = %e, "cannot log metrics from output");
                }
            }
        }
    }

    fn collect(&mut self, text: &[u8], points: &mut Vec<MetricPoint>) {
        let now = now_ms();
        for line in String::from_utf8_lossy(text).lines() {
            for found in self.collector.scan(line) {
                // A name the tracking rules refuse would sink the whole batch: skip it.
                if trainyard_tracking::validate::key("key", &found.name).is_ok() {
                    points.push(MetricPoint::new(&found.name, found.value, now, found.step));
                }
            }
        }
    }
}
