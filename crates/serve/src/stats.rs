//! Per-model-version counters, shaped like the statistics extension wants them: cumulative
//! counts and nanoseconds that only grow (perf_analyzer diffs them across a window).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    pub fn add(&self, d: Duration) {
        self.add_n(1, d);
    }
    fn add_n(&self, n: u64, d: Duration) {
        self.count.fetch_add(n, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Relaxed), self.ns.load(Relaxed))
    }
}

/// One execution's timings, per batch size.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct BatchTimes {
    pub count: u64,
    pub compute_input_ns: u64,
    pub compute_infer_ns: u64,
    pub compute_output_ns: u64,
}

#[derive(Default)]
pub struct ModelStats {
    pub success: DurationStat,
    pub fail: DurationStat,
    pub queue: DurationStat,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
    pub inference_count: AtomicU64,
    pub execution_count: AtomicU64,
    /// Milliseconds since the epoch.
    pub last_inference: AtomicU64,
    batches: Mutex<BTreeMap<usize, BatchTimes>>,
}

impl ModelStats {
    pub fn record_batch(&self, size: usize, input: Duration, infer: Duration, output: Duration) {
        self.execution_count.fetch_add(1, Relaxed);
        let mut b = self.batches.lock().unwrap();
        let e = b.entry(size).or_default();
        e.count += 1;
        e.compute_input_ns += input.as_nanos() as u64;
        e.compute_infer_ns += infer.as_nanos() as u64;
        e.compute_output_ns += output.as_nanos() as u64;
    }

    pub fn batches(&self) -> BTreeMap<usize, BatchTimes> {
        self.batches.lock().unwrap().clone()
    }
}
