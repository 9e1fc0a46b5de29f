//! What jobs run: `trainyard task train|eval|predict`. Each connects to the server as its
//! job (MLFLOW_* variables), so the same commands work under any executor.

pub mod evaluate;
pub mod mlflow;
pub mod train;
