//! Quasi-random search: an Owen-scrambled Sobol sequence (`sobol_burley`), one dimension per
//! parameter in the space's order; the seed picks the scrambling.

use crate::space::{Params, Space};

/// Points one scrambling gives (`sobol_burley` indexes up to 2^16); each further block of
/// trials takes a scrambling of its own.
const BLOCK: u64 = 1 << 16;

pub fn suggest(space: &Space, seed: u64, number: u64) -> Params {
    let index = (number % BLOCK) as u32;
    let block = number / BLOCK;
    let scramble = (seed ^ (seed >> 32) ^ block.wrapping_mul(0x9E37_79B9)) as u32;
    let mut params = Params::new();
    for (d, p) in space.params.iter().enumerate() {
        if !Space::is_active(p, &params) {
            continue;
        }
        let u = sobol_burley::sample(index, d as u32, scramble) as f64;
        let (lo, hi) = p.dist.internal_range();
        let x = lo + u.clamp(0.0, 1.0 - 1e-12) * (hi - lo);
        params.insert(p.name.clone(), p.dist.from_internal(x));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_points_cover_the_square_evenly() {
        let s = crate::sampler::tests::space(json!({
            "x": {"type": "float", "low": 0, "high": 1},
            "y": {"type": "float", "low": 0, "high": 1},
        }));
        // 16 Sobol points put exactly one point in each cell of a 4×4 grid.
        let mut cells = [[0; 4]; 4];
        for n in 0..16 {
            let p = suggest(&s, 5, n);
            let cell = |k: &str| (p[k].as_f64().unwrap() * 4.0) as usize;
            cells[cell("x")][cell("y")] += 1;
        }
        assert!(cells.iter().flatten().all(|&c| c == 1), "{cells:?}");
        // Past the first block the points go on without repeating it.
        assert_ne!(suggest(&s, 5, 3), suggest(&s, 5, BLOCK + 3));
    }
}
