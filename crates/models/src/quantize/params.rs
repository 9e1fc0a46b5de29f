//! Scales and zero points: how a float range becomes an integer grid, and back. The
//! rounding is ONNX's (`QuantizeLinear` rounds half to even), so what is computed here is
//! what a runtime computes from the same numbers.

/// An integer grid: the integers a tensor may take, and which of them stands for 0.0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    pub qmin: i32,
    pub qmax: i32,
}

impl Grid {
    /// Signed 8-bit, symmetric around zero: ±127 (±64 with `reduce_range`, for CPUs
    /// without VNNI whose 16-bit accumulation would overflow on the full range).
    pub fn int8_symmetric(reduce_range: bool) -> Self {
        let m = if reduce_range { 64 } else { 127 };
        Self { qmin: -m, qmax: m }
    }

    /// Unsigned 8-bit: 0‥255 (0‥127 with `reduce_range`).
    pub fn uint8(reduce_range: bool) -> Self {
        Self {
            qmin: 0,
            qmax: if reduce_range { 127 } else { 255 },
        }
    }
}

/// One scale and zero point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub scale: f32,
    pub zero_point: i32,
}

impl Affine {
    /// Symmetric: zero point 0, the largest magnitude on the grid's edge.
    pub fn symmetric(min: f32, max: f32, grid: Grid) -> Self {
        let amax = min.abs().max(max.abs());
        let scale = amax / grid.qmax as f32;
        Self {
            scale: if scale > 0.0 && scale.is_finite() {
                scale
            } else {
                1.0
            },
            zero_point: 0,
        }
    }

    /// Asymmetric over [min, max] widened to hold 0.0 exactly (ReLU outputs, padding).
    pub fn asymmetric(min: f32, max: f32, grid: Grid) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let scale = (max - min) / (grid.qmax - grid.qmin) as f32;
        if !(scale > 0.0 && scale.is_finite()) {
            return Self {
                scale: 1.0,
                zero_point: grid.qmin.max(0).min(grid.qmax),
            };
        }
        let zero_point = (grid.qmin as f32 - min / scale).round_ties_even() as i32;
        Self {
            scale,
            zero_point: zero_point.clamp(grid.qmin, grid.qmax),
        }
    }

    /// `x` on the grid, as ONNX's `QuantizeLinear` computes it.
    pub fn quantize(&self, x: f32, grid: Grid) -> i32 {
        let q = (x / self.scale).round_ties_even() + self.zero_point as f32;
        (q.clamp(grid.qmin as f32, grid.qmax as f32)) as i32
    }

    pub fn dequantize(&self, q: i32) -> f32 {
        (q - self.zero_point) as f32 * self.scale
    }
}

/// The (min, max) of each of `channels` slices of `values`, a tensor whose `axis` has
/// `channels` entries and `inner` values follow each entry (row-major).
pub fn channel_ranges(values: &[f32], channels: usize, inner: usize) -> Vec<(f32, f32)> {
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); channels];
    for (i, v) in values.iter().enumerate() {
        let c = (i / inner) % channels;
        let r = &mut ranges[c];
        r.0 = r.0.min(*v);
        r.1 = r.1.max(*v);
    }
    ranges
        .into_iter()
        .map(|(lo, hi)| if lo > hi { (0.0, 0.0) } else { (lo, hi) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_onnx_runtimes() {
        assert_eq!(
            Grid::int8_symmetric(false),
            Grid {
                qmin: -127,
                qmax: 127
            }
        );
        assert_eq!(
            Grid::int8_symmetric(true),
            Grid {
                qmin: -64,
                qmax: 64
            }
        );
        assert_eq!(Grid::uint8(false).qmax, 255);
        assert_eq!(Grid::uint8(true).qmax, 127);
    }

    #[test]
    fn asymmetric_ranges_hold_zero_exactly_and_round_half_to_even() {
        let g = Grid::uint8(false);
        let a = Affine::asymmetric(-1.0, 3.0, g);
        assert!((a.scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(a.zero_point, 64);
        assert_eq!(a.dequantize(a.quantize(0.0, g)), 0.0);
        // A range entirely above zero starts at zero.
        let r = Affine::asymmetric(2.0, 6.0, g);
        assert_eq!(r.zero_point, 0);
        assert_eq!(r.quantize(6.0, g), 255);
        assert_eq!(r.quantize(100.0, g), 255);
        assert_eq!(r.quantize(-100.0, g), 0);
        // 2.5 and 3.5 steps round to the even neighbour, as QuantizeLinear does.
        let unit = Affine {
            scale: 1.0,
            zero_point: 0,
        };
        assert_eq!(unit.quantize(2.5, g), 2);
        assert_eq!(unit.quantize(3.5, g), 4);
    }

    #[test]
    fn degenerate_ranges_give_a_usable_scale() {
        let g = Grid::int8_symmetric(false);
        assert_eq!(Affine::symmetric(0.0, 0.0, g).scale, 1.0);
        assert_eq!(Affine::asymmetric(0.0, 0.0, Grid::uint8(false)).scale, 1.0);
        assert_eq!(Affine::symmetric(f32::NAN, 1.0, g).scale, 1.0 / 127.0);
        let s = Affine::symmetric(-2.0, 1.0, g);
        assert_eq!(s.quantize(-2.0, g), -127);
        assert_eq!(s.quantize(2.0, g), 127);
    }

    #[test]
    fn channel_ranges_follow_the_axis() {
        // Shape [2, 3] with channels on axis 1: columns.
        let v = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];
        assert_eq!(
            channel_ranges(&v, 3, 1),
            vec![(1.0, 4.0), (-2.0, 5.0), (-6.0, 3.0)]
        );
        // Channels on axis 0: rows.
        assert_eq!(channel_ranges(&v, 2, 3), vec![(-2.0, 3.0), (-6.0, 5.0)]);
    }
}
