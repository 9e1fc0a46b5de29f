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
    /// The rows with the highest loss so far, highest first (see [`Classification::add_rows`]).
    worst: Vec<WorstRow>,
}

/// Rows kept in a report's `worst`.
pub const WORST_ROWS: usize = 12;
/// Inputs of more values than this are not kept with a worst row (a report stays small).
pub const WORST_INPUT_VALUES: usize = 16_384;

/// An evaluation row the model got most wrong: what the debugger shows first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorstRow {
    /// Its position in the evaluated split, in the dataset's order.
    pub row: u64,
    pub target: i64,
    pub predicted: usize,
    /// Its cross-entropy.
    pub loss: f64,
    /// The probability the model gave its true class.
    pub target_probability: f64,
    /// Its input (row-major, of `shape`), when small enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Vec<f32>>,
    pub shape: Vec<usize>,
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
    /// The evaluation rows with the highest loss, highest first (kept by the evaluations
    /// that see inputs: training's last evaluation and `trainyard eval`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worst: Vec<WorstRow>,
}

/// The cross-entropy of one row's logits against its class: log-softmax computed stably.
fn row_loss(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    -(row[target] as f64 - max - sum.ln())
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
            worst: Vec::new(),
        }
    }

    /// `logits` holds one row of `classes` values per target.
    pub fn add(&mut self, logits: &[f32], targets: &[i64]) {
        for (row, &target) in logits.chunks_exact(self.classes).zip(targets) {
            self.add_row(row, target as usize);
        }
    }

    /// Counts one row; returns its loss and predicted class.
    fn add_row(&mut self, row: &[f32], target: usize) -> (f64, usize) {
        let predicted = argmax(row);
        self.confusion[target][predicted] += 1;
        let above = row.iter().filter(|&&v| v > row[target]).count();
        if above < self.top_k {
            self.in_top_k += 1;
        }
        let loss = row_loss(row, target);
        self.log_loss += loss;
        self.rows += 1;
        (loss, predicted)
    }

    /// [`Classification::add`], also keeping the [`WORST_ROWS`] rows of highest loss with
    /// their inputs (`inputs` holds the batch's rows, each of `shape`).
    pub fn add_rows(&mut self, logits: &[f32], targets: &[i64], inputs: &[f32], shape: &[usize]) {
        let size: usize = shape.iter().product();
        for (i, (row, &target)) in logits.chunks_exact(self.classes).zip(targets).enumerate() {
            let index = self.rows;
            let (loss, predicted) = self.add_row(row, target as usize);
            let full = self.worst.len() >= WORST_ROWS;
            if full && self.worst.last().is_some_and(|w| w.loss >= loss) {
                continue;
            }
            let input = (size <= WORST_INPUT_VALUES)
                .then(|| inputs.get(i * size..(i + 1) * size).map(<[f32]>::to_vec))
                .flatten();
            let at = self.worst.partition_point(|w| w.loss >= loss);
            self.worst.insert(
                at,
                WorstRow {
                    row: index,
                    target,
                    predicted,
                    loss,
                    target_probability: (-loss).exp(),
                    input,
                    shape: shape.to_vec(),
                },
            );
            self.worst.truncate(WORST_ROWS);
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
            worst: self.worst.clone(),
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

#[cfg(test)]
mod worst_rows {
    use super::*;

    #[test]
    fn the_rows_of_highest_loss_are_kept_highest_first_with_their_inputs() {
        let mut c = Classification::new(2, 1);
        // 20 rows over two batches; row r's logits favour class 0 by r, all labelled 1, so
        // the loss grows with r: the worst are the last 12, highest first.
        for batch in 0..2 {
            let rows: Vec<u64> = (0..10).map(|i| batch * 10 + i).collect();
            let logits: Vec<f32> = rows.iter().flat_map(|r| [*r as f32 * 0.5, 0.0]).collect();
            let targets = vec![1i64; 10];
            let inputs: Vec<f32> = rows.iter().flat_map(|r| [*r as f32; 4]).collect();
            c.add_rows(&logits, &targets, &inputs, &[2, 2]);
        }
        let report = c.report();
        let rows: Vec<u64> = report.worst.iter().map(|w| w.row).collect();
        assert_eq!(rows, (8..20).rev().collect::<Vec<u64>>());
        let top = &report.worst[0];
        assert_eq!((top.target, top.predicted), (1, 0));
        assert_eq!(top.input.as_deref(), Some(&[19.0f32; 4][..]));
        assert_eq!(top.shape, [2, 2]);
        assert!(top.target_probability < 0.001 && top.loss > 9.0);
        // The log-loss is the mean of the same per-row losses.
        let mean: f64 = (0..20)
            .map(|r| row_loss(&[r as f32 * 0.5, 0.0], 1))
            .sum::<f64>()
            / 20.0;
        assert!((report.log_loss - mean).abs() < 1e-12);
        // Without inputs (`add`), nothing is kept.
        let mut plain = Classification::new(2, 1);
        plain.add(&[1.0, 0.0], &[1]);
        assert!(plain.report().worst.is_empty());
    }
}
