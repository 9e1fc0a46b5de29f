//! Hyper-parameter search as pure functions of a study's history.
//!
//! Nothing here keeps state between calls: a suggestion is computed from the study's
//! specification, its seed, the trial's number and the trials recorded so far. A study whose
//! trials are in the database therefore resumes after a crash with exactly the suggestions it
//! would have made, and two servers asking for the same trial get the same answer.
//!
//! - [`space`]: what may be searched (float/int with log scale and step, categorical,
//!   parameters that exist only when another has a value).
//! - [`sampler`]: grid, random, quasi-random (Sobol), TPE (univariate or multivariate, with
//!   a constant liar for running trials, constraint-aware).
//! - [`pruner`]: median stopping, successive halving / ASHA promotions, Hyperband brackets.
//! - [`study`]: the specification a user submits, its checks, and the trial template.

pub mod error;
pub mod pruner;
pub mod sampler;
pub mod space;
pub mod study;
pub mod trial;

pub use error::TuneError;
pub use space::{ParamSpec, Params, Space};
pub use study::{Direction, StudySpec};
pub use trial::{TrialRecord, TrialState};
