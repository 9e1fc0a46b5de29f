//! Activation ranges for static quantization, from the values a model computes on
//! calibration rows. Three ways to turn those values into a range, as ONNX Runtime and
//! TensorRT name them:
//! - **MinMax**: the extremes seen. Exact for what was seen, wasteful when one outlier
//!   stretches the grid.
//! - **Percentile**: the magnitude below which `p` percent of values fall; clips the tail.
//!   A low `p` on a model that needs its tail destroys accuracy (onnxruntime #10571), which
//!   is why the accuracy guard exists.
//! - **Entropy**: the clipping threshold whose 128-level quantized histogram loses the
//!   least information (smallest KL divergence) against the original.
//!
//! The histogram methods take two passes over the rows: the first finds each tensor's
//! extremes (what MinMax returns), the second fills fixed-range histograms, so no histogram
//! is ever re-binned and the result does not depend on the order of batches.

use std::collections::BTreeMap;

use crate::ModelsError;

/// How a range is chosen from what was observed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    MinMax,
    /// Percent of |values| kept, in (0, 100].
    Percentile(f64),
    Entropy,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile({p})"),
            Method::Entropy => "entropy".into(),
        }
    }

    /// Whether [`Histograms`] must be filled in a second pass.
    pub fn needs_histograms(&self) -> bool {
        !matches!(self, Method::MinMax)
    }
}

/// Bins of each histogram over [0, max|x|].
pub const BINS: usize = 2048;
/// Levels the entropy method quantizes a candidate histogram to (8 bits, one sign).
const LEVELS: usize = 128;

/// Per-tensor extremes: the first pass.
#[derive(Clone, Debug, Default)]
pub struct Extremes {
    pub ranges: BTreeMap<String, (f32, f32)>,
}

impl Extremes {
    /// Folds `values` of `tensor` in; a NaN or infinity is refused naming the tensor.
    pub fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<(), ModelsError> {
        let (mut lo, mut hi) = self
            .ranges
            .get(tensor)
            .copied()
            .unwrap_or((f32::INFINITY, f32::NEG_INFINITY));
        for v in values {
            if !v.is_finite() {
                return Err(non_finite(tensor));
            }
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
        if lo <= hi {
            self.ranges.insert(tensor.to_string(), (lo, hi));
        }
        Ok(())
    }
}

fn non_finite(tensor: &str) -> ModelsError {
    ModelsError::Invalid {
        at: tensor.to_string(),
        message: "the model computes NaN or infinite values on the calibration rows".into(),
    }
}

/// Histograms of |x| over each tensor's first-pass range: the second pass.
#[derive(Clone, Debug)]
pub struct Histograms {
    extremes: BTreeMap<String, (f32, f32)>,
    counts: BTreeMap<String, Vec<u64>>,
    /// Exact zeros, counted apart: every grid holds 0.0 exactly, and after a ReLU they are
    /// half of all values, a spike that would pull the entropy method's threshold down to
    /// its smallest candidate.
    zeros: BTreeMap<String, u64>,
}

impl Histograms {
    pub fn new(extremes: &Extremes) -> Self {
        Self {
            extremes: extremes.ranges.clone(),
            counts: BTreeMap::new(),
            zeros: BTreeMap::new(),
        }
    }

    pub fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<(), ModelsError> {
        let Some(&(lo, hi)) = self.extremes.get(tensor) else {
            return Ok(());
        };
        let amax = lo.abs().max(hi.abs());
        let counts = self
            .counts
            .entry(tensor.to_string())
            .or_insert_with(|| vec![0; BINS]);
        if amax <= 0.0 {
            counts[0] += values.len() as u64;
            return Ok(());
        }
        let per_bin = BINS as f32 / amax;
        let zeros = self.zeros.entry(tensor.to_string()).or_default();
        for v in values {
            if !v.is_finite() {
                return Err(non_finite(tensor));
            }
            if *v == 0.0 {
                *zeros += 1;
                continue;
            }
            // Values past the first pass's range cannot occur on the same rows; clamp anyway.
            let bin = ((v.abs() * per_bin) as usize).min(BINS - 1);
            counts[bin] += 1;
        }
        Ok(())
    }

    /// The range of each tensor under `method`: the chosen magnitude, clipped to what was
    /// seen on each side (a tensor that never went below zero keeps 0 as its minimum).
    pub fn ranges(&self, method: Method) -> BTreeMap<String, (f32, f32)> {
        self.extremes
            .iter()
            .map(|(name, &(lo, hi))| {
                let amax = lo.abs().max(hi.abs());
                let threshold = match (self.counts.get(name), method) {
                    (None, _) | (_, Method::MinMax) => amax,
                    (Some(c), Method::Percentile(p)) => {
                        percentile(c, self.zeros.get(name).copied().unwrap_or(0), amax, p)
                    }
                    (Some(c), Method::Entropy) => entropy_threshold(c, amax),
                };
                (name.clone(), (lo.max(-threshold), hi.min(threshold)))
            })
            .collect()
    }
}

/// The magnitude below which `p` percent of the counted values (and `zeros`) lie: the upper
/// edge of the bin where the cumulative count reaches it.
fn percentile(counts: &[u64], zeros: u64, amax: f32, p: f64) -> f32 {
    let total: u64 = counts.iter().sum::<u64>() + zeros;
    if total == 0 {
        return amax;
    }
    let want = (p / 100.0 * total as f64).ceil() as u64;
    if want <= zeros {
        return 0.0;
    }
    let mut seen = zeros;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= want {
            return (i + 1) as f32 * amax / counts.len() as f32;
        }
    }
    amax
}

/// The threshold minimising KL(P‖Q), P the histogram clipped at the threshold (the clipped
/// mass in its last bin), Q P merged into [`LEVELS`] levels and spread back over the bins
/// that were not empty.
fn entropy_threshold(counts: &[u64], amax: f32) -> f32 {
    let bins = counts.len();
    let width = amax / bins as f32;
    let mut best = (f64::INFINITY, bins);
    for end in (LEVELS..=bins).step_by(8) {
        let mut p: Vec<f64> = counts[..end].iter().map(|&c| c as f64).collect();
        let outliers: u64 = counts[end..].iter().sum();
        p[end - 1] += outliers as f64;
        let total: f64 = p.iter().sum();
        if total == 0.0 {
            continue;
        }
        // Q: each level sums its share of P's bins, spread evenly over the non-empty ones.
        let mut q = vec![0f64; end];
        for level in 0..LEVELS {
            let start = level * end / LEVELS;
            let stop = ((level + 1) * end / LEVELS).max(start + 1).min(end);
            let sum: f64 = counts[start..stop].iter().map(|&c| c as f64).sum();
            let nonzero = counts[start..stop].iter().filter(|&&c| c > 0).count();
            if nonzero == 0 {
                continue;
            }
            for i in start..stop {
                if counts[i] > 0 {
                    q[i] = sum / nonzero as f64;
                }
            }
        }
        let q_total: f64 = q.iter().sum();
        let mut kl = 0.0;
        for i in 0..end {
            if p[i] > 0.0 {
                let pi = p[i] / total;
                // A bin P has and Q lost (only the outlier bin can be one) costs as if Q
                // kept a trace of it.
                let qi = if q[i] > 0.0 { q[i] / q_total } else { 1e-12 };
                kl += pi * (pi / qi).ln();
            }
        }
        if kl < best.0 {
            best = (kl, end);
        }
    }
    (best.1 as f32 + 0.5).min(bins as f32) * width
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(values: &[f32]) -> (Extremes, Histograms) {
        let mut e = Extremes::default();
        e.observe("t", values).unwrap();
        let mut h = Histograms::new(&e);
        h.observe("t", values).unwrap();
        (e, h)
    }

    #[test]
    fn minmax_keeps_the_extremes_and_nan_is_refused() {
        let (e, h) = collect(&[-1.0, 0.5, 3.0]);
        assert_eq!(e.ranges["t"], (-1.0, 3.0));
        assert_eq!(h.ranges(Method::MinMax)["t"], (-1.0, 3.0));
        let mut e = Extremes::default();
        let err = e.observe("conv1", &[1.0, f32::NAN]).unwrap_err();
        assert!(err.to_string().starts_with("conv1:"), "{err}");
    }

    #[test]
    fn percentile_clips_a_lone_outlier() {
        // 9,999 values in [0, 1) and one at 100.
        let mut v: Vec<f32> = (0..9999).map(|i| i as f32 / 9999.0).collect();
        v.push(100.0);
        let (_, h) = collect(&v);
        let (lo, hi) = h.ranges(Method::Percentile(99.9))["t"];
        assert_eq!(lo, 0.0);
        assert!(hi < 1.1 && hi > 0.9, "{hi}");
        let (_, hi) = h.ranges(Method::Percentile(100.0))["t"];
        assert_eq!(hi, 100.0);
    }

    #[test]
    fn entropy_clips_a_long_tail_but_keeps_a_uniform_range() {
        // Uniform values: nothing to gain by clipping.
        let v: Vec<f32> = (0..20000).map(|i| i as f32 / 20000.0 * 2.0 - 1.0).collect();
        let (_, h) = collect(&v);
        let (lo, hi) = h.ranges(Method::Entropy)["t"];
        assert!(hi > 0.95 && lo < -0.95, "{lo} {hi}");
        // A Laplace-like bulk near zero with a few far values: the threshold comes in.
        let mut v: Vec<f32> = (1..20000)
            .map(|i| {
                let u = i as f32 / 20000.0;
                -u.ln() * if i % 2 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        v.push(60.0);
        let (_, h) = collect(&v);
        let (_, hi) = h.ranges(Method::Entropy)["t"];
        assert!(hi < 30.0 && hi > 3.0, "{hi}");
    }

    #[test]
    fn entropy_is_not_pulled_down_by_the_zeros_of_a_relu() {
        // Half exact zeros, half uniform in (0, 1].
        let v: Vec<f32> = (0..20000)
            .map(|i| if i % 2 == 0 { 0.0 } else { i as f32 / 20000.0 })
            .collect();
        let (_, h) = collect(&v);
        let (lo, hi) = h.ranges(Method::Entropy)["t"];
        assert_eq!(lo, 0.0);
        assert!(hi > 0.95, "{hi}");
        // Percentile counts the zeros: 40 % of all values lie below 0.2.
        let (_, hi) = h.ranges(Method::Percentile(60.0))["t"];
        assert!((hi - 0.2).abs() < 0.01, "{hi}");
    }

    #[test]
    fn an_all_zero_tensor_has_a_zero_range() {
        let (_, h) = collect(&[0.0; 10]);
        assert_eq!(h.ranges(Method::Entropy)["t"], (0.0, 0.0));
        assert_eq!(h.ranges(Method::Percentile(99.0))["t"], (0.0, 0.0));
    }
}
