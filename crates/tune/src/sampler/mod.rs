//! Samplers: the next configuration as a pure function of the study's seed, the trial's
//! number and the trials so far.
//!
//! Each trial draws from its own random stream, seeded by the study's seed and the trial's
//! number, so the suggestion for trial `n` never depends on how many draws earlier trials
//! made, on timing, or on which server asks.

mod grid;
mod parzen;
mod sobol;
mod tpe;

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use trainyard_core::error::InvalidField;
use utoipa::ToSchema;

use crate::error::TuneError;
use crate::space::{Params, Space};
use crate::study::Direction;
use crate::trial::{TrialRecord, TrialState};

pub use tpe::TpeOptions;

/// How the next configuration is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SamplerConfig {
    /// Independent uniform draws (log-uniform on a log scale).
    Random {
        #[serde(default)]
        seed: Option<u64>,
    },
    /// Every combination of a finite space once, in an order shuffled by the seed.
    Grid {
        #[serde(default)]
        seed: Option<u64>,
    },
    /// A scrambled Sobol sequence: covers the space more evenly than random draws.
    Sobol {
        #[serde(default)]
        seed: Option<u64>,
    },
    /// Tree-structured Parzen estimator.
    Tpe {
        #[serde(default)]
        seed: Option<u64>,
        /// One joint estimator over the unconditional parameters (default), or one each.
        #[serde(default = "yes")]
        multivariate: bool,
        /// Count running trials among the worst, so parallel suggestions differ (default).
        #[serde(default = "yes")]
        constant_liar: bool,
        /// Random suggestions until this many trials have finished (default 10).
        #[serde(default = "startup")]
        #[schema(maximum = 100000)]
        startup_trials: u32,
        /// Candidates scored per suggestion (default 24).
        #[serde(default = "candidates")]
        #[schema(minimum = 1, maximum = 10000)]
        ei_candidates: u32,
    },
    /// The client samples: how a study kept for Optuna's own clients shows. Not for new
    /// studies.
    External,
}

fn yes() -> bool {
    true
}

fn startup() -> u32 {
    TpeOptions::default().startup_trials
}

fn candidates() -> u32 {
    TpeOptions::default().ei_candidates
}

impl Default for SamplerConfig {
    fn default() -> Self {
        let o = TpeOptions::default();
        SamplerConfig::Tpe {
            seed: None,
            multivariate: o.multivariate,
            constant_liar: o.constant_liar,
            startup_trials: o.startup_trials,
            ei_candidates: o.ei_candidates,
        }
    }
}

impl SamplerConfig {
    pub fn seed(&self) -> Option<u64> {
        match self {
            SamplerConfig::Random { seed }
            | SamplerConfig::Grid { seed }
            | SamplerConfig::Sobol { seed }
            | SamplerConfig::Tpe { seed, .. } => *seed,
            SamplerConfig::External => None,
        }
    }

    /// The same sampler with its seed fixed (a study picks one at creation when the user
    /// gave none, so a restart draws the same).
    pub fn with_seed(mut self, value: u64) -> Self {
        match &mut self {
            SamplerConfig::Random { seed }
            | SamplerConfig::Grid { seed }
            | SamplerConfig::Sobol { seed }
            | SamplerConfig::Tpe { seed, .. } => {
                seed.get_or_insert(value);
            }
            SamplerConfig::External => {}
        }
        self
    }

    pub fn name(&self) -> &'static str {
        match self {
            SamplerConfig::Random { .. } => "random",
            SamplerConfig::Grid { .. } => "grid",
            SamplerConfig::Sobol { .. } => "sobol",
            SamplerConfig::Tpe { .. } => "tpe",
            SamplerConfig::External => "external",
        }
    }

    /// Checks the sampler against the space it will search.
    pub fn check(&self, space: &Space) -> Result<(), InvalidField> {
        match self {
            SamplerConfig::Grid { .. } => grid::check(space),
            SamplerConfig::Tpe { .. } => self.tpe_options().map_or(Ok(()), |o| o.check()),
            SamplerConfig::External => Err(InvalidField::new(
                "sampler.kind",
                "`external` is how an Optuna client's study shows; choose grid, random, sobol or tpe",
            )),
            _ => Ok(()),
        }
    }

    fn tpe_options(&self) -> Option<TpeOptions> {
        match *self {
            SamplerConfig::Tpe {
                multivariate,
                constant_liar,
                startup_trials,
                ei_candidates,
                ..
            } => Some(TpeOptions {
                multivariate,
                constant_liar,
                startup_trials,
                ei_candidates,
            }),
            _ => None,
        }
    }

    /// How many configurations the sampler can give at most (a grid's size).
    pub fn limit(&self, space: &Space) -> Option<u64> {
        match self {
            SamplerConfig::Grid { .. } => grid::size(space),
            _ => None,
        }
    }
}

/// The configuration of trial `number`, given the trials recorded so far (the running ones
/// included: TPE's constant liar and the duplicate check read them).
pub fn suggest(
    config: &SamplerConfig,
    space: &Space,
    direction: Direction,
    trials: &[TrialRecord],
    number: u64,
) -> Result<Params, TuneError> {
    let seed = config.seed().unwrap_or(0);
    let mut rng = trial_rng(seed, number);
    match config {
        SamplerConfig::Grid { .. } => grid::suggest(space, seed, number),
        SamplerConfig::Sobol { .. } => Ok(sobol::suggest(space, seed, number)),
        SamplerConfig::Random { .. } => {
            let taken = taken(space, trials);
            unique(space, &taken, &mut rng, |rng| random(space, rng))
        }
        SamplerConfig::Tpe { .. } => {
            let options = config.tpe_options().unwrap_or_default();
            tpe::suggest(&options, space, direction, trials, &mut rng)
        }
        SamplerConfig::External => Err(TuneError::Exhausted),
    }
}

/// The random stream of one trial.
pub(crate) fn trial_rng(seed: u64, number: u64) -> ChaCha8Rng {
    // SplitMix64 of the pair, so nearby seeds and numbers give unrelated streams.
    let mut z = seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// A configuration of the space (a fixed random one), for checking what a trial template
/// renders before any trial exists.
pub fn probe(space: &Space) -> Params {
    random(space, &mut trial_rng(0, u64::MAX - 1))
}

/// Independent draws for every active parameter.
pub(crate) fn random(space: &Space, rng: &mut ChaCha8Rng) -> Params {
    let mut params = Params::new();
    for p in &space.params {
        if !Space::is_active(p, &params) {
            continue;
        }
        let (lo, hi) = p.dist.internal_range();
        let x = if hi > lo { rng.gen_range(lo..hi) } else { lo };
        params.insert(p.name.clone(), p.dist.from_internal(x));
    }
    params
}

/// A configuration as a comparable key: its values in the space's order.
pub(crate) fn key(space: &Space, params: &Params) -> Vec<u64> {
    space
        .params
        .iter()
        .map(|p| match params.get(&p.name) {
            Some(v) => p.dist.to_internal(v).map_or(u64::MAX - 1, f64::to_bits),
            None => u64::MAX,
        })
        .collect()
}

/// The configurations already suggested (every state: a failed configuration is not
/// worth repeating either).
pub(crate) fn taken(space: &Space, trials: &[TrialRecord]) -> HashSet<Vec<u64>> {
    trials
        .iter()
        .filter(|t| t.state != TrialState::Failed || !t.params.is_empty())
        .map(|t| key(space, &t.params))
        .collect()
}

/// The first of `draw`'s configurations not taken yet; after many duplicates the space is
/// taken as exhausted (only a finite space gets there).
pub(crate) fn unique(
    space: &Space,
    taken: &HashSet<Vec<u64>>,
    rng: &mut ChaCha8Rng,
    mut draw: impl FnMut(&mut ChaCha8Rng) -> Params,
) -> Result<Params, TuneError> {
    for _ in 0..DRAWS_BEFORE_EXHAUSTED {
        let params = draw(rng);
        if !taken.contains(&key(space, &params)) {
            return Ok(params);
        }
    }
    Err(TuneError::Exhausted)
}

const DRAWS_BEFORE_EXHAUSTED: usize = 1_000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn space(v: serde_json::Value) -> Space {
        Space::new(&serde_json::from_value(v).unwrap()).unwrap()
    }

    #[test]
    fn the_same_seed_and_number_give_the_same_configuration() {
        let s = space(json!({
            "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": true},
            "n": {"type": "int", "low": 1, "high": 64},
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "m": {"type": "float", "low": 0, "high": 1, "when": {"opt": "sgd"}},
        }));
        for config in [
            SamplerConfig::Random { seed: Some(7) },
            SamplerConfig::Sobol { seed: Some(7) },
            SamplerConfig::default().with_seed(7),
        ] {
            let mut trials = Vec::new();
            for n in 0..30 {
                let a = suggest(&config, &s, Direction::Minimize, &trials, n).unwrap();
                let b = suggest(&config, &s, Direction::Minimize, &trials, n).unwrap();
                assert_eq!(a, b);
                s.check_params(&a).unwrap();
                let mut t = TrialRecord::new(n, a);
                t.state = TrialState::Complete;
                t.value = Some(n as f64 % 7.0);
                trials.push(t);
            }
            let other = suggest(&config.clone(), &s, Direction::Minimize, &trials, 30).unwrap();
            let reseeded = match config {
                SamplerConfig::Random { .. } => SamplerConfig::Random { seed: Some(8) },
                SamplerConfig::Sobol { .. } => SamplerConfig::Sobol { seed: Some(8) },
                _ => SamplerConfig::default().with_seed(8),
            };
            assert_ne!(
                other,
                suggest(&reseeded, &s, Direction::Minimize, &trials, 30).unwrap()
            );
        }
    }

    #[test]
    fn random_never_repeats_a_configuration_of_a_small_space() {
        let s = space(
            json!({"a": {"type": "int", "low": 0, "high": 2}, "b": {"type": "categorical", "choices": [true, false]}}),
        );
        let config = SamplerConfig::Random { seed: Some(1) };
        let mut trials = Vec::new();
        for n in 0..6 {
            let p = suggest(&config, &s, Direction::Minimize, &trials, n).unwrap();
            trials.push(TrialRecord::new(n, p));
        }
        let keys: HashSet<_> = trials.iter().map(|t| key(&s, &t.params)).collect();
        assert_eq!(keys.len(), 6);
        assert!(matches!(
            suggest(&config, &s, Direction::Minimize, &trials, 6),
            Err(TuneError::Exhausted)
        ));
    }
}
