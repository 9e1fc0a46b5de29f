//! The teacher of a distillation: any servable model version (its `model.onnx`), run
//! in-process through the serving runtime the job has, on the student's batches.

use parking_lot::Mutex;
use trainyard_client::runs as mlflow;
use trainyard_client::Client;
use trainyard_data::Batch;
use trainyard_engine::train::Teacher;
use trainyard_engine::EngineError;
use trainyard_serve::runtime::Instance;

use crate::train::ONNX_FILE;
use crate::TaskError;

/// A loaded teacher.
pub struct OnnxTeacher {
    /// `NAME:VERSION`, pinned.
    pub reference: String,
    input: String,
    instance: Mutex<Box<dyn Instance>>,
    /// The model ends in a softmax: its outputs are probabilities, and their logarithms are
    /// logits that give them back.
    probabilities: bool,
}

impl OnnxTeacher {
    /// Loads `reference` and checks it against the student: it takes the student's input
    /// shape (`sample_shape`) and gives one value per class of the student's head
    /// (`classes`); each mismatch is refused naming both sides.
    pub async fn load(
        client: &Client,
        reference: &str,
        sample_shape: &[usize],
        classes: usize,
    ) -> Result<Self, TaskError> {
        let (name, version, uri) = mlflow::model_source(client, reference).await?;
        let reference = format!("{name}:{version}");
        let onnx = mlflow::download_uri(client, &format!("{uri}/{ONNX_FILE}"))
            .await
            .map_err(|e| {
                TaskError::from(e).context(format!(
                    "distill.teacher {reference} has no {ONNX_FILE}: a teacher must be servable"
                ))
            })?;
        let summary = trainyard_models::onnx::inspect(&onnx)
            .map_err(|e| TaskError::Invalid(format!("distill.teacher {reference}: {e}")))?;
        let input = match summary.inputs.as_slice() {
            [(input, _)] => input.clone(),
            other => {
                return Err(TaskError::Invalid(format!(
                    "distill.teacher {reference} has {} inputs; a teacher takes the student's one",
                    other.len()
                )))
            }
        };
        let probabilities = trainyard_models::onnx::ends_in_softmax(&onnx)
            .map_err(|e| TaskError::Invalid(format!("distill.teacher {reference}: {e}")))?;
        let (runtime, _) = crate::export::checking_runtime();
        let (_, mut instances) = runtime.load(&onnx, 1).map_err(|e| {
            TaskError::Invalid(format!("distill.teacher {reference}: cannot load it: {e}"))
        })?;
        let teacher = Self {
            reference: reference.clone(),
            input,
            instance: Mutex::new(instances.remove(0)),
            probabilities,
        };
        // Two rows: a teacher fixed to one row per call is found here, not in the job.
        let probe = Batch {
            inputs: vec![0.0; 2 * sample_shape.iter().product::<usize>()],
            sample_shape: sample_shape.to_vec(),
            rows: 2,
            targets: None,
        };
        let out = teacher.run(&probe).map_err(|e| {
            TaskError::Invalid(format!(
                "distill.teacher {reference} does not take the student's input of shape {sample_shape:?}: {e}"
            ))
        })?;
        if out.len() != 2 * classes {
            return Err(TaskError::Invalid(format!(
                "distill.teacher {reference} gives {} output classes; the student's head has {classes}",
                out.len() as f64 / 2.0
            )));
        }
        Ok(teacher)
    }

    fn run(&self, batch: &Batch) -> Result<Vec<f32>, String> {
        let tensor = crate::compress::input_tensor(&self.input, batch);
        let out = self
            .instance
            .lock()
            .run(vec![tensor])
            .map_err(|e| e.to_string())?;
        let first = out.into_iter().next().ok_or("no output")?;
        let values = crate::compress::floats(&first).map_err(|e| e.to_string())?;
        Ok(if self.probabilities {
            values.into_iter().map(|p| p.max(1e-30).ln()).collect()
        } else {
            values
        })
    }
}

impl Teacher for OnnxTeacher {
    fn logits(&self, batch: &Batch) -> Result<Vec<f32>, EngineError> {
        self.run(batch)
            .map_err(|e| EngineError::Data(format!("distill.teacher {}: {e}", self.reference)))
    }
}
