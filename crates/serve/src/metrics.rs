//! Prometheus metrics of the model manager, registered into the server's registry by `api`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub version: String,
}

fn seconds() -> Histogram {
    Histogram::new([
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
    ])
}

type Seconds = Family<ModelLabels, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct ServeMetrics {
    pub loads: Family<ModelLabels, Counter>,
    pub load_failures: Family<ModelLabels, Counter>,
    pub unloads: Family<ModelLabels, Counter>,
    pub evictions: Family<ModelLabels, Counter>,
    pub load_seconds: Seconds,
    pub queue_seconds: Seconds,
    pub compute_seconds: Seconds,
    pub model_bytes: Family<ModelLabels, Gauge>,
    pub budget_used_bytes: Gauge,
    pub budget_bytes: Gauge,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        Self {
            loads: Family::default(),
            load_failures: Family::default(),
            unloads: Family::default(),
            evictions: Family::default(),
            load_seconds: Family::new_with_constructor(seconds),
            queue_seconds: Family::new_with_constructor(seconds),
            compute_seconds: Family::new_with_constructor(seconds),
            model_bytes: Family::default(),
            budget_used_bytes: Gauge::default(),
            budget_bytes: Gauge::default(),
        }
    }
}

impl ServeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("serve");
        r.register("model_loads", "Model versions loaded", self.loads.clone());
        r.register(
            "model_load_failures",
            "Model loads that failed",
            self.load_failures.clone(),
        );
        r.register(
            "model_unloads",
            "Model versions unloaded on request",
            self.unloads.clone(),
        );
        r.register(
            "model_evictions",
            "Model versions evicted to stay within the memory budget",
            self.evictions.clone(),
        );
        r.register(
            "model_load_seconds",
            "Time to load a model version",
            self.load_seconds.clone(),
        );
        r.register(
            "queue_seconds",
            "Time a request waited for an instance",
            self.queue_seconds.clone(),
        );
        r.register(
            "compute_seconds",
            "Time a batch ran in the runtime",
            self.compute_seconds.clone(),
        );
        r.register(
            "model_memory_bytes",
            "Memory a loaded model version cost (resident set growth while it loaded)",
            self.model_bytes.clone(),
        );
        r.register(
            "memory_used_bytes",
            "Memory held by loaded models",
            self.budget_used_bytes.clone(),
        );
        r.register(
            "memory_budget_bytes",
            "The memory budget (0 = none)",
            self.budget_bytes.clone(),
        );
    }
}
