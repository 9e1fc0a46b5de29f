//! Early stopping: which trials to stop, and (successive halving) which to give more
//! resource.
//!
//! Two shapes of rule:
//! - *stopping* rules read a running trial's intermediate values and say at which step it
//!   should have stopped: median stopping, and successive halving used as a stopping rule
//!   (what a client that reports values through the API gets);
//! - *promotion* rules (ASHA, Hyperband) run each trial for a rung's resource only; when a
//!   worker is free, a paused trial in the top `1/η` of its rung continues from its
//!   checkpoint with `η×` the resource, else a new trial starts at the bottom rung
//!   (Li et al., 2020, "A system for massively parallel hyperparameter tuning").
//!
//! Steps are the units the trial reports in (epochs for the built-in engine); a rung's
//! resource is a step count.

use serde::{Deserialize, Serialize};
use trainyard_core::error::InvalidField;
use utoipa::ToSchema;

use crate::study::Direction;
use crate::trial::{TrialRecord, TrialState};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PrunerConfig {
    /// Every trial runs to its end.
    #[default]
    None,
    /// Stop a trial whose best value so far is worse than the median of the finished
    /// trials' values at the same step.
    Median {
        /// Finished trials needed before any trial is stopped (default 5).
        #[serde(default = "five")]
        startup_trials: u32,
        /// Steps every trial runs before it can be stopped (default 0).
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Asynchronous successive halving: rungs at `min_resource·ηᵏ` up to `max_resource`.
    Asha {
        #[serde(default = "one")]
        #[schema(minimum = 1)]
        min_resource: u64,
        #[schema(minimum = 1)]
        max_resource: u64,
        /// η (default 3).
        #[serde(default = "three")]
        #[schema(minimum = 2, maximum = 100)]
        reduction_factor: u64,
    },
    /// Several ASHA brackets, each starting at a higher bottom rung; trial `n` joins bracket
    /// `n mod brackets`.
    Hyperband {
        #[serde(default = "one")]
        #[schema(minimum = 1)]
        min_resource: u64,
        #[schema(minimum = 1)]
        max_resource: u64,
        #[serde(default = "three")]
        #[schema(minimum = 2, maximum = 100)]
        reduction_factor: u64,
    },
}

/// Most resource (steps, epochs) one trial may be given.
pub const MAX_RESOURCE: u64 = 1_000_000_000;

fn one() -> u64 {
    1
}
fn three() -> u64 {
    3
}
fn five() -> u32 {
    5
}

impl PrunerConfig {
    pub fn check(&self) -> Result<(), InvalidField> {
        match *self {
            PrunerConfig::Asha {
                min_resource,
                max_resource,
                reduction_factor,
            }
            | PrunerConfig::Hyperband {
                min_resource,
                max_resource,
                reduction_factor,
            } => {
                if min_resource == 0 {
                    return Err(InvalidField::new(
                        "pruner.min_resource",
                        "must be at least 1",
                    ));
                }
                if max_resource > MAX_RESOURCE {
                    return Err(InvalidField::new(
                        "pruner.max_resource",
                        format!("at most {MAX_RESOURCE}"),
                    ));
                }
                if max_resource < min_resource {
                    return Err(InvalidField::new(
                        "pruner.max_resource",
                        format!("{max_resource} is below min_resource {min_resource}"),
                    ));
                }
                if !(2..=100).contains(&reduction_factor) {
                    return Err(InvalidField::new(
                        "pruner.reduction_factor",
                        "must be 2 to 100",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether trials run rung by rung and are promoted (else they run to their end and
    /// may be stopped).
    pub fn promotes(&self) -> bool {
        matches!(
            self,
            PrunerConfig::Asha { .. } | PrunerConfig::Hyperband { .. }
        )
    }

    /// The rungs (resources) of trial `number`'s bracket; empty without promotions.
    pub fn rungs(&self, number: u64) -> Vec<u64> {
        match *self {
            PrunerConfig::Asha {
                min_resource,
                max_resource,
                reduction_factor,
            } => rungs(min_resource, max_resource, reduction_factor),
            PrunerConfig::Hyperband {
                min_resource,
                max_resource,
                reduction_factor,
            } => {
                let brackets = brackets(min_resource, max_resource, reduction_factor);
                let b = (number % brackets) as u32;
                let bottom = min_resource
                    .saturating_mul(reduction_factor.saturating_pow(b))
                    .min(max_resource);
                rungs(bottom, max_resource, reduction_factor)
            }
            _ => Vec::new(),
        }
    }

    fn bracket(&self, number: u64) -> u64 {
        match *self {
            PrunerConfig::Hyperband {
                min_resource,
                max_resource,
                reduction_factor,
            } => number % brackets(min_resource, max_resource, reduction_factor),
            _ => 0,
        }
    }

    fn eta(&self) -> u64 {
        match *self {
            PrunerConfig::Asha {
                reduction_factor, ..
            }
            | PrunerConfig::Hyperband {
                reduction_factor, ..
            } => reduction_factor,
            _ => 3,
        }
    }

    /// The paused trial to promote next (the best of the highest rung that has one in its
    /// top `1/η`), or `None` when a new trial should start.
    pub fn promotion(&self, direction: Direction, trials: &[TrialRecord]) -> Option<u64> {
        if !self.promotes() {
            return None;
        }
        let eta = self.eta() as usize;
        let sign = direction.sign();
        let mut best: Option<(usize, f64, u64)> = None;
        for t in trials.iter().filter(|t| t.state == TrialState::Paused) {
            let rungs = self.rungs(t.number);
            let k = t.rung as usize;
            if k + 1 >= rungs.len() {
                continue;
            }
            let Some(own) = rung_value(t, rungs[k]) else {
                continue;
            };
            // The trials of its bracket that reached this rung, by value.
            let mut reached: Vec<f64> = trials
                .iter()
                .filter(|o| o.state != TrialState::Failed)
                .filter(|o| self.bracket(o.number) == self.bracket(t.number))
                .filter_map(|o| rung_value(o, rungs[k]))
                .map(|v| sign * v)
                .collect();
            reached.sort_by(f64::total_cmp);
            let top = reached.len() / eta;
            if top == 0 || sign * own > reached[top - 1] {
                continue;
            }
            let candidate = (k, -(sign * own), t.number);
            let better = best.is_none_or(|(bk, bv, bn)| {
                (candidate.0, candidate.1, std::cmp::Reverse(candidate.2))
                    > (bk, bv, std::cmp::Reverse(bn))
            });
            if better {
                best = Some(candidate);
            }
        }
        best.map(|(_, _, n)| n)
    }

    /// For a running trial: the first step at which the stopping rule stops it, reading
    /// its intermediate values in order (so the answer does not depend on how often it is
    /// asked). `others` are the study's other trials.
    pub fn stop_at(
        &self,
        direction: Direction,
        trial: &TrialRecord,
        others: &[TrialRecord],
    ) -> Option<u64> {
        let sign = direction.sign();
        match *self {
            PrunerConfig::Median {
                startup_trials,
                warmup_steps,
            } => {
                let finished: Vec<&TrialRecord> = others
                    .iter()
                    .filter(|o| o.number != trial.number && o.state == TrialState::Complete)
                    .collect();
                if finished.len() < startup_trials as usize {
                    return None;
                }
                let mut best = f64::INFINITY;
                for &(step, value) in &trial.intermediate {
                    best = best.min(sign * value);
                    if step < warmup_steps {
                        continue;
                    }
                    let mut at: Vec<f64> = finished
                        .iter()
                        .filter_map(|o| rung_value(o, step))
                        .map(|v| sign * v)
                        .collect();
                    if at.is_empty() {
                        continue;
                    }
                    at.sort_by(f64::total_cmp);
                    let median = if at.len() % 2 == 1 {
                        at[at.len() / 2]
                    } else {
                        (at[at.len() / 2 - 1] + at[at.len() / 2]) / 2.0
                    };
                    if best > median {
                        return Some(step);
                    }
                }
                None
            }
            PrunerConfig::Asha { .. } | PrunerConfig::Hyperband { .. } => {
                // Successive halving as a stopping rule: at each rung below the top, stay
                // only in the top 1/η of the trials that reached it.
                let rungs = self.rungs(trial.number);
                let eta = self.eta() as usize;
                for &r in rungs.iter().take(rungs.len().saturating_sub(1)) {
                    let Some(own) = rung_value(trial, r) else {
                        continue;
                    };
                    let mut reached: Vec<f64> = others
                        .iter()
                        .filter(|o| o.number != trial.number && o.state != TrialState::Failed)
                        .filter(|o| self.bracket(o.number) == self.bracket(trial.number))
                        .filter_map(|o| rung_value(o, r))
                        .map(|v| sign * v)
                        .chain([sign * own])
                        .collect();
                    if reached.len() < 2 {
                        continue;
                    }
                    reached.sort_by(f64::total_cmp);
                    let top = (reached.len() / eta).max(1);
                    if sign * own > reached[top - 1] {
                        return Some(r);
                    }
                }
                None
            }
            PrunerConfig::None => None,
        }
    }
}

/// The value a trial reported at a step.
pub fn rung_value(t: &TrialRecord, step: u64) -> Option<f64> {
    t.intermediate
        .iter()
        .find(|(s, _)| *s == step)
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
}

/// `min·ηᵏ` below `max`, then `max`.
pub fn rungs(min: u64, max: u64, eta: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut r = min.max(1);
    while r < max {
        out.push(r);
        match r.checked_mul(eta.max(2)) {
            Some(next) => r = next,
            None => break,
        }
    }
    out.push(max);
    out
}

fn brackets(min: u64, max: u64, eta: u64) -> u64 {
    let mut n = 1;
    let mut r = min.max(1);
    while let Some(next) = r.checked_mul(eta.max(2)).filter(|next| *next <= max) {
        r = next;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Params;

    fn trial(number: u64, state: TrialState, rung: u32, values: &[(u64, f64)]) -> TrialRecord {
        let mut t = TrialRecord::new(number, Params::new());
        t.state = state;
        t.rung = rung;
        t.intermediate = values.to_vec();
        t
    }

    #[test]
    fn rungs_grow_by_eta_and_end_at_max() {
        assert_eq!(rungs(1, 27, 3), vec![1, 3, 9, 27]);
        assert_eq!(rungs(1, 20, 3), vec![1, 3, 9, 20]);
        assert_eq!(rungs(5, 5, 3), vec![5]);
        let hb = PrunerConfig::Hyperband {
            min_resource: 1,
            max_resource: 9,
            reduction_factor: 3,
        };
        assert_eq!(hb.rungs(0), vec![1, 3, 9]);
        assert_eq!(hb.rungs(1), vec![3, 9]);
        assert_eq!(hb.rungs(2), vec![9]);
        assert_eq!(hb.rungs(3), vec![1, 3, 9]);
    }

    #[test]
    fn asha_promotes_the_top_third_and_starts_new_trials_otherwise() {
        let asha = PrunerConfig::Asha {
            min_resource: 1,
            max_resource: 9,
            reduction_factor: 3,
        };
        let d = Direction::Minimize;
        // Two trials at rung 0: the top third of two is nobody.
        let mut trials = vec![
            trial(0, TrialState::Paused, 0, &[(1, 0.5)]),
            trial(1, TrialState::Paused, 0, &[(1, 0.2)]),
        ];
        assert_eq!(asha.promotion(d, &trials), None);
        trials.push(trial(2, TrialState::Paused, 0, &[(1, 0.9)]));
        assert_eq!(asha.promotion(d, &trials), Some(1));
        // Once promoted (running rung 1), the next best is not in the top third.
        trials[1].state = TrialState::Running;
        trials[1].rung = 1;
        assert_eq!(asha.promotion(d, &trials), None);
        // Maximising reverses the order.
        trials[1].state = TrialState::Paused;
        trials[1].rung = 0;
        assert_eq!(asha.promotion(Direction::Maximize, &trials), Some(2));
        // The top rung is never promoted further.
        let done = vec![
            trial(0, TrialState::Paused, 2, &[(1, 0.1), (3, 0.1), (9, 0.1)]),
            trial(1, TrialState::Paused, 0, &[(1, 0.5)]),
            trial(2, TrialState::Paused, 0, &[(1, 0.6)]),
        ];
        assert_eq!(asha.promotion(d, &done), None);
    }

    #[test]
    fn median_stops_at_the_first_step_below_the_median() {
        let median = PrunerConfig::Median {
            startup_trials: 2,
            warmup_steps: 1,
        };
        let d = Direction::Minimize;
        let others = vec![
            trial(0, TrialState::Complete, 0, &[(0, 1.0), (1, 0.5), (2, 0.3)]),
            trial(1, TrialState::Complete, 0, &[(0, 1.0), (1, 0.7), (2, 0.5)]),
        ];
        // Worse than the median (0.6) at step 1; step 0 is warm-up.
        let t = trial(2, TrialState::Running, 0, &[(0, 5.0), (1, 0.8), (2, 0.1)]);
        assert_eq!(median.stop_at(d, &t, &others), Some(1));
        let good = trial(3, TrialState::Running, 0, &[(0, 5.0), (1, 0.55), (2, 0.35)]);
        assert_eq!(median.stop_at(d, &good, &others), None);
        // Too few finished trials: nobody stops.
        assert_eq!(median.stop_at(d, &t, &others[..1]), None);
    }

    #[test]
    fn successive_halving_stops_the_bottom_of_a_rung() {
        let asha = PrunerConfig::Asha {
            min_resource: 1,
            max_resource: 9,
            reduction_factor: 2,
        };
        let d = Direction::Maximize;
        let others: Vec<_> = (0..3)
            .map(|i| trial(i, TrialState::Complete, 0, &[(1, i as f64)]))
            .collect();
        let bad = trial(9, TrialState::Running, 0, &[(1, 0.5)]);
        assert_eq!(asha.stop_at(d, &bad, &others), Some(1));
        let good = trial(9, TrialState::Running, 0, &[(1, 2.5)]);
        assert_eq!(asha.stop_at(d, &good, &others), None);
        assert!(PrunerConfig::Asha {
            min_resource: 3,
            max_resource: 2,
            reduction_factor: 3
        }
        .check()
        .is_err());
        // Enormous resources are refused, and the arithmetic cannot overflow anyway.
        let huge = PrunerConfig::Hyperband {
            min_resource: 1,
            max_resource: u64::MAX,
            reduction_factor: 2,
        };
        assert_eq!(huge.check().unwrap_err().field, "pruner.max_resource");
        assert_eq!(huge.rungs(0).len(), 65);
        assert_eq!(rungs(u64::MAX / 2, u64::MAX, 3).len(), 2);
    }
}
