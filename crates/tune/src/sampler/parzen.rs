//! The Parzen estimator TPE builds twice per suggestion (over the good trials and over the
//! rest): a weighted mixture with one kernel per observation plus a broad prior kernel.
//!
//! A kernel is a product over dimensions: a normal truncated to the parameter's internal
//! range for numbers (its mass over the step's bin for integers and stepped floats), and a
//! distribution over choices for categories. Bandwidths follow Watanabe (2023), "Tree-
//! structured Parzen estimator: understanding its algorithm components", as Optuna 5 uses
//! them for joint and one-dimensional estimators alike: each kernel as wide as the larger gap
//! to its neighbours, clipped so it is neither wider than the range nor narrower than
//! range / min(100, 1 + kernels).

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::space::Dist;

/// The prior kernel's weight relative to one observation's.
const PRIOR_WEIGHT: f64 = 1.0;

/// The values a discrete dimension's point stands for: `[v − w/2, v + w/2]` around its value
/// `v`, in internal coordinates, or, for a log-scaled integer, in the value's own units (the
/// bin is then `[ln(v − w/2), ln(v + w/2)]` in internal ones, as Optuna measures it).
#[derive(Clone, Copy)]
enum Bin {
    Linear(f64),
    Log(f64),
}

enum Kernels {
    Numeric {
        low: f64,
        high: f64,
        /// One value's bin (`None`: continuous).
        bin: Option<Bin>,
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        /// Per kernel, log of its mass inside `[low, high]` (the truncation's normaliser,
        /// the same for every point: computed once).
        log_norms: Vec<f64>,
        /// Per kernel, `−ln(σ√(2π)) − log_norm`: a continuous density's constant part.
        log_consts: Vec<f64>,
    },
    /// Kernel `i < n` puts `prior/(n+1) + 1` on its observation's choice and
    /// `prior/(n+1)` on every other (over their total); the prior kernel is uniform. Kept as
    /// the observed choices, not as an (n+1)×choices table.
    Categorical {
        observed: Vec<usize>,
        choices: usize,
        /// The normalised mass of a choice other than the kernel's own, and of its own.
        base: f64,
        log_base: f64,
        log_hit: f64,
    },
}

pub struct Parzen {
    /// Log of each kernel's normalised weight; the prior is last.
    log_weights: Vec<f64>,
    dims: Vec<Kernels>,
}

impl Parzen {
    /// `observations[i][d]` is observation `i`'s internal coordinate in dimension `d`;
    /// `weights[i]` its weight. With several dimensions, one kernel per observation covers
    /// all of them (the joint, multivariate estimator).
    pub fn new(dists: &[&Dist], observations: &[Vec<f64>], weights: &[f64]) -> Self {
        let n = observations.len();
        let mut w: Vec<f64> = weights.to_vec();
        w.push(PRIOR_WEIGHT);
        let total: f64 = w.iter().sum();
        let log_weights = w.iter().map(|x| (x / total).ln()).collect();
        let dims = dists
            .iter()
            .enumerate()
            .map(|(d, dist)| {
                let column: Vec<f64> = observations.iter().map(|o| o[d]).collect();
                Self::dimension(dist, &column, n)
            })
            .collect();
        Parzen { log_weights, dims }
    }

    fn dimension(dist: &Dist, column: &[f64], n: usize) -> Kernels {
        let (low, high) = dist.internal_range();
        if let Dist::Categorical { choices } = dist {
            let k = choices.len();
            let prior = PRIOR_WEIGHT / (n + 1) as f64;
            let total = prior * k as f64 + 1.0;
            return Kernels::Categorical {
                observed: column.iter().map(|x| (*x as usize).min(k - 1)).collect(),
                choices: k,
                base: prior / total,
                log_base: (prior / total).ln(),
                log_hit: ((prior + 1.0) / total).ln(),
            };
        }
        let range = (high - low).max(f64::MIN_POSITIVE);
        let bin = match *dist {
            Dist::Int {
                log: false, step, ..
            } => Some(Bin::Linear(step as f64)),
            Dist::Int {
                log: true, step, ..
            } => Some(Bin::Log(step as f64)),
            Dist::Float {
                step: Some(step), ..
            } => Some(Bin::Linear(step)),
            _ => None,
        };
        let mut mus: Vec<f64> = column.to_vec();
        mus.push((low + high) / 2.0);
        let mut sigmas = neighbour_sigmas(column, low, high);
        let min_sigma = range / (100f64).min(1.0 + (n + 1) as f64);
        for s in &mut sigmas {
            *s = s.clamp(min_sigma, range);
        }
        sigmas.push(range);
        let log_norms = mus
            .iter()
            .zip(&sigmas)
            .map(|(m, s)| normal_mass((low - m) / s, (high - m) / s).ln())
            .collect::<Vec<f64>>();
        let log_consts = sigmas
            .iter()
            .zip(&log_norms)
            .map(|(s, n)| -0.5 * (2.0 * PI).ln() - s.ln() - n)
            .collect();
        Kernels::Numeric {
            low,
            high,
            bin,
            mus,
            sigmas,
            log_norms,
            log_consts,
        }
    }

    /// One draw: a kernel by weight, then each dimension from that kernel.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let u: f64 = rng.gen();
        let mut acc = 0.0;
        let mut k = self.log_weights.len() - 1;
        for (i, lw) in self.log_weights.iter().enumerate() {
            acc += lw.exp();
            if u < acc {
                k = i;
                break;
            }
        }
        self.dims
            .iter()
            .map(|dim| match dim {
                Kernels::Numeric {
                    low,
                    high,
                    mus,
                    sigmas,
                    ..
                } => truncated_normal(rng, mus[k], sigmas[k], *low, *high),
                Kernels::Categorical {
                    observed,
                    choices,
                    base,
                    ..
                } => {
                    // Its own choice with the share that lifts it from `base` to its mass,
                    // else uniformly (the prior kernel: always uniformly).
                    let own_share = 1.0 - base * *choices as f64;
                    let c = match observed.get(k) {
                        Some(&own) if rng.gen::<f64>() < own_share => own,
                        _ => rng.gen_range(0..*choices),
                    };
                    c as f64
                }
            })
            .collect()
    }

    /// The log density (log mass, for discrete dimensions) of a point.
    pub fn log_pdf(&self, x: &[f64]) -> f64 {
        let per_kernel: Vec<f64> = (0..self.log_weights.len())
            .map(|k| {
                let mut lp = self.log_weights[k];
                for (dim, &xd) in self.dims.iter().zip(x) {
                    lp += match dim {
                        Kernels::Numeric {
                            bin: None,
                            mus,
                            sigmas,
                            log_consts,
                            ..
                        } => {
                            let t = (xd - mus[k]) / sigmas[k];
                            log_consts[k] - 0.5 * t * t
                        }
                        Kernels::Numeric {
                            bin: Some(w),
                            mus,
                            sigmas,
                            log_norms,
                            ..
                        } => binned_log_mass(xd, mus[k], sigmas[k], log_norms[k], *w),
                        Kernels::Categorical {
                            observed,
                            choices,
                            log_base,
                            log_hit,
                            ..
                        } => match observed.get(k) {
                            Some(&own) if own == (xd as usize).min(choices - 1) => *log_hit,
                            Some(_) => *log_base,
                            None => -(*choices as f64).ln(),
                        },
                    };
                }
                lp
            })
            .collect();
        log_sum_exp(&per_kernel)
    }
}

/// Each observation's bandwidth: the larger distance to its neighbours, the range's ends
/// counting as neighbours, except that the outermost observations use their inner
/// neighbour only (Optuna's `consider_endpoints = False`).
fn neighbour_sigmas(column: &[f64], low: f64, high: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..column.len()).collect();
    order.sort_by(|&a, &b| column[a].total_cmp(&column[b]));
    let sorted: Vec<f64> = order.iter().map(|&i| column[i]).collect();
    let n = sorted.len();
    let mut sigma_sorted = vec![0.0; n];
    for i in 0..n {
        let left = if i == 0 { low } else { sorted[i - 1] };
        let right = if i + 1 == n { high } else { sorted[i + 1] };
        sigma_sorted[i] = (sorted[i] - left).max(right - sorted[i]);
    }
    if n >= 2 {
        sigma_sorted[0] = sorted[1] - sorted[0];
        sigma_sorted[n - 1] = sorted[n - 1] - sorted[n - 2];
    }
    let mut sigmas = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        sigmas[i] = sigma_sorted[rank];
    }
    sigmas
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// Φ(b) − Φ(a) for a ≤ b, computed on the side of zero where it does not cancel.
fn normal_mass(a: f64, b: f64) -> f64 {
    let mass = if a > 0.0 {
        0.5 * (libm::erfc(a * FRAC_1_SQRT_2) - libm::erfc(b * FRAC_1_SQRT_2))
    } else {
        0.5 * (libm::erfc(-b * FRAC_1_SQRT_2) - libm::erfc(-a * FRAC_1_SQRT_2))
    };
    mass.max(1e-300)
}

/// The log mass of the bin around `x` (an integer's or a stepped float's value).
fn binned_log_mass(x: f64, mu: f64, sigma: f64, log_norm: f64, bin: Bin) -> f64 {
    let z = |v: f64| (v - mu) / sigma;
    let (left, right) = match bin {
        Bin::Linear(w) => (x - w / 2.0, x + w / 2.0),
        Bin::Log(w) => {
            let v = x.exp().round();
            (
                (v - w / 2.0).max(f64::MIN_POSITIVE).ln(),
                (v + w / 2.0).ln(),
            )
        }
    };
    normal_mass(z(left), z(right)).ln() - log_norm
}

/// A normal draw kept inside `[low, high]` by rejection (the prior and the clipped
/// bandwidths keep the acceptance high); a kernel that misses a hundred times gives its
/// nearest end.
fn truncated_normal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64, low: f64, high: f64) -> f64 {
    for _ in 0..100 {
        // Box–Muller.
        let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.gen();
        let x = mu + sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos();
        if (low..=high).contains(&x) {
            return x;
        }
    }
    mu.clamp(low, high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_continuous_density_integrates_to_one() {
        let dist = Dist::Float {
            low: -2.0,
            high: 3.0,
            log: false,
            step: None,
        };
        let p = Parzen::new(
            &[&dist],
            &[vec![0.5], vec![2.9], vec![-1.0]],
            &[1.0, 1.0, 2.0],
        );
        let steps = 20_000;
        let h = 5.0 / steps as f64;
        let total: f64 = (0..steps)
            .map(|i| p.log_pdf(&[-2.0 + (i as f64 + 0.5) * h]).exp() * h)
            .sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
    }

    #[test]
    fn densities_equal_optunas_on_the_same_observations() {
        // Reference values: optuna 5.1.0's `_ParzenEstimator` (multivariate, prior weight 1,
        // magic clip, no endpoints) over these four observations of a 2-D space.
        let d1 = Dist::Float {
            low: -5.0,
            high: 10.0,
            log: false,
            step: None,
        };
        let d2 = Dist::Float {
            low: 0.0,
            high: 15.0,
            log: false,
            step: None,
        };
        let obs = vec![
            vec![1.0, 2.0],
            vec![3.0, 14.0],
            vec![-4.0, 7.5],
            vec![9.0, 0.5],
        ];
        let p = Parzen::new(&[&d1, &d2], &obs, &[1.0; 4]);
        for (x, optuna) in [
            ([0.0, 0.0], -5.12944642),
            ([1.0, 2.0], -5.02095069),
            ([5.0, 5.0], -5.41830188),
            ([9.9, 14.9], -6.33042341),
        ] {
            assert!(
                (p.log_pdf(&x) - optuna).abs() < 1e-7,
                "{x:?}: {}",
                p.log_pdf(&x)
            );
        }
    }

    #[test]
    fn discrete_masses_sum_to_one_and_draws_follow_the_kernels() {
        let dist = Dist::Int {
            low: 0,
            high: 9,
            log: false,
            step: 1,
        };
        let obs = vec![vec![2.0], vec![2.0], vec![3.0]];
        let p = Parzen::new(&[&dist], &obs, &[1.0; 3]);
        let total: f64 = (0..10).map(|v| p.log_pdf(&[v as f64]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let near = (0..2000)
            .filter(|_| (1.5..3.5).contains(&p.sample(&mut rng)[0]))
            .count();
        // Three of four kernels sit at 2-3: far more draws land there than the 20 % a
        // uniform draw would put.
        assert!(near > 600, "{near}");
        // A log-scaled integer's bins, [ln(v − ½), ln(v + ½)], tile its internal range.
        let log_int = Dist::Int {
            low: 1,
            high: 64,
            log: true,
            step: 1,
        };
        let obs = vec![vec![2f64.ln()], vec![16f64.ln()], vec![17f64.ln()]];
        let p = Parzen::new(&[&log_int], &obs, &[1.0; 3]);
        let masses: Vec<f64> = (1..=64)
            .map(|v| p.log_pdf(&[(v as f64).ln()]).exp())
            .collect();
        let total: f64 = masses.iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert!(masses[15] > masses[40], "16 is observed, 41 is not");
        // Optuna 5.1.0's `_ParzenEstimator` on the same observations, as above.
        for (v, optuna) in [
            (1.0, -1.8749271),
            (5.0, -3.0990409),
            (16.0, -4.06576801),
            (64.0, -5.97001796),
        ] {
            let ours = p.log_pdf(&[f64::ln(v)]);
            assert!((ours - optuna).abs() < 1e-7, "{v}: {ours}");
        }
        let cat = Dist::Categorical {
            choices: vec![1.into(), 2.into(), 3.into()],
        };
        let p = Parzen::new(&[&cat], &[vec![1.0]], &[1.0]);
        let total: f64 = (0..3).map(|v| p.log_pdf(&[v as f64]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(p.log_pdf(&[1.0]) > p.log_pdf(&[0.0]));
        // Draws land on each choice as often as the mass says.
        let p = Parzen::new(&[&cat], &[vec![1.0], vec![2.0], vec![1.0]], &[1.0; 3]);
        let mut seen = [0usize; 3];
        for _ in 0..30_000 {
            seen[p.sample(&mut rng)[0] as usize] += 1;
        }
        for (c, n) in seen.iter().enumerate() {
            let expected = p.log_pdf(&[c as f64]).exp();
            let got = *n as f64 / 30_000.0;
            assert!(
                (got - expected).abs() < 0.01,
                "choice {c}: {got} vs {expected}"
            );
        }
    }
}
