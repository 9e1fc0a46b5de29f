//! The accuracy guard: a quantized model that loses more than the budget gets its most
//! sensitive operators back in float, one at a time, until it fits or nothing is left.
//!
//! Sensitivity is measured one operator at a time (only that operator quantized, every
//! other in float), as the loss it alone causes; operators then fall back in order of that
//! loss. This costs one evaluation per candidate plus one per fallback step, and it is what
//! the report shows, so a user can see which layers do not take 8 bits.

use std::collections::BTreeSet;

use super::Quantized;

/// What the guard found.
#[derive(Debug)]
pub struct Guarded {
    /// The model that fits the budget with the fewest operators in float; `None` when no
    /// model with anything quantized fits.
    pub model: Option<Quantized>,
    /// The score of `model` (or of the last one tried).
    pub score: f64,
    /// Operators kept in float to fit, most sensitive first.
    pub fell_back: Vec<String>,
    /// Each candidate's loss when it alone is quantized, largest first; empty when the
    /// fully quantized model fitted at once.
    pub sensitivity: Vec<(String, f64)>,
    /// Every model tried: (operators in float, score).
    pub tried: Vec<(usize, f64)>,
}

/// Finds the most-quantized model within `max_drop` of `baseline` (a score where higher is
/// better, such as accuracy). `quantize` makes the model with the given operators kept in
/// float; `evaluate` scores a model. The model returned is always the last one `evaluate`
/// saw, so a caller needs to keep only the last evaluation's details.
pub fn guard<E>(
    candidates: &[String],
    baseline: f64,
    max_drop: f64,
    quantize: &mut dyn FnMut(&BTreeSet<String>) -> Result<Quantized, E>,
    evaluate: &mut dyn FnMut(&[u8]) -> Result<f64, E>,
) -> Result<Guarded, E> {
    let fits = |score: f64| baseline - score <= max_drop + 1e-12;
    let mut tried = Vec::new();
    let all = quantize(&BTreeSet::new())?;
    let score = evaluate(&all.bytes)?;
    tried.push((0, score));
    if fits(score) {
        return Ok(Guarded {
            model: Some(all),
            score,
            fell_back: Vec::new(),
            sensitivity: Vec::new(),
            tried,
        });
    }
    let mut sensitivity = Vec::with_capacity(candidates.len());
    for c in candidates {
        let others: BTreeSet<String> = candidates.iter().filter(|o| *o != c).cloned().collect();
        let alone = quantize(&others)?;
        sensitivity.push((c.clone(), baseline - evaluate(&alone.bytes)?));
    }
    // Largest loss first; equal losses keep graph order.
    sensitivity.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut last = score;
    for k in 1..candidates.len() {
        let fell_back: Vec<String> = sensitivity[..k].iter().map(|(c, _)| c.clone()).collect();
        let model = quantize(&fell_back.iter().cloned().collect())?;
        let score = evaluate(&model.bytes)?;
        tried.push((k, score));
        last = score;
        if fits(score) {
            return Ok(Guarded {
                model: Some(model),
                score,
                fell_back,
                sensitivity,
                tried,
            });
        }
    }
    Ok(Guarded {
        model: None,
        score: last,
        fell_back: sensitivity.iter().map(|(c, _)| c.clone()).collect(),
        sensitivity,
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake model whose score is the baseline minus the loss of each quantized operator.
    fn run(losses: &[(&str, f64)], max_drop: f64) -> Guarded {
        let names: Vec<String> = losses.iter().map(|(n, _)| n.to_string()).collect();
        let mut quantize = |excluded: &BTreeSet<String>| -> Result<Quantized, ()> {
            let quantized: Vec<String> = names
                .iter()
                .filter(|n| !excluded.contains(*n))
                .cloned()
                .collect();
            Ok(Quantized {
                bytes: quantized.join(",").into_bytes(),
                quantized,
                kept: Vec::new(),
            })
        };
        let evaluate = |bytes: &[u8]| -> Result<f64, ()> {
            let s = String::from_utf8(bytes.to_vec()).unwrap();
            Ok(1.0
                - losses
                    .iter()
                    .filter(|(n, _)| s.split(',').any(|q| q == *n))
                    .map(|(_, l)| l)
                    .sum::<f64>())
        };
        let mut last = Vec::new();
        let mut evaluate_last = |bytes: &[u8]| {
            last = bytes.to_vec();
            evaluate(bytes)
        };
        let g = guard(&names, 1.0, max_drop, &mut quantize, &mut evaluate_last).unwrap();
        if let Some(m) = &g.model {
            assert_eq!(m.bytes, last, "the model returned is the last evaluated");
        }
        g
    }

    #[test]
    fn a_model_within_budget_is_taken_as_is() {
        let g = run(&[("a", 0.002), ("b", 0.003)], 0.01);
        assert_eq!(g.model.unwrap().quantized, ["a", "b"]);
        assert!(g.fell_back.is_empty() && g.sensitivity.is_empty());
        assert_eq!(g.tried.len(), 1);
    }

    #[test]
    fn the_most_sensitive_operators_fall_back_first_until_it_fits() {
        let g = run(
            &[("a", 0.001), ("b", 0.05), ("c", 0.004), ("d", 0.02)],
            0.01,
        );
        assert_eq!(g.fell_back, ["b", "d"]);
        assert_eq!(g.model.as_ref().unwrap().quantized, ["a", "c"]);
        assert!((g.score - 0.995).abs() < 1e-9);
        assert_eq!(g.sensitivity[0].0, "b");
        assert_eq!(g.tried.iter().map(|t| t.0).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn when_nothing_fits_there_is_no_model() {
        let g = run(&[("a", 0.02), ("b", 0.03)], 0.01);
        assert!(g.model.is_none());
        assert_eq!(g.fell_back, ["b", "a"]);
    }
}
