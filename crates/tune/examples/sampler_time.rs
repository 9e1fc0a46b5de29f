//! The TPE sampler's own time per suggestion (no server, no database) as a study grows:
//! Hartmann6's space, histories of 100 and 1,000 finished trials, median of 20 suggestions.
//! `bench/tune/run.sh` measures the same through the REST API; this isolates the sampler.
//!
//!   cargo run --release -p trainyard-tune --example sampler_time

use std::time::{Duration, Instant};

use trainyard_tune::sampler::{suggest, SamplerConfig};
use trainyard_tune::space::{ParamSpec, Space};
use trainyard_tune::{Direction, TrialRecord, TrialState};

fn hartmann6(x: &[f64]) -> f64 {
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    -(0..4)
        .map(|i| {
            let inner: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-inner).exp()
        })
        .sum::<f64>()
}

fn main() {
    let specs: std::collections::BTreeMap<String, ParamSpec> = (0..6)
        .map(|i| {
            let spec = serde_json::json!({"type": "float", "low": 0, "high": 1});
            (format!("x{i}"), serde_json::from_value(spec).unwrap())
        })
        .collect();
    let space = Space::new(&specs).unwrap();
    let config = SamplerConfig::default().with_seed(1);
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut times: Vec<(u64, Duration)> = Vec::new();
    for n in 0..=1020u64 {
        let at = Instant::now();
        let params = suggest(&config, &space, Direction::Minimize, &trials, n).unwrap();
        let took = at.elapsed();
        if (100..120).contains(&n) || (1000..1020).contains(&n) {
            times.push((n, took));
        }
        let x: Vec<f64> = params.values().map(|v| v.as_f64().unwrap()).collect();
        let mut t = TrialRecord::new(n, params);
        t.state = TrialState::Complete;
        t.value = Some(hartmann6(&x));
        trials.push(t);
    }
    {
        for window in [100u64, 1000] {
            let mut v: Vec<Duration> = times
                .iter()
                .filter(|(n, _)| (window..window + 20).contains(n))
                .map(|(_, d)| *d)
                .collect();
            v.sort();
            println!(
                "TPE suggestion with {window} finished trials: median {:.3} ms (min {:.3}, max {:.3})",
                v[10].as_secs_f64() * 1e3,
                v[0].as_secs_f64() * 1e3,
                v[19].as_secs_f64() * 1e3
            );
        }
    }
}
