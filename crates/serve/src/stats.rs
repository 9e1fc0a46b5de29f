//! Per-model-version counters, shaped like the statistics extension wants them: cumulative
//! counts and nanoseconds that only grow (perf_analyzer diffs them across a window). One
//! lock per model version: a reader never sees a request counted in one field and not yet
//! in another (perf_analyzer refuses compute counts that disagree).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct DurationStat {
    pub count: u64,
    pub ns: u64,
}

impl DurationStat {
    pub fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns += d.as_nanos() as u64;
    }
}

/// One batch size's executions and their timings.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct BatchTimes {
    pub count: u64,
    pub compute_input_ns: u64,
    pub compute_infer_ns: u64,
    pub compute_output_ns: u64,
}

#[derive(Default, Clone, Debug, PartialEq)]
pub struct StatsSnapshot {
    pub success: DurationStat,
    pub fail: DurationStat,
    pub queue: DurationStat,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
    /// Successful inferences, counting every row of a batch.
    pub inference_count: u64,
    /// Model executions (a dynamic batch counts once).
    pub execution_count: u64,
    /// Milliseconds since the epoch.
    pub last_inference: u64,
    pub batches: BTreeMap<usize, BatchTimes>,
}

#[derive(Default)]
pub struct ModelStats {
    counts: Mutex<StatsSnapshot>,
}

impl ModelStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        self.counts.lock().clone()
    }

    /// Applies one execution's updates at once.
    pub(crate) fn record(&self, update: impl FnOnce(&mut StatsSnapshot)) {
        update(&mut self.counts.lock());
    }
}
