//! Grid search: the cartesian product of every parameter's values, each combination once,
//! in an order shuffled by the seed (so a grid stopped early has still spread out).

use rand::seq::SliceRandom;
use trainyard_core::error::InvalidField;

use crate::error::TuneError;
use crate::space::{Params, Space};

/// Most combinations a grid may have.
pub const MAX_GRID: u64 = 1_000_000;

pub fn check(space: &Space) -> Result<(), InvalidField> {
    for p in &space.params {
        if !p.when.is_empty() {
            return Err(InvalidField::new(
                format!("space.{}.when", p.name),
                "a grid takes no conditional parameters",
            ));
        }
        if p.dist.grid_values().is_none() {
            return Err(InvalidField::new(
                format!("space.{}.step", p.name),
                "a grid needs every parameter finite: give a float a step",
            ));
        }
    }
    if size(space).is_none_or(|n| n > MAX_GRID) {
        return Err(InvalidField::new(
            "space",
            format!("the grid has more than {MAX_GRID} combinations"),
        ));
    }
    Ok(())
}

/// The number of combinations (`None` past `u64`).
pub fn size(space: &Space) -> Option<u64> {
    space.params.iter().try_fold(1u64, |n, p| {
        n.checked_mul(p.dist.grid_values()?.len() as u64)
    })
}

pub fn suggest(space: &Space, seed: u64, number: u64) -> Result<Params, TuneError> {
    // `check` refused these at creation; a space that got past it is refused, not wrapped.
    let total = size(space).filter(|n| *n <= MAX_GRID).ok_or_else(|| {
        InvalidField::new(
            "space",
            format!("the grid has more than {MAX_GRID} combinations"),
        )
    })?;
    if number >= total {
        return Err(TuneError::Exhausted);
    }
    let mut order: Vec<u32> = (0..total as u32).collect();
    order.shuffle(&mut super::trial_rng(seed, u64::MAX));
    let mut index = order[number as usize] as u64;
    let mut params = Params::new();
    for p in space.params.iter().rev() {
        let values = p.dist.grid_values().ok_or(TuneError::Exhausted)?;
        let n = values.len() as u64;
        params.insert(p.name.clone(), values[(index % n) as usize].clone());
        index /= n;
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::key;
    use serde_json::json;
    use std::collections::HashSet;

    #[test]
    fn every_combination_once_then_exhausted() {
        let s = crate::sampler::tests::space(json!({
            "a": {"type": "int", "low": 0, "high": 2},
            "b": {"type": "categorical", "choices": ["x", "y"]},
            "c": {"type": "float", "low": 0, "high": 1, "step": 0.5},
        }));
        check(&s).unwrap();
        assert_eq!(size(&s), Some(18));
        let seen: HashSet<_> = (0..18)
            .map(|n| key(&s, &suggest(&s, 3, n).unwrap()))
            .collect();
        assert_eq!(seen.len(), 18);
        assert!(matches!(suggest(&s, 3, 18), Err(TuneError::Exhausted)));
        let continuous =
            crate::sampler::tests::space(json!({"x": {"type": "float", "low": 0, "high": 1}}));
        assert_eq!(check(&continuous).unwrap_err().field, "space.x.step");
    }
}
