//! Tree-structured Parzen estimator (Bergstra et al., 2011), with the choices Optuna 5 makes
//! by default: a joint (multivariate) estimator over the parameters every trial has, and a
//! constant liar that counts running trials among the worst so parallel workers spread out.
//!
//! The trials are ranked best first: finished trials that meet the constraint by value,
//! then pruned or paused ones (a later step first), then those that broke the constraint
//! (the smaller violation first), then the running ones. The best `γ(n) = min(⌈n/10⌉, 25)`
//! are "good"; the next configuration maximises `l(x) / g(x)` among candidates drawn from
//! the good trials' estimator `l`, `g` being the others'. Parameters that exist only under a
//! condition get their own one-dimensional estimators over the trials that have them.

use rand_chacha::ChaCha8Rng;
use trainyard_core::error::InvalidField;

use super::parzen::Parzen;
use super::{key, random, taken, unique};
use crate::error::TuneError;
use crate::space::{Param, Params, Space};
use crate::study::Direction;
use crate::trial::{TrialRecord, TrialState};

/// TPE's settings; the defaults are Optuna 5's.
#[derive(Debug, Clone, PartialEq)]
pub struct TpeOptions {
    /// One joint estimator over all unconditional parameters (else one per parameter).
    pub multivariate: bool,
    /// Count running trials as the worst results, so parallel suggestions differ.
    pub constant_liar: bool,
    /// Random suggestions until this many trials have finished.
    pub startup_trials: u32,
    /// Candidates drawn from the good trials' estimator per suggestion.
    pub ei_candidates: u32,
}

impl Default for TpeOptions {
    fn default() -> Self {
        TpeOptions {
            multivariate: true,
            constant_liar: true,
            startup_trials: 10,
            ei_candidates: 24,
        }
    }
}

impl TpeOptions {
    pub fn check(&self) -> Result<(), InvalidField> {
        if !(1..=10_000).contains(&self.ei_candidates) {
            return Err(InvalidField::new(
                "sampler.ei_candidates",
                "must be 1 to 10000",
            ));
        }
        if self.startup_trials > 100_000 {
            return Err(InvalidField::new(
                "sampler.startup_trials",
                "at most 100000",
            ));
        }
        Ok(())
    }
}

/// A trial's place in the ranking: (class, primary key, secondary key, number).
type Rank = (u8, f64, f64, u64);

fn rank(t: &TrialRecord, sign: f64, liar: bool) -> Option<Rank> {
    let loss = |v: Option<f64>| {
        v.filter(|v| v.is_finite())
            .map_or(f64::INFINITY, |v| sign * v)
    };
    match t.state {
        TrialState::Complete => {
            let v = t.value.filter(|v| v.is_finite())?;
            Some(if t.is_feasible() {
                (0, sign * v, 0.0, t.number)
            } else {
                (2, t.constraint.unwrap_or(0.0), sign * v, t.number)
            })
        }
        TrialState::Pruned | TrialState::Paused => {
            let last = t.intermediate.last();
            let step = last
                .map_or(t.rung as f64, |(s, _)| *s as f64)
                .max(t.rung as f64);
            let value = t.value.or(last.map(|(_, v)| *v));
            Some((1, -step, loss(value), t.number))
        }
        TrialState::Running if liar => Some((3, 0.0, 0.0, t.number)),
        TrialState::Running | TrialState::Failed => None,
    }
}

fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// How many of `holding` ranked trials form the good group: γ of the finished ones —
/// running trials the constant liar adds always join the bad group, as in Optuna, and do
/// not make the good one larger. (Optuna takes γ over all finished trials before keeping
/// those that hold the parameters; here both are the trials holding them, which differs
/// for conditional parameters only.)
fn below_count(finished: usize, holding: usize) -> usize {
    gamma(finished).min(finished).min(holding)
}

/// Optuna's recency weights: flat for the 25 newest, a ramp from 1/n for older ones.
fn weights(numbers: &[u64]) -> Vec<f64> {
    let n = numbers.len();
    if n < 25 {
        return vec![1.0; n];
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| numbers[i]);
    let ramp = n - 25;
    let mut w = vec![1.0; n];
    for (pos, &i) in order.iter().enumerate().take(ramp) {
        let start = 1.0 / n as f64;
        w[i] = if ramp == 1 {
            start
        } else {
            start + (1.0 - start) * pos as f64 / (ramp - 1) as f64
        };
    }
    w
}

pub fn suggest(
    options: &TpeOptions,
    space: &Space,
    direction: Direction,
    trials: &[TrialRecord],
    rng: &mut ChaCha8Rng,
) -> Result<Params, TuneError> {
    let sign = direction.sign();
    let mut ranked: Vec<(Rank, &TrialRecord)> = trials
        .iter()
        .filter_map(|t| rank(t, sign, options.constant_liar).map(|r| (r, t)))
        .collect();
    let finished = ranked.iter().filter(|(r, _)| r.0 < 3).count();
    let taken = taken(space, trials);
    if finished < options.startup_trials.max(1) as usize {
        return unique(space, &taken, rng, |rng| random(space, rng));
    }
    ranked.sort_by(|(a, _), (b, _)| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let ranked: Vec<&TrialRecord> = ranked.into_iter().map(|(_, t)| t).collect();
    let internal: Vec<_> = ranked
        .iter()
        .map(|t| space.to_internal(&t.params))
        .collect();
    let fixed: Vec<&Param> = space.params.iter().filter(|p| p.when.is_empty()).collect();
    let conditional: Vec<&Param> = space.params.iter().filter(|p| !p.when.is_empty()).collect();
    for _ in 0..20 {
        let mut params = Params::new();
        if options.multivariate {
            choose(options, &fixed, &internal, &ranked, rng, &mut params);
        } else {
            for p in &fixed {
                choose(options, &[p], &internal, &ranked, rng, &mut params);
            }
        }
        for p in &conditional {
            if Space::is_active(p, &params) {
                choose(options, &[p], &internal, &ranked, rng, &mut params);
            }
        }
        let k = key(space, &params);
        if !taken.contains(&k) {
            return Ok(params);
        }
    }
    // The estimators keep returning configurations already tried (a small discrete space):
    // any configuration not tried yet.
    unique(space, &taken, rng, |rng| random(space, rng))
}

/// Chooses values for `params` jointly from the trials that have them all, writing them
/// into `out`.
fn choose(
    options: &TpeOptions,
    params: &[&Param],
    internal: &[std::collections::BTreeMap<String, f64>],
    ranked: &[&TrialRecord],
    rng: &mut ChaCha8Rng,
    out: &mut Params,
) {
    if params.is_empty() {
        return;
    }
    let dists: Vec<_> = params.iter().map(|p| &p.dist).collect();
    // The trials holding every one of the parameters, best first (running ones, under the
    // constant liar, last).
    let holding: Vec<(Vec<f64>, u64, bool)> = internal
        .iter()
        .zip(ranked)
        .filter_map(|(x, t)| {
            let row: Option<Vec<f64>> = params.iter().map(|p| x.get(&p.name).copied()).collect();
            row.map(|r| (r, t.number, t.state == TrialState::Running))
        })
        .collect();
    let finished = holding.iter().filter(|(_, _, running)| !running).count();
    let n_below = below_count(finished, holding.len());
    let (below, above) = holding.split_at(n_below);
    let split = |part: &[(Vec<f64>, u64, bool)]| -> (Vec<Vec<f64>>, Vec<u64>) {
        part.iter().map(|(x, n, _)| (x.clone(), *n)).unzip()
    };
    let (below_x, below_n) = split(below);
    let (above_x, above_n) = split(above);
    let l = Parzen::new(&dists, &below_x, &weights(&below_n));
    let g = Parzen::new(&dists, &above_x, &weights(&above_n));
    let mut best: Option<(f64, Vec<f64>)> = None;
    for _ in 0..options.ei_candidates {
        let x: Vec<f64> = l
            .sample(rng)
            .into_iter()
            .zip(&dists)
            .map(|(v, d)| d.snap(v))
            .collect();
        let score = l.log_pdf(&x) - g.log_pdf(&x);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, x));
        }
    }
    if let Some((_, x)) = best {
        for (p, v) in params.iter().zip(x) {
            out.insert(p.name.clone(), p.dist.from_internal(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{suggest as any_suggest, SamplerConfig};
    use serde_json::json;
    use std::collections::HashSet;

    #[test]
    fn running_trials_under_the_liar_do_not_grow_the_good_group() {
        // 30 finished and 10 running: γ(30) = 3 good, as Optuna counts (γ(40) would be 4).
        assert_eq!(below_count(30, 40), 3);
        assert_eq!(below_count(31, 31), 4);
        // At least one finished trial is good; a running one never is.
        assert_eq!(below_count(1, 1), 1);
        assert_eq!(below_count(0, 2), 0);
        assert_eq!(below_count(5, 0), 0);
    }

    fn run(config: &SamplerConfig, space: &Space, f: impl Fn(&Params) -> f64, n: u64) -> f64 {
        let mut trials: Vec<TrialRecord> = Vec::new();
        let mut best = f64::INFINITY;
        for i in 0..n {
            let p = any_suggest(config, space, Direction::Minimize, &trials, i).unwrap();
            let v = f(&p);
            best = best.min(v);
            let mut t = TrialRecord::new(i, p);
            t.state = TrialState::Complete;
            t.value = Some(v);
            trials.push(t);
        }
        best
    }

    fn sphere(p: &Params) -> f64 {
        p.values().map(|v| v.as_f64().unwrap().powi(2)).sum()
    }

    #[test]
    fn tpe_beats_random_on_a_sphere() {
        let s = crate::sampler::tests::space(json!({
            "a": {"type": "float", "low": -5, "high": 5},
            "b": {"type": "float", "low": -5, "high": 5},
            "c": {"type": "float", "low": -5, "high": 5},
        }));
        let (mut tpe_wins, mut uni_wins) = (0, 0);
        for seed in 0..10 {
            let random = run(&SamplerConfig::Random { seed: Some(seed) }, &s, sphere, 60);
            let tpe = run(&SamplerConfig::default().with_seed(seed), &s, sphere, 60);
            let uni = SamplerConfig::Tpe {
                seed: Some(seed),
                multivariate: false,
                constant_liar: true,
                startup_trials: 10,
                ei_candidates: 24,
            };
            let uni = run(&uni, &s, sphere, 60);
            tpe_wins += usize::from(tpe < random);
            uni_wins += usize::from(uni < random);
        }
        assert!(
            tpe_wins >= 8,
            "multivariate TPE beat random on {tpe_wins}/10 seeds"
        );
        assert!(
            uni_wins >= 8,
            "univariate TPE beat random on {uni_wins}/10 seeds"
        );
    }

    #[test]
    fn maximising_looks_for_the_top() {
        // Over 10 seeds, the share of trials 20-39 in the top quarter of the range: a
        // uniform draw gives 25 %.
        let s = crate::sampler::tests::space(json!({"x": {"type": "float", "low": 0, "high": 10}}));
        let mut top = 0;
        for seed in 0..10 {
            let mut trials: Vec<TrialRecord> = Vec::new();
            let config = SamplerConfig::default().with_seed(seed);
            for i in 0..40 {
                let p = any_suggest(&config, &s, Direction::Maximize, &trials, i).unwrap();
                let x = p["x"].as_f64().unwrap();
                top += usize::from(i >= 20 && x >= 7.5);
                let mut t = TrialRecord::new(i, p);
                t.state = TrialState::Complete;
                t.value = Some(x);
                trials.push(t);
            }
        }
        assert!(top > 100, "{top} of 200 late trials in the top quarter");
    }

    #[test]
    fn the_constant_liar_keeps_parallel_suggestions_apart() {
        // 4 workers over a 6×6 grid of integers: each suggestion is made while the other
        // three run. With the liar no configuration repeats; the running ones are taken.
        let s = crate::sampler::tests::space(json!({
            "a": {"type": "int", "low": 0, "high": 5},
            "b": {"type": "int", "low": 0, "high": 5},
        }));
        let config = SamplerConfig::default().with_seed(11);
        let mut trials: Vec<TrialRecord> = Vec::new();
        for i in 0..30u64 {
            if i >= 4 {
                let done = &mut trials[(i - 4) as usize];
                done.state = TrialState::Complete;
                let (a, b) = (
                    done.params["a"].as_f64().unwrap(),
                    done.params["b"].as_f64().unwrap(),
                );
                done.value = Some((a - 2.0).powi(2) + (b - 3.0).powi(2));
            }
            let p = any_suggest(&config, &s, Direction::Minimize, &trials, i).unwrap();
            trials.push(TrialRecord::new(i, p));
        }
        let keys: HashSet<_> = trials.iter().map(|t| key(&s, &t.params)).collect();
        assert_eq!(keys.len(), 30);
    }

    #[test]
    fn conditional_parameters_appear_only_under_their_parent() {
        let s = crate::sampler::tests::space(json!({
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "momentum": {"type": "float", "low": 0, "high": 1, "when": {"opt": "sgd"}},
            "lr": {"type": "float", "low": 1e-4, "high": 1, "log": true},
        }));
        let config = SamplerConfig::default().with_seed(2);
        let mut trials: Vec<TrialRecord> = Vec::new();
        for i in 0..40 {
            let p = any_suggest(&config, &s, Direction::Minimize, &trials, i).unwrap();
            s.check_params(&p).unwrap();
            let v = p["lr"].as_f64().unwrap().ln().abs()
                + p.get("momentum")
                    .map_or(1.0, |m| (m.as_f64().unwrap() - 0.9).abs());
            let mut t = TrialRecord::new(i, p);
            t.state = TrialState::Complete;
            t.value = Some(v);
            trials.push(t);
        }
        let sgd_late = trials[25..]
            .iter()
            .filter(|t| t.params["opt"] == "sgd")
            .count();
        assert!(
            sgd_late >= 10,
            "sgd (the better branch) in {sgd_late}/15 late trials"
        );
    }

    #[test]
    fn infeasible_trials_rank_below_feasible_ones() {
        let t = |number, value: f64, constraint: f64| {
            let mut t = TrialRecord::new(number, Params::new());
            t.state = TrialState::Complete;
            t.value = Some(value);
            t.constraint = Some(constraint);
            t
        };
        let good = rank(&t(0, 5.0, -1.0), 1.0, true).unwrap();
        let bad = rank(&t(1, 1.0, 0.5), 1.0, true).unwrap();
        assert!(good < bad);
        let w = weights(&(0..30).collect::<Vec<_>>());
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12 && w[29] == 1.0 && w[4] == 1.0 && w[3] < 1.0);
    }
}
