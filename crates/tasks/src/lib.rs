//! The built-in tasks a job runs (`trainyard task train|eval|predict`), as library code.
//! A task talks to the server only through [`trainyard_client`] with the job's own
//! variables and token, so it runs the same under any executor. The CLI parses arguments
//! and calls these; the rules (what a training file must agree with, how checkpoints are
//! named and kept, which tags a model version gets) live here.

pub mod compress;
pub mod distill;
mod error;
pub mod evaluate;
pub mod export;
pub mod import;
pub mod predict;
pub mod report;
pub mod train;

pub use error::TaskError;
