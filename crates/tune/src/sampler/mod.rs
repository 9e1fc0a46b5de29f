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

/// The first of `draw`'s configurations not taken yet. When draws keep repeating, the
/// space is enumerated (if it is finite and small enough) and one configuration not taken
/// is picked with the trial's stream; only when none is left is the space exhausted. (Draws
/// alone cannot tell: a deep branch of conditional parameters may be drawn once in a
/// million.)
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
    untaken(space, taken, rng)
}

const DRAWS_BEFORE_EXHAUSTED: usize = 1_000;

/// Most configurations a space may have to be enumerated for the ones not taken (as many
/// as a grid may have).
pub const MAX_ENUMERATED: u64 = grid::MAX_GRID;

/// One configuration not taken, uniformly among them (a single pass, keeping each `k`-th
/// one found with probability `1/k`); exhausted when none is left, or when the space is
/// continuous or too large to enumerate (where draws have repeated a thousand times).
fn untaken(
    space: &Space,
    taken: &HashSet<Vec<u64>>,
    rng: &mut ChaCha8Rng,
) -> Result<Params, TuneError> {
    let mut free = 0u64;
    let mut pick = None;
    space
        .for_each_configuration(MAX_ENUMERATED, |params| {
            if !taken.contains(&key(space, params)) {
                free += 1;
                if rng.gen_range(0..free) == 0 {
                    pick = Some(params.clone());
                }
            }
            true
        })
        .ok_or(TuneError::Exhausted)?;
    pick.ok_or(TuneError::Exhausted)
}

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

    /// `p0`, then each `p{i}` only when `p{i-1}` is "a": 21 configurations, the deepest
    /// drawn once in 2^19 by independent draws.
    fn chain() -> Space {
        let mut spec = serde_json::Map::new();
        spec.insert(
            "p0".into(),
            json!({"type": "categorical", "choices": ["a", "b"]}),
        );
        for i in 1..20 {
            spec.insert(
                format!("p{i}"),
                json!({"type": "categorical", "choices": ["a", "b"], "when": {format!("p{}", i - 1): "a"}}),
            );
        }
        space(serde_json::Value::Object(spec))
    }

    #[test]
    fn every_configuration_of_a_deep_conditional_space_once_then_exhausted() {
        let s = chain();
        assert_eq!(s.for_each_configuration(1000, |_| true), Some(21));
        for config in [
            SamplerConfig::Random { seed: Some(1) },
            SamplerConfig::default().with_seed(1),
        ] {
            let mut trials = Vec::new();
            for n in 0..21 {
                let p = suggest(&config, &s, Direction::Minimize, &trials, n)
                    .unwrap_or_else(|e| panic!("{} at trial {n}: {e}", config.name()));
                s.check_params(&p).unwrap();
                // The same trial asked twice (a restarted server) gets the same answer.
                assert_eq!(
                    suggest(&config, &s, Direction::Minimize, &trials, n).unwrap(),
                    p
                );
                let mut t = TrialRecord::new(n, p);
                t.state = TrialState::Complete;
                t.value = Some(n as f64);
                trials.push(t);
            }
            let keys: HashSet<_> = trials.iter().map(|t| key(&s, &t.params)).collect();
            assert_eq!(keys.len(), 21, "{}", config.name());
            assert!(matches!(
                suggest(&config, &s, Direction::Minimize, &trials, 21),
                Err(TuneError::Exhausted)
            ));
        }
    }

    #[test]
    fn tpe_finds_the_last_configurations_with_trials_still_running() {
        // 257 configurations: a chain of 8 choices, then 249 integers under the deepest
        // (each drawn once in 2^8 · 249). TPE gave up on such a space with most of it left.
        let mut spec = serde_json::Map::new();
        spec.insert(
            "p0".into(),
            json!({"type": "categorical", "choices": ["a", "b"]}),
        );
        for i in 1..8 {
            spec.insert(
                format!("p{i}"),
                json!({"type": "categorical", "choices": ["a", "b"], "when": {format!("p{}", i - 1): "a"}}),
            );
        }
        spec.insert(
            "q".into(),
            json!({"type": "int", "low": 0, "high": 248, "when": {"p7": "a"}}),
        );
        let s = space(serde_json::Value::Object(spec));
        assert_eq!(s.for_each_configuration(1000, |_| true), Some(257));
        let config = SamplerConfig::Tpe {
            seed: Some(3),
            multivariate: true,
            constant_liar: true,
            startup_trials: 2,
            ei_candidates: 24,
        };
        let mut trials = Vec::new();
        for n in 0..257 {
            let p = suggest(&config, &s, Direction::Maximize, &trials, n).unwrap();
            let mut t = TrialRecord::new(n, p);
            if n % 3 != 0 {
                t.state = TrialState::Complete;
                t.value = Some(n as f64);
            }
            trials.push(t);
        }
        let keys: HashSet<_> = trials.iter().map(|t| key(&s, &t.params)).collect();
        assert_eq!(keys.len(), 257);
        assert!(matches!(
            suggest(&config, &s, Direction::Maximize, &trials, 257),
            Err(TuneError::Exhausted)
        ));
    }

    #[test]
    fn a_continuous_space_is_never_enumerated() {
        let s = space(json!({"x": {"type": "float", "low": 0, "high": 1}}));
        let every: HashSet<Vec<u64>> = HashSet::new();
        let mut rng = trial_rng(1, 1);
        // Draws that always repeat (a stand-in for bad luck): exhausted, not a hang.
        let same = random(&s, &mut trial_rng(0, 0));
        let taken: HashSet<Vec<u64>> = [key(&s, &same)].into();
        assert!(matches!(
            unique(&s, &taken, &mut rng, |_| same.clone()),
            Err(TuneError::Exhausted)
        ));
        assert!(unique(&s, &every, &mut rng, |r| random(&s, r)).is_ok());
    }
}
