//! Evaluation metrics over a whole split, accumulated batch by batch so a large evaluation
//! set never has to sit in memory: classification (accuracy, top-k, macro and per-class
//! precision/recall/F1, confusion matrix, log-loss) and regression (MSE, MAE, R²).

use serde::{Deserialize, Serialize};

/// Accumulates classification outcomes from logits.
#[derive(Clone, Debug)]
pub struct Classification {
    classes: usize,
    top_k: usize,
    /// `confusion[actual][predicted]`.
    confusion: Vec<Vec<u64>>,
    in_top_k: u64,
    log_loss: f64,
    rows: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub class: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    pub rows: u64,
    pub accuracy: f64,
    pub top_k: usize,
    pub top_k_accuracy: f64,
    pub precision_macro: f64,
    pub recall_macro: f64,
    pub f1_macro: f64,
    pub log_loss: f64,
    pub per_class: Vec<ClassScores>,
    pub confusion: Vec<Vec<u64>>,
}

impl Classification {
    pub fn new(classes: usize, top_k: usize) -> Self {
        Self {
            classes,
            top_k: top_k.clamp(1, classes.max(1)),
            confusion: vec![vec![0; classes]; classes],
            in_top_k: 0,
            log_loss: 0.0,
            rows: 0,
        }
    }

    /// `logits` holds one row of `classes` values per target.
    pub fn add(&mut self, logits: &[f32], targets: &[i64]) {
        for (row, &target) in logits.chunks_exact(self.classes).zip(targets) {
            let target = target as usize;
            let predicted = argmax(row);
            self.confusion[target][predicted] += 1;
            let above = row.iter().filter(|&&v| v > row[target]).count();
            if above < self.top_k {
                self.in_top_k += 1;
            }
            // log-softmax of the target, computed stably.
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            self.log_loss += -(row[target] as f64 - max - sum.ln());
            self.rows += 1;
        }
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.confusion[c][c]).sum();
        ratio(correct, self.rows)
    }

    pub fn report(&self) -> ClassificationReport {
        let per_class: Vec<ClassScores> = (0..self.classes)
            .map(|c| {
                let tp = self.confusion[c][c];
                let predicted: u64 = (0..self.classes).map(|a| self.confusion[a][c]).sum();
                let support: u64 = self.confusion[c].iter().sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScores {
                    class: c,
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        // Macro averages over the classes present in the data, as scikit-learn does when
        // labels are taken from the data.
        let present: Vec<&ClassScores> = per_class.iter().filter(|s| s.support > 0).collect();
        let mean = |f: fn(&ClassScores) -> f64| {
            if present.is_empty() {
                0.0
            } else {
                present.iter().map(|s| f(s)).sum::<f64>() / present.len() as f64
            }
        };
        ClassificationReport {
            rows: self.rows,
            accuracy: self.accuracy(),
            top_k: self.top_k,
            top_k_accuracy: ratio(self.in_top_k, self.rows),
            precision_macro: mean(|s| s.precision),
            recall_macro: mean(|s| s.recall),
            f1_macro: mean(|s| s.f1),
            log_loss: if self.rows == 0 {
                0.0
            } else {
                self.log_loss / self.rows as f64
            },
            per_class,
            confusion: self.confusion.clone(),
        }
    }
}

/// Accumulates regression errors (one output per row).
#[derive(Clone, Debug, Default)]
pub struct Regression {
    rows: u64,
    sum_sq: f64,
    sum_abs: f64,
    sum_y: f64,
    sum_y2: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    pub rows: u64,
    pub mse: f64,
    pub mae: f64,
    pub r2: f64,
}

impl Regression {
    pub fn add(&mut self, predictions: &[f32], targets: &[f32]) {
        for (&p, &y) in predictions.iter().zip(targets) {
            let (p, y) = (p as f64, y as f64);
            self.sum_sq += (p - y) * (p - y);
            self.sum_abs += (p - y).abs();
            self.sum_y += y;
            self.sum_y2 += y * y;
            self.rows += 1;
        }
    }

    pub fn report(&self) -> RegressionReport {
        let n = self.rows.max(1) as f64;
        let variance = self.sum_y2 / n - (self.sum_y / n).powi(2);
        let mse = self.sum_sq / n;
        RegressionReport {
            rows: self.rows,
            mse,
            mae: self.sum_abs / n,
            r2: if variance > 0.0 {
                1.0 - mse / variance
            } else {
                0.0
            },
        }
    }
}

/// A report kept with a run and a model version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Report {
    Classification(ClassificationReport),
    Regression(RegressionReport),
}

impl Report {
    /// The scalar metrics, named as they are logged (`prefix` + name).
    pub fn scalars(&self, prefix: &str) -> Vec<(String, f64)> {
        let named: Vec<(&str, f64)> = match self {
            Report::Classification(r) => vec![
                ("accuracy", r.accuracy),
                ("top_k_accuracy", r.top_k_accuracy),
                ("precision_macro", r.precision_macro),
                ("recall_macro", r.recall_macro),
                ("f1_macro", r.f1_macro),
                ("log_loss", r.log_loss),
            ],
            Report::Regression(r) => vec![("mse", r.mse), ("mae", r.mae), ("r2", r.r2)],
        };
        named
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect()
    }
}

/// Index of the largest value (the first one on ties): the predicted class of a logit row.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_matches_hand_computed_values() {
        let mut m = Classification::new(3, 2);
        // predictions: 0, 1, 1, 2 ; targets: 0, 1, 2, 2
        let logits = [
            3.0, 1.0, 0.0, //
            0.0, 2.0, 1.0, //
            0.0, 2.0, 1.0, //
            0.0, 0.0, 5.0,
        ];
        m.add(&logits, &[0, 1, 2, 2]);
        let r = m.report();
        assert_eq!(r.accuracy, 0.75);
        assert_eq!(r.top_k_accuracy, 1.0);
        assert_eq!(
            r.confusion,
            vec![vec![1, 0, 0], vec![0, 1, 0], vec![0, 1, 1]]
        );
        assert_eq!(r.per_class[1].precision, 0.5);
        assert_eq!(r.per_class[2].recall, 0.5);
        let f1_2 = 2.0 * 1.0 * 0.5 / 1.5;
        assert!((r.f1_macro - (1.0 + 2.0 / 3.0 + f1_2) / 3.0).abs() < 1e-12);
        let ll0 = -(3.0f64 - (3.0f64.exp() + 1.0f64.exp() + 1.0).ln());
        assert!(r.log_loss > 0.0 && r.log_loss > ll0 / 4.0);
    }

    #[test]
    fn regression_metrics() {
        let mut m = Regression::default();
        m.add(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        let r = m.report();
        assert!((r.mse - 4.0 / 3.0).abs() < 1e-9);
        assert!((r.mae - 2.0 / 3.0).abs() < 1e-9);
        let var = (1.0 + 4.0 + 25.0) / 3.0 - (8.0f64 / 3.0).powi(2);
        assert!((r.r2 - (1.0 - (4.0 / 3.0) / var)).abs() < 1e-9);
    }
}
