//! The samplers' search quality without the server: regret after 50 and 100 trials on
//! Rosenbrock-10D (the one function of `bench/tune` where Trainyard's TPE trailed Optuna's),
//! one study per seed, one JSON line per study on stdout. `bench/tune/regret.py` runs
//! Optuna's samplers over the same seeds and compares the two.
//!
//! Why in-process: a study here takes milliseconds, so thousands of seeds take minutes,
//! and the sampler is the same function the server calls (`sampler::suggest` over the
//! trials so far); the REST run of `bench/tune/run.sh` differs only in transport.
//!
//!   cargo run --release -p trainyard-tune --example regret -- FIRST_SEED COUNT

use trainyard_tune::sampler::{suggest, SamplerConfig};
use trainyard_tune::space::{ParamSpec, Space};
use trainyard_tune::{Direction, TrialRecord, TrialState};

const DIMS: usize = 10;
const TRIALS: u64 = 100;

fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2)
        .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
        .sum()
}

/// The best value among each prefix's trials, at 50 and at 100 (the minimum is 0).
fn study(config: &SamplerConfig, space: &Space, names: &[String]) -> (f64, f64) {
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut best = f64::INFINITY;
    let mut at_50 = f64::NAN;
    for n in 0..TRIALS {
        let params = suggest(config, space, Direction::Minimize, &trials, n).expect("a suggestion");
        let x: Vec<f64> = names
            .iter()
            .map(|k| params[k].as_f64().expect("a float"))
            .collect();
        let y = rosenbrock(&x);
        best = best.min(y);
        if n + 1 == 50 {
            at_50 = best;
        }
        let mut t = TrialRecord::new(n, params);
        t.state = TrialState::Complete;
        t.value = Some(y);
        trials.push(t);
    }
    (at_50, best)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("FIRST_SEED COUNT"))
        .collect();
    let (first, count) = match args[..] {
        [first, count] => (first, count),
        _ => panic!("usage: regret FIRST_SEED COUNT"),
    };
    let names: Vec<String> = (1..=DIMS).map(|i| format!("x{i}")).collect();
    let specs: std::collections::BTreeMap<String, ParamSpec> = names
        .iter()
        .map(|n| {
            let spec = serde_json::json!({"type": "float", "low": -2.048, "high": 2.048});
            (
                n.clone(),
                serde_json::from_value(spec).expect("a float spec"),
            )
        })
        .collect();
    let space = Space::new(&specs).expect("a space");
    for seed in first..first + count {
        for (name, config) in [
            ("tpe", SamplerConfig::default().with_seed(seed)),
            ("random", SamplerConfig::Random { seed: Some(seed) }),
        ] {
            let (at_50, at_100) = study(&config, &space, &names);
            println!(
                "{}",
                serde_json::json!({"side": "trainyard", "sampler": name, "seed": seed,
                                   "regret_50": at_50, "regret_100": at_100})
            );
        }
    }
}
