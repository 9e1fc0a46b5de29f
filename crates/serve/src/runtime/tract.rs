//! tract: pure Rust, always available. One optimized plan is shared by every instance
//! (running it takes `&self`); instances only give the model more threads.

use std::sync::Arc;

use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable,
    IntoTValue, TDim, TValue, TVec, TractResult, TypedFact, TypedRunnableModel,
};
use tract_onnx::tract_hir::internal::{GenericFactoid, ShapeFactoid};

use super::{Instance, Runtime, RuntimeKind, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor};
use crate::ServeError;

pub struct Tract;

fn datatype(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::U8,
        DatumType::U16 => DataType::U16,
        DatumType::U32 => DataType::U32,
        DatumType::U64 => DataType::U64,
        DatumType::I8 => DataType::I8,
        DatumType::I16 => DataType::I16,
        DatumType::I32 => DataType::I32,
        DatumType::I64 => DataType::I64,
        DatumType::F16 => DataType::F16,
        DatumType::F32 => DataType::F32,
        DatumType::F64 => DataType::F64,
        _ => return None,
    })
}

fn datum(dt: DataType) -> Option<DatumType> {
    Some(match dt {
        DataType::Bool => DatumType::Bool,
        DataType::U8 => DatumType::U8,
        DataType::U16 => DatumType::U16,
        DataType::U32 => DatumType::U32,
        DataType::U64 => DatumType::U64,
        DataType::I8 => DatumType::I8,
        DataType::I16 => DatumType::I16,
        DataType::I32 => DatumType::I32,
        DataType::I64 => DatumType::I64,
        DataType::F16 => DatumType::F16,
        DataType::F32 => DatumType::F32,
        DataType::F64 => DatumType::F64,
        DataType::BF16 | DataType::Bytes => return None,
    })
}

/// tract computes some integer tensors (shapes, indices) as symbolic dimensions; they leave
/// the model as the INT64 the file declares.
fn served_type(dt: DatumType) -> Option<DataType> {
    match dt {
        DatumType::TDim => Some(DataType::I64),
        dt => datatype(dt),
    }
}

fn spec(name: &str, fact: &TypedFact) -> Result<TensorSpec, ServeError> {
    let datatype = served_type(fact.datum_type).ok_or_else(|| {
        ServeError::invalid(format!(
            "model tensor '{name}' has an element type tract cannot serve ({:?})",
            fact.datum_type
        ))
    })?;
    Ok(TensorSpec {
        name: name.to_string(),
        datatype,
        shape: fact
            .shape
            .iter()
            .map(|d| d.as_i64().unwrap_or(-1))
            .collect(),
    })
}

/// Gives every input dimension the file leaves with neither a size nor a name (skl2onnx
/// writes the batch dimension so) a symbol of its own: tract types the graph from its
/// inputs and cannot start from an unknown dimension, where ONNX Runtime can.
fn name_unknown_dims(model: &mut InferenceModel) -> TractResult<()> {
    for i in 0..model.inputs.len() {
        let fact = model.input_fact(i)?.clone();
        if fact.shape.is_open() || !fact.shape.dims().any(|d| matches!(d, GenericFactoid::Any)) {
            continue;
        }
        let dims = fact
            .shape
            .dims()
            .enumerate()
            .map(|(j, d)| match d {
                GenericFactoid::Any => {
                    GenericFactoid::Only(TDim::from(model.symbols.sym(&format!("input{i}_dim{j}"))))
                }
                known => known.clone(),
            })
            .collect();
        model.set_input_fact(
            i,
            InferenceFact {
                shape: ShapeFactoid::closed(dims),
                ..fact
            },
        )?;
    }
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> ServeError {
    ServeError::invalid(format!("tract cannot load the model: {e:#}"))
}

impl Runtime for Tract {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Tract
    }

    fn load(
        &self,
        onnx: &[u8],
        instances: usize,
    ) -> Result<(Signature, Vec<Box<dyn Instance>>), ServeError> {
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(fail)?;
        name_unknown_dims(&mut model).map_err(fail)?;
        let model = model.into_optimized().map_err(fail)?;
        let mut signature = Signature::default();
        for (i, outlet) in model.input_outlets().map_err(fail)?.iter().enumerate() {
            let name = &model.node(outlet.node).name;
            signature
                .inputs
                .push(spec(name, model.input_fact(i).map_err(fail)?)?);
        }
        for (i, outlet) in model.output_outlets().map_err(fail)?.iter().enumerate() {
            let name = model
                .outlet_label(*outlet)
                .unwrap_or(&model.node(outlet.node).name)
                .to_string();
            signature
                .outputs
                .push(spec(&name, model.output_fact(i).map_err(fail)?)?);
        }
        let plan = model.into_runnable().map_err(fail)?;
        let output_names: Arc<[String]> =
            signature.outputs.iter().map(|o| o.name.clone()).collect();
        let all = (0..instances.max(1))
            .map(|_| {
                Box::new(TractInstance {
                    plan: plan.clone(),
                    output_names: output_names.clone(),
                }) as Box<dyn Instance>
            })
            .collect();
        Ok((signature, all))
    }
}

struct TractInstance {
    plan: Arc<TypedRunnableModel>,
    output_names: Arc<[String]>,
}

impl Instance for TractInstance {
    /// Inputs come in the model's input order (the manager sorts them).
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ServeError> {
        let mut values: TVec<TValue> = TVec::new();
        for t in &inputs {
            let dt = datum(t.datatype).ok_or_else(|| {
                ServeError::invalid(format!(
                    "input '{}': {} is not supported by the tract runtime",
                    t.name, t.datatype
                ))
            })?;
            // SAFETY: `from_raw_dt` copies the bytes into an aligned buffer after checking
            // that their length matches the shape and type.
            let tensor = unsafe { tract_onnx::prelude::Tensor::from_raw_dt(dt, &t.shape, &t.data) }
                .map_err(|e| ServeError::invalid(format!("input '{}': {e}", t.name)))?;
            values.push(tensor.into_tvalue());
        }
        let outputs = self
            .plan
            .run(values)
            .map_err(|e| ServeError::internal(format!("tract: {e:#}")))?;
        outputs
            .iter()
            .zip(self.output_names.iter())
            .map(|(v, name)| {
                let datatype = served_type(v.datum_type()).ok_or_else(|| {
                    ServeError::internal(format!("output '{name}' has type {:?}", v.datum_type()))
                })?;
                let v = if v.datum_type() == DatumType::TDim {
                    v.cast_to::<i64>()
                        .map_err(|e| ServeError::internal(format!("output '{name}': {e:#}")))?
                } else {
                    std::borrow::Cow::Borrowed(&**v)
                };
                Ok(Tensor {
                    name: name.clone(),
                    datatype,
                    shape: v.shape().to_vec(),
                    data: v.as_bytes().to_vec(),
                })
            })
            .collect()
    }
}
