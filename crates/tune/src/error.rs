use trainyard_core::error::InvalidField;

/// What can go wrong in search logic: a specification that breaks a rule (naming the field),
/// or a recorded trial that no longer fits its study's space.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// Every configuration of a finite space has been tried.
    #[error("the search space is exhausted: every configuration has been tried")]
    Exhausted,
}
