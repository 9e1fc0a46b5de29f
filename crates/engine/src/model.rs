//! What a trained model version holds besides its weights: the resolved spec, the task's
//! head and how to feed it (input column, image decoding), so evaluation and prediction
//! rebuild exactly the network that was trained.

use serde::{Deserialize, Serialize};

use crate::config::{ImageConfig, Task};
use crate::spec::ResolvedSpec;
use crate::train::Head;

/// File names inside a model version's `model/` artifact folder.
pub const CARD_FILE: &str = "trainyard-model.json";
pub const WEIGHTS_FILE: &str = "weights.bpk";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: u32,
    pub spec: ResolvedSpec,
    pub head: Head,
    pub input: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageConfig>,
    /// `NAME:VERSION` of the dataset it was trained on.
    pub dataset: String,
    /// `NAME:VERSION` of the model version training started from (`[model] from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl ModelCard {
    /// The card of a network that came from a file rather than a training run: no dataset,
    /// no image decoding, fed from `input` and evaluated against `target`.
    pub fn imported(spec: ResolvedSpec, task: Task, input: String, target: String) -> Self {
        Self {
            format: 1,
            head: Head {
                task,
                outputs: spec.outputs(),
            },
            spec,
            input,
            target,
            image: None,
            dataset: String::new(),
            from: None,
        }
    }

    /// The model's input/output signature in MLflow's column-spec style.
    pub fn signature(&self) -> serde_json::Value {
        let mut shape: Vec<i64> = vec![-1];
        shape.extend(self.spec.input.iter().map(|&d| d as i64));
        let mut out: Vec<i64> = vec![-1];
        out.extend(self.spec.output.iter().map(|&d| d as i64));
        serde_json::json!({
            "inputs": [{"name": self.input, "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": shape}}],
            "outputs": [{"name": "output", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": out}}],
        })
    }
}
